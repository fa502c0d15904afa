//! `cargo xtask bench NAME`: each bench prints its result next to its peer or physical limit,
//! measured side by side in the same run.

mod boot;
mod delta;
mod fleet;
mod image;
mod provision;
mod server;
mod update;
mod verity;

use anyhow::Result;
use clap::{Args, ValueEnum};

#[derive(Args)]
pub struct BenchArgs {
    /// Which benchmark to run.
    which: Bench,
}

#[derive(Clone, Copy, ValueEnum)]
enum Bench {
    /// 1 GiB hashed by keelson and by veritysetup.
    Verity,
    /// Cold and warm image build times.
    Image,
    /// Time to multi-user.target, next to stock Debian.
    Boot,
    /// Omaha update checks per second and p99, SQLite and PostgreSQL, next to axum hello-world.
    Server,
    /// 100,000 simulated nodes through a staged rollout.
    Fleet,
    /// Power-on to container app answering, with and without provisioning.
    Provision,
    /// The agent's apply (download, decompress, verify, write) next to a raw copy + sha256.
    Update,
    /// Bytes downloaded from v1 to v2 with chunk reuse, next to the full payload.
    Delta,
}

pub fn run(args: BenchArgs) -> Result<()> {
    match args.which {
        Bench::Verity => verity::run(),
        Bench::Image => image::run(),
        Bench::Boot => boot::run(),
        Bench::Server => server::run(),
        Bench::Fleet => fleet::run(),
        Bench::Provision => provision::run(),
        Bench::Update => update::run(),
        Bench::Delta => delta::run(),
    }
}

/// The median of `KEELSON_BENCH_RUNS` samples (of an even count, the larger middle one); 0
/// without samples.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_runs() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![52.4, 50.4]), 52.4);
        assert_eq!(median(vec![]), 0.0);
    }
}
