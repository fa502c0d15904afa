//! Boot an image under QEMU (TCG, q35, OVMF, virtio disk) and, for tests, drive its serial
//! console: wait for lines, log in through systemd credentials, run shell commands.
//!
//! The guest needs no test hooks: the harness hands it SMBIOS type 11 credentials
//! (`agetty.autologin=root`), which systemd 257's serial getty imports.
//!
//! A test VM also gets a QMP socket. When a wait times out, the error carries the vCPU's
//! state read through it (run state, registers, the instructions at `$pc`, the local APIC,
//! samples of `$pc`): a guest that hangs in the firmware after a reset prints nothing, and
//! only its registers say where it spins.
//!
//! A guest reset (a reboot, a kernel panic's, boot counting's) is a fresh QEMU: the harness
//! runs QEMU with `-no-reboot`, learns from QMP's `SHUTDOWN` event that the guest asked for a
//! reset, and starts the same command line again, with the same disks and EFI variable store
//! and the console carried on. Under TCG a reset within one QEMU keeps the last boot's
//! translated code, and every write over it (OVMF unpacking itself, the kernel's EFI stub
//! decompressing where the last kernel ran) is QEMU's slow self-modifying-code path: 9-15 s
//! more per reset than a power-on (docs/image.md, "Thirteenth pass"), and the boot after a
//! reset is where OVMF hung in the eleventh pass. A power cycle is what a reboot is to the
//! guest anyway. `snapshot` disks get a qcow2 overlay in the VM's directory instead of
//! QEMU's `snapshot=on`, so that a restart keeps what the last boot wrote.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use keelson_cmd::{self as cmd, CmdError};

use crate::{ImageError, io_err};

/// fw_cfg name under which the provisioning config is handed to the guest.
pub const FW_CFG_CONFIG: &str = "opt/org.keelson/config";
/// OVMF firmware code (read-only pflash).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// OVMF variable store template (copied per VM).
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// How to boot a VM.
#[derive(Debug, Clone)]
pub struct VmOptions {
    /// Disk image (raw), attached as the first virtio disk.
    pub image: PathBuf,
    /// Discard writes to the image when the VM ends (QEMU `snapshot=on`; a test VM's qcow2
    /// overlay, which outlives the guest's resets).
    pub snapshot: bool,
    /// Provisioning config handed over as fw_cfg [`FW_CFG_CONFIG`].
    pub config: Option<PathBuf>,
    /// systemd credentials passed as SMBIOS type 11 strings (name, value).
    pub credentials: Vec<(String, String)>,
    /// More raw disks, attached read-only after the image (vdb, vdc, ...).
    pub extra_disks: Vec<PathBuf>,
    /// Raw disks the guest may write (first-boot storage tests), attached after `extra_disks`.
    pub writable_disks: Vec<PathBuf>,
    /// SMBIOS type 1 system serial (cloud-init's NoCloud seed, `ds=nocloud;s=URL`).
    pub system_serial: Option<String>,
    /// Words appended to the kernel command line, for diagnostics such as systemd debug
    /// logging. Passed as two SMBIOS type 11 strings: systemd-stub appends
    /// `io.systemd.stub.kernel-cmdline-extra=` to a UKI's (Keelson), systemd-boot appends
    /// `io.systemd.boot.kernel-cmdline-extra=` to a Type #1 entry's (the stock Debian disk of
    /// the benches) and leaves a UKI's alone; both only without Secure Boot, as under this OVMF.
    pub kernel_cmdline_extra: Option<String>,
    /// TCP ports of the guest reachable on the host's loopback: (host port, guest port), as
    /// QEMU user networking's `hostfwd`.
    pub host_forwards: Vec<(u16, u16)>,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Guest CPUs.
    pub cpus: u32,
    /// QEMU's CPU model (`-cpu`).
    pub cpu_model: String,
    /// More QEMU arguments, for measurements (`-icount shift=3,sleep=off`, say).
    pub qemu_args: Vec<String>,
    /// Also append the raw console output to this file (for debugging and CI logs).
    pub console_log: Option<PathBuf>,
}

