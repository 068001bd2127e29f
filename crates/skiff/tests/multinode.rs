//! System test of a three-node cluster with the real binary: three "hosts" made of network
//! namespaces joined by a Linux bridge, `skiff server` (with its agent) in the first and
//! `skiff agent --server --token` in the other two, each with its own containerd. It checks the
//! pod network across nodes (host-gw routes, real source addresses), Services from every node,
//! NodePorts, cluster DNS, endpoint removal, NetworkPolicy and Ingress.
//!
//! Needs root and the Debian packages containerd, runc, containernetworking-plugins,
//! busybox-static, nftables and iproute2; skipped without them. Everything it creates is
//! inside its namespaces (removed at the end) except the bridge and the veth ends in the root
//! namespace, which it deletes as well.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{wait_for, KUBECTL};

/// The pod network; it only exists inside the test's namespaces.
const CLUSTER_CIDR: &str = "10.214.0.0/16";

fn step(msg: &str) {
    eprintln!("multinode: {msg}");
}

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"))
}

fn must(cmd: &str, args: &[&str]) {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A busybox root filesystem: the static binary plus a link per applet.
fn busybox_rootfs(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
    }
    for d in ["tmp", "etc", "www"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
}

/// The test's hosts: one network namespace each, wired to a bridge in the root namespace.
/// Dropping it deletes the namespaces (and with them everything the agents made inside) and the
/// bridge.
struct Hosts {
    bridge: String,
    /// (namespace, address)
    hosts: Vec<(String, String)>,
}

impl Hosts {
    fn create(tag: &str, subnet: &str, count: usize) -> Hosts {
        let bridge = format!("skmb{tag}");
        let mut hosts = Hosts {
            bridge: bridge.clone(),
            hosts: Vec::new(),
        };
        must("ip", &["link", "add", &bridge, "type", "bridge"]);
        must("ip", &["link", "set", &bridge, "up"]);
        for i in 0..count {
            let ns = format!("skm{tag}-{}", (b'a' + i as u8) as char);
            let addr = format!("{subnet}.{}", i + 2);
            must("ip", &["netns", "add", &ns]);
            hosts.hosts.push((ns.clone(), addr.clone()));
            let veth = format!("skmv{tag}{i}");
            must(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            );
            must("ip", &["link", "set", &veth, "master", &bridge, "up"]);
            let inns = |args: &[&str]| {
                let mut a = vec!["netns", "exec", &ns, "ip"];
                a.extend_from_slice(args);
                must("ip", &a);
            };
            inns(&["link", "set", "lo", "up"]);
            inns(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
            inns(&["link", "set", "eth0", "up"]);
            // Like any host, a default route (on the test's segment only): without one, the
            // Service addresses are unreachable before the proxy's DNAT ever sees a packet.
            inns(&["route", "add", "default", "dev", "eth0"]);
        }
        hosts
    }

    fn ns(&self, i: usize) -> &str {
        &self.hosts[i].0
    }

    fn addr(&self, i: usize) -> &str {
        &self.hosts[i].1
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for (ns, _) in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        // The veth ends in the root namespace die with their peers; the bridge is ours.
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
    }
}

/// `sh -c script` inside namespace `ns`.
fn ns_sh(ns: &str, script: &str) -> Output {
    run("ip", &["netns", "exec", ns, "sh", "-c", script])
}

/// `n` HTTP GETs of `url` from namespace `ns`, one body (trimmed) per successful request.
fn ns_get(ns: &str, url: &str, n: usize) -> Vec<String> {
    let script = format!(
        "for i in $(seq {n}); do timeout 3 busybox wget -qO- '{url}' && echo '@@'; done; true"
    );
    let out = ns_sh(ns, &script);
    String::from_utf8_lossy(&out.stdout)
        .split("@@")
        .map(|b| b.trim().to_string())
        .filter(|b| !b.is_empty())
        .collect()
}

/// A `skiff` process running in a namespace, stopped by PID; the containerd, shims and
/// containers it left are found by its data dir and killed.
struct Skiff {
    child: Child,
    data_dir: PathBuf,
}

impl Skiff {
    fn spawn(
        ns: &str,
        data_dir: &Path,
        args: &[&str],
    ) -> (Skiff, std::sync::mpsc::Receiver<String>) {
        // `ip netns exec` gives the process a fresh /sys for the namespace, without the cgroup
        // mounts runc needs: remount the root namespace's ones, then exec (so the PID is skiff's).
        let script = format!("{} exec \"$0\" \"$@\"", cgroup_mounts());
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "sh", "-c", &script])
            .arg(env!("CARGO_BIN_EXE_skiff"))
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .env("SKIFF_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start skiff");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        (
            Skiff {
                child,
                data_dir: data_dir.to_path_buf(),
            },
            rx,
        )
    }
}

