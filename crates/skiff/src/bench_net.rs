//! `skiff bench net`: the service proxy and the cluster DNS at scale. A real `skiff server`
//! process (API server and cluster DNS only) gets N selector-less Services with M endpoints
//! each, created over HTTPS by concurrent clients. Then:
//!
//! - the proxy (`skiff_proxy::run`, in this process) loads `table ip skiff` into a network
//!   namespace the bench creates and deletes, so the host's ruleset is never touched; the bench
//!   times the first full table, then single EndpointSlice writes from their acknowledgement
//!   until the rules show them, beside the pure `skiff_proxy::render` of the same state;
//! - UDP clients query the server's cluster DNS (found through the `kube-dns-skiff`
//!   EndpointSlice) with a mix of Service names and NXDOMAIN names, beside the same client loop
//!   against a trivial in-process echo responder.
//!
//! Declared inside `bench` so that it shares that module's server process helpers.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use tokio::net::UdpSocket;

use super::{client_for, make_namespace, ms, percentile, start_server_with};

/// Flags of `skiff bench net`.
#[derive(Args, Debug)]
pub struct NetBench {
    /// Selector-less Services (one TCP port each).
    #[arg(long, default_value_t = 1_000)]
    services: usize,
    /// Endpoints in each Service's EndpointSlice.
    #[arg(long, default_value_t = 10)]
    endpoints_per_service: usize,
    /// Single EndpointSlice changes timed through the proxy (alternately adding and removing an
    /// endpoint).
    #[arg(long, default_value_t = 50)]
    changes: usize,
    /// DNS queries per run (cluster DNS, then the echo baseline).
    #[arg(long, default_value_t = 50_000)]
    dns_queries: usize,
    /// Concurrent DNS clients (one UDP socket each).
    #[arg(long, default_value_t = 8)]
    dns_clients: usize,
    /// Concurrent API clients creating the objects.
    #[arg(long, default_value_t = 16)]
    clients: usize,
}

const NAMESPACE: &str = "bench-net";
const NODE: &str = "bench-net-node";
/// How often the bench looks for a finished `nft` load.
const PROBE: Duration = Duration::from_millis(1);
/// Give up on one proxy change, or on the first full table, after this long.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(60);
/// A DNS query without a reply after this long counts as lost.
const DNS_TIMEOUT: Duration = Duration::from_secs(2);

fn service_name(i: usize) -> String {
    format!("s{i:05}")
}

fn missing_name(i: usize) -> String {
    format!("missing-{i:05}")
}

/// The address of endpoint `j` of service `i` (10.200.0.1 onwards, all distinct).
fn endpoint_ip(per_service: usize, i: usize, j: usize) -> Ipv4Addr {
    let base = u32::from(Ipv4Addr::new(10, 200, 0, 0));
    Ipv4Addr::from(base + (i * per_service + j + 1) as u32)
}

/// The endpoint change `c` adds, from 10.250.0.1 onwards, apart from the initial ones.
fn extra_ip(c: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 250, 0, 0)) + (c + 1) as u32)
}

fn service(i: usize) -> Result<Service> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": service_name(i), "namespace": NAMESPACE},
        "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}
    }))?)
}

fn endpoints_json(ips: &[Ipv4Addr]) -> serde_json::Value {
    ips.iter()
        .map(|ip| {
            json!({"addresses": [ip.to_string()], "nodeName": NODE, "conditions": {"ready": true}})
        })
        .collect()
}

fn base_ips(per_service: usize, i: usize) -> Vec<Ipv4Addr> {
    (0..per_service)
        .map(|j| endpoint_ip(per_service, i, j))
        .collect()
}

fn slice_name(i: usize) -> String {
    format!("{}-1", service_name(i))
}

fn slice(per_service: usize, i: usize) -> Result<EndpointSlice> {
    Ok(serde_json::from_value(json!({
        "metadata": {
            "name": slice_name(i),
            "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": service_name(i)}
        },
        "addressType": "IPv4",
        "endpoints": endpoints_json(&base_ips(per_service, i)),
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    }))?)
}

/// The chain the proxy renders for one endpoint of service `i` (see `skiff_proxy::render`).
fn ep_chain(i: usize, ip: Ipv4Addr) -> String {
    format!(
        "ep_{NAMESPACE}_{}_tcp_http_{}_8080",
        service_name(i),
        ip.to_string().replace('.', "-")
    )
}

