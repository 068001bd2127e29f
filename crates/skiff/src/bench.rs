//! `skiff bench`: benchmarks that print each figure beside a baseline measured in the same run.

use anyhow::Result;
use clap::{Args, Subcommand};

/// Flags of `skiff bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand, Debug)]
enum What {
    /// API server: creates/s, LIST latency, watch latency, memory, start-up time.
    Api(ApiBench),
}

#[derive(Args, Debug)]
struct ApiBench {
    /// Objects for the LIST and memory scenarios.
    #[arg(long, default_value_t = 10_000)]
    objects: usize,
}

/// Runs a benchmark.
pub async fn run(args: BenchArgs) -> Result<()> {
    match args.what {
        What::Api(a) => {
            let _ = a.objects;
            anyhow::bail!("skiff bench api is not built yet")
        }
    }
}
