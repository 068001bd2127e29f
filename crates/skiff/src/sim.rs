//! `skiff sim`: simulated nodes for tests and benchmarks.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use crate::server::parse_go_duration;

/// Flags of `skiff sim`.
#[derive(Args, Debug, Clone)]
pub struct SimArgs {
    /// How many nodes to simulate.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// Kubeconfig of the cluster [default: $KUBECONFIG, else ~/.kube/config]
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// CPU capacity of each node.
    #[arg(long, default_value = "4")]
    pub cpu: String,
    /// Memory capacity of each node.
    #[arg(long, default_value = "16Gi")]
    pub memory: String,
    /// Pod capacity of each node.
    #[arg(long, default_value_t = 110)]
    pub pods: u32,
    /// Ephemeral storage capacity of each node.
    #[arg(long, default_value = "100Gi")]
    pub ephemeral_storage: String,
    /// Extra node labels: `key=value,...`.
    #[arg(long, default_value = "")]
    pub labels: String,
    /// Node taints: `key=value:Effect,...` (or `key:Effect`).
    #[arg(long, default_value = "")]
    pub taints: String,
    /// Node `i` is named `<prefix><i>`.
    #[arg(long, default_value = "sim-")]
    pub name_prefix: String,
    /// How often each node renews its Lease (Go duration syntax).
    #[arg(long, default_value = "10s", value_parser = parse_go_duration)]
    pub lease_renew_interval: Duration,
    /// How often each node posts its status (Go duration syntax).
    #[arg(long, default_value = "1m", value_parser = parse_go_duration)]
    pub node_status_interval: Duration,
    /// Requests in flight at most, per kind of work.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
}

/// Registers the nodes and runs them until SIGINT or SIGTERM. A node labelled
/// `skiff.dev/sim-stopped=true` stops heartbeating (a dead kubelet) until the label goes.
pub async fn run(args: SimArgs) -> Result<()> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await?
        }
        None => kube::Config::infer()
            .await
            .context("finding a kubeconfig")?,
    };
    let client = crate::client::api_client(config)?;
    let cfg = skiff_sim::SimConfig {
        nodes: args.nodes,
        name_prefix: args.name_prefix,
        cpu: args.cpu,
        memory: args.memory,
        pods: args.pods,
        ephemeral_storage: args.ephemeral_storage,
        labels: skiff_sim::parse_labels(&args.labels)?,
        taints: skiff_sim::parse_taints(&args.taints)?,
        lease_renew_interval: args.lease_renew_interval,
        node_status_interval: args.node_status_interval,
        concurrency: args.concurrency,
        ..skiff_sim::SimConfig::default()
    };
    let n = cfg.nodes;
    let started = std::time::Instant::now();
    let sim = skiff_sim::Sim::start(client, cfg).await?;
    println!(
        "skiff sim is ready: {n} nodes registered in {:.1?}",
        started.elapsed()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    sim.shutdown().await;
    Ok(())
}
