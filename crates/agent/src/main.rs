//! keelson-agent: the node update agent's CLI and daemon (all logic is in the library).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use keelson_agent::agent::{Agent, CycleOptions, RebootMode, first_check_delay};
use keelson_agent::paths::Paths;
use keelson_agent::settings::Settings;
use keelson_agent::state::State;

/// The Keelson node update agent.
#[derive(Debug, Parser)]
#[command(name = "keelson-agent", version)]
struct Cli {
    /// Root prefix for every node path (tests and images; `/` on a node).
    #[arg(long, default_value = "/", global = true)]
    root: PathBuf,
    /// The disk holding the usr slots (default: the disk of the running /usr).
    #[arg(long, global = true)]
    disk: Option<PathBuf>,
    /// Where the ESP is mounted.
    #[arg(long, default_value = "/efi", global = true)]
    esp: String,
    /// Reboot by running PROGRAM (no arguments) instead of `systemctl reboot` (tests: a
    /// script that records the time).
    #[arg(long, value_name = "PROGRAM", global = true)]
    reboot_command: Option<PathBuf>,
    /// First wait after a failed reboot-lock attempt, in milliseconds; it doubles per attempt
    /// up to 60 times this (default 5000, locksmith's 5 s to 5 min; tests use less).
    #[arg(long, value_name = "MS", global = true)]
    lock_backoff_ms: Option<u64>,
    /// The daemon's wait between looks at a new boot until it is blessed, in milliseconds
    /// (default 30000; tests use less).
    #[arg(long, value_name = "MS", global = true)]
    verify_poll_ms: Option<u64>,
    /// Merge changed extensions by running PROGRAM (no arguments) instead of
    /// `systemd-sysext refresh` (tests: a script that records the links).
    #[arg(long, value_name = "PROGRAM", global = true)]
    sysext_refresh_command: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The service's main loop: assess the boot, check on an interval, apply, reboot.
    Daemon,
    /// Running version and slot, the other slot, state, progress, last check and error.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Check for an update now (and apply it, as update_engine does).
    Check,
    /// Check, apply and reboot into the update right away.
    Update {
        /// Required: this reboots the node once the update is staged.
        #[arg(long)]
        now: bool,
    },
    /// Make the other slot's good version boot from the next boot on, for good.
    Rollback,
    /// Clear a failure and the versions refused after a rollback.
    Reset,
    /// The reboot lock of the `fleetlock` or `etcd-lock` strategy.
    Lock {
        #[command(subcommand)]
        command: LockCommand,
    },
    /// The system extensions of `[extensions.NAME]` in /etc/keelson/update.toml.
    Extensions {
        #[command(subcommand)]
        command: ExtensionsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ExtensionsCommand {
    /// (At boot, before systemd-sysext.service) link each OS-bound extension's file for the
    /// running OS version into /run/extensions; drop files for versions in neither slot.
    Link {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Each configured extension: version, link, files, last check and error.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Check the independent extensions now (no OS check): download, switch and merge a
    /// newer version.
    Check,
}

#[derive(Debug, Subcommand)]
enum LockCommand {
    /// This node's id and group, and (etcd) the semaphore's size and holders.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Release ID's slot: a holder that is gone for good (this node's own id is allowed).
    Unlock {
        /// The holder id (etcd: a machine id; FleetLock: the client id).
        id: String,
    },
    /// (etcd-lock) Set the number of slots, as `locksmithctl set-max`.
    SetMax {
        /// Slots.
        max: i64,
    },
}

fn main() -> anyhow::Result<()> {
    keelson_agent::failpoint::init();
    keelson_log::init(keelson_log::Style::default());
    let cli = Cli::parse();
    let mut paths = Paths::under(&cli.root);
    paths.disk = cli.disk.clone();
    paths.esp_mount = cli.esp.clone();
    let settings = Settings::load(&paths).context("reading the agent's settings")?;
    let mut agent = Agent::new(paths, settings)?;
    if let Some(program) = &cli.reboot_command {
        let program = program
            .to_str()
            .with_context(|| format!("--reboot-command {}: not UTF-8", program.display()))?;
        agent.reboot_command = vec![program.to_owned()];
    }
    if let Some(program) = &cli.sysext_refresh_command {
        let program = program.to_str().with_context(|| {
            format!("--sysext-refresh-command {}: not UTF-8", program.display())
        })?;
        agent.sysext_refresh_command = vec![program.to_owned()];
    }
    if let Some(ms) = cli.lock_backoff_ms {
        if ms == 0 {
            anyhow::bail!("--lock-backoff-ms must be at least 1");
        }
        agent.lock_backoff_base = Duration::from_millis(ms);
    }
    if let Some(ms) = cli.verify_poll_ms {
        if ms == 0 {
            anyhow::bail!("--verify-poll-ms must be at least 1");
        }
        agent.verify_poll = Duration::from_millis(ms);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Status { json } => {
            let status = agent.status()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{status}");
            }
        }
        Command::Daemon => runtime.block_on(daemon(&agent))?,
        Command::Check => {
            let _lock = agent.store().lock(true)?;
            let opts = CycleOptions {
                on_demand: true,
                reboot: RebootMode::Policy,
                check: true,
            };
            runtime
                .block_on(agent.cycle(opts))
                .context("update check")?;
            print!("{}", agent.status()?);
        }
        Command::Update { now } => {
            if !now {
                anyhow::bail!("`update` reboots the node when done: pass --now to confirm");
            }
            let _lock = agent.store().lock(true)?;
            let opts = CycleOptions {
                on_demand: true,
                reboot: RebootMode::Now,
                check: true,
            };
            runtime.block_on(agent.cycle(opts)).context("update")?;
            print!("{}", agent.status()?);
        }
        Command::Rollback => {
            let _lock = agent.store().lock(true)?;
            agent.rollback().context("rollback")?;
            print!("{}", agent.status()?);
            println!("The other slot boots from the next boot on; reboot to switch now.");
        }
        Command::Lock { command } => runtime.block_on(lock_command(&agent, command))?,
        Command::Extensions { command } => match command {
            ExtensionsCommand::Link { json } => {
                let out = agent
                    .extensions_link()
                    .context("linking the OS-bound extensions")?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&out)?);
                } else {
                    print!("{out}");
                }
            }
            ExtensionsCommand::Status { json } => {
                let views = keelson_agent::extensions::views(&agent.paths, &agent.settings);
                if json {
                    println!("{}", serde_json::to_string_pretty(&views)?);
                } else if views.is_empty() {
                    println!(
                        "no extensions configured ([extensions.NAME] in /etc/keelson/update.toml)"
                    );
                } else {
                    for v in &views {
                        print!("{v}");
                    }
                }
            }
            ExtensionsCommand::Check => {
                let _lock = agent.store().lock(true)?;
                runtime
                    .block_on(agent.extensions_check())
                    .context("checking the extensions")?;
                for v in keelson_agent::extensions::views(&agent.paths, &agent.settings) {
                    print!("{v}");
                }
            }
        },
        Command::Reset => {
            let _lock = agent.store().lock(true)?;
            agent.reset().context("reset")?;
            print!("{}", agent.status()?);
        }
    }
    Ok(())
}

