//! `skiff`: one binary that runs a Kubernetes-compatible cluster.
//!
//! The binary only parses arguments and wires the component crates together.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

mod bench;
mod server;

/// A Kubernetes-compatible cluster in one binary.
#[derive(Parser)]
#[command(name = "skiff", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a control plane: API server on an embedded datastore (and, later, scheduler,
    /// controllers and a node agent).
    Server(server::ServerArgs),
    /// Measure skiff's speed and memory; every figure is printed beside a baseline measured in
    /// the same run.
    Bench(bench::BenchArgs),
}

/// The default data directory: `/var/lib/skiff` for root, else `$XDG_DATA_HOME/skiff`.
pub fn default_data_dir() -> PathBuf {
    let is_root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false);
    if is_root {
        return PathBuf::from("/var/lib/skiff");
    }
    match std::env::var_os("XDG_DATA_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("skiff"),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into()))
            .join(".local/share/skiff"),
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match cli.command {
            Command::Server(args) => server::run(args).await,
            Command::Bench(args) => bench::run(args).await,
        }
    })
}
