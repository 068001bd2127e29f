//! `skiff bench`: benchmarks that print each figure beside a baseline measured in the same run.
//!
//! `skiff bench api` starts a real `skiff server` process on a temporary data dir, drives it over
//! HTTPS with the `kube` client, and compares every API figure with the same operation done
//! directly on the datastore (the floor the API server adds its cost to).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Args, Subcommand};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, PostParams, WatchEvent, WatchParams};
use kube::Api;
use skiff_store::{SqliteOptions, SqliteStore, Store};

#[path = "bench_scheduler.rs"]
mod scheduler;

#[path = "bench_pods.rs"]
mod pods;

#[path = "bench_controllers.rs"]
mod controllers;

#[path = "bench_net.rs"]
mod net;

/// Flags of `skiff bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand, Debug)]
enum What {
    /// API server: creates/s (1 and 16 clients), LIST latency at N objects (full and
    /// paginated), watch latency with 100 watchers, RSS idle and at N objects, start-up time.
    Api(ApiBench),
    /// Datastore: create (1 and 16 clients), get, update, list of 10k keys and watch latency,
    /// on SQLite and etcd side by side.
    Store(crate::bench_store::StoreBench),
    /// Scheduler: the in-memory core beside pods created over the API and bound onto
    /// simulated nodes by a real server (pods/s, bind latency p50/p99).
    Scheduler(scheduler::SchedulerBench),
    /// Pods on real containerd: creation to Running/Ready (1 and N at once), agent and
    /// containerd RSS with 0 and N pods.
    Pods(pods::PodsBench),
    /// Controllers: a Deployment of 1,000 replicas on 100 simulated nodes until ready, and
    /// its rolling update until complete, beside the same pods created directly.
    Controllers(controllers::ControllersBench),
    /// Service proxy and cluster DNS: EndpointSlice change to nftables rules applied with N
    /// Services and M endpoints each (beside the pure render), DNS queries/s (beside a UDP echo).
    Net(net::NetBench),
}

#[derive(Args, Debug)]
struct ApiBench {
    /// Objects for the LIST and memory scenarios.
    #[arg(long, default_value_t = 10_000)]
    objects: usize,
    /// Creates per client in the throughput scenarios.
    #[arg(long, default_value_t = 2_000)]
    creates: usize,
    /// Watchers in the watch-latency scenario.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
}

/// Runs a benchmark.
pub async fn run(args: BenchArgs) -> Result<()> {
    match args.what {
        What::Api(a) => api(a).await,
        What::Store(a) => crate::bench_store::run(a).await,
        What::Scheduler(a) => scheduler::run(a).await,
        What::Pods(a) => pods::run(a).await,
        What::Controllers(a) => controllers::run(a).await,
        What::Net(a) => net::run(a).await,
    }
}

pub struct ServerProc {
    child: Child,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .context("VmRSS in /proc status")
}

/// Starts `skiff server` with only the API server and returns it with the time until it
/// answered `/readyz`.
async fn start_server() -> Result<(ServerProc, Duration)> {
    start_server_with(&[
        "--disable-agent",
        "--disable-scheduler",
        "--disable-controller-manager",
    ])
    .await
}

/// Starts `skiff server` with `flags` and returns it with the time until it answered `/readyz`.
pub async fn start_server_with(flags: &[&str]) -> Result<(ServerProc, Duration)> {
    let dir = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let started = Instant::now();
    let mut child = Command::new(&exe)
        .args([
            "server",
            "--bind-address",
            "127.0.0.1",
            "--https-listen-port",
            "0",
            "--advertise-address",
            "127.0.0.1",
            // Never port 53 on the host: any free port serves the cluster DNS.
            "--dns-port",
            "0",
        ])
        .args(flags)
        .arg("--data-dir")
        .arg(dir.path())
        .env("SKIFF_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let line = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut reader = std::io::BufReader::new(stdout);
        let mut found = None;
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            if let Some(k) = line.trim().strip_prefix("export KUBECONFIG=") {
                found = Some(PathBuf::from(k));
                break;
            }
            line.clear();
        }
        // Keep draining so that the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while reader.read_line(&mut sink).unwrap_or(0) > 0 {
                sink.clear();
            }
        });
        found
    })
    .await?;
    let Some(kubeconfig) = line else {
        bail!("server exited before it was ready")
    };
    let proc = ServerProc {
        child,
        kubeconfig,
        _dir: dir,
    };
    let client = client_for(&proc.kubeconfig).await?;
    loop {
        let req = http::Request::get("/readyz").body(Vec::new())?;
        if client.request_text(req).await.is_ok() {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("server not ready after 30s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok((proc, started.elapsed()))
}

async fn client_for(kubeconfig: &Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    crate::client::api_client(config)
}

fn configmap(name: &str) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.to_string());
    cm.data = Some(
        [(
            "key".to_string(),
            "some value of a typical size".to_string(),
        )]
        .into_iter()
        .collect(),
    );
    cm
}