/// Shell commands that mount the cgroup file systems as they are mounted in our namespace
/// (v1 hierarchies under a tmpfs, or v2), each followed by `&&`.
fn cgroup_mounts() -> String {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut script = String::new();
    for line in info.lines() {
        let Some((head, tail)) = line.split_once(" - ") else {
            continue;
        };
        let Some(point) = head.split(' ').nth(4) else {
            continue;
        };
        let t: Vec<&str> = tail.split(' ').collect();
        if !point.starts_with("/sys/fs/cgroup") || t.len() < 3 {
            continue;
        }
        script += &format!(
            "mkdir -p {point} && mount -t {} -o {} {} {point} && ",
            t[0], t[2], t[1]
        );
    }
    script
}

/// What the command lines of the processes under `data_dir` contain (the trailing slash keeps
/// `/x/a` from matching `/x/ab`).
fn marker(data_dir: &Path) -> String {
    format!("{}/", data_dir.display())
}

impl Drop for Skiff {
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
        for pid in common::leftovers(&marker(&self.data_dir)) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// kubectl against the API server, which listens on host A's loopback inside its namespace.
struct Kubectl {
    ns: String,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns, KUBECTL, "--kubeconfig"])
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, None);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn apply(&self, manifest: &str) {
        let out = self.run(&["apply", "-f", "-"], Some(manifest));
        assert!(
            out.status.success(),
            "apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn jsonpath(&self, what: &[&str], path: &str) -> String {
        let p = format!("jsonpath={path}");
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        args.extend_from_slice(&["-o", &p]);
        String::from_utf8_lossy(&self.run(&args, None).stdout).into_owned()
    }

    /// `sh -c cmd` in `pod`; stdout on success.
    fn exec(&self, pod: &str, cmd: &str) -> Option<String> {
        let out = self.run(&["exec", pod, "--", "sh", "-c", cmd], None);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Ready pods matching `selector`: name -> (IP, node).
    fn ready_pods(&self, selector: &str) -> BTreeMap<String, (String, String)> {
        let out = self.jsonpath(
            &["pods", "-l", selector],
            "{range .items[*]}{.metadata.name} {.status.podIP} {.spec.nodeName} \
             {.metadata.deletionTimestamp} \
             {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
        );
        out.lines()
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                // name ip node [deletionTimestamp] True
                (w.len() == 4 && w[3] == "True")
                    .then(|| (w[0].to_string(), (w[1].to_string(), w[2].to_string())))
            })
            .collect()
    }
}

/// The web pods: each serves its name at `/` and, through a CGI script, the address the
/// request came from at `/cgi-bin/ip`. Spread over every node.
const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: kubernetes.io/hostname
        whenUnsatisfiable: DoNotSchedule
        labelSelector: {matchLabels: {app: web}}
      containers:
      - name: httpd
        image: busybox:1.36
        imagePullPolicy: IfNotPresent
        command:
        - sh
        - -c
        - |
          echo $(POD_NAME) > /www/index.html
          mkdir -p /www/cgi-bin
          printf '#!/bin/sh\necho Content-Type: text/plain\necho\necho $REMOTE_ADDR\n' > /www/cgi-bin/ip
          chmod +x /www/cgi-bin/ip
          exec httpd -f -p 8080 -h /www
        env:
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        readinessProbe:
          httpGet: {path: /, port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-headless, namespace: default}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: default, labels: {app: other}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: busybox:1.36
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo other > /www/index.html && exec httpd -f -p 8080 -h /www"]
    readinessProbe:
      httpGet: {path: /, port: 8080}
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: default}
spec:
  selector: {app: other}
  ports: [{name: http, port: 80, targetPort: 8080}]
"#;

