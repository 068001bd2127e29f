//! `skiff-agent`: the node agent (skiff's kubelet). It registers the machine as a Node, runs the
//! pods bound to it through containerd's CRI and reports their status.
//!
//! Layout under `<data-dir>/agent/`: `containerd/` (our containerd's config, state and socket),
//! `cni/` (network config and IPAM state), `images/` (`*.tar` OCI archives imported at start),
//! `pods/<uid>/` (volumes, hosts file, termination-message files), `logs/` (container logs) and
//! `pod-manifests/` (static pods, see [`staticpods`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};

pub mod env;
pub mod gc;
pub mod image;
pub mod net;
pub mod node;
pub mod pleg;
pub mod pods;
pub mod probe;
pub mod runtime;
pub mod server;
pub mod staticpods;
pub mod status;
pub mod volume;

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The Node's name (default: the host name).
    pub node_name: String,
    /// skiff's data directory; the agent keeps its files under `<data_dir>/agent`.
    pub data_dir: PathBuf,
    /// A CRI endpoint (`unix:///run/containerd/containerd.sock`); `None` starts our own containerd.
    pub container_runtime_endpoint: Option<String>,
    /// The address reported as the node's InternalIP (default: the host's primary address).
    pub node_ip: Option<IpAddr>,
    /// The pod CIDR to claim when the Node has no `spec.podCIDR` and the node IPAM controller
    /// gives it none within a few seconds.
    pub pod_cidr: String,
    /// The cluster DNS servers for `dnsPolicy: ClusterFirst`.
    pub cluster_dns: Vec<IpAddr>,
    /// The cluster's DNS domain.
    pub cluster_domain: String,
    /// The name of the CNI bridge (unique per agent when several share one machine).
    pub bridge_name: String,
    /// Extra labels for the Node.
    pub node_labels: BTreeMap<String, String>,
    /// The `pods` capacity.
    pub max_pods: u32,
    /// The cluster's pod network: other nodes' pod CIDRs inside it are routed to them, and
    /// pod traffic leaving it is masqueraded.
    pub cluster_cidr: String,
    /// Whether to run the service proxy in-process (off here; `skiff agent` and `skiff server`
    /// turn it on unless `--disable-kube-proxy`).
    pub kube_proxy: bool,
    /// Whether to enforce NetworkPolicies on this node (off here; the CLIs turn it on unless
    /// `--disable-network-policy`).
    pub network_policy: bool,
    /// The HTTP and HTTPS listen addresses of the built-in ingress controller; `None` runs none
    /// (the CLIs run it on ports 80 and 443 unless `--disable-ingress`).
    pub ingress: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
    /// The `ip` program and leading arguments, for the routes to other nodes' pods.
    pub ip_command: Vec<String>,
    /// The `nft` program and leading arguments, for the masquerade table and the proxy.
    pub nft_command: Vec<String>,
}

impl AgentConfig {
    /// Defaults for an agent on this machine keeping its files under `data_dir`.
    pub fn new(data_dir: PathBuf) -> AgentConfig {
        AgentConfig {
            node_name: node::hostname(),
            data_dir,
            container_runtime_endpoint: None,
            node_ip: None,
            pod_cidr: "10.42.0.0/24".into(),
            cluster_dns: vec![IpAddr::from([10, 43, 0, 10])],
            cluster_domain: "cluster.local".into(),
            bridge_name: "skiff0".into(),
            node_labels: BTreeMap::new(),
            max_pods: 110,
            cluster_cidr: "10.42.0.0/16".into(),
            kube_proxy: false,
            network_policy: false,
            ingress: None,
            ip_command: vec!["ip".into()],
            nft_command: vec!["nft".into()],
        }
    }

    /// `<data_dir>/agent`.
    pub fn agent_dir(&self) -> PathBuf {
        self.data_dir.join("agent")
    }
}

/// What every part of the running agent shares.
pub struct Context {
    pub config: AgentConfig,
    pub client: kube::Client,
    pub runtime: runtime::Runtime,
    /// The node's InternalIP (the pods' `hostIP`).
    pub node_ip: IpAddr,
    /// The node's allocatable resources (for `resourceFieldRef` defaults).
    pub allocatable: node::Resources,
    pub events: node::Recorder,
    /// The shared relist of the runtime's sandboxes and containers.
    pub pleg: Arc<pleg::Pleg>,
}