async fn lock_command(agent: &Agent, command: LockCommand) -> anyhow::Result<()> {
    match command {
        LockCommand::Status { json } => {
            let st = agent
                .lock_status()
                .await
                .context("reading the reboot lock")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                println!("service:   {}", st.service);
                println!("group:     {:?}", st.group);
                println!("this node: {}", st.id);
                if let (Some(max), Some(avail)) = (st.max, st.available) {
                    println!("Available: {avail}");
                    println!("Max:       {max}");
                }
                match &st.holders {
                    Some(h) if h.is_empty() => println!("holders:   none"),
                    Some(h) => {
                        println!("holders:");
                        for id in h {
                            let me = if *id == st.id { " (this node)" } else { "" };
                            println!("  {id}{me}");
                        }
                    }
                    None => println!(
                        "holders:   (FleetLock has no read operation: see the server, e.g. `keelson admin fleetlock holders`)"
                    ),
                }
            }
        }
        LockCommand::Unlock { id } => {
            agent
                .lock_unlock(&id)
                .await
                .with_context(|| format!("releasing {id}'s reboot lock"))?;
            println!("released {id}");
        }
        LockCommand::SetMax { max } => {
            if max < 1 {
                anyhow::bail!("max must be at least 1");
            }
            let lock = agent.reboot_lock()?;
            let keelson_agent::lock::RebootLock::Etcd(etcd) = lock else {
                anyhow::bail!(
                    "set-max is for the etcd-lock strategy; FleetLock slots are set on the server"
                );
            };
            let before = etcd.read_or_create().await?.0.max;
            etcd.set_max(max)
                .await
                .context("setting the semaphore's max")?;
            println!("Old-Max: {before}");
            println!("Max: {max}");
        }
    }
    Ok(())
}

