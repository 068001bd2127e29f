//! `skiff bench pods`: real pods on real containerd. A `skiff server` process (API server,
//! scheduler, controllers, no in-process agent) and a `skiff agent` process joined with the
//! server's token run on temporary data dirs; the bench measures the time from a pod's creation
//! to Running and to Ready (one pod at a time, then many at once) and the RSS of the agent and
//! of its containerd, with no pods and with the batch running. Everything started is stopped by
//! PID at the end, and the mounts, shims and bridge it left are removed.
//!
//! Declared inside `bench` so that it shares that module's server process helpers.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use kube::Api;
use serde_json::json;

use super::{ms, percentile, rss_kib, start_server_with};

/// Flags of `skiff bench pods`.
#[derive(Args, Debug)]
pub struct PodsBench {
    /// Pods created one at a time (each waited for, then deleted).
    #[arg(long, default_value_t = 20)]
    single: usize,
    /// Pods created at once in the batch scenario.
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// The pod CIDR the bench's node claims.
    #[arg(long, default_value = "10.88.231.0/24")]
    pod_cidr: String,
    /// The CNI bridge the bench's node uses.
    #[arg(long, default_value = "skbench0")]
    bridge_name: String,
    /// Runs the agent from this executable instead of this skiff (to compare builds of the
    /// agent against the same server).
    #[arg(long)]
    agent_exe: Option<std::path::PathBuf>,
}

const NODE: &str = "bench-pods-node";
const NS: &str = "default";
const IMAGE: &str = "busybox:1.36";

/// The `skiff agent` process, its data dir and what it leaves on the host.
struct AgentProc {
    child: Child,
    dir: tempfile::TempDir,
    bridge: String,
}

impl AgentProc {
    fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The containerd the agent started: found by our data dir in its command line.
    fn containerd_pid(&self) -> Option<u32> {
        let marker = self.data_dir().to_string_lossy().into_owned();
        pids_with(&marker).into_iter().find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim() == "containerd")
                .unwrap_or(false)
        })
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Shims and containers outlive containerd by design: stop whatever still runs from our
        // data dir, then the mounts (deepest first) and the bridge.
        let marker = self.data_dir().to_string_lossy().into_owned();
        for pid in pids_with(&marker) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&marker))
            .collect();
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in ours {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
        // The agent leaves its nftables tables in place on exit (so a restart keeps traffic
        // flowing); the bench's agent was the only one, so they go with it.
        for (family, table) in [
            ("ip", "skiff"),
            ("ip", "skiff-nat"),
            ("inet", "skiff-policy"),
        ] {
            let _ = Command::new("nft")
                .args(["delete", "table", family, table])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// PIDs of processes whose command line mentions `marker`.
fn pids_with(marker: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains(marker) {
            out.push(pid);
        }
    }
    out
}

/// Builds the busybox image (from Debian's busybox-static) into the agent's image directory,
/// where the agent imports it at start.
fn build_busybox(exe: &Path, agent_dir: &Path) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::copy("/bin/busybox", bin.join("busybox"))
        .context("copy /bin/busybox (apt-get install busybox-static)")?;
    let list = Command::new("/bin/busybox").arg("--list").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", bin.join(applet))?;
        }
    }
    for d in ["tmp", "etc", "www"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    let images = agent_dir.join("agent/images");
    std::fs::create_dir_all(&images)?;
    let out = Command::new(exe)
        .args(["images", "build", "--tag", IMAGE, "--cmd", "sh", "--rootfs"])
        .arg(root)
        .arg("-o")
        .arg(images.join("busybox.tar"))
        .output()?;
    if !out.status.success() {
        bail!(
            "images build: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A pod serving HTTP with a readiness probe, so that Ready means the probe passed; its shell
/// exits on SIGTERM so that deletion does not wait for the grace period.
fn pod(name: &str) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NS, "labels": {"bench": "pods"}},
        "spec": {
            "nodeName": NODE,
            "terminationGracePeriodSeconds": 2,
            "containers": [{
                "name": "web",
                "image": IMAGE,
                "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c",
                    "trap 'exit 0' TERM; httpd -p 8080 -h /www; while :; do sleep 1 & wait $!; done"],
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
            }]
        }
    }))?)
}

/// When each pod was first seen Running and Ready.
#[derive(Default, Clone, Copy)]
struct Seen {
    running: Option<Instant>,
    ready: Option<Instant>,
}

fn observe(seen: &mut HashMap<String, Seen>, p: &Pod) {
    let Some(name) = p.metadata.name.clone() else {
        return;
    };
    let now = Instant::now();
    let s = seen.entry(name).or_default();
    let status = p.status.as_ref();
    if s.running.is_none() && status.and_then(|s| s.phase.as_deref()) == Some("Running") {
        s.running = Some(now);
    }
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if s.ready.is_none() && ready {
        s.ready = Some(now);
    }
}