/// Runs both halves and prints every figure beside its baseline.
pub async fn run(args: NetBench) -> Result<()> {
    if args.services == 0 || args.endpoints_per_service == 0 {
        bail!("--services and --endpoints-per-service must be at least 1");
    }
    // Initial endpoints must stay below the extra ones (10.250.0.0) and changes below 10.255.
    if args.services.saturating_mul(args.endpoints_per_service) >= 50 << 16
        || args.changes >= 5 << 16
    {
        bail!("too many endpoints or changes for the bench's address ranges");
    }
    println!(
        "skiff bench net: {} services x {} endpoints = {} endpoints, {} changes, {} dns queries ({} clients)",
        args.services,
        args.endpoints_per_service,
        args.services * args.endpoints_per_service,
        args.changes,
        args.dns_queries,
        args.dns_clients
    );
    let (server, _) = start_server_with(&[
        "--disable-agent",
        "--disable-scheduler",
        "--disable-controller-manager",
    ])
    .await?;
    let client = client_for(&server.kubeconfig).await?;
    make_namespace(&client, NAMESPACE).await?;
    let started = Instant::now();
    create_objects(&client, &args).await?;
    let took = started.elapsed();
    println!(
        "create {} services + {} endpointslices ({} clients): {:.2} s  ({:.0} objects/s)",
        args.services,
        args.services,
        args.clients,
        took.as_secs_f64(),
        (2 * args.services) as f64 / took.as_secs_f64()
    );

    match proxy_skip_reason() {
        Some(why) => println!("proxy: skipped ({why})"),
        None => proxy(&client, &args).await?,
    }
    dns(&client, &args).await?;
    drop(server);
    Ok(())
}

async fn create_objects(client: &kube::Client, args: &NetBench) -> Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.clients.max(1) {
        let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
        let next = next.clone();
        let (n, per_service) = (args.services, args.endpoints_per_service);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                services
                    .create(&PostParams::default(), &service(i)?)
                    .await?;
                slices
                    .create(&PostParams::default(), &slice(per_service, i)?)
                    .await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

// ---- proxy ----

/// Why the proxy half cannot run here, if it cannot: it needs root for a network namespace and
/// the `nft` program.
fn proxy_skip_reason() -> Option<String> {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false);
    if !root {
        return Some("needs root for a network namespace".into());
    }
    let nft = Command::new("nft")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(nft, Ok(s) if s.success()) {
        return Some("no nft program".into());
    }
    None
}

/// A network namespace the bench created; dropping it deletes it with its nftables tables.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

/// Whether `chain` exists in `table ip skiff` now.
async fn chain_exists(nft: &[String], chain: &str) -> Result<bool> {
    let status = tokio::process::Command::new(&nft[0])
        .args(&nft[1..])
        .args(["list", "chain", "ip", skiff_proxy::TABLE, chain])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .context("running nft")?;
    Ok(status.success())
}

/// Where the proxy's `nft` wrapper appends the exit status of every `nft -f` it ran, so that
/// the bench learns when a load finished without listing the (large) table to find out.
struct Applies {
    path: std::path::PathBuf,
    /// Successful loads already accounted for.
    seen: usize,
}

impl Applies {
    /// The wrapped nft command: `ip netns exec NS nft "$@"`, then one line with its status.
    fn command(&self, netns: &str) -> Vec<String> {
        let script = format!(
            "ip netns exec \"$0\" nft \"$@\"; rc=$?; echo $rc >> '{}'; exit $rc",
            self.path.display()
        );
        vec!["sh".into(), "-c".into(), script, netns.into()]
    }

    fn successful(&self) -> usize {
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.trim() == "0")
            .count()
    }

    /// Waits for the first load after the last one accounted for that leaves `chain` present
    /// (or absent), and returns when that load finished; fails if the proxy stopped or
    /// `CHANGE_TIMEOUT` passed.
    async fn wait(
        &mut self,
        nft: &[String],
        chain: &str,
        present: bool,
        proxy: &tokio::task::JoinHandle<Result<()>>,
    ) -> Result<Instant> {
        let started = Instant::now();
        loop {
            let n = self.successful();
            if n > self.seen {
                let at = Instant::now();
                self.seen = n;
                // A load that began before the change reached the proxy does not count.
                if chain_exists(nft, chain).await? == present {
                    return Ok(at);
                }
            }
            if proxy.is_finished() {
                bail!("the proxy stopped");
            }
            if started.elapsed() > CHANGE_TIMEOUT {
                bail!(
                    "chain {chain} still {} after {CHANGE_TIMEOUT:?}",
                    if present { "missing" } else { "present" }
                );
            }
            tokio::time::sleep(PROBE).await;
        }
    }
}