/// A client pod pinned to `node`, labelled `access=true` when `access`.
fn client(name: &str, node: &str, access: bool) -> String {
    let labels = if access {
        "{app: client, access: \"true\"}"
    } else {
        "{app: client}"
    };
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default, labels: {labels}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: sh
    image: busybox:1.36
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
"#
    )
}

const INGRESS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: hosts, namespace: default}
spec:
  ingressClassName: skiff
  rules:
  - host: a.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
  - host: b.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: other, port: {number: 80}}}}
"#;

const POLICY: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-access, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector: {matchLabels: {access: "true"}}
"#;

/// The `cni-*` pod namespace files under /run/netns: the agents create them from inside their
/// hosts' mount namespaces, so only the empty files show (and stay) in ours.
fn cni_netns_files() -> BTreeSet<String> {
    std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("cni-"))
        .collect()
}

#[test]
fn three_nodes_share_one_network() {
    if let Some(missing) = common::missing_agent_prerequisite() {
        eprintln!("skipping the multi-node system test: it needs {missing}");
        return;
    }
    let started = Instant::now();
    let pid = std::process::id();
    let tag = format!("{}", pid % 100_000);
    let subnet = format!("10.213.{}", pid % 200);
    let tmp = tempfile::tempdir().unwrap();
    let netns_before = cni_netns_files();

    // One image for every node.
    let rootfs = tmp.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let image = tmp.path().join("busybox.tar");
    let built = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["images", "build", "--tag", "busybox:1.36", "--cmd", "sh"])
        .arg("--rootfs")
        .arg(&rootfs)
        .arg("-o")
        .arg(&image)
        .output()
        .unwrap();
    assert!(built.status.success(), "images build failed");
    let dirs: Vec<PathBuf> = ["a", "b", "c"].iter().map(|n| tmp.path().join(n)).collect();
    for d in &dirs {
        std::fs::create_dir_all(d.join("agent/images")).unwrap();
        std::fs::copy(&image, d.join("agent/images/busybox.tar")).unwrap();
    }

    step("creating hosts");
    let hosts = Hosts::create(&tag, &subnet, 3);
    let mut procs: Vec<Skiff> = Vec::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        scenario(&hosts, &dirs, &tag, &mut procs)
    }));
    if result.is_err() {
        // What the cluster looked like when the step failed.
        let kubectl = Kubectl {
            ns: hosts.ns(0).to_string(),
            kubeconfig: dirs[0].join("kubeconfig.yaml"),
        };
        for args in [
            &["get", "nodes,pods,svc,endpointslices", "-A", "-o", "wide"][..],
            &["get", "events", "-A"][..],
        ] {
            let out = kubectl.run(args, None);
            eprintln!(
                "kubectl {args:?}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    step("stopping");
    // Processes first: the namespaces only go away once nothing runs in them.
    while let Some(p) = procs.pop() {
        drop(p);
    }
    drop(hosts);
    for f in cni_netns_files().difference(&netns_before) {
        let p = Path::new("/run/netns").join(f);
        // Still a mount point in our namespace: someone else's live pod, not ours.
        let mounted = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(&p.to_string_lossy()));
        if !mounted {
            let _ = std::fs::remove_file(&p);
        }
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    for d in &dirs {
        wait_for(
            "the agents' processes to go",
            Duration::from_secs(10),
            || common::leftovers(&marker(d)).is_empty().then_some(()),
        );
    }
    // Nothing of the cluster is left in the root namespace.
    // The kernel dismantles a namespace (and the veth ends it held) asynchronously.
    wait_for(
        "the bridge and veth ends to go",
        Duration::from_secs(20),
        || {
            let links = String::from_utf8_lossy(&run("ip", &["-br", "link"]).stdout).into_owned();
            (!links.contains(&format!("skmb{tag}")) && !links.contains(&format!("skmv{tag}")))
                .then_some(())
        },
    );
    let routes =
        String::from_utf8_lossy(&run("ip", &["route", "show", "proto", "115"]).stdout).into_owned();
    assert!(!routes.contains("10.214."), "routes left behind: {routes}");
    let namespaces = String::from_utf8_lossy(&run("ip", &["netns", "list"]).stdout).into_owned();
    assert!(
        !namespaces.contains(&format!("skm{tag}-")),
        "namespaces left behind: {namespaces}"
    );
    step(&format!("done in {:?}", started.elapsed()));
}

fn scenario(hosts: &Hosts, dirs: &[PathBuf], tag: &str, procs: &mut Vec<Skiff>) {
    let (a, b, c) = (hosts.addr(0), hosts.addr(1), hosts.addr(2));
    step("starting the server in host A");
    let (server, lines) = Skiff::spawn(
        hosts.ns(0),
        &dirs[0],
        &[
            "server",
            "--node-ip",
            a,
            "--bind-address",
            "0.0.0.0",
            "--https-listen-port",
            "6443",
            "--dns-port",
            "53",
            "--cluster-cidr",
            CLUSTER_CIDR,
            "--bridge-name",
            "skm0",
        ],
    );
    procs.push(server);
    let kubeconfig = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .expect("skiff server ready within 60s");
        if let Some(k) = line.strip_prefix("export KUBECONFIG=") {
            break PathBuf::from(k);
        }
    };
    // Keep draining so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let kubectl = Kubectl {
        ns: hosts.ns(0).to_string(),
        kubeconfig,
    };
    let token = std::fs::read_to_string(dirs[0].join("token")).expect("the join token");
    let server_url = format!("https://{a}:6443");
    for (i, node_ip) in [(1, b), (2, c)] {
        step(&format!(
            "starting the agent in host {}",
            ["A", "B", "C"][i]
        ));
        let name = format!("skm{tag}-node-{}", ["a", "b", "c"][i]);
        let bridge = format!("skm{i}");
        let (agent, lines) = Skiff::spawn(
            hosts.ns(i),
            &dirs[i],
            &[
                "agent",
                "--server",
                &server_url,
                "--token",
                token.trim(),
                "--node-ip",
                node_ip,
                "--node-name",
                &name,
                "--cluster-cidr",
                CLUSTER_CIDR,
                "--bridge-name",
                &bridge,
            ],
        );
        std::thread::spawn(move || for _ in lines {});
        procs.push(agent);
    }

    step("1. three Ready nodes with their own pod CIDRs and routes between them");
    // InternalIP -> (name, pod CIDR)
    let nodes: BTreeMap<String, (String, String)> =
        wait_for("three Ready nodes", Duration::from_secs(90), || {
            let out = kubectl.jsonpath(
                &["nodes"],
                "{range .items[*]}{.status.addresses[?(@.type==\"InternalIP\")].address} \
                 {.metadata.name} {.spec.podCIDR} \
                 {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
            );
            let ready: BTreeMap<String, (String, String)> = out
                .lines()
                .filter_map(|l| {
                    let w: Vec<&str> = l.split_whitespace().collect();
                    (w.len() == 4 && w[3] == "True")
                        .then(|| (w[0].to_string(), (w[1].to_string(), w[2].to_string())))
                })
                .collect();
            (ready.len() == 3).then_some(ready)
        });
    let cidrs: BTreeSet<&str> = nodes.values().map(|(_, c)| c.as_str()).collect();
    assert_eq!(cidrs.len(), 3, "pod CIDRs are not distinct: {nodes:?}");
    for (_, cidr) in nodes.values() {
        assert!(
            cidr.starts_with("10.214."),
            "pod CIDR {cidr} outside the cluster CIDR"
        );
    }
    let node_name = |ip: &str| nodes[ip].0.clone();
    for i in 0..3 {
        let me = hosts.addr(i);
        wait_for(
            &format!("host {i}'s routes to the other nodes' pods"),
            Duration::from_secs(20),
            || {
                let out = ns_sh(hosts.ns(i), "ip route show proto 115");
                let routes = String::from_utf8_lossy(&out.stdout).into_owned();
                nodes
                    .iter()
                    .filter(|(ip, _)| ip.as_str() != me)
                    .all(|(ip, (_, cidr))| routes.contains(&format!("{cidr} via {ip} ")))
                    .then_some(())
            },
        );
    }

    step("2. web pods on every node; pod to pod across nodes keeps the source address");
    kubectl.apply(WEB);
    kubectl.apply(&client("client-b", &node_name(b), false));
    kubectl.apply(&client("allowed-c", &node_name(c), true));
    let web = wait_for(
        "a ready web pod on each node",
        Duration::from_secs(120),
        || {
            let p = kubectl.ready_pods("app=web");
            let on: BTreeSet<&str> = p.values().map(|(_, n)| n.as_str()).collect();
            (p.len() == 3 && on.len() == 3).then_some(p)
        },
    );
    let clients = wait_for("the client pods", Duration::from_secs(60), || {
        let out = kubectl.jsonpath(
            &["pods", "-l", "app=client"],
            "{range .items[*]}{.metadata.name} {.status.podIP} {.status.phase}{\"\\n\"}{end}",
        );
        let running: BTreeMap<String, String> = out
            .lines()
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                (w.len() == 3 && w[2] == "Running").then(|| (w[0].to_string(), w[1].to_string()))
            })
            .collect();
        (running.len() == 2).then_some(running)
    });
    let (_, web_c_ip) = web_on_map(&web, &node_name(c));
    let seen = wait_for(
        "client-b (node B) to reach the web pod on node C",
        Duration::from_secs(30),
        || {
            kubectl.exec(
                "client-b",
                &format!("timeout 5 wget -qO- http://{web_c_ip}:8080/cgi-bin/ip"),
            )
        },
    );
    assert_eq!(
        peer_ip(&seen),
        clients["client-b"],
        "the server saw another source than the client pod's IP"
    );

    step("3. every node reaches the ClusterIP, spread over every endpoint");
    let cluster_ip = kubectl.jsonpath(&["svc", "web"], "{.spec.clusterIP}");
    let names: BTreeSet<String> = web.keys().cloned().collect();
    for i in 0..3 {
        let url = format!("http://{cluster_ip}/");
        // The Service's endpoints are ready; wait for this node's proxy to have them all.
        wait_for(
            &format!("host {i}'s proxy to know every web pod"),
            Duration::from_secs(20),
            || {
                let out = ns_sh(hosts.ns(i), "nft list table ip skiff");
                let rules = String::from_utf8_lossy(&out.stdout).into_owned();
                web.values()
                    .all(|(ip, _)| rules.contains(&format!("dnat to {ip}:8080")))
                    .then_some(())
            },
        );
        wait_for(
            &format!("host {i} to reach the ClusterIP"),
            Duration::from_secs(30),
            || (!ns_get(hosts.ns(i), &url, 1).is_empty()).then_some(()),
        );
        let bodies = ns_get(hosts.ns(i), &url, 30);
        assert_eq!(
            bodies.len(),
            30,
            "host {i}: some requests failed: {bodies:?}"
        );
        let got: BTreeSet<String> = bodies.into_iter().collect();
        assert_eq!(got, names, "host {i}: 30 requests did not reach every pod");
    }

    step("4. the NodePort answers on every node's address");
    let node_port = kubectl.jsonpath(&["svc", "web"], "{.spec.ports[0].nodePort}");
    for (i, addr) in [a, b, c].iter().enumerate() {
        let url = format!("http://{addr}:{node_port}/");
        let body = wait_for(
            &format!("the NodePort on {addr}"),
            Duration::from_secs(20),
            || ns_get(hosts.ns((i + 1) % 3), &url, 1).pop(),
        );
        assert!(
            names.contains(&body),
            "NodePort on {addr} answered {body:?}"
        );
    }

    step("5. DNS from inside a pod: the Service by name and the headless Service's pods");
    let body = wait_for(
        "client-b to reach the service by name",
        Duration::from_secs(30),
        || {
            kubectl.exec(
                "client-b",
                "timeout 5 wget -qO- http://web.default.svc.cluster.local",
            )
        },
    );
    assert!(names.contains(body.trim()), "wget got {body:?}");
    let want_ips: BTreeSet<String> = web.values().map(|(ip, _)| ip.clone()).collect();
    wait_for(
        "the headless service's records",
        Duration::from_secs(20),
        || {
            let out = kubectl.exec(
                "client-b",
                "nslookup web-headless.default.svc.cluster.local 10.43.0.10",
            )?;
            want_ips
                .iter()
                .all(|ip| out.contains(ip.as_str()))
                .then_some(())
        },
    );

    step("6. a deleted pod leaves the rotation on every node");
    let (gone_pod, gone_ip) = web_on_map(&web, &node_name(b));
    kubectl.ok(&["delete", "pod", &gone_pod, "--wait=false"]);
    wait_for(
        "the deleted pod to leave the endpoints",
        Duration::from_secs(30),
        || {
            let out = kubectl.jsonpath(
                &["endpointslices", "-l", "kubernetes.io/service-name=web"],
                "{range .items[*].endpoints[?(@.conditions.ready==true)]}{.addresses[0]} {end}",
            );
            (!out.split_whitespace().any(|ip| ip == gone_ip)).then_some(())
        },
    );
    for i in 0..3 {
        wait_for(
            &format!("host {i}'s proxy to drop the deleted pod"),
            Duration::from_secs(10),
            || {
                let out = ns_sh(hosts.ns(i), "nft list table ip skiff");
                let rules = String::from_utf8_lossy(&out.stdout).into_owned();
                (out.status.success() && !rules.contains(&format!("dnat to {gone_ip}:")))
                    .then_some(())
            },
        );
        let bodies = ns_get(hosts.ns(i), &format!("http://{cluster_ip}/"), 15);
        assert!(
            !bodies.is_empty(),
            "host {i}: the ClusterIP stopped answering"
        );
        assert!(
            !bodies.contains(&gone_pod),
            "host {i}: the deleted pod {gone_pod} still answered"
        );
    }
    // The replacement lands on node B again (the spread constraint), so every node has one.
    let web = wait_for(
        "three ready web pods again",
        Duration::from_secs(60),
        || {
            let p = kubectl.ready_pods("app=web");
            let on: BTreeSet<&str> = p.values().map(|(_, n)| n.as_str()).collect();
            (p.len() == 3 && on.len() == 3 && !p.contains_key(&gone_pod)).then_some(p)
        },
    );

    // The Ingress comes before the NetworkPolicy, which would also shut out the ingress
    // controller's connections to the web pods.
    step("8. the Ingress routes by host on node B's address");
    kubectl.apply(INGRESS);
    let web_names: BTreeSet<String> = web.keys().cloned().collect();
    let via_ingress = |host: &str| {
        let out = ns_sh(
            hosts.ns(0),
            &format!("timeout 5 busybox wget -qO- --header 'Host: {host}' http://{b}/"),
        );
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let body = wait_for(
        "a.test through the ingress",
        Duration::from_secs(30),
        || via_ingress("a.test"),
    );
    assert!(web_names.contains(&body), "a.test answered {body:?}");
    let body = wait_for(
        "b.test through the ingress",
        Duration::from_secs(30),
        || via_ingress("b.test"),
    );
    assert_eq!(body, "other", "b.test reached another service");

    step("7. a NetworkPolicy admits only pods labelled access=true, on every node");
    let (_, web_b_ip) = web_on_map(&web, &node_name(b));
    let (_, web_c_ip) = web_on_map(&web, &node_name(c));
    let fetch = |pod: &str, ip: &str| {
        kubectl
            .exec(
                pod,
                &format!("timeout 3 wget -qO- http://{ip}:8080/cgi-bin/ip"),
            )
            .map(|s| peer_ip(&s))
    };
    // Before the policy both clients get through.
    wait_for(
        "client-b to reach the new web pod on B",
        Duration::from_secs(20),
        || fetch("client-b", &web_b_ip),
    );
    kubectl.apply(POLICY);
    wait_for(
        "the policy to block client-b from node C's web pod",
        Duration::from_secs(20),
        || fetch("client-b", &web_c_ip).is_none().then_some(()),
    );
    assert_eq!(
        fetch("client-b", &web_b_ip),
        None,
        "an unlabelled pod reached a web pod on its own node"
    );
    for ip in [&web_b_ip, &web_c_ip] {
        assert_eq!(
            fetch("allowed-c", ip).as_deref(),
            Some(clients["allowed-c"].as_str()),
            "a pod labelled access=true did not reach {ip}"
        );
    }
}

/// The client address busybox httpd's CGI sees: it listens on IPv6, so IPv4 peers come as
/// `[::ffff:a.b.c.d]`.
fn peer_ip(remote_addr: &str) -> String {
    let s = remote_addr
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']');
    s.strip_prefix("::ffff:").unwrap_or(s).to_string()
}

/// The ready web pod on node `node`: (name, IP).
fn web_on_map(web: &BTreeMap<String, (String, String)>, node: &str) -> (String, String) {
    web.iter()
        .find(|(_, (_, n))| n == node)
        .map(|(name, (ip, _))| (name.clone(), ip.clone()))
        .unwrap_or_else(|| panic!("no web pod on {node}"))
}
