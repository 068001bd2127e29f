//! `skiff`: one binary that runs a Kubernetes-compatible cluster.
//!
//! The binary only parses arguments and wires the component crates together.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// mimalloc for the control plane, the C library's allocator for the node agent: see
/// `skiff_alloc`.
#[global_allocator]
static ALLOCATOR: skiff_alloc::Allocator = skiff_alloc::Allocator;

mod agent;
mod bench;
mod bench_store;
mod client;
mod controller_manager;
mod datastore;
mod dns;
mod images;
mod proxy;
mod scheduler;
mod server;
mod sim;

/// A Kubernetes-compatible cluster in one binary.
#[derive(Parser)]
#[command(name = "skiff", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a server: API server on an embedded datastore (or etcd), scheduler, controller
    /// manager and, unless --disable-agent, a node agent for this machine.
    Server(server::ServerArgs),
    /// Measure skiff's speed and memory; every figure is printed beside a baseline measured in
    /// the same run.
    Bench(bench::BenchArgs),
    /// Datastore tools: snapshot save/restore (SQLite or etcd) and migration between them.
    Datastore(datastore::DatastoreCommand),
    /// Simulate nodes (as kwok does): register them, keep their leases and status fresh, and
    /// run the pods bound to them on paper.
    Sim(sim::SimArgs),
    /// Run a node agent: register this machine as a Node and run its pods through containerd.
    Agent(agent::AgentArgs),
    /// Build OCI image archives without a registry, and import them.
    Images(images::ImagesArgs),
    /// Run the scheduler alone against an API server: bind pending pods to nodes.
    Scheduler(scheduler::SchedulerArgs),
    /// Run the controller manager alone against an API server: Deployments, ReplicaSets,
    /// garbage collection, namespaces, nodes and the other built-in controllers.
    ControllerManager(controller_manager::ControllerManagerArgs),
    /// Run the cluster DNS server alone against an API server: `cluster.local` names from a
    /// watch cache, everything else forwarded to the host's resolvers.
    Dns(dns::DnsArgs),
    /// Run the service proxy alone against an API server: Services as nftables rules on this
    /// node.
    Proxy(proxy::ProxyArgs),
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

/// Resolves on SIGINT or SIGTERM: how every long-running subcommand stops.
pub async fn shutdown_signal() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,hickory_server=warn")),
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
            Command::Datastore(args) => datastore::run(args).await,
            Command::Sim(args) => sim::run(args).await,
            Command::Agent(args) => agent::run(args).await,
            Command::Images(args) => images::run(args).await,
            Command::Scheduler(args) => scheduler::run(args).await,
            Command::ControllerManager(args) => controller_manager::run(args).await,
            Command::Dns(args) => dns::run(args).await,
            Command::Proxy(args) => proxy::run(args).await,
        }
    })
}
