//! `skiff scheduler`: the scheduler alone, against any API server.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

/// Flags of `skiff scheduler`.
#[derive(Args)]
pub struct SchedulerArgs {
    /// A kubeconfig for the API server (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// A `KubeSchedulerConfiguration` file (kubescheduler.config.k8s.io/v1).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Runs the scheduler until SIGINT or SIGTERM.
pub async fn run(args: SchedulerArgs) -> Result<()> {
    let config = match &args.config {
        Some(p) => skiff_scheduler::SchedulerConfig::load(p)?,
        None => skiff_scheduler::SchedulerConfig::default(),
    };
    let client = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
            crate::client::api_client(cfg)?
        }
        None => kube::Client::try_default()
            .await
            .context("no kubeconfig: pass --kubeconfig")?,
    };
    tracing::info!("scheduler starting");
    skiff_scheduler::run(client, config, crate::shutdown_signal()).await
}
