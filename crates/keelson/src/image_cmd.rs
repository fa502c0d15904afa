//! `keelson image build|run`: build the OS image from `os/`, boot an image under QEMU.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use keelson_image::{BuildOptions, BuildOutput, build, qemu};

/// Subcommands of `keelson image`.
#[derive(Subcommand)]
pub enum ImageCommand {
    /// Build a bootable, verified A/B disk image and the update parts of one version.
    Build {
        /// The OS definition directory.
        #[arg(long, default_value = "os")]
        os: PathBuf,
        /// Version to build (default: `version` in os.yaml).
        #[arg(long)]
        version: Option<String>,
        /// Output directory for the image and the update parts.
        #[arg(long)]
        out: PathBuf,
        /// Package and root file system cache (default: $KEELSON_CACHE_DIR or ~/.cache/keelson).
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Rebuild the root file system even if a cached one matches the inputs.
        #[arg(long)]
        fresh: bool,
        /// Also trust this update key (ed25519 public key, PEM), e.g. a development key;
        /// repeatable. It goes into /usr/share/keelson/update-keys/ with os.yaml's `update_keys`.
        #[arg(long = "update-key", value_name = "FILE.pem")]
        update_keys: Vec<PathBuf>,
        /// Copy this directory over the root file system after the cached part (a variant of
        /// the OS without a new root cache: site files, a test build); repeatable, in order.
        #[arg(long = "overlay", value_name = "DIR")]
        overlays: Vec<PathBuf>,
        /// Print the build record as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Boot an image under QEMU (TCG, OVMF, systemd-boot), serial console on this terminal.
    Run {
        /// The disk image.
        image: PathBuf,
        /// Provisioning config handed to the guest as fw_cfg opt/org.keelson/config.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Discard all writes to the image.
        #[arg(long)]
        snapshot: bool,
        /// Guest memory in MiB.
        #[arg(long, default_value_t = 2048)]
        memory: u32,
    },
}

fn print_human(o: &BuildOutput) {
    println!("version        {}", o.version);
    println!("image          {}", o.image.display());
    println!("usr root hash  {}", o.usr_root_hash);
    println!(
        "usr partuuid   {}  verity {}",
        o.usr_partuuid, o.usr_verity_partuuid
    );
    println!("kernel         {}", o.kernel_version);
    println!("UKI            /EFI/Linux/{}", o.uki_name);
    println!("cmdline        {}", o.cmdline);
    println!(
        "root           created on first boot by systemd-repart (at least {} MiB free in the image)",
        o.root_min_size >> 20
    );
    println!(
        "root fs        {}",
        if o.rootfs_cached {
            "from cache"
        } else {
            "built"
        }
    );
    println!(
        "agent          {}",
        if o.agent {
            "/usr/bin/keelson-agent"
        } else {
            "not in the image (KEELSON_AGENT_BIN unset)"
        }
    );
    for k in &o.update_keys {
        println!("update key     {}  key id {}", k.name, k.key_id);
    }
    for f in &o.files {
        println!(
            "{:<14} {}  {:>11} bytes  sha256 {}",
            f.kind,
            f.path.display(),
            f.size,
            f.sha256
        );
    }
}

pub fn run(cmd: ImageCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ImageCommand::Build {
            os,
            version,
            out,
            cache,
            fresh,
            update_keys,
            overlays,
            json,
        } => {
            let mut opts = BuildOptions::new(&os, &out);
            opts.version = version;
            opts.fresh_rootfs = fresh;
            opts.update_keys = update_keys;
            opts.overlays = overlays;
            if let Some(c) = cache {
                opts.cache_dir = c;
            }
            let o = build(&opts).with_context(|| {
                format!(
                    "building the image from {} into {}",
                    os.display(),
                    out.display()
                )
            })?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&o).context("serialising the build record")?
                );
            } else {
                print_human(&o);
            }
            Ok(ExitCode::SUCCESS)
        }
        ImageCommand::Run {
            image,
            config,
            snapshot,
            memory,
        } => {
            let mut opts = qemu::VmOptions::new(&image);
            opts.config = config;
            opts.snapshot = snapshot;
            opts.memory_mib = memory;
            let status = qemu::run_interactive(&opts)
                .with_context(|| format!("booting {}", image.display()))?;
            Ok(if status.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
