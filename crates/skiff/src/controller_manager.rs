//! `skiff controller-manager`: the controllers alone, against any API server.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

/// Flags of `skiff controller-manager` (named after kube-controller-manager's).
#[derive(Args)]
pub struct ControllerManagerArgs {
    /// A kubeconfig for the API server (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Controllers to run: `*` for all, a name to enable one, `-name` to disable one.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub controllers: Vec<String>,
    /// Workers per workload controller.
    #[arg(long, default_value_t = 5)]
    pub concurrent_syncs: usize,
    /// Seconds a node may go without renewing its Lease before it is marked unreachable.
    #[arg(long, default_value_t = 40)]
    pub node_monitor_grace_period: u64,
    /// Toleration seconds added to pods for the not-ready and unreachable taints.
    #[arg(long, default_value_t = 300)]
    pub default_toleration_seconds: i64,
    /// The pod CIDR of the cluster, split into one range per node.
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
    /// The prefix length of each node's pod CIDR.
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size: u8,
    /// Terminated pods kept before the oldest are deleted.
    #[arg(long, default_value_t = 12500)]
    pub terminated_pod_gc_threshold: usize,
    /// The cluster CA published as `kube-root-ca.crt` in every namespace (default: the
    /// kubeconfig's certificate authority).
    #[arg(long)]
    pub root_ca_file: Option<PathBuf>,
}

/// Runs the controller manager until SIGINT or SIGTERM.
pub async fn run(args: ControllerManagerArgs) -> Result<()> {
    let cfg = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig: pass --kubeconfig")?,
    };
    let root_ca_pem = match &args.root_ca_file {
        Some(path) => Some(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        ),
        None => cfg.root_cert.as_ref().map(|certs| {
            certs
                .iter()
                .map(|der| pem_certificate(der))
                .collect::<String>()
        }),
    };
    let client = crate::client::api_client(cfg)?;
    let config = skiff_controllers::ControllerManagerConfig {
        controllers: args.controllers,
        workers: args.concurrent_syncs,
        node_monitor_grace_period: Duration::from_secs(args.node_monitor_grace_period),
        default_toleration_seconds: args.default_toleration_seconds,
        cluster_cidr: args.cluster_cidr,
        node_cidr_mask_size: args.node_cidr_mask_size,
        terminated_pod_gc_threshold: args.terminated_pod_gc_threshold,
        root_ca_pem,
    };
    tracing::info!("controller manager starting");
    skiff_controllers::run(client, config, crate::shutdown_signal()).await
}

/// One DER certificate as a PEM block.
fn pem_certificate(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ascii"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}
