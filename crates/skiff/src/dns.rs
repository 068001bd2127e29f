//! `skiff dns`: the cluster DNS server alone, against any API server.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

/// Flags of `skiff dns`.
#[derive(Args)]
pub struct DnsArgs {
    /// A kubeconfig for the API server (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// UDP and TCP address to serve on.
    #[arg(long, default_value = "10.43.0.10:53")]
    pub listen: SocketAddr,
    /// The cluster domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// A resolv.conf whose nameservers get every name outside the cluster domain.
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub resolv_conf: String,
}

/// Serves cluster DNS until SIGINT or SIGTERM.
pub async fn run(args: DnsArgs) -> Result<()> {
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
    let upstreams = skiff_dns::read_resolv_conf(&args.resolv_conf)
        .with_context(|| format!("reading {}", args.resolv_conf))?;
    let config = skiff_dns::DnsConfig {
        listen: args.listen,
        domain: args.cluster_domain,
        upstreams,
    };
    skiff_dns::run(client, config, crate::shutdown_signal()).await
}