impl VmOptions {
    /// Defaults: 2 GiB, 1 CPU, writes kept, no config.
    ///
    /// One CPU because QEMU 7.2's multi-threaded TCG (Debian bookworm) lets a trixie guest
    /// kernel panic now and then with an `int3` Oops in the scheduler while it patches its own
    /// code (static keys) on one CPU and runs it on the other; seen in CI and on loaded hosts.
    /// A single vCPU has no such race, and on a 2-core host it costs little boot time.
    ///
    /// The CPU model is TCG's default, `qemu64`, with RDRAND, which every x86-64 machine
    /// Keelson runs on has (Intel since 2012, AMD since 2015, every cloud VM). Without it the
    /// kernel's random pool is ready only 11-12 s into a boot under TCG, and the initrd's
    /// libdevmapper (veritysetup of /usr) waits for it while the kernel makes entropy from
    /// timer jitter on the one vCPU: 2.5 s of a reboot (docs/image.md, "Eighth pass").
    pub fn new(image: impl Into<PathBuf>) -> Self {
        VmOptions {
            image: image.into(),
            snapshot: false,
            config: None,
            credentials: Vec::new(),
            extra_disks: Vec::new(),
            writable_disks: Vec::new(),
            system_serial: None,
            kernel_cmdline_extra: None,
            host_forwards: Vec::new(),
            memory_mib: 2048,
            cpus: 1,
            cpu_model: "qemu64,+rdrand".into(),
            qemu_args: Vec::new(),
            console_log: std::env::var_os("KEELSON_VM_CONSOLE_LOG").map(PathBuf::from),
        }
    }
}

/// Where the serial console goes.
enum Console<'a> {
    /// The terminal (`image run`).
    Stdio,
    /// A Unix socket QEMU listens on and waits for (tests), QMP's socket beside it, and a
    /// second QMP socket for the harness's supervisor (its `SHUTDOWN` events). QEMU exits
    /// where the guest resets (`-no-reboot`).
    Socket {
        console: &'a Path,
        qmp: &'a Path,
        events: &'a Path,
    },
}

fn check_inputs(opts: &VmOptions) -> Result<(), ImageError> {
    for p in [
        opts.image.as_path(),
        Path::new(OVMF_CODE),
        Path::new(OVMF_VARS),
    ]
    .into_iter()
    .chain(opts.config.as_deref())
    .chain(opts.extra_disks.iter().map(PathBuf::as_path))
    .chain(opts.writable_disks.iter().map(PathBuf::as_path))
    {
        std::fs::metadata(p).map_err(io_err(p))?;
    }
    for (name, value) in &opts.credentials {
        if name.is_empty() || name.contains(['=', ',']) || value.contains(',') {
            return Err(ImageError::Vm {
                message: format!(
                    "credential {name:?}: names may not hold '=' or ',', values no ','"
                ),
                console_tail: String::new(),
            });
        }
    }
    Ok(())
}

/// The QEMU command line. `overlay` is a qcow2 overlay of `opts.image` that takes the
/// guest's writes in place of `snapshot=on`.
fn qemu_command(
    opts: &VmOptions,
    vars: &Path,
    console: Console<'_>,
    overlay: Option<&Path>,
) -> Command {
    // QEMU dies with the process that started it (util-linux's setpriv sets the parent-death
    // signal): a test killed by a timeout or Ctrl-C leaves no guest running behind it.
    let mut c = Command::new("setpriv");
    c.args(["--pdeathsig", "KILL", "--", "qemu-system-x86_64"]);
    c.args(["-accel", "tcg", "-machine", "q35", "-no-user-config"])
        .arg("-cpu")
        .arg(&opts.cpu_model)
        .args(&opts.qemu_args)
        .arg("-m")
        .arg(opts.memory_mib.to_string())
        .arg("-smp")
        .arg(opts.cpus.to_string())
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
        ))
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            vars.display()
        ))
        .arg("-drive")
        .arg(match overlay {
            Some(o) => format!("file={},format=qcow2,if=virtio,cache=unsafe", o.display()),
            None => format!(
                "file={},format=raw,if=virtio,cache=unsafe{}",
                opts.image.display(),
                if opts.snapshot { ",snapshot=on" } else { "" }
            ),
        });
    for d in &opts.extra_disks {
        c.arg("-drive").arg(format!(
            "file={},format=raw,if=virtio,readonly=on",
            d.display()
        ));
    }
    for d in &opts.writable_disks {
        c.arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", d.display()));
    }
    let mut nic = String::from("user,model=virtio-net-pci");
    for (host, guest) in &opts.host_forwards {
        nic.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
    }
    c.arg("-nic").arg(nic);
    if let Some(cfg) = &opts.config {
        c.arg("-fw_cfg")
            .arg(format!("name={FW_CFG_CONFIG},file={}", cfg.display()));
    }
    for (name, value) in &opts.credentials {
        c.arg("-smbios").arg(format!(
            "type=11,value=io.systemd.credential:{name}={value}"
        ));
    }
    if let Some(serial) = &opts.system_serial {
        // QEMU option values escape a comma by doubling it.
        c.arg("-smbios")
            .arg(format!("type=1,serial={}", serial.replace(',', ",,")));
    }
    if let Some(extra) = &opts.kernel_cmdline_extra {
        for reader in ["stub", "boot"] {
            c.arg("-smbios").arg(format!(
                "type=11,value=io.systemd.{reader}.kernel-cmdline-extra={}",
                extra.replace(',', ",,")
            ));
        }
    }
    match console {
        Console::Stdio => {
            c.arg("-nographic");
        }
        Console::Socket {
            console,
            qmp,
            events,
        } => {
            c.args(["-display", "none", "-monitor", "none", "-no-reboot"])
                .arg("-chardev")
                .arg(format!(
                    "socket,id=con0,path={},server=on,wait=on",
                    console.display()
                ))
                .args(["-serial", "chardev:con0"])
                .arg("-qmp")
                .arg(format!("unix:{},server=on,wait=off", qmp.display()))
                .arg("-qmp")
                .arg(format!("unix:{},server=on,wait=off", events.display()));
        }
    }
    c
}