async fn proxy(client: &kube::Client, args: &NetBench) -> Result<()> {
    let name = format!("skiff-bench-net-{}", std::process::id());
    let out = Command::new("ip").args(["netns", "add", &name]).output()?;
    if !out.status.success() {
        println!(
            "proxy: skipped (ip netns add: {})",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return Ok(());
    }
    let netns = Netns(name);
    let nft: Vec<String> = ["ip", "netns", "exec", &netns.0, "nft"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let node_ip: std::net::IpAddr = Ipv4Addr::new(192, 0, 2, 1).into();
    let marks = tempfile::tempdir()?;
    let mut applies = Applies {
        path: marks.path().join("applied"),
        seen: 0,
    };
    let config = skiff_proxy::ProxyConfig {
        node_name: NODE.into(),
        node_addresses: vec![node_ip],
        nft_command: applies.command(&netns.0),
        write_load_balancer_status: false,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let per = args.endpoints_per_service;
    let last = args.services - 1;

    let started = Instant::now();
    let task = tokio::spawn(skiff_proxy::run(client.clone(), config, async move {
        let _ = stopped.await;
    }));
    let result = async {
        // The table is replaced in one transaction, so the last endpoint's chain means all of it.
        let seen = applies
            .wait(
                &nft,
                &ep_chain(last, endpoint_ip(per, last, per - 1)),
                true,
                &task,
            )
            .await?;
        let initial = seen - started;

        // What checking the rules costs: done after each load, outside the timed span.
        let mut probes = Vec::new();
        for _ in 0..10 {
            let t = Instant::now();
            chain_exists(&nft, &ep_chain(0, endpoint_ip(per, 0, 0))).await?;
            probes.push(t.elapsed());
        }
        probes.sort();

        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
        let mut lat = Vec::with_capacity(args.changes);
        for c in 0..args.changes {
            // Pairs of changes on one service: add an endpoint, then remove it again.
            let i = (c / 2 * 7919) % args.services;
            let extra = extra_ip(c / 2);
            let mut ips = base_ips(per, i);
            let add = c % 2 == 0;
            if add {
                ips.push(extra);
            }
            let patch = json!({"endpoints": endpoints_json(&ips)});
            applies.seen = applies.successful();
            slices
                .patch(
                    &slice_name(i),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
            let acked = Instant::now();
            let seen = applies.wait(&nft, &ep_chain(i, extra), add, &task).await?;
            lat.push(seen - acked);
        }
        lat.sort();
        Ok::<_, anyhow::Error>((initial, probes, lat))
    }
    .await;
    let _ = stop.send(());
    match task.await {
        Ok(Err(e)) if result.is_ok() => return Err(e.context("proxy")),
        _ => {}
    }
    let (initial, probes, lat) = result?;

    // Baselines on the same state: the pure render, and one `nft -f` of its output.
    let services = Api::<Service>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let all_slices = Api::<EndpointSlice>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let node = skiff_proxy::NodeInfo {
        name: NODE.into(),
        addresses: vec![node_ip],
    };
    let mut renders = Vec::new();
    let mut text = String::new();
    for _ in 0..5 {
        let t = Instant::now();
        text = skiff_proxy::render(&services, &all_slices, &node);
        renders.push(t.elapsed());
    }
    renders.sort();
    let mut applies = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        skiff_proxy::apply(&nft, &text).await?;
        applies.push(t.elapsed());
    }
    applies.sort();
    drop(netns);

    let render = percentile(&renders, 0.5);
    let apply = percentile(&applies, 0.5);
    println!(
        "proxy: ruleset {:.0} KiB, {} lines; times are to the end of the proxy's nft -f (checking the rules after it: nft list chain {} p50)",
        text.len() as f64 / 1024.0,
        text.lines().count(),
        ms(percentile(&probes, 0.5))
    );
    println!(
        "proxy: first full table applied {} after the proxy started (its lists, render, nft -f)  (baseline: render alone {}, nft -f alone {}; ratio {:.1}x render)",
        ms(initial),
        ms(render),
        ms(apply),
        initial.as_secs_f64() / render.as_secs_f64()
    );
    println!(
        "proxy: endpointslice change to rules, {} changes: p50 {} p99 {} max {}  (baseline: render {} + nft -f {}; p50 is {:.1}x render, {:.2}x render+nft)",
        lat.len(),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default()),
        ms(render),
        ms(apply),
        percentile(&lat, 0.5).as_secs_f64() / render.as_secs_f64(),
        percentile(&lat, 0.5).as_secs_f64() / (render + apply).as_secs_f64()
    );
    Ok(())
}

// ---- dns ----

/// A DNS query for `name` (A, IN, recursion desired) in RFC 1035 wire format.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(name.len() + 18);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The id, rcode and answer count of a DNS response; `None` if it is not one.
fn dns_reply(buf: &[u8]) -> Option<(u16, u8, u16)> {
    if buf.len() < 12 || buf[2] & 0x80 == 0 {
        return None;
    }
    Some((
        u16::from_be_bytes([buf[0], buf[1]]),
        buf[3] & 0x0f,
        u16::from_be_bytes([buf[6], buf[7]]),
    ))
}

/// The name query `q` asks: three in four a Service, the fourth a name that does not exist.
fn query_name(q: usize, services: usize) -> (String, bool) {
    let i = (q / 4 * 7919 + q % 4) % services;
    if q % 4 == 3 {
        (
            format!("{}.{NAMESPACE}.svc.cluster.local", missing_name(i)),
            false,
        )
    } else {
        (
            format!("{}.{NAMESPACE}.svc.cluster.local", service_name(i)),
            true,
        )
    }
}

struct Load {
    qps: f64,
    lat: Vec<Duration>,
    lost: usize,
    wrong: usize,
}

/// Sends `queries` queries to `target` from `clients` tasks, each one query at a time on its
/// own socket. With `validate`, Service names must get an answer and missing names NXDOMAIN.
async fn dns_load(
    target: SocketAddr,
    queries: usize,
    clients: usize,
    services: usize,
    validate: bool,
) -> Result<Load> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients.max(1) {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let socket = UdpSocket::bind("127.0.0.1:0").await?;
            socket.connect(target).await?;
            let (mut lat, mut lost, mut wrong) = (Vec::new(), 0usize, 0usize);
            let mut buf = vec![0u8; 4096];
            loop {
                let q = next.fetch_add(1, Ordering::Relaxed);
                if q >= queries {
                    return Ok::<_, anyhow::Error>((lat, lost, wrong));
                }
                let (name, exists) = query_name(q, services);
                let id = q as u16;
                let t0 = Instant::now();
                socket.send(&dns_query(id, &name)).await?;
                let deadline = tokio::time::Instant::now() + DNS_TIMEOUT;
                loop {
                    let n = match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
                        Err(_) => {
                            lost += 1;
                            break;
                        }
                        Ok(n) => n?,
                    };
                    // A late reply to an earlier, timed-out query is skipped.
                    let Some((rid, rcode, answers)) = dns_reply(&buf[..n]) else {
                        continue;
                    };
                    if rid != id {
                        continue;
                    }
                    lat.push(t0.elapsed());
                    let ok = if exists {
                        rcode == 0 && answers > 0
                    } else {
                        rcode == 3
                    };
                    if validate && !ok {
                        wrong += 1;
                    }
                    break;
                }
            }
        }));
    }
    let mut load = Load {
        qps: 0.0,
        lat: Vec::with_capacity(queries),
        lost: 0,
        wrong: 0,
    };
    for t in tasks {
        let (lat, lost, wrong) = t.await??;
        load.lat.extend(lat);
        load.lost += lost;
        load.wrong += wrong;
    }
    load.qps = load.lat.len() as f64 / started.elapsed().as_secs_f64();
    load.lat.sort();
    Ok(load)
}

