//! `skiff bench scheduler`: the scheduling core alone (`schedule_many` on an in-memory
//! snapshot) beside the whole path through a real `skiff server` process: pods created over
//! HTTPS by concurrent clients, bound by the server's scheduler onto `skiff_sim` nodes, and
//! observed through a watch.
//!
//! Declared inside `bench` so that it shares that module's server process helpers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{ListParams, PostParams, WatchEvent, WatchParams};
use kube::Api;
use serde_json::json;
use skiff_sim::{Sim, SimConfig};

/// Flags of `skiff bench scheduler`.
#[derive(Args, Debug)]
pub struct SchedulerBench {
    /// Simulated nodes.
    #[arg(long, default_value_t = 5_000)]
    nodes: usize,
    /// Pods to create and schedule.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Concurrent clients creating the pods.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Give up on the end-to-end run after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
}

/// Every node has the simulator's default shape, so both figures place the same pods on the
/// same kind of nodes.
const NODE_CPU: &str = "4";
const NODE_MEMORY: &str = "16Gi";
const NODE_PODS: u32 = 110;
const NAMESPACE: &str = "bench-scheduler";

fn node(i: usize) -> Node {
    let name = format!("sim-{i}");
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "type": "sim"}},
        "status": {
            "capacity": {"cpu": NODE_CPU, "memory": NODE_MEMORY, "pods": NODE_PODS.to_string()},
            "allocatable": {"cpu": NODE_CPU, "memory": NODE_MEMORY, "pods": NODE_PODS.to_string()},
            "conditions": [{"type": "Ready", "status": "True"}]
        }
    }))
    .expect("node object")
}

fn pod(i: usize) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("pod-{i}"), "namespace": NAMESPACE,
            "uid": format!("uid-{i}"), "labels": {"app": format!("app-{}", i % 50)}},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}
    }))
    .expect("pod object")
}

