//! System test of a one-node cluster's networking with the real binary: `skiff server` with its
//! own agent (containerd, runc, the CNI bridge), which runs the service proxy in-process, and the
//! server's cluster DNS. A Deployment of busybox httpd pods behind ClusterIP, NodePort and
//! headless Services is reached from the host and from inside a pod by name.
//!
//! Needs root and the Debian packages containerd, runc, containernetworking-plugins,
//! busybox-static, nftables and iproute2; skipped without them. Everything it creates on the
//! host (bridge, nftables tables, containerd and its shims) is removed at the end.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{wait_for, KUBECTL};

/// A cluster CIDR and bridge no other test uses, so parallel tests never share routes.
const CLUSTER_CIDR: &str = "10.123.0.0/16";
const BRIDGE: &str = "sknet0";

/// The host's primary address: the one the default route leaves from.
fn host_ip() -> IpAddr {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    s.connect("10.255.255.255:1").unwrap();
    s.local_addr().unwrap().ip()
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

/// `skiff server` with its agent; stopped by PID, and everything it left on the host removed.
struct Cluster {
    child: Child,
    data_dir: PathBuf,
    kubeconfig: PathBuf,
}

impl Cluster {
    fn start(data_dir: &Path, node_ip: IpAddr) -> Cluster {
        let mut child = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["server", "--https-listen-port", "0", "--dns-port", "0"])
            .args(["--node-ip", &node_ip.to_string()])
            .args(["--cluster-cidr", CLUSTER_CIDR, "--bridge-name", BRIDGE])
            .arg("--data-dir")
            .arg(data_dir)
            .env("SKIFF_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start skiff server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if let Some(k) = line.strip_prefix("export KUBECONFIG=") {
                    let _ = tx.send(PathBuf::from(k));
                }
            }
            for _ in lines {}
        });
        let mut cluster = Cluster {
            child,
            data_dir: data_dir.to_path_buf(),
            kubeconfig: PathBuf::new(),
        };
        cluster.kubeconfig = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("skiff server ready within 60s");
        cluster
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn apply(&self, manifest: &str) {
        let mut child = Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(manifest.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
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
        String::from_utf8_lossy(&self.kubectl(&args).stdout).into_owned()
    }

    /// `sh -c cmd` in `pod`; stdout on success.
    fn exec(&self, pod: &str, cmd: &str) -> Option<String> {
        let out = self.kubectl(&["exec", pod, "--", "sh", "-c", cmd]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The ready web pods: (name, IP).
    fn ready_pods(&self) -> Vec<(String, String)> {
        let out = self.jsonpath(
            &["pods", "-l", "app=web"],
            "{range .items[*]}{.metadata.name} {.status.podIP} {.metadata.deletionTimestamp} \
             {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
        );
        out.lines()
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                // name ip [deletionTimestamp] True
                (w.len() == 3 && w[2] == "True").then(|| (w[0].to_string(), w[1].to_string()))
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Shims and containers outlive the agent: stop them by PID, then unmount.
        common::remove_agent_leftovers(&self.data_dir);
        let _ = Command::new("ip")
            .args(["link", "del", BRIDGE])
            .stderr(Stdio::null())
            .status();
        // The proxy and the agent leave their tables in place on exit (so a restart keeps
        // traffic flowing); only they are deleted, the host's other tables stay.
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

/// `GET /` over HTTP/1.0; the response body.
fn http_get(addr: &str) -> Option<String> {
    let mut s =
        std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (_, body) = out.split_once("\r\n\r\n")?;
    Some(body.trim().to_string())
}

const MANIFEST: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: busybox:1.36
        imagePullPolicy: IfNotPresent
        command: ["sh", "-c", "echo $(POD_NAME) > /www/index.html && exec httpd -f -p 8080 -h /www"]
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
"#;

#[test]
fn services_and_dns_reach_real_pods() {
    if let Some(missing) = common::missing_agent_prerequisite() {
        eprintln!("skipping the network system test: it needs {missing}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let rootfs = tmp.path().join("rootfs");
    busybox_rootfs(&rootfs);
    std::fs::create_dir_all(data.join("agent/images")).unwrap();
    let built = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["images", "build", "--tag", "busybox:1.36", "--cmd", "sh"])
        .arg("--rootfs")
        .arg(&rootfs)
        .arg("-o")
        .arg(data.join("agent/images/busybox.tar"))
        .output()
        .unwrap();
    assert!(built.status.success(), "images build failed");

    let node_ip = host_ip();
    let cluster = Cluster::start(&data, node_ip);
    let node = wait_for("the node to register", Duration::from_secs(60), || {
        let n = cluster.jsonpath(&["nodes"], "{.items[0].metadata.name}");
        (!n.is_empty()).then_some(n)
    });
    wait_for("the node to be Ready", Duration::from_secs(60), || {
        (cluster.jsonpath(
            &["node", &node],
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        ) == "True")
            .then_some(())
    });
    assert_eq!(
        cluster.jsonpath(
            &["node", &node],
            "{.status.addresses[?(@.type==\"InternalIP\")].address}"
        ),
        node_ip.to_string(),
        "the Node's InternalIP is --node-ip"
    );
    // The server's DNS is published as kube-system/kube-dns.
    let dns_port = wait_for(
        "the kube-dns EndpointSlice",
        Duration::from_secs(20),
        || {
            let out = cluster.jsonpath(
                &[
                    "endpointslices",
                    "-n",
                    "kube-system",
                    "-l",
                    "kubernetes.io/service-name=kube-dns",
                ],
                "{.items[0].endpoints[0].addresses[0]} {.items[0].ports[?(@.name==\"dns\")].port}",
            );
            let (ip, port) = out.split_once(' ')?;
            (ip == node_ip.to_string()).then(|| port.parse::<u16>().ok())?
        },
    );
    assert_ne!(dns_port, 0);
    assert_eq!(
        cluster.jsonpath(
            &["svc", "-n", "kube-system", "kube-dns"],
            "{.spec.clusterIP}"
        ),
        "10.43.0.10"
    );

    cluster.apply(MANIFEST);
    let pods = wait_for("two ready web pods", Duration::from_secs(90), || {
        let p = cluster.ready_pods();
        (p.len() == 2).then_some(p)
    });
    for (_, ip) in &pods {
        assert!(ip.starts_with("10.123.0."), "pod IP {ip} outside the CIDR");
    }
    let names: BTreeSet<String> = pods.iter().map(|(n, _)| n.clone()).collect();
    // Pods' egress is masqueraded by the agent's own table, only when it leaves the cluster CIDR.
    wait_for("the masquerade table", Duration::from_secs(10), || {
        let nat = Command::new("nft")
            .args(["list", "table", "ip", "skiff-nat"])
            .output()
            .ok()?;
        String::from_utf8_lossy(&nat.stdout)
            .contains("ip saddr 10.123.0.0/16 ip daddr != 10.123.0.0/16")
            .then_some(())
    });
    let cluster_ip = cluster.jsonpath(&["svc", "web"], "{.spec.clusterIP}");
    let node_port = cluster.jsonpath(&["svc", "web"], "{.spec.ports[0].nodePort}");

    // From the host: the ClusterIP spreads over both pods.
    let mut seen = BTreeSet::new();
    wait_for(
        "the ClusterIP to reach both pods",
        Duration::from_secs(30),
        || {
            if let Some(body) = http_get(&format!("{cluster_ip}:80")) {
                seen.insert(body);
            }
            (seen == names).then_some(())
        },
    );
    // The NodePort answers on the node's address.
    let body = wait_for("the NodePort to answer", Duration::from_secs(20), || {
        http_get(&format!("{node_ip}:{node_port}"))
    });
    assert!(names.contains(&body), "NodePort answered {body:?}");

    // From inside a pod: the Service by name, resolved by the server's DNS through 10.43.0.10.
    // (busybox 1.35's `wget -T` crashes; `timeout` bounds it instead.)
    let (client_pod, _) = &pods[0];
    let body = wait_for(
        "a pod to reach the service by name",
        Duration::from_secs(30),
        || {
            cluster.exec(
                client_pod,
                "timeout 5 wget -qO- http://web.default.svc.cluster.local",
            )
        },
    );
    assert!(names.contains(body.trim()), "wget got {body:?}");
    // A headless Service resolves to every ready pod.
    let want_ips: BTreeSet<&str> = pods.iter().map(|(_, ip)| ip.as_str()).collect();
    wait_for(
        "the headless service's records",
        Duration::from_secs(20),
        || {
            let out = cluster.exec(
                client_pod,
                "nslookup web-headless.default.svc.cluster.local 10.43.0.10",
            )?;
            want_ips.iter().all(|ip| out.contains(ip)).then_some(())
        },
    );

    // A deleted pod leaves the rotation.
    let (gone_pod, gone_ip) = pods[1].clone();
    cluster.ok(&["delete", "pod", &gone_pod, "--wait=false"]);
    wait_for(
        "the deleted pod to leave the endpoints",
        Duration::from_secs(30),
        || {
            let out = cluster.jsonpath(
                &["endpointslices", "-l", "kubernetes.io/service-name=web"],
                "{range .items[*].endpoints[?(@.conditions.ready==true)]}{.addresses[0]} {end}",
            );
            (!out.split_whitespace().any(|ip| ip == gone_ip)).then_some(())
        },
    );
    // The proxy follows within its settle time; every answer after that is from a live pod.
    wait_for(
        "the proxy to drop the deleted pod",
        Duration::from_secs(10),
        || {
            let rules = Command::new("nft")
                .args(["list", "table", "ip", "skiff"])
                .output()
                .ok()?;
            let rules = String::from_utf8_lossy(&rules.stdout).into_owned();
            (!rules.contains(&format!("dnat to {gone_ip}:"))).then_some(())
        },
    );
    for _ in 0..20 {
        if let Some(body) = http_get(&format!("{cluster_ip}:80")) {
            assert_ne!(body, gone_pod, "a deleted pod still answered the ClusterIP");
        }
    }
    drop(cluster);
}