/// The cluster DNS address, from the EndpointSlice the server keeps for `kube-dns`.
async fn dns_address(client: &kube::Client) -> Result<SocketAddr> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "kube-system");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = slices.get_opt("kube-dns-skiff").await? {
            let ip = s
                .endpoints
                .first()
                .and_then(|e| e.addresses.first())
                .and_then(|a| a.parse::<std::net::IpAddr>().ok());
            let port = s
                .ports
                .iter()
                .flatten()
                .find(|p| p.protocol.as_deref() == Some("UDP"))
                .and_then(|p| p.port);
            if let (Some(ip), Some(port)) = (ip, port) {
                return Ok(SocketAddr::new(ip, u16::try_from(port)?));
            }
        }
        if Instant::now() > deadline {
            bail!("no kube-system/kube-dns-skiff EndpointSlice after 30s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the DNS server answers for the last Service, i.e. its cache holds them all.
async fn wait_dns_synced(target: SocketAddr, services: usize) -> Result<Duration> {
    let started = Instant::now();
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(target).await?;
    let name = format!(
        "{}.{NAMESPACE}.svc.cluster.local",
        service_name(services - 1)
    );
    let mut buf = vec![0u8; 4096];
    loop {
        socket.send(&dns_query(1, &name)).await?;
        if let Ok(n) = tokio::time::timeout(Duration::from_millis(200), socket.recv(&mut buf)).await
        {
            if let Some((1, 0, answers)) = dns_reply(&buf[..n?]) {
                if answers > 0 {
                    return Ok(started.elapsed());
                }
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("cluster dns at {target} does not answer {name} after 60s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Answers every datagram with itself, marked as a response: the cost of the client loop and
/// the loopback alone.
async fn echo_responder() -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = socket.local_addr()?;
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            if n > 2 {
                buf[2] |= 0x80;
            }
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    Ok((addr, task))
}

async fn dns(client: &kube::Client, args: &NetBench) -> Result<()> {
    let target = dns_address(client).await?;
    wait_dns_synced(target, args.services).await?;
    let load = dns_load(
        target,
        args.dns_queries,
        args.dns_clients,
        args.services,
        true,
    )
    .await?;
    let (echo_addr, echo_task) = echo_responder().await?;
    let echo = dns_load(
        echo_addr,
        args.dns_queries,
        args.dns_clients,
        args.services,
        false,
    )
    .await;
    echo_task.abort();
    let echo = echo?;
    println!(
        "dns: {} queries (3/4 service A, 1/4 NXDOMAIN), {} clients: {:.0} q/s, p50 {} p99 {}, lost {}, wrong {}  (baseline: in-process UDP echo {:.0} q/s, p50 {} p99 {}; DNS reaches {:.1}% of it)",
        args.dns_queries,
        args.dns_clients,
        load.qps,
        ms(percentile(&load.lat, 0.5)),
        ms(percentile(&load.lat, 0.99)),
        load.lost,
        load.wrong,
        echo.qps,
        ms(percentile(&echo.lat, 0.5)),
        ms(percentile(&echo.lat, 0.99)),
        100.0 * load.qps / echo.qps
    );
    if load.wrong > 0 {
        bail!("{} dns answers were wrong", load.wrong);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waited_for_chain_is_the_one_render_writes() {
        let mut svc = service(3).unwrap();
        let spec = svc.spec.as_mut().unwrap();
        spec.cluster_ip = Some("10.43.1.3".into());
        spec.cluster_ips = Some(vec!["10.43.1.3".into()]);
        let mut sl = slice(10, 3).unwrap();
        let mut ips = base_ips(10, 3);
        ips.push(extra_ip(0));
        sl.endpoints = serde_json::from_value(endpoints_json(&ips)).unwrap();
        let node = skiff_proxy::NodeInfo {
            name: NODE.into(),
            addresses: Vec::new(),
        };
        let text = skiff_proxy::render(&[svc], &[sl], &node);
        for ip in ips {
            let chain = format!("chain {} {{", ep_chain(3, ip));
            assert!(text.contains(&chain), "{chain} not in:\n{text}");
        }
    }

    #[test]
    fn endpoint_addresses_are_distinct() {
        let mut all: Vec<Ipv4Addr> = (0..50).flat_map(|i| base_ips(10, i)).collect();
        all.extend((0..25).map(extra_ip));
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
    }

    #[test]
    fn query_wire_format() {
        let q = dns_query(0x1234, "s00001.bench-net.svc.cluster.local.");
        let mut want = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in ["s00001", "bench-net", "svc", "cluster", "local"] {
            want.push(l.len() as u8);
            want.extend_from_slice(l.as_bytes());
        }
        want.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(q, want);
        // A query is not a reply; the same bytes with QR set, rcode 3 and one answer are.
        assert_eq!(dns_reply(&q), None);
        let mut r = q.clone();
        r[2] |= 0x80;
        r[3] |= 3;
        r[7] = 1;
        assert_eq!(dns_reply(&r), Some((0x1234, 3, 1)));
        assert_eq!(dns_reply(&r[..11]), None);
    }

    #[test]
    fn one_query_in_four_is_for_a_missing_name() {
        let missing = (0..400).filter(|&q| !query_name(q, 7).1).count();
        assert_eq!(missing, 100);
        assert!(query_name(3, 7).0.starts_with("missing-"));
        assert!(query_name(0, 7).0.ends_with(".bench-net.svc.cluster.local"));
    }

    #[tokio::test]
    async fn load_against_the_echo_responder_answers_every_query() {
        let (addr, task) = echo_responder().await.unwrap();
        let load = dns_load(addr, 300, 4, 10, false).await.unwrap();
        task.abort();
        assert_eq!((load.lat.len(), load.lost, load.wrong), (300, 0, 0));
        assert!(load.qps > 0.0);
        assert!(load.lat.windows(2).all(|w| w[0] <= w[1]));
    }
}