/// Creates `names` at once and returns, per pod, the time from its creation to Running and to
/// Ready, observed through one watch started before the first create.
async fn create_and_time(
    api: &Api<Pod>,
    names: &[String],
    timeout: Duration,
) -> Result<Vec<(Duration, Duration)>> {
    let rv = api
        .list_metadata(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut stream = api
        .watch(&WatchParams::default().labels("bench=pods"), &rv)
        .await?
        .boxed();
    let mut created = HashMap::new();
    let mut creates = Vec::new();
    for n in names {
        let api = api.clone();
        let p = pod(n)?;
        let n = n.clone();
        creates.push(tokio::spawn(async move {
            let t = Instant::now();
            api.create(&PostParams::default(), &p).await?;
            Ok::<_, kube::Error>((n, t))
        }));
    }
    for c in creates {
        let (n, t) = c.await??;
        created.insert(n, t);
    }
    let mut seen: HashMap<String, Seen> = HashMap::new();
    let deadline = tokio::time::Instant::now() + timeout;
    let done = |seen: &HashMap<String, Seen>| {
        names
            .iter()
            .all(|n| seen.get(n).is_some_and(|s| s.ready.is_some()))
    };
    while !done(&seen) {
        let ev = tokio::time::timeout_at(deadline, stream.next())
            .await
            .with_context(|| {
                let ready = seen.values().filter(|s| s.ready.is_some()).count();
                format!("{ready} of {} pods Ready after {timeout:?}", names.len())
            })?;
        match ev {
            Some(Ok(WatchEvent::Added(p) | WatchEvent::Modified(p))) => observe(&mut seen, &p),
            Some(Ok(_)) => {}
            Some(Err(e)) => bail!("watch: {e}"),
            None => bail!("watch ended"),
        }
    }
    Ok(names
        .iter()
        .map(|n| {
            let s = seen[n];
            let t = created[n];
            let running = s.running.or(s.ready).expect("ready pods were running");
            (
                running.saturating_duration_since(t),
                s.ready.expect("ready").saturating_duration_since(t),
            )
        })
        .collect())
}

/// Deletes every bench pod and waits until the API no longer has them.
async fn delete_all(api: &Api<Pod>, timeout: Duration) -> Result<()> {
    let lp = ListParams::default().labels("bench=pods");
    api.delete_collection(&DeleteParams::default(), &lp).await?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = api.list_metadata(&lp).await?.items.len();
        if left == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{left} pods still present {timeout:?} after deletion");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn report(label: &str, samples: &[(Duration, Duration)]) {
    let mut running: Vec<Duration> = samples.iter().map(|s| s.0).collect();
    let mut ready: Vec<Duration> = samples.iter().map(|s| s.1).collect();
    running.sort();
    ready.sort();
    println!(
        "{label:<34} to Running p50 {:>10}  p99 {:>10}   to Ready p50 {:>10}  p99 {:>10}",
        ms(percentile(&running, 0.5)),
        ms(percentile(&running, 0.99)),
        ms(percentile(&ready, 0.5)),
        ms(percentile(&ready, 0.99)),
    );
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn report_rss(label: &str, agent: &AgentProc) -> Result<()> {
    let a = rss_kib(agent.child.id())?;
    let c = agent
        .containerd_pid()
        .map(rss_kib)
        .transpose()?
        .unwrap_or(0);
    println!(
        "{label:<34} agent RSS {:>10}   containerd RSS {:>10}",
        mib(a),
        mib(c)
    );
    Ok(())
}

/// Runs the pods benchmark.
pub async fn run(b: PodsBench) -> Result<()> {
    let exe = std::env::current_exe()?;
    let (server, _) = start_server_with(&["--disable-agent"]).await?;
    let client = super::client_for(&server.kubeconfig).await?;
    let token = std::fs::read_to_string(server._dir.path().join("token"))
        .context("read the server's join token")?;
    let url = kube::config::Kubeconfig::read_from(&server.kubeconfig)?
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .context("server URL in the kubeconfig")?;

    let dir = tempfile::tempdir()?;
    build_busybox(&exe, dir.path())?;
    let child = Command::new(b.agent_exe.as_deref().unwrap_or(&exe))
        .args(["agent", "--server", &url, "--node-name", NODE])
        .args(["--pod-cidr", &b.pod_cidr, "--bridge-name", &b.bridge_name])
        .arg("--data-dir")
        .arg(dir.path())
        .env("SKIFF_TOKEN", token.trim())
        .env("SKIFF_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start skiff agent")?;
    let agent = AgentProc {
        child,
        dir,
        bridge: b.bridge_name.clone(),
    };
    let started = Instant::now();
    let nodes: Api<Node> = Api::all(client.clone());
    loop {
        let ready = nodes.get_opt(NODE).await?.is_some_and(|n| {
            n.status
                .and_then(|s| s.conditions)
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        });
        if ready {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("node {NODE} not Ready after 60s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "skiff bench pods: 1 node, busybox pods with a tcpSocket readiness probe (period 1 s)"
    );
    println!(
        "{:<34} {}",
        "agent start to node Ready",
        ms(started.elapsed())
    );
    // Let start-up settle so that the idle figure is not start-up's peak.
    tokio::time::sleep(Duration::from_secs(2)).await;
    report_rss("idle (0 pods)", &agent)?;

    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let mut single = Vec::new();
    for i in 0..b.single {
        let name = vec![format!("single-{i}")];
        single.extend(create_and_time(&pods, &name, Duration::from_secs(60)).await?);
        delete_all(&pods, Duration::from_secs(60)).await?;
    }
    report(&format!("1 pod at a time (x{})", b.single), &single);

    let names: Vec<String> = (0..b.batch).map(|i| format!("batch-{i}")).collect();
    let t = Instant::now();
    let batch = create_and_time(&pods, &names, Duration::from_secs(300)).await?;
    report(&format!("{} pods at once", b.batch), &batch);
    println!(
        "{:<34} {}",
        format!("all {} Ready after", b.batch),
        ms(t.elapsed())
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    report_rss(&format!("{} pods running", b.batch), &agent)?;
    let t = Instant::now();
    delete_all(&pods, Duration::from_secs(300)).await?;
    println!(
        "{:<34} {}",
        format!("{} pods deleted after", b.batch),
        ms(t.elapsed())
    );
    // Deleted from the API means stopped by the agent; give it a moment to remove sandboxes.
    let pods_dir = agent.data_dir().join("agent/pods");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && std::fs::read_dir(&pods_dir).map_or(0, |d| d.count()) > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(agent);
    drop(server);
    Ok(())
}