/// Registers the Node, retrying with backoff while the API server cannot be reached; returns
/// the node's pod CIDR.
async fn register_until_done(ctx: &Context) -> String {
    let mut delay = std::time::Duration::from_secs(1);
    loop {
        match node::register(ctx).await {
            Ok(cidr) => return cidr,
            Err(e) => {
                tracing::warn!(retry_in = ?delay, "registering the node: {e:#}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(30));
            }
        }
    }
}

/// Runs the node agent until `shutdown` resolves: starts (or connects to) the container
/// runtime, imports local images, registers the Node, keeps its Lease and status fresh and runs
/// the pods bound to it. Running pods survive the agent's exit and are adopted at its next start.
pub async fn run(
    config: AgentConfig,
    client: kube::Client,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let agent_dir = config.agent_dir();
    for d in ["images", "pods", "logs", "cni/ipam"] {
        std::fs::create_dir_all(agent_dir.join(d))
            .with_context(|| format!("create {}", agent_dir.join(d).display()))?;
    }
    let paths = runtime::ContainerdPaths::new(&agent_dir);
    let (containerd, rt, ctr_socket) = match &config.container_runtime_endpoint {
        Some(ep) => {
            let rt = runtime::Runtime::connect(ep)?;
            runtime::wait_ready(&rt, std::time::Duration::from_secs(10)).await?;
            let sock = rt.endpoint().to_path_buf();
            (None, rt, sock)
        }
        None => {
            let c = runtime::Containerd::start(paths.clone(), image::PAUSE_IMAGE).await?;
            let rt = runtime::Runtime::connect(&c.socket().to_string_lossy())?;
            let sock = c.socket();
            (Some(c), rt, sock)
        }
    };
    let result = run_with_runtime(config, client, rt, &paths, &ctr_socket, shutdown).await;
    if let Some(c) = containerd {
        c.stop().await;
    }
    result
}

async fn run_with_runtime(
    config: AgentConfig,
    client: kube::Client,
    rt: runtime::Runtime,
    paths: &runtime::ContainerdPaths,
    ctr_socket: &std::path::Path,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let agent_dir = config.agent_dir();
    image::import_local_images(ctr_socket, &agent_dir).await?;
    let node_ip = config.node_ip.unwrap_or_else(node::primary_ip);
    let allocatable = node::Resources::of_host(&agent_dir, config.max_pods).allocatable();
    let events = node::Recorder::new(client.clone(), &config.node_name);
    let pleg = Arc::new(pleg::Pleg::new(rt.clone()));
    let ctx = Arc::new(Context {
        config,
        client,
        pleg: pleg.clone(),
        runtime: rt,
        node_ip,
        allocatable,
        events,
    });
    // The relister and static pods need no API server: they start first, so that a node whose
    // API server is down (or is one of its static pods) still runs them, as kubelet does.
    let relist = tokio::spawn(pleg.run());
    let statics = staticpods::StaticUids::default();
    let static_pods = tokio::spawn(staticpods::run(ctx.clone(), statics.clone()));
    tokio::pin!(shutdown);
    let pod_cidr = tokio::select! {
        c = register_until_done(&ctx) => c,
        _ = &mut shutdown => {
            relist.abort();
            static_pods.abort();
            return Ok(());
        }
    };
    std::fs::create_dir_all(&paths.cni_conf_dir)?;
    std::fs::write(
        paths.cni_conf_dir.join("10-skiff.conflist"),
        runtime::cni_conflist(
            &ctx.config.bridge_name,
            &pod_cidr,
            &agent_dir.join("cni/ipam"),
        ),
    )?;
    tracing::info!(node = %ctx.config.node_name, %pod_cidr, "node agent running");
    let lease = tokio::spawn(node::lease_loop(ctx.clone()));
    let status = tokio::spawn(node::status_loop(ctx.clone()));
    let pods = tokio::spawn(pods::run(ctx.clone()));
    let gc = tokio::spawn(gc::run(ctx.clone(), statics, gc::GcConfig::default()));
    let network = net::start(&ctx);
    shutdown.await;
    network.into_iter().for_each(|t| t.abort());
    lease.abort();
    status.abort();
    pods.abort();
    relist.abort();
    static_pods.abort();
    gc.abort();
    Ok(())
}
