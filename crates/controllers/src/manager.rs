//! The manager: one shared [`Context`], every enabled controller, shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::runtime::Context;

/// Settings of the controller manager (upstream's kube-controller-manager flags).
#[derive(Debug, Clone)]
pub struct ControllerManagerConfig {
    /// Controllers to run: names, `*` for all, `-name` to disable one (upstream's `--controllers`).
    pub controllers: Vec<String>,
    /// Workers per workload controller (upstream's `--concurrent-*-syncs`, default 5).
    pub workers: usize,
    /// How long a node may go without renewing its Lease before it is Ready=Unknown.
    pub node_monitor_grace_period: Duration,
    /// Toleration seconds given to pods for the not-ready/unreachable taints.
    pub default_toleration_seconds: i64,
    /// The cluster pod CIDR nodes get their ranges from.
    pub cluster_cidr: String,
    /// The prefix length of each node's pod CIDR.
    pub node_cidr_mask_size: u8,
    /// Terminated pods kept before pod GC deletes the oldest (upstream's default 12500).
    pub terminated_pod_gc_threshold: usize,
    /// The cluster CA (PEM) published as `kube-root-ca.crt` in every namespace (upstream's
    /// `--root-ca-file`); `None` leaves the publisher off.
    pub root_ca_pem: Option<String>,
}

impl Default for ControllerManagerConfig {
    fn default() -> Self {
        ControllerManagerConfig {
            controllers: vec!["*".into()],
            workers: 5,
            node_monitor_grace_period: Duration::from_secs(40),
            default_toleration_seconds: 300,
            cluster_cidr: "10.42.0.0/16".into(),
            node_cidr_mask_size: 24,
            terminated_pod_gc_threshold: 12500,
            root_ca_pem: None,
        }
    }
}

impl ControllerManagerConfig {
    /// Whether the controller `name` is enabled by [`ControllerManagerConfig::controllers`].
    pub fn enabled(&self, name: &str) -> bool {
        let mut on = false;
        for c in &self.controllers {
            if c == name {
                return true;
            }
            if c.strip_prefix('-') == Some(name) {
                return false;
            }
            if c == "*" {
                on = true;
            }
        }
        on
    }
}

type ControllerFuture = std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;
type StartFn = fn(Arc<Context>) -> ControllerFuture;

/// Every controller by name, with its entry point.
fn controllers() -> Vec<(&'static str, StartFn)> {
    vec![
        ("replicaset", |c| Box::pin(crate::replicaset::run(c))),
        ("replicationcontroller", |c| {
            Box::pin(crate::replicaset::run_replication_controllers(c))
        }),
        ("deployment", |c| Box::pin(crate::deployment::run(c))),
        ("statefulset", |c| Box::pin(crate::statefulset::run(c))),
        ("daemonset", |c| Box::pin(crate::daemonset::run(c))),
        ("job", |c| Box::pin(crate::job::run(c))),
        ("cronjob", |c| Box::pin(crate::cronjob::run(c))),
        ("namespace", |c| Box::pin(crate::namespace::run(c))),
        ("serviceaccount", |c| {
            let ca = c.config.root_ca_pem.clone();
            Box::pin(crate::serviceaccount::run_with_ca(c, ca))
        }),
        ("endpoint", |c| Box::pin(crate::endpoints::run(c))),
        ("endpointslice", |c| Box::pin(crate::endpointslice::run(c))),
        ("garbagecollector", |c| Box::pin(crate::gc::run(c))),
        ("nodelifecycle", |c| Box::pin(crate::nodelifecycle::run(c))),
        ("podgc", |c| Box::pin(crate::podgc::run(c))),
    ]
}

/// Runs every enabled controller against `client` until `shutdown` completes.
pub async fn run(
    client: kube::Client,
    config: ControllerManagerConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let ctx = Arc::new(Context::new(client, config));
    let mut tasks = tokio::task::JoinSet::new();
    for (name, start) in controllers() {
        if !ctx.config.enabled(name) {
            continue;
        }
        let fut = start(ctx.clone());
        tasks.spawn(async move {
            tracing::info!(controller = name, "starting controller");
            if let Err(e) = fut.await {
                tracing::error!(controller = name, error = %format!("{e:#}"), "controller stopped");
            }
        });
    }
    shutdown.await;
    tasks.shutdown().await;
    Ok(())
}