async fn daemon(agent: &Agent) -> anyhow::Result<()> {
    let first_check = std::time::Instant::now() + first_check_delay(rand::random::<f64>());
    tracing::info!(
        server = ?agent.settings.server,
        group = %agent.settings.group,
        first_check_in_secs = first_check
            .saturating_duration_since(std::time::Instant::now())
            .as_secs(),
        "keelson-agent started"
    );
    // Woken because another command staged an update: coordinate its reboot now, but leave
    // the update check to its own time.
    let mut woke_early = false;
    loop {
        let until_check = first_check.saturating_duration_since(std::time::Instant::now());
        let check = until_check <= Duration::from_secs(1) && !woke_early;
        let delay = {
            let _lock = agent.store().lock(true)?;
            let opts = CycleOptions {
                on_demand: false,
                reboot: RebootMode::Policy,
                check,
            };
            // A staged update waiting for its lock or window, and a lock release the service
            // has not confirmed yet (retried every few minutes), go on without asking the
            // Omaha server again until the check interval has passed.
            let rec = agent.store().load()?;
            let lock_only = match rec.state {
                State::Staged { .. } => true,
                State::Downloading { .. } => false,
                _ => agent.release_pending(&rec),
            };
            let checked_recently = rec.last_check.is_some_and(|t| {
                chrono::Utc::now() - t
                    < chrono::Duration::from_std(agent.settings.interval)
                        .unwrap_or(chrono::Duration::minutes(45))
            });
            let result = if lock_only && checked_recently {
                agent
                    .coordinate(RebootMode::Policy)
                    .await
                    .map(|r| (r, None))
            } else {
                agent.cycle(opts).await
            };
            match result {
                Ok((rec, poll)) => agent.next_delay(&rec, poll, rand::random::<f64>()),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "cycle failed");
                    Duration::from_secs(300)
                }
            }
        };
        // Before the first check, wake for it (or sooner, to report a verified boot).
        let delay = if check { delay } else { delay.min(until_check) };
        tracing::info!(seconds = delay.as_secs(), "next cycle");
        woke_early = sleep_unless_staged(agent, delay).await;
    }
}

/// How often the sleeping daemon looks whether the state file was rewritten.
const STATE_POLL: Duration = Duration::from_secs(10);

/// Sleeps for `delay`, or until another process (`check`, `update --now`) has rewritten the
/// state file and staged an update, looked at every [`STATE_POLL`]; whether it woke early.
/// Without this, an update that `check` staged while the reboot slot was taken waited for the
/// daemon's own next wake (up to its first check, 2-12 min after start) instead of the lock's
/// backoff. Other changes (`reset`, `rollback`, a refusal) wait for the next wake as before.
async fn sleep_unless_staged(agent: &Agent, delay: Duration) -> bool {
    use std::os::unix::fs::MetadataExt;
    let stamp = |p: &std::path::Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.ino(), m.mtime(), m.mtime_nsec()))
    };
    let path = agent.store().path();
    let mut seen = stamp(path);
    let deadline = tokio::time::Instant::now() + delay;
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep((deadline - now).min(STATE_POLL)).await;
        let now_stamp = stamp(path);
        if now_stamp != seen {
            seen = now_stamp;
            if agent
                .store()
                .load()
                .is_ok_and(|r| matches!(r.state, State::Staged { .. }))
            {
                tracing::info!("another command staged an update: next cycle now");
                return true;
            }
        }
    }
}
