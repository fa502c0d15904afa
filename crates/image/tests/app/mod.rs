//! The container app of the provisioning VM tests, shared with the cloud-init bench example
//! (`examples/cloudinit_provision.rs`, which includes this file by path): both sides of
//! `cargo xtask bench provision` must install and poll exactly the same app.

use std::path::Path;

/// The port the container app listens on inside the guest.
pub const APP_PORT: u16 = 8080;

/// The provisioned user's SSH key (not a real key: only its text is checked).
pub const SSH_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeelsonTestKeyNotARealOneXXXXXXXXXXXXXXXX keelson-test";

/// The app's unit: imports the OCI archive, then runs busybox httpd on [`APP_PORT`] serving
/// /srv/www (see [`app_archive`] for how it stops). `TimeoutStopSec` bounds a stop that hangs.
pub const APP_UNIT: &str = "[Unit]\n\
Description=Keelson test app (busybox httpd in containerd)\n\
After=containerd.service\n\
Requires=containerd.service\n\
[Service]\n\
ExecStartPre=/usr/bin/ctr -n default image import /var/lib/keelson-app/app.oci.tar\n\
ExecStartPre=-/usr/bin/ctr -n default container rm keelson-app\n\
ExecStart=/usr/bin/ctr -n default run --rm --net-host --mount type=bind,src=/srv/www,dst=/www,options=rbind:ro docker.io/library/keelson-app:1 keelson-app\n\
Restart=on-failure\n\
TimeoutStopSec=10s\n\
[Install]\n\
WantedBy=multi-user.target\n";

/// Poll the app once a second from inside the guest (bash's /dev/tcp), at most `tries` times;
/// prints the HTTP response.
pub fn fetch_app(tries: u32) -> String {
    format!(
        "for i in $(seq {tries}); do if exec 3<>/dev/tcp/127.0.0.1/{APP_PORT}; then printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3; exec 3<&-; break; fi 2>/dev/null; sleep 1; done"
    )
}

/// The app's OCI archive (busybox alone: a shell that runs httpd on [`APP_PORT`] and ends on
/// SIGTERM), built in `dir`.
pub fn app_archive(busybox: &[u8], dir: &Path) -> Result<Vec<u8>, keelson_image::ImageError> {
    // A shell as the container's PID 1 that exits on SIGTERM (which `ctr run` forwards): PID 1
    // of a PID namespace ignores signals it has no handler for, so httpd there would linger
    // through every shutdown until systemd-shutdown's final SIGKILL, 90 s later.
    let script = format!("trap 'exit 0' TERM; /bin/busybox httpd -f -p {APP_PORT} -h /www & wait");
    let cmd = ["/bin/busybox", "sh", "-c", script.as_str()];
    let spec = keelson_image::oci::OciSpec {
        name: "docker.io/library/keelson-app:1",
        binary_path: "bin/busybox",
        binary: busybox,
        cmd: &cmd,
    };
    let path = dir.join("app.oci.tar");
    keelson_image::oci::write_archive(&spec, &path)?;
    std::fs::read(&path).map_err(|e| keelson_image::ImageError::Io {
        path: path.clone(),
        source: e,
    })
}
