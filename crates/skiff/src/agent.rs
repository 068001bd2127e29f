//! `skiff agent`: the node agent joining an existing server.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

/// Arguments of `skiff agent`.
#[derive(Args)]
pub struct AgentArgs {
    /// The API server's URL (overrides the kubeconfig's server).
    #[arg(long)]
    pub server: Option<String>,
    /// The join token from the server's `<data-dir>/token` (`K10<ca-hash>::server:<secret>`):
    /// the agent verifies the server's CA with it and obtains its node certificates, stored
    /// under `<data-dir>/agent` and reused. Needs `--server`.
    #[arg(long, env = "SKIFF_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A kubeconfig with the agent's credentials.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Where the agent keeps its files (under `<data-dir>/agent`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The Node's name (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// A CRI endpoint to use instead of starting our own containerd.
    #[arg(long)]
    pub container_runtime_endpoint: Option<String>,
    /// The node's InternalIP (default: the host's primary address).
    #[arg(long)]
    pub node_ip: Option<IpAddr>,
    /// The pod CIDR to claim when the Node has none.
    #[arg(long)]
    pub pod_cidr: Option<String>,
    /// The CNI bridge's name (distinct per agent on one machine).
    #[arg(long)]
    pub bridge_name: Option<String>,
    /// The cluster's pod network: other nodes' pod CIDRs are routed to them and pod traffic
    /// leaving it is masqueraded.
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
    /// Do not run the service proxy on this node.
    #[arg(long)]
    pub disable_kube_proxy: bool,
    /// Do not enforce NetworkPolicies on this node.
    #[arg(long)]
    pub disable_network_policy: bool,
    /// Do not run the built-in ingress controller (ingressClass `skiff`) on this node.
    #[arg(long)]
    pub disable_ingress: bool,
    /// The ingress controller's HTTP port.
    #[arg(long, default_value_t = 80)]
    pub ingress_http_port: u16,
    /// The ingress controller's HTTPS port.
    #[arg(long, default_value_t = 443)]
    pub ingress_https_port: u16,
}

/// Builds the agent's configuration from the common arguments.
pub fn config(args: &AgentArgs) -> skiff_agent::AgentConfig {
    let mut c = skiff_agent::AgentConfig::new(
        args.data_dir
            .clone()
            .unwrap_or_else(crate::default_data_dir),
    );
    if let Some(n) = &args.node_name {
        c.node_name = n.clone();
    }
    c.container_runtime_endpoint = args.container_runtime_endpoint.clone();
    c.node_ip = args.node_ip;
    if let Some(p) = &args.pod_cidr {
        c.pod_cidr = p.clone();
    }
    if let Some(b) = &args.bridge_name {
        c.bridge_name = b.clone();
    }
    c.cluster_cidr = args.cluster_cidr.clone();
    c.kube_proxy = !args.disable_kube_proxy;
    c.network_policy = !args.disable_network_policy;
    c.ingress = ingress_listen(
        args.disable_ingress,
        args.ingress_http_port,
        args.ingress_https_port,
    );
    c
}

/// The ingress controller's listen addresses (every address of the node), or none.
pub fn ingress_listen(
    disabled: bool,
    http: u16,
    https: u16,
) -> Option<(std::net::SocketAddr, std::net::SocketAddr)> {
    let any = std::net::IpAddr::from([0, 0, 0, 0]);
    (!disabled).then(|| ((any, http).into(), (any, https).into()))
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(args: AgentArgs) -> Result<()> {
    if let Some(token) = &args.token {
        return run_joined(&args, token).await;
    }
    let path = args
        .kubeconfig
        .clone()
        .context("--kubeconfig or --token is required")?;
    let kc = kube::config::Kubeconfig::read_from(&path)
        .with_context(|| format!("read {}", path.display()))?;
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    if let Some(s) = &args.server {
        cfg.cluster_url = s.parse().context("--server")?;
    }
    let client = crate::client::api_client(cfg)?;
    let config = config(&args);
    skiff_agent::run(config, client, crate::shutdown_signal()).await
}

/// `--token`: obtains (or reuses) the node's certificates, then runs the agent and its API.
async fn run_joined(args: &AgentArgs, token: &str) -> Result<()> {
    let server = args
        .server
        .as_deref()
        .context("--server https://HOST:PORT is required with --token")?;
    run_with_token(server, token, config(args), crate::shutdown_signal()).await
}

/// Joins the cluster at `server` with `token` and runs the agent and its API until `shutdown`.
/// `skiff server` runs its own machine's agent this way, over loopback.
pub async fn run_with_token(
    server: &str,
    token: &str,
    config: skiff_agent::AgentConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<()> {
    let node_ip = config.node_ip.unwrap_or_else(skiff_agent::node::primary_ip);
    let creds = skiff_agent::server::bootstrap::ensure_credentials(
        server,
        token,
        &config.agent_dir(),
        &config.node_name,
        &[node_ip.to_string()],
    )
    .await
    .context("joining the cluster")?;
    let client = crate::client::api_client(creds.kube_config().await?)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let api_config = config.clone();
    let api = tokio::spawn(async move {
        let mut rx = stop_rx;
        let stopped = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        if let Err(e) = skiff_agent::server::run(
            &api_config,
            &creds,
            skiff_agent::server::AGENT_PORT,
            stopped,
        )
        .await
        {
            tracing::error!(error = format!("{e:#}"), "agent API failed");
        }
    });
    let result = skiff_agent::run(config, client, shutdown).await;
    let _ = stop_tx.send(true);
    let _ = api.await;
    result
}