/// Boot `opts.image` with the serial console on the terminal; returns when QEMU exits.
pub fn run_interactive(opts: &VmOptions) -> Result<ExitStatus, ImageError> {
    check_inputs(opts)?;
    let dir = tempfile::tempdir().map_err(io_err(std::env::temp_dir()))?;
    let vars = dir.path().join("OVMF_VARS.fd");
    std::fs::copy(OVMF_VARS, &vars).map_err(io_err(&vars))?;
    let mut c = qemu_command(opts, &vars, Console::Stdio, None);
    let line = cmd::describe(&c);
    tracing::info!(command = %line, "starting QEMU (Ctrl-A X quits)");
    c.status()
        .map_err(|e| CmdError::not_started(line, &e).into())
}

/// Console text without ANSI escape sequences and carriage returns.
pub fn clean_console(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    // CSI: parameters then one final byte in @..~
                    for n in chars.by_ref() {
                        if ('@'..='~').contains(&n) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// The result of a command run in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestOutput {
    /// Exit status of the command.
    pub status: i32,
    /// Its stdout and stderr, as the console showed them.
    pub output: String,
}

/// A running VM whose serial console the harness reads and writes. Across guest resets it is
/// a series of QEMU processes (see the module's documentation); the console, the disks and
/// the EFI variables carry over.
pub struct Vm {
    shared: Arc<Shared>,
    supervisor: Option<JoinHandle<()>>,
    qmp: PathBuf,
    started: Instant,
    serial: u64,
    _dir: tempfile::TempDir,
}

/// What the harness and its supervisor thread share.
struct Shared {
    /// Everything the consoles printed, in order.
    console: Mutex<Vec<u8>>,
    /// The current QEMU and the write side of its console.
    current: Mutex<Option<(Child, UnixStream)>>,
    /// Why the VM ended, once QEMU exited other than for a guest reset.
    ended: Mutex<Option<String>>,
    /// Set by [`Vm::kill`]: no more restarts.
    killed: AtomicBool,
    /// Guest resets so far, each one a new QEMU.
    resets: AtomicUsize,
}

/// How to start (and restart) one VM's QEMU.
struct Launcher {
    opts: VmOptions,
    vars: PathBuf,
    overlay: Option<PathBuf>,
    console: PathBuf,
    qmp: PathBuf,
    events: PathBuf,
    stderr: PathBuf,
}

/// One running QEMU: the process, the write side of its console, and the thread that copies
/// its console into [`Shared`] until that QEMU closes it.
type Launched = (Child, UnixStream, JoinHandle<()>);

impl Launcher {
    /// Start QEMU, connect to its console (QEMU waits for that before it runs the guest) and
    /// start reading it; a QEMU whose console cannot be read is stopped again.
    fn launch(&self, shared: &Arc<Shared>) -> Result<Launched, ImageError> {
        let (mut child, stream) = self.spawn()?;
        match self.read_console(&stream, shared) {
            Ok(reader) => Ok((child, stream, reader)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    /// Start QEMU and connect to its console.
    fn spawn(&self) -> Result<(Child, UnixStream), ImageError> {
        let _ = std::fs::remove_file(&self.console);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr)
            .map_err(io_err(&self.stderr))?;
        let mut c = qemu_command(
            &self.opts,
            &self.vars,
            Console::Socket {
                console: &self.console,
                qmp: &self.qmp,
                events: &self.events,
            },
            self.overlay.as_deref(),
        );
        let line = cmd::describe(&c);
        tracing::info!(command = %line, "starting QEMU");
        let mut child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| CmdError::not_started(&line, &e))?;
        let started = Instant::now();
        loop {
            if let Ok(s) = UnixStream::connect(&self.console) {
                return Ok((child, s));
            }
            let stderr = || std::fs::read_to_string(&self.stderr).unwrap_or_default();
            if let Ok(Some(status)) = child.try_wait() {
                return Err(CmdError {
                    code: status.code(),
                    ..CmdError::new(line, status.to_string(), &stderr())
                }
                .into());
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CmdError::new(
                    line,
                    "console socket did not appear within 30 s",
                    &stderr(),
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Copy what `stream` (one QEMU's console) prints into `shared` and the console log, until
    /// that QEMU closes it (the thread then ends).
    fn read_console(
        &self,
        stream: &UnixStream,
        shared: &Arc<Shared>,
    ) -> Result<JoinHandle<()>, ImageError> {
        let mut reader = stream.try_clone().map_err(io_err(&self.console))?;
        let mut log = match &self.opts.console_log {
            Some(p) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(io_err(p))?,
            ),
            None => None,
        };
        let sink = Arc::clone(shared);
        Ok(std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut c) = sink.console.lock() {
                    c.extend_from_slice(&buf[..n]);
                }
                if let Some(f) = log.as_mut() {
                    let _ = f.write_all(&buf[..n]);
                }
            }
        }))
    }

    /// Why the current QEMU stops: the `reason` of the last `SHUTDOWN` event on its events
    /// socket, read until QEMU closes it (None without one: QEMU died or was killed).
    fn shutdown_reason(&self, shared: &Shared) -> Option<String> {
        let mut q = Qmp::connect_within(&self.events, Duration::from_secs(30), || {
            shared.killed.load(Ordering::SeqCst)
        })
        .ok()?;
        let mut reason = None;
        // QEMU closes the socket when it exits; until then this waits for events.
        while let Some(event) = q.next_event() {
            if event.get("event").and_then(|e| e.as_str()) == Some("SHUTDOWN") {
                reason = event
                    .pointer("/data/reason")
                    .and_then(|r| r.as_str())
                    .map(str::to_string);
            }
        }
        reason
    }

    /// The supervisor: wait for each QEMU to exit and start the next one where the guest
    /// reset, until the guest powers off, QEMU fails, or the VM is killed. `reader` is the
    /// first QEMU's console reader.
    fn supervise(&self, shared: &Arc<Shared>, mut reader: JoinHandle<()>) {
        loop {
            let reason = self.shutdown_reason(shared);
            // Reap this QEMU (it is exiting: its QMP socket closed, or it was killed). The lock
            // is held only for a look, so the console stays writable meanwhile.
            let status = loop {
                let Ok(mut current) = shared.current.lock() else {
                    return;
                };
                match current.as_mut().map(|(child, _)| child.try_wait()) {
                    Some(Ok(Some(s))) => break s.to_string(),
                    Some(Ok(None)) => {}
                    Some(Err(e)) => break format!("not known: {e}"),
                    None => break "not known".to_string(),
                }
                drop(current);
                std::thread::sleep(Duration::from_millis(50));
            };
            if shared.killed.load(Ordering::SeqCst) {
                return;
            }
            if reason.as_deref() != Some("guest-reset") {
                let why = match reason {
                    Some(r) => format!("QEMU exited ({status}) after its SHUTDOWN event ({r})"),
                    None => format!("QEMU exited ({status})"),
                };
                if let Ok(mut e) = shared.ended.lock() {
                    *e = Some(why);
                }
                return;
            }
            shared.resets.fetch_add(1, Ordering::SeqCst);
            tracing::info!("the guest reset: starting QEMU again");
            // The last QEMU's console output comes first: its reader ends at the EOF of the
            // exited QEMU's socket.
            let _ = reader.join();
            match self.launch(shared) {
                Ok((mut child, stream, r)) => {
                    reader = r;
                    let Ok(mut current) = shared.current.lock() else {
                        return;
                    };
                    // kill() sets the flag before it takes this lock: a kill() that ran while
                    // the new QEMU started is seen here, and the new QEMU must not outlive it.
                    if shared.killed.load(Ordering::SeqCst) {
                        let _ = child.kill();
                        let _ = child.wait();
                        return;
                    }
                    *current = Some((child, stream));
                }
                Err(e) => {
                    if let Ok(mut ended) = shared.ended.lock() {
                        *ended = Some(format!("QEMU did not start again after a guest reset: {e}"));
                    }
                    return;
                }
            }
        }
    }
}

/// A qcow2 overlay `overlay` whose backing file is the raw `image`: the guest's writes land in
/// the overlay and `image` stays as it was.
fn create_overlay(image: &Path, overlay: &Path) -> Result<(), ImageError> {
    let image = std::fs::canonicalize(image).map_err(io_err(image))?;
    let mut c = Command::new("qemu-img");
    c.args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(&image)
        .arg(overlay);
    cmd::run(&mut c)?;
    Ok(())
}

impl Vm {
    /// Start QEMU with the console on a socket and begin collecting its output.
    pub fn start(opts: &VmOptions) -> Result<Vm, ImageError> {
        check_inputs(opts)?;
        let dir = tempfile::tempdir().map_err(io_err(std::env::temp_dir()))?;
        let vars = dir.path().join("OVMF_VARS.fd");
        std::fs::copy(OVMF_VARS, &vars).map_err(io_err(&vars))?;
        let overlay = if opts.snapshot {
            let o = dir.path().join("overlay.qcow2");
            create_overlay(&opts.image, &o)?;
            Some(o)
        } else {
            None
        };
        let launcher = Launcher {
            opts: opts.clone(),
            vars,
            overlay,
            console: dir.path().join("console.sock"),
            qmp: dir.path().join("qmp.sock"),
            events: dir.path().join("events.sock"),
            stderr: dir.path().join("qemu.stderr"),
        };
        let shared = Arc::new(Shared {
            console: Mutex::new(Vec::new()),
            current: Mutex::new(None),
            ended: Mutex::new(None),
            killed: AtomicBool::new(false),
            resets: AtomicUsize::new(0),
        });
        let (child, stream, reader) = launcher.launch(&shared)?;
        let started = Instant::now();
        if let Ok(mut c) = shared.current.lock() {
            *c = Some((child, stream));
        }
        let qmp = launcher.qmp.clone();
        let s = Arc::clone(&shared);
        let supervisor = std::thread::spawn(move || launcher.supervise(&s, reader));
        Ok(Vm {
            shared,
            supervisor: Some(supervisor),
            qmp,
            started,
            serial: 0,
            _dir: dir,
        })
    }

    /// How many times the guest reset (each reset is a new QEMU; see the module's
    /// documentation).
    pub fn resets(&self) -> usize {
        self.shared.resets.load(Ordering::SeqCst)
    }

    /// Why the VM ended (the guest powered off, or QEMU failed), if it did.
    fn ended(&self) -> Option<String> {
        self.shared.ended.lock().ok().and_then(|e| e.clone())
    }

    /// Time since QEMU was started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Everything the console printed so far (cleaned of escape sequences).
    pub fn console_text(&self) -> String {
        self.shared
            .console
            .lock()
            .map(|c| clean_console(&c))
            .unwrap_or_default()
    }

    /// The last `n` lines of the console.
    pub fn console_tail(&self, n: usize) -> String {
        cmd::tail(&self.console_text(), n)
    }

    fn fail(&self, message: String) -> ImageError {
        ImageError::Vm {
            message,
            console_tail: self.console_tail(40),
        }
    }

    /// Wait until the console shows `needle` (searching from byte offset `from` of the
    /// cleaned text); returns the offset just past it.
    pub fn wait_for_from(
        &mut self,
        needle: &str,
        from: usize,
        timeout: Duration,
    ) -> Result<usize, ImageError> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.console_text();
            if let Some(pos) = text.get(from..).and_then(|t| t.find(needle)) {
                return Ok(from + pos + needle.len());
            }
            if let Some(why) = self.ended() {
                return Err(self.fail(format!("{why} before the console showed {needle:?}")));
            }
            if Instant::now() >= deadline {
                return Err(self.fail(format!(
                    "the console did not show {needle:?} within {timeout:?} ({:?} after QEMU \
                     started)\nthe vCPU then, through QMP:\n{}",
                    self.elapsed(),
                    self.vcpu_state()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Where the guest's vCPU is, read through QMP's human monitor ([`vcpu_report`]). Never
    /// fails: a QMP error is the text.
    pub fn vcpu_state(&self) -> String {
        vcpu_report(&self.qmp).unwrap_or_else(|e| format!("(QMP at {}: {e})", self.qmp.display()))
    }

    /// Wait until the console shows `needle` anywhere.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<usize, ImageError> {
        self.wait_for_from(needle, 0, timeout)
    }

    /// Type `text` on the serial console.
    pub fn send(&mut self, text: &str) -> Result<(), ImageError> {
        let r = match self.shared.current.lock() {
            Ok(mut current) => match current.as_mut() {
                Some((_, stream)) => stream
                    .write_all(text.as_bytes())
                    .and_then(|_| stream.flush()),
                None => Err(std::io::Error::other("no QEMU is running")),
            },
            Err(_) => Err(std::io::Error::other("the harness's state is poisoned")),
        };
        r.map_err(|e| self.fail(format!("writing to the console: {e}")))
    }

    /// Wait for the autologin shell (credential `agetty.autologin=root`) and make it quiet:
    /// kernel messages off the console, so command output is not interleaved.
    pub fn login(&mut self, timeout: Duration) -> Result<(), ImageError> {
        self.login_from(0, timeout)
    }

    /// [`Vm::login`] to the autologin shell that appears after byte offset `from` of the console
    /// (for example after a reboot, whose offset [`Vm::wait_for_from`] returned).
    pub fn login_from(&mut self, from: usize, timeout: Duration) -> Result<(), ImageError> {
        self.wait_for_from("(automatic login)", from, timeout)?;
        let deadline = Instant::now() + timeout;
        loop {
            match self.run_with_timeout("dmesg -n 1; stty -echo cols 400", Duration::from_secs(20))
            {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => continue,
            }
        }
    }

    /// Run a shell command in the guest (after [`Vm::login`]) and collect its output and status.
    pub fn run_with_timeout(
        &mut self,
        command: &str,
        timeout: Duration,
    ) -> Result<GuestOutput, ImageError> {
        self.serial += 1;
        let id = format!("{}x{}", std::process::id(), self.serial);
        let start_mark = format!("@@B{id}@@\n");
        let end_mark = format!("@@E{id}:");
        let from = self.console_text().len();
        // The marks are printed with printf so that the echoed command line never contains them.
        self.send(&format!(
            "printf '@@B%s@@\\n' {id}; {{ {command} ; }} 2>&1; printf '@@E%s:%d@@\\n' {id} $?\n"
        ))?;
        let begin = self.wait_for_from(&start_mark, from, timeout)?;
        let end = self.wait_for_from(&end_mark, begin, timeout)?;
        let text = self.console_text();
        let output = text
            .get(begin..end - end_mark.len())
            .unwrap_or_default()
            .to_string();
        let rest = text.get(end..).unwrap_or_default();
        let status = rest
            .split("@@")
            .next()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| {
                self.fail(format!("no exit status after the end mark of {command:?}"))
            })?;
        Ok(GuestOutput { status, output })
    }

    /// [`Vm::run_with_timeout`] with 120 s.
    pub fn run(&mut self, command: &str) -> Result<GuestOutput, ImageError> {
        self.run_with_timeout(command, Duration::from_secs(120))
    }

    /// Run a command that must succeed; returns its output.
    pub fn check(&mut self, command: &str) -> Result<String, ImageError> {
        let out = self.run(command)?;
        if out.status != 0 {
            return Err(self.fail(format!(
                "`{command}` exited {} with:\n{}",
                out.status, out.output
            )));
        }
        Ok(out.output)
    }

    /// Stop the VM (no restart follows).
    pub fn kill(&mut self) {
        self.shared.killed.store(true, Ordering::SeqCst);
        if let Ok(mut current) = self.shared.current.lock()
            && let Some((child, _)) = current.as_mut()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(s) = self.supervisor.take() {
            let _ = s.join();
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A QMP connection that runs human-monitor commands. Every read and write is bounded by the
/// timeout given to [`Qmp::connect`], so a QEMU that stopped answering cannot hang the caller.
/// The VM tests read a hung guest's state with it; `boot_time --sample` samples the vCPU
/// through a second QMP socket.
pub struct Qmp {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Qmp {
    /// Connect to QEMU's QMP socket `sock` and negotiate capabilities.
    pub fn connect(sock: &Path, timeout: Duration) -> std::io::Result<Qmp> {
        let stream = UnixStream::connect(sock)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut q = Qmp {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
        };
        // The greeting, then capabilities negotiation.
        q.reply()?;
        writeln!(q.writer, r#"{{"execute":"qmp_capabilities"}}"#)?;
        q.reply()?;
        Ok(q)
    }

    /// [`Qmp::connect`], tried again every 20 ms until it works, `within` has passed or
    /// `give_up()` says so: QEMU makes its sockets some time after it starts, and again after
    /// each restart of a [`Vm`].
    pub fn connect_within(
        sock: &Path,
        within: Duration,
        give_up: impl Fn() -> bool,
    ) -> std::io::Result<Qmp> {
        let deadline = Instant::now() + within;
        loop {
            match Qmp::connect(sock, Duration::from_secs(10)) {
                Ok(q) => return Ok(q),
                Err(_) if Instant::now() < deadline && !give_up() => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The next reply (or the greeting); asynchronous events in between are skipped.
    fn reply(&mut self) -> std::io::Result<serde_json::Value> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "QEMU closed the QMP socket",
                ));
            }
            let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{e}: {line}"))
            })?;
            if v.get("return").is_some() || v.get("error").is_some() || v.get("QMP").is_some() {
                return Ok(v);
            }
        }
    }

    /// The next asynchronous event, waiting as long as it takes; None once QEMU closed the
    /// socket (or sent something that is not QMP).
    pub fn next_event(&mut self) -> Option<serde_json::Value> {
        let _ = self.writer.set_read_timeout(None);
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let v: serde_json::Value = serde_json::from_str(&line).ok()?;
            if v.get("event").is_some() {
                return Some(v);
            }
        }
    }

    /// The output of one human-monitor command (or QMP's error, as text).
    pub fn hmp(&mut self, command: &str) -> std::io::Result<String> {
        let request = serde_json::json!({
            "execute": "human-monitor-command",
            "arguments": { "command-line": command },
        });
        writeln!(self.writer, "{request}")?;
        let v = self.reply()?;
        Ok(match v.get("return").and_then(|r| r.as_str()) {
            Some(t) => t.replace("\r\n", "\n"),
            None => format!("{v}\n"),
        })
    }
}

/// The QOM paths of the virtio disks in `info virtio`'s lines (`PATH [virtio-blk]`).
fn virtio_blk_paths(info_virtio: &str) -> impl Iterator<Item = &str> {
    info_virtio
        .lines()
        .filter(|l| l.trim_end().ends_with("[virtio-blk]"))
        .filter_map(|l| l.split_whitespace().next())
}

/// The guest-physical address of the avail ring in `info virtio-queue-status`'s output.
fn avail_ring_addr(queue_status: &str) -> Option<u64> {
    queue_status
        .lines()
        .find_map(|l| l.trim().strip_prefix("avail:"))
        .and_then(|a| u64::from_str_radix(a.trim().trim_start_matches("0x"), 16).ok())
}

/// The vCPU's state through the QMP socket `sock`: run state, registers, the instructions at
/// the program counter, the local APIC (its timer drives the firmware's events), the virtio
/// disks' queues, then the program counter and the ACPI PM timer sampled five times, 0.2 s
/// apart (one address again and again is a tight loop, spread ones a slow guest; a PM timer
/// that does not move holds every firmware delay for ever).
fn vcpu_report(sock: &Path) -> std::io::Result<String> {
    let mut q = Qmp::connect(sock, Duration::from_secs(10))?;
    let mut out = String::new();
    for command in ["info status", "info registers", "x/8i $pc", "info lapic"] {
        out.push_str(&format!("(qemu) {command}\n{}", q.hmp(command)?));
    }
    // Each virtio disk's first queue, as QEMU sees it, and the avail index the guest last
    // published in its memory: a request the guest published that QEMU never took (avail
    // ahead of last_avail_idx, nothing in use) leaves a firmware that polls for its
    // completion spinning in Stall().
    let virtio = q.hmp("info virtio")?;
    out.push_str(&format!("(qemu) info virtio\n{virtio}"));
    for path in virtio_blk_paths(&virtio) {
        let command = format!("info virtio-queue-status {path} 0");
        let status = q.hmp(&command)?;
        out.push_str(&format!("(qemu) {command}\n{status}"));
        if let Some(avail) = avail_ring_addr(&status) {
            // The avail ring: flags (u16), then idx (u16).
            let command = format!("xp /1hx {:#x}", avail + 2);
            out.push_str(&format!("(qemu) {command}\n{}", q.hmp(&command)?));
        }
    }
    // q35's ACPI PM timer (OVMF puts the PM base at 0x600): the clock of the firmware's
    // Stall(), which busy-waits until it has advanced far enough.
    out.push_str("program counter and ACPI PM timer, 5 samples 0.2 s apart:\n");
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(200));
        let pc = q.hmp("print /x $pc")?;
        let pm = q.hmp("i /w 0x608")?;
        out.push_str(&format!("  pc {}  pm timer {}\n", pc.trim(), pm.trim()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn console_cleaning_drops_escapes() {
        let raw =
            b"[\x1b[0;32m  OK  \x1b[0m] Reached target \x1b[0;1;39mmulti-user.target\x1b[0m\r\n";
        assert_eq!(
            clean_console(raw),
            "[  OK  ] Reached target multi-user.target\n"
        );
    }

    #[test]
    fn virtio_report_parsing_finds_disks_and_the_avail_ring() {
        // QEMU 7.2's output, as a blank-disk guest printed it.
        let info = "/machine/peripheral-anon/device[0]/virtio-backend [virtio-blk]\n\
                    /machine/unattached/device[29]/virtio-backend [virtio-net]\n";
        assert_eq!(
            virtio_blk_paths(info).collect::<Vec<_>>(),
            ["/machine/peripheral-anon/device[0]/virtio-backend"]
        );
        let status = "  last_avail_idx:       17\n  VRing:\n    num:          256\n\
                      desc:         0x000000007e2fc000\n    avail:        0x000000007e2fd000\n\
                      used:         0x000000007e2fe000\n";
        assert_eq!(avail_ring_addr(status), Some(0x7e2fd000));
        assert_eq!(avail_ring_addr("  VRing:\n"), None);
    }

    #[test]
    fn command_line_carries_config_and_credentials() {
        let mut o = VmOptions::new("/tmp/x.img");
        o.snapshot = true;
        o.config = Some("/tmp/c.ign".into());
        o.credentials
            .push(("agetty.autologin".into(), "root".into()));
        o.system_serial = Some("ds=nocloud;s=http://10.0.2.2:8000/,x".into());
        o.kernel_cmdline_extra = Some("systemd.log_level=debug a=b,c".into());
        o.writable_disks.push("/tmp/w.img".into());
        let socket = Console::Socket {
            console: Path::new("/tmp/s"),
            qmp: Path::new("/tmp/q"),
            events: Path::new("/tmp/e"),
        };
        let line = cmd::describe(&qemu_command(&o, Path::new("/tmp/v.fd"), socket, None));
        assert!(
            line.contains("-qmp unix:/tmp/q,server=on,wait=off"),
            "{line}"
        );
        assert!(
            line.contains("-qmp unix:/tmp/e,server=on,wait=off"),
            "{line}"
        );
        assert!(line.contains(" -no-reboot "), "{line}");
        assert!(
            line.contains("file=/tmp/x.img,format=raw,if=virtio,cache=unsafe,snapshot=on"),
            "{line}"
        );
        assert!(
            line.contains("-fw_cfg name=opt/org.keelson/config,file=/tmp/c.ign"),
            "{line}"
        );
        assert!(
            line.contains("type=11,value=io.systemd.credential:agetty.autologin=root"),
            "{line}"
        );
        assert!(
            line.contains("type=1,serial=ds=nocloud;s=http://10.0.2.2:8000/,,x"),
            "{line}"
        );
        assert!(
            line.contains("file=/tmp/w.img,format=raw,if=virtio "),
            "{line}"
        );
        for reader in ["stub", "boot"] {
            assert!(
                line.contains(&format!(
                    "type=11,value=io.systemd.{reader}.kernel-cmdline-extra=systemd.log_level=debug a=b,,c"
                )),
                "{line}"
            );
        }
        assert!(line.contains("-accel tcg"), "{line}");
        assert!(
            line.starts_with("setpriv --pdeathsig KILL -- qemu-system-x86_64 "),
            "{line}"
        );
        assert!(
            line.contains("socket,id=con0,path=/tmp/s,server=on,wait=on"),
            "{line}"
        );
    }

    #[test]
    fn an_overlay_replaces_snapshot_on() {
        let mut o = VmOptions::new("/tmp/x.img");
        o.snapshot = true;
        let socket = Console::Socket {
            console: Path::new("/tmp/s"),
            qmp: Path::new("/tmp/q"),
            events: Path::new("/tmp/e"),
        };
        let line = cmd::describe(&qemu_command(
            &o,
            Path::new("/tmp/v.fd"),
            socket,
            Some(Path::new("/tmp/o.qcow2")),
        ));
        assert!(
            line.contains("-drive file=/tmp/o.qcow2,format=qcow2,if=virtio,cache=unsafe "),
            "{line}"
        );
        assert!(!line.contains("x.img"), "{line}");
        assert!(!line.contains("snapshot=on"), "{line}");
        // The terminal's VM (`image run`) keeps QEMU's own reset and snapshot.
        let line = cmd::describe(&qemu_command(
            &o,
            Path::new("/tmp/v.fd"),
            Console::Stdio,
            None,
        ));
        assert!(line.contains("snapshot=on"), "{line}");
        assert!(!line.contains("-no-reboot"), "{line}");
    }

    /// The overlay keeps the guest's writes off the image (qemu-img: a host package).
    #[test]
    fn overlay_takes_the_writes_and_names_a_missing_image() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        std::fs::write(&image, vec![7u8; 1 << 20]).unwrap();
        let overlay = dir.path().join("o.qcow2");
        create_overlay(&image, &overlay).unwrap();
        let mut c = Command::new("qemu-img");
        c.args(["info", "--output=json"]).arg(&overlay);
        let info: serde_json::Value = serde_json::from_str(&cmd::run(&mut c).unwrap()).unwrap();
        assert_eq!(info["format"], "qcow2", "{info}");
        assert_eq!(info["backing-filename"], image.to_str().unwrap(), "{info}");
        assert_eq!(info["backing-filename-format"], "raw", "{info}");
        assert_eq!(info["virtual-size"], 1 << 20, "{info}");
        let e = create_overlay(&dir.path().join("gone.img"), &overlay)
            .unwrap_err()
            .to_string();
        assert!(e.contains("gone.img"), "{e}");
    }

    #[test]
    fn connecting_to_qmp_gives_up_when_told_or_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("none.sock");
        let t = Instant::now();
        assert!(Qmp::connect_within(&sock, Duration::from_secs(60), || true).is_err());
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        let t = Instant::now();
        assert!(Qmp::connect_within(&sock, Duration::from_millis(200), || false).is_err());
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn missing_inputs_are_named() {
        let o = VmOptions::new("/nonexistent/keelson.img");
        let e = check_inputs(&o).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/keelson.img"), "{e}");
    }
}
