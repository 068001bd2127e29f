//! `skiff proxy`: the service proxy alone, against any API server.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

/// Flags of `skiff proxy`.
#[derive(Args)]
pub struct ProxyArgs {
    /// A kubeconfig for the API server (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Addresses NodePorts answer on (default: the Node's InternalIP and ExternalIP).
    #[arg(long = "node-ip", value_delimiter = ',')]
    pub node_ips: Vec<IpAddr>,
}

/// Runs the proxy until SIGINT or SIGTERM.
pub async fn run(args: ProxyArgs) -> Result<()> {
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
    let node_name = match args.node_name {
        Some(n) => n,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("reading the host name: pass --node-name")?
            .trim()
            .to_lowercase(),
    };
    let mut config = skiff_proxy::ProxyConfig::new(node_name);
    config.node_addresses = args.node_ips;
    tracing::info!(node = %config.node_name, "service proxy starting");
    skiff_proxy::run(client, config, crate::shutdown_signal()).await
}