async fn api_creates(
    client: &kube::Client,
    ns: &str,
    clients: usize,
    per_client: usize,
) -> Result<f64> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        tasks.push(tokio::spawn(async move {
            for i in 0..per_client {
                api.create(&PostParams::default(), &configmap(&format!("c{c}-{i}")))
                    .await?;
            }
            Ok::<_, kube::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((clients * per_client) as f64 / started.elapsed().as_secs_f64())
}

async fn store_creates(
    store: Arc<dyn Store>,
    prefix: &str,
    clients: usize,
    per_client: usize,
) -> Result<f64> {
    let value = Bytes::from(serde_json::to_vec(&configmap("x"))?);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let store = store.clone();
        let value = value.clone();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_client {
                store
                    .create(&format!("{prefix}{c}-{i}"), value.clone())
                    .await?;
            }
            Ok::<_, skiff_store::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((clients * per_client) as f64 / started.elapsed().as_secs_f64())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn api(a: ApiBench) -> Result<()> {
    println!(
        "skiff bench api: objects={} creates/client={} watchers={}",
        a.objects, a.creates, a.watchers
    );

    // Start-up, beside the bare cost of starting the binary.
    let bare_start = Instant::now();
    Command::new(std::env::current_exe()?)
        .arg("--version")
        .stdout(Stdio::null())
        .status()?;
    let bare = bare_start.elapsed();
    let (server, ready) = start_server().await?;
    let pid = server.child.id();
    println!(
        "start-to-ready: {}  (baseline: bare process start {}; ratio {:.1}x)",
        ms(ready),
        ms(bare),
        ready.as_secs_f64() / bare.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = rss_kib(pid)?;

    let client = client_for(&server.kubeconfig).await?;
    let store_dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> =
        SqliteStore::open(SqliteOptions::new(store_dir.path().join("bench.db")))?;

    // Creates per second.
    for clients in [1usize, 16] {
        let per = if clients == 1 {
            a.creates
        } else {
            a.creates.div_ceil(4)
        };
        let ns = format!("bench-c{clients}");
        make_namespace(&client, &ns).await?;
        let api_rate = api_creates(&client, &ns, clients, per).await?;
        let store_rate = store_creates(
            store.clone(),
            &format!("/registry/configmaps/c{clients}/"),
            clients,
            per,
        )
        .await?;
        println!(
            "creates/s, {clients:>2} clients: {api_rate:>8.0}  (baseline: datastore alone {store_rate:.0}/s; API reaches {:.0}% of it)",
            100.0 * api_rate / store_rate
        );
    }

    // LIST of N objects.
    let ns = "bench-list";
    make_namespace(&client, ns).await?;
    fill(&client, ns, a.objects).await?;
    let value = Bytes::from(serde_json::to_vec(&configmap("x"))?);
    for i in 0..a.objects {
        store
            .create(&format!("/registry/configmaps/list/o{i:06}"), value.clone())
            .await?;
    }
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let mut full = Vec::new();
    let mut paged = Vec::new();
    let mut raw = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let l = api.list(&ListParams::default()).await?;
        full.push(t.elapsed());
        if l.items.len() != a.objects {
            bail!("listed {} objects, expected {}", l.items.len(), a.objects);
        }
        let t = Instant::now();
        let mut lp = ListParams::default().limit(500);
        let mut n = 0;
        loop {
            let page = api.list(&lp).await?;
            n += page.items.len();
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => lp = lp.continue_token(&c),
                None => break,
            }
        }
        paged.push(t.elapsed());
        if n != a.objects {
            bail!(
                "paginated list returned {n} objects, expected {}",
                a.objects
            );
        }
        let t = Instant::now();
        store.list("/registry/configmaps/list/", "", 0, 0).await?;
        raw.push(t.elapsed());
    }
    full.sort();
    paged.sort();
    raw.sort();
    println!(
        "LIST {} configmaps: full {} p50, paginated (500/page) {} p50  (baseline: datastore list {}; full list is {:.1}x it)",
        a.objects,
        ms(percentile(&full, 0.5)),
        ms(percentile(&paged, 0.5)),
        ms(percentile(&raw, 0.5)),
        percentile(&full, 0.5).as_secs_f64() / percentile(&raw, 0.5).as_secs_f64()
    );
    let full_rss = rss_kib(pid)?;
    println!(
        "RSS: idle {:.1} MiB, with {} more objects {:.1} MiB  (baseline: idle; ratio {:.2}x)",
        idle_rss as f64 / 1024.0,
        a.objects + 2 * a.creates,
        full_rss as f64 / 1024.0,
        full_rss as f64 / idle_rss as f64
    );

    // Watch latency: from the create's acknowledgement to each watcher's event.
    let ns = "bench-watch";
    make_namespace(&client, ns).await?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let rv = api
        .list(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let events = 50usize;
    let mut watchers = Vec::new();
    for _ in 0..a.watchers {
        let api = api.clone();
        let rv = rv.clone();
        let sent = sent.clone();
        let mut stream = api
            .watch(&WatchParams::default().timeout(120), &rv)
            .await?
            .boxed();
        watchers.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(events);
            while lat.len() < events {
                match stream.try_next().await? {
                    Some(WatchEvent::Added(cm)) => {
                        let now = Instant::now();
                        let name = cm.metadata.name.unwrap_or_default();
                        let t0 = loop {
                            if let Some(t) = sent.lock().expect("lock").get(&name).copied() {
                                break t;
                            }
                            tokio::task::yield_now().await;
                        };
                        lat.push(now.saturating_duration_since(t0));
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            Ok::<_, kube::Error>(lat)
        }));
    }
    for i in 0..events {
        let name = format!("w{i}");
        // Recorded before the request so that the figure includes the write itself.
        sent.lock()
            .expect("lock")
            .insert(name.clone(), Instant::now());
        api.create(&PostParams::default(), &configmap(&name))
            .await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut all = Vec::new();
    for w in watchers {
        all.extend(w.await??);
    }
    all.sort();
    // Baseline: the datastore's own watch, create to event.
    let mut base = Vec::new();
    let mut ws = store
        .watch(
            "/registry/configmaps/watch/",
            store.current_revision().await?,
        )
        .await?;
    for i in 0..events {
        let t0 = Instant::now();
        store
            .create(&format!("/registry/configmaps/watch/w{i}"), value.clone())
            .await?;
        ws.next().await.context("store watch ended")??;
        base.push(t0.elapsed());
    }
    base.sort();
    println!(
        "watch latency, {} watchers x {events} events: p50 {} p99 {}  (baseline: datastore create+watch p50 {} p99 {})",
        a.watchers,
        ms(percentile(&all, 0.5)),
        ms(percentile(&all, 0.99)),
        ms(percentile(&base, 0.5)),
        ms(percentile(&base, 0.99))
    );
    drop(server);
    Ok(())
}

async fn make_namespace(client: &kube::Client, name: &str) -> Result<()> {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let mut ns = k8s_openapi::api::core::v1::Namespace::default();
    ns.metadata.name = Some(name.to_string());
    api.create(&PostParams::default(), &ns).await?;
    Ok(())
}

async fn fill(client: &kube::Client, ns: &str, n: usize) -> Result<()> {
    let clients = 16;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            while i < n {
                api.create(&PostParams::default(), &configmap(&format!("o{i:06}")))
                    .await?;
                i += clients;
            }
            Ok::<_, kube::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}