/// Runs both measurements and prints them side by side.
pub async fn run(args: SchedulerBench) -> Result<()> {
    println!(
        "skiff bench scheduler: {} nodes ({NODE_CPU} cpu, {NODE_MEMORY}, {NODE_PODS} pods each), \
         {} pods (100m cpu, 128Mi), default plugins, NodeResourcesFit LeastAllocated",
        args.nodes, args.pods
    );
    let pure = pure_rate(args.nodes, args.pods);
    println!("in-memory schedule_many:         {pure:>10.0} pods/s");
    let e2e = end_to_end(&args).await?;
    println!(
        "API creates ({:>2} clients):        {:>10.0} pods/s   (the floor: pods arrive no faster)",
        args.clients, e2e.create_rate
    );
    println!(
        "end to end, first create..last bind: {:>7.0} pods/s   (in-memory core: {pure:.0} pods/s; \
         API creates: {:.0} pods/s)",
        e2e.rate, e2e.create_rate
    );
    println!(
        "bind latency (create ack..bind seen): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(e2e.p50),
        ms(e2e.p99),
        ms(e2e.max)
    );
    println!(
        "node registration ({} nodes):    {:.2} s",
        args.nodes,
        e2e.registration.as_secs_f64()
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn pure_rate(nodes: usize, pods: usize) -> f64 {
    let mut snapshot = skiff_scheduler::Snapshot::new((0..nodes).map(node).collect(), Vec::new());
    let pods: Vec<Pod> = (0..pods).map(pod).collect();
    let n = pods.len();
    let started = Instant::now();
    let placed = skiff_scheduler::schedule_many(&mut snapshot, pods);
    let secs = started.elapsed().as_secs_f64();
    let bound = placed.iter().filter(|p| p.is_some()).count();
    if bound != n {
        println!("warning: in-memory run placed only {bound} of {n} pods");
    }
    bound as f64 / secs
}

struct EndToEnd {
    registration: Duration,
    create_rate: f64,
    rate: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

async fn end_to_end(args: &SchedulerBench) -> Result<EndToEnd> {
    let (server, _) =
        super::start_server_with(&["--disable-agent", "--disable-controller-manager"]).await?;
    let client = super::client_for(&server.kubeconfig).await?;

    let started = Instant::now();
    let sim = Sim::start(
        client.clone(),
        SimConfig {
            nodes: args.nodes,
            cpu: NODE_CPU.into(),
            memory: NODE_MEMORY.into(),
            pods: NODE_PODS,
            ..SimConfig::default()
        },
    )
    .await
    .context("starting the simulated nodes")?;
    let registration = started.elapsed();

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut ns = Namespace::default();
    ns.metadata.name = Some(NAMESPACE.into());
    namespaces.create(&PostParams::default(), &ns).await?;

    // Acknowledgement times of creates and first sightings of binds, by pod name. A bind can be
    // seen before its create's response arrives; latency is then counted as zero.
    let acked: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let bound: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();

    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let rv = pods
        .list_metadata(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let total = args.pods;
    let watcher = {
        let pods = pods.clone();
        let bound = bound.clone();
        tokio::spawn(async move {
            let mut rv = rv;
            loop {
                let wp = WatchParams::default().timeout(290);
                let mut stream = pods.watch(&wp, &rv).await?.boxed();
                while let Some(ev) = stream.next().await {
                    let (p, is_bookmark) = match ev? {
                        WatchEvent::Added(p) | WatchEvent::Modified(p) => (p, false),
                        WatchEvent::Bookmark(b) => {
                            rv = b.metadata.resource_version;
                            (Pod::default(), true)
                        }
                        WatchEvent::Deleted(_) => continue,
                        WatchEvent::Error(e) => bail!("watch error: {e}"),
                    };
                    if is_bookmark {
                        continue;
                    }
                    if let Some(v) = &p.metadata.resource_version {
                        rv = v.clone();
                    }
                    if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                        let now = Instant::now();
                        let mut b = bound.lock().unwrap();
                        b.entry(p.metadata.name.unwrap_or_default()).or_insert(now);
                        if b.len() >= total {
                            return Ok(Instant::now());
                        }
                    }
                }
            }
        })
    };

    // Each client its own connection, as separate client processes would have: one shared
    // HTTP/2 connection would measure that connection rather than the server.
    let mut clients = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let c = super::client_for(&server.kubeconfig).await?;
        clients.push(Api::<Pod>::namespaced(c, NAMESPACE));
    }
    let first_create = Instant::now();
    let mut tasks = Vec::new();
    for (c, pods) in clients.into_iter().enumerate() {
        let acked = acked.clone();
        let clients = args.clients;
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            while i < total {
                let p = pod(i);
                let name = p.metadata.name.clone().unwrap_or_default();
                let mut p = p;
                p.metadata.uid = None;
                pods.create(&PostParams::default(), &p).await?;
                acked.lock().unwrap().insert(name, Instant::now());
                i += clients;
            }
            Ok::<_, kube::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let create_secs = first_create.elapsed().as_secs_f64();

    let deadline = Duration::from_secs(args.timeout_secs);
    let last_bind = match tokio::time::timeout(deadline, watcher).await {
        Ok(r) => r??,
        Err(_) => bail!(
            "only {} of {total} pods bound within {}s",
            bound.lock().unwrap().len(),
            args.timeout_secs
        ),
    };
    let secs = (last_bind - first_create).as_secs_f64();

    let mut latencies: Vec<Duration> = {
        let acked = acked.lock().unwrap();
        let bound = bound.lock().unwrap();
        bound
            .iter()
            .filter_map(|(name, b)| acked.get(name).map(|a| b.saturating_duration_since(*a)))
            .collect()
    };
    latencies.sort();
    let pct = |q: f64| -> Duration {
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    let out = EndToEnd {
        registration,
        create_rate: total as f64 / create_secs,
        rate: total as f64 / secs,
        p50: pct(0.50),
        p99: pct(0.99),
        max: latencies.last().copied().unwrap_or_default(),
    };
    sim.shutdown().await;
    drop(server);
    Ok(out)
}
