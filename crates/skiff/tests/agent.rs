//! System tests of the node agent with the real binary, containerd, runc and CNI plugins:
//! a busybox image built by `skiff images build`, real pods started through `kubectl apply`.
//! They need root and the Debian packages containerd, runc, containernetworking-plugins and
//! busybox-static, and fail loudly without them.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{wait_for, Server};

fn require_tools() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    assert!(uid, "agent system tests need root");
    for tool in ["containerd", "runc", "ctr"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
            .unwrap_or(false);
        assert!(
            found,
            "agent system tests need `{tool}` on PATH (apt-get install containerd runc)"
        );
    }
    for f in [
        "/usr/lib/cni/bridge",
        "/usr/lib/cni/host-local",
        "/usr/lib/cni/portmap",
        "/bin/busybox",
    ] {
        assert!(
            Path::new(f).exists(),
            "agent system tests need {f} (containernetworking-plugins, busybox-static)"
        );
    }
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

/// The `skiff agent` process; stopped by PID, and everything it left on the host is removed.
struct Agent {
    child: Child,
    data_dir: PathBuf,
    bridge: String,
}

impl Agent {
    fn start(server: &Server, data_dir: &Path, node: &str, cidr: &str, bridge: &str) -> Agent {
        let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args([
                "agent",
                "--node-name",
                node,
                "--pod-cidr",
                cidr,
                "--bridge-name",
                bridge,
                // Cluster-wide networking has its own test (network.rs); these agents leave
                // the host's nftables and ports 80/443 alone.
                "--disable-kube-proxy",
                "--disable-network-policy",
                "--disable-ingress",
            ])
            .arg("--kubeconfig")
            .arg(&server.kubeconfig)
            .arg("--data-dir")
            .arg(data_dir)
            .env("SKIFF_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start skiff agent");
        Agent {
            child,
            data_dir: data_dir.to_path_buf(),
            bridge: bridge.to_string(),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Shims and containers outlive the agent: stop them by PID, then unmount.
        common::remove_agent_leftovers(&self.data_dir);
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
    }
}

fn http_get(addr: &str) -> Option<String> {
    let mut s =
        std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn jsonpath(server: &Server, what: &[&str], path: &str) -> String {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    let p = format!("jsonpath={path}");
    args.extend_from_slice(&["-o", &p]);
    let out = server.kubectl(&args);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn agent_runs_real_pods_through_containerd() {
    require_tools();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let rootfs = tmp.path().join("rootfs");
    busybox_rootfs(&rootfs);
    std::fs::create_dir_all(data.join("agent/images")).unwrap();
    let built = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args([
            "images",
            "build",
            "--tag",
            "busybox:1.36",
            "--cmd",
            "sh",
            "--rootfs",
        ])
        .arg(&rootfs)
        .arg("-o")
        .arg(data.join("agent/images/busybox.tar"))
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "images build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    assert!(String::from_utf8_lossy(&built.stdout)
        .starts_with("docker.io/library/busybox:1.36 sha256:"));

    // The agent under test claims its own pod CIDR; the controller manager's node IPAM would
    // race it for the Node's spec.podCIDR.
    let server = Server::start_with(&data, 0, &["--disable-controller-manager"]);
    let node = "agent-test-node";
    let agent = Agent::start(&server, &data, node, "10.88.17.0/24", "skt17");
    wait_for("the node to be Ready", Duration::from_secs(60), || {
        (jsonpath(
            &server,
            &["node", node],
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        ) == "True")
            .then_some(())
    });
    let info = jsonpath(
        &server,
        &["node", node],
        "{.status.nodeInfo.containerRuntimeVersion}",
    );
    assert!(
        info.starts_with("containerd://"),
        "runtime version {info:?}"
    );
    assert_eq!(
        jsonpath(&server, &["node", node], "{.spec.podCIDR}"),
        "10.88.17.0/24"
    );
    wait_for("the node lease", Duration::from_secs(20), || {
        (jsonpath(
            &server,
            &["lease", "-n", "kube-node-lease", node],
            "{.spec.holderIdentity}",
        ) == node)
            .then_some(())
    });

    let manifest = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 3
  containers:
  - name: httpd
    image: busybox:1.36
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo hello-from-$(POD_NAME) > /www/index.html && exec httpd -f -p 8080 -h /www"]
    env:
    - name: POD_NAME
      valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
    readinessProbe:
      httpGet: {{path: /, port: 8080}}
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata: {{name: crash, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: crash
    image: busybox:1.36
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo bye > /dev/termination-log; exit 3"]
"#
    );
    let out = server.kubectl_stdin(&["apply", "-f", "-"], &manifest);
    assert!(
        out.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let created = Instant::now();
    let ip = wait_for(
        "web to be Ready with an IP",
        Duration::from_secs(60),
        || {
            let ready = jsonpath(
                &server,
                &["pod", "web"],
                "{.status.conditions[?(@.type==\"Ready\")].status}",
            );
            let ip = jsonpath(&server, &["pod", "web"], "{.status.podIP}");
            (ready == "True" && !ip.is_empty()).then_some(ip)
        },
    );
    eprintln!("web ready after {:?} at {ip}", created.elapsed());
    assert!(
        ip.starts_with("10.88.17."),
        "pod IP {ip} outside the node's CIDR"
    );
    assert_eq!(
        jsonpath(&server, &["pod", "web"], "{.status.phase}"),
        "Running"
    );
    assert_eq!(
        jsonpath(&server, &["pod", "web"], "{.status.qosClass}"),
        "BestEffort"
    );
    assert!(jsonpath(
        &server,
        &["pod", "web"],
        "{.status.containerStatuses[0].containerID}"
    )
    .starts_with("containerd://"));
    let body = wait_for(
        "web to answer HTTP from the host",
        Duration::from_secs(20),
        || http_get(&format!("{ip}:8080")),
    );
    assert!(body.contains("hello-from-web"), "unexpected answer: {body}");

    // A crash-looping container: restarted at once, then backed off, restartCount growing.
    wait_for(
        "crash to enter CrashLoopBackOff",
        Duration::from_secs(60),
        || {
            let reason = jsonpath(
                &server,
                &["pod", "crash"],
                "{.status.containerStatuses[0].state.waiting.reason}",
            );
            let count: i32 = jsonpath(
                &server,
                &["pod", "crash"],
                "{.status.containerStatuses[0].restartCount}",
            )
            .parse()
            .unwrap_or(0);
            (reason == "CrashLoopBackOff" && count >= 1).then_some(())
        },
    );
    assert_eq!(
        jsonpath(
            &server,
            &["pod", "crash"],
            "{.status.containerStatuses[0].lastState.terminated.exitCode}"
        ),
        "3"
    );
    assert_eq!(
        jsonpath(
            &server,
            &["pod", "crash"],
            "{.status.containerStatuses[0].lastState.terminated.message}"
        ),
        "bye\n"
    );
    wait_for(
        "restartCount to reach 2 after the 10s backoff",
        Duration::from_secs(40),
        || {
            let count: i32 = jsonpath(
                &server,
                &["pod", "crash"],
                "{.status.containerStatuses[0].restartCount}",
            )
            .parse()
            .unwrap_or(0);
            (count >= 2).then_some(())
        },
    );
    let events = server.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=crash",
        "-o",
        "jsonpath={.items[*].reason}",
    ]);
    assert!(
        events.contains("BackOff") && events.contains("Started"),
        "events: {events}"
    );

    // Graceful deletion: httpd (PID 1) ignores SIGTERM, so it is killed when the 3 s grace ends.
    let t = Instant::now();
    server.ok(&["delete", "pod", "web", "--wait=false"]);
    wait_for("web to be deleted", Duration::from_secs(30), || {
        (!server.kubectl(&["get", "pod", "web"]).status.success()).then_some(())
    });
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(12),
        "deletion took {took:?} for a 3 s grace period"
    );
    assert!(
        http_get(&format!("{ip}:8080")).is_none(),
        "web still answers after deletion"
    );
    server.ok(&["delete", "pod", "crash", "--wait=false"]);
    wait_for("crash to be deleted", Duration::from_secs(30), || {
        (!server.kubectl(&["get", "pod", "crash"]).status.success()).then_some(())
    });
    // The pods' cgroups and directories are gone.
    let leftovers = std::fs::read_dir(data.join("agent/pods"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(leftovers, 0, "pod directories left behind");
    drop(agent);
    server.stop();
}

/// A `skiff agent` joined with the server's token (so that its API on 10250 serves
/// `kubectl exec`), restartable on the same data dir; cleaned up like [`Agent`].
struct JoinedAgent {
    child: Child,
    server: String,
    token: String,
    args: Vec<String>,
    cleanup: Agent,
}

impl JoinedAgent {
    fn start(server: &Server, data_dir: &Path, node: &str, cidr: &str, bridge: &str) -> Self {
        let token = std::fs::read_to_string(data_dir.join("token")).expect("server token");
        let kc = std::fs::read_to_string(&server.kubeconfig).unwrap();
        let url = kc
            .lines()
            .find_map(|l| l.trim().strip_prefix("server:"))
            .expect("server in kubeconfig")
            .trim()
            .trim_matches('"')
            .to_string();
        let args: Vec<String> = [
            "agent",
            "--node-name",
            node,
            "--pod-cidr",
            cidr,
            "--bridge-name",
            bridge,
            "--disable-kube-proxy",
            "--disable-network-policy",
            "--disable-ingress",
            "--data-dir",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([data_dir.to_string_lossy().into_owned()])
        .collect();
        let mut a = JoinedAgent {
            child: Command::new("true").spawn().unwrap(),
            server: url,
            token: token.trim().to_string(),
            args,
            // Only its Drop is used: it stops the real agent's leftovers by data dir.
            cleanup: Agent {
                child: Command::new("true").spawn().unwrap(),
                data_dir: data_dir.to_path_buf(),
                bridge: bridge.to_string(),
            },
        };
        let _ = a.child.wait();
        a.child = a.spawn();
        a
    }

    fn spawn(&self) -> Child {
        Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(&self.args)
            .args(["--server", &self.server])
            .env("SKIFF_TOKEN", &self.token)
            .env("SKIFF_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start skiff agent")
    }

    /// Stops the agent by PID (SIGTERM, as a service manager would) and starts it again.
    fn restart(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !matches!(self.child.try_wait(), Ok(None)),
            "agent did not stop on SIGTERM"
        );
        self.child = self.spawn();
    }

    /// The PID of the containerd this agent supervises.
    fn containerd_pid(&self) -> Option<u32> {
        let marker = self.cleanup.data_dir.to_string_lossy().into_owned();
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
            .find(|pid| {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                comm.trim() == "containerd" && String::from_utf8_lossy(&cmd).contains(&marker)
            })
    }
}

impl Drop for JoinedAgent {
    fn drop(&mut self) {
        // Hand the real agent to the cleanup's Drop, which stops it and its leftovers.
        std::mem::swap(&mut self.child, &mut self.cleanup.child);
    }
}

fn status_of(server: &Server, pod: &str, path: &str) -> String {
    jsonpath(server, &["pod", pod], path)
}

fn restart_count(server: &Server, pod: &str) -> i32 {
    status_of(server, pod, "{.status.containerStatuses[0].restartCount}")
        .parse()
        .unwrap_or(-1)
}

fn is_ready(server: &Server, pod: &str) -> bool {
    status_of(
        server,
        pod,
        "{.status.conditions[?(@.type==\"Ready\")].status}",
    ) == "True"
}

fn exec(server: &Server, pod: &str, cmd: &str) -> Option<String> {
    let out = server.kubectl(&["exec", pod, "--", "sh", "-c", cmd]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn agent_probes_volumes_limits_termination_and_restarts() {
    require_tools();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let rootfs = tmp.path().join("rootfs");
    let host = tmp.path().join("host");
    std::fs::create_dir_all(&host).unwrap();
    busybox_rootfs(&rootfs);
    std::fs::create_dir_all(data.join("agent/images")).unwrap();
    let built = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["images", "build", "--tag", "busybox:1.36", "--rootfs"])
        .arg(&rootfs)
        .arg("-o")
        .arg(data.join("agent/images/busybox.tar"))
        .output()
        .unwrap();
    assert!(built.status.success(), "images build failed");

    // The agent under test claims its own pod CIDR; the controller manager's node IPAM would
    // race it for the Node's spec.podCIDR.
    let server = Server::start_with(&data, 0, &["--disable-controller-manager"]);
    let node = "agent-test-node2";
    let mut agent = JoinedAgent::start(&server, &data, node, "10.88.18.0/24", "skt18");
    wait_for("the node to be Ready", Duration::from_secs(60), || {
        (jsonpath(
            &server,
            &["node", node],
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        ) == "True")
            .then_some(())
    });

    let manifest = format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings, namespace: default}}
data: {{key: one}}
---
apiVersion: v1
kind: Pod
metadata: {{name: live, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:1.36
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "touch /tmp/alive; sleep 2; rm /tmp/alive; exec sleep 3600"]
    livenessProbe:
      exec: {{command: ["cat", "/tmp/alive"]}}
      periodSeconds: 1
      failureThreshold: 1
---
apiVersion: v1
kind: Pod
metadata: {{name: gate, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:1.36
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"]
    readinessProbe:
      exec: {{command: ["cat", "/tmp/ready"]}}
      periodSeconds: 1
      failureThreshold: 1
---
apiVersion: v1
kind: Pod
metadata: {{name: steady, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 5
  containers:
  - name: c
    image: busybox:1.36
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'echo term >> /host/log; exit 0' TERM; while :; do sleep 1 & wait $!; done"]
    resources:
      limits: {{memory: 64Mi, cpu: 500m}}
    lifecycle:
      preStop:
        exec: {{command: ["sh", "-c", "echo prestop >> /host/log"]}}
    volumeMounts:
    - {{name: cfg, mountPath: /cfg}}
    - {{name: host, mountPath: /host}}
  volumes:
  - name: cfg
    configMap: {{name: settings}}
  - name: host
    hostPath: {{path: {host}, type: Directory}}
"#,
        host = host.display()
    );
    let out = server.kubectl_stdin(&["apply", "-f", "-"], &manifest);
    assert!(
        out.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for p in ["live", "gate", "steady"] {
        wait_for(&format!("{p} to run"), Duration::from_secs(60), || {
            (status_of(&server, p, "{.status.phase}") == "Running").then_some(())
        });
    }

    // Readiness gates Ready: not Ready while the probe fails, Ready once it passes, and not
    // Ready again when it fails again; the container is never restarted for it.
    wait_for("gate's container to start", Duration::from_secs(20), || {
        (status_of(&server, "gate", "{.status.containerStatuses[0].started}") == "true")
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !is_ready(&server, "gate"),
        "gate Ready with a failing probe"
    );
    assert_eq!(
        status_of(
            &server,
            "gate",
            "{.status.conditions[?(@.type==\"ContainersReady\")].status}"
        ),
        "False"
    );
    exec(&server, "gate", "touch /tmp/ready").expect("kubectl exec touch");
    wait_for("gate to become Ready", Duration::from_secs(20), || {
        is_ready(&server, "gate").then_some(())
    });
    exec(&server, "gate", "rm /tmp/ready").expect("kubectl exec rm");
    wait_for("gate to become unready", Duration::from_secs(20), || {
        (!is_ready(&server, "gate")).then_some(())
    });
    assert_eq!(restart_count(&server, "gate"), 0);

    // A failing liveness probe restarts the container; restartCount rises.
    wait_for("live to be restarted", Duration::from_secs(60), || {
        (restart_count(&server, "live") >= 1).then_some(())
    });
    let events = server.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=live",
        "-o",
        "jsonpath={.items[*].reason}",
    ]);
    assert!(
        events.contains("Unhealthy") && events.contains("Killing"),
        "events: {events}"
    );

    // Limits land in the container's cgroup (v1 controllers on this kind of machine).
    let mem = exec(
        &server,
        "steady",
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
    )
    .expect("exec cat memory limit");
    assert_eq!(mem.trim(), (64 * 1024 * 1024).to_string());
    let cpu = exec(
        &server,
        "steady",
        "q=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null) && p=$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us) && echo \"$q $p\" || cat /sys/fs/cgroup/cpu.max",
    )
    .expect("exec cat cpu limit");
    assert_eq!(cpu.trim(), "50000 100000", "cpu quota and period");

    // A configMap change reaches the mounted volume in place.
    assert_eq!(
        exec(&server, "steady", "cat /cfg/key").as_deref(),
        Some("one")
    );
    server.ok(&[
        "patch",
        "configmap",
        "settings",
        "-p",
        r#"{"data":{"key":"two"}}"#,
    ]);
    wait_for(
        "the configMap change in the volume",
        Duration::from_secs(90),
        || (exec(&server, "steady", "cat /cfg/key").as_deref() == Some("two")).then_some(()),
    );

    // Restarting the agent adopts running containers: same IDs, same restart counts.
    let id = status_of(
        &server,
        "steady",
        "{.status.containerStatuses[0].containerID}",
    );
    let started_at = status_of(
        &server,
        "steady",
        "{.status.containerStatuses[0].state.running.startedAt}",
    );
    assert!(id.starts_with("containerd://"), "containerID {id:?}");
    agent.restart();
    // The agent is back when it answers exec again.
    wait_for(
        "the restarted agent to serve exec",
        Duration::from_secs(60),
        || exec(&server, "steady", "echo ok").filter(|o| o.trim() == "ok"),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        status_of(
            &server,
            "steady",
            "{.status.containerStatuses[0].containerID}"
        ),
        id
    );
    assert_eq!(
        status_of(
            &server,
            "steady",
            "{.status.containerStatuses[0].state.running.startedAt}"
        ),
        started_at
    );
    assert_eq!(restart_count(&server, "steady"), 0);
    assert_eq!(status_of(&server, "steady", "{.status.phase}"), "Running");
    assert_eq!(restart_count(&server, "gate"), 0);

    // Killing containerd by PID: the agent starts a new one and the pod keeps running.
    let old = agent.containerd_pid().expect("the agent's containerd");
    let _ = Command::new("kill")
        .args(["-KILL", &old.to_string()])
        .status();
    wait_for("a new containerd", Duration::from_secs(30), || {
        agent.containerd_pid().filter(|p| *p != old)
    });
    wait_for(
        "exec through the new containerd",
        Duration::from_secs(60),
        || exec(&server, "steady", "cat /cfg/key").filter(|o| o == "two"),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(status_of(&server, "steady", "{.status.phase}"), "Running");
    assert_eq!(
        status_of(
            &server,
            "steady",
            "{.status.containerStatuses[0].containerID}"
        ),
        id
    );
    assert_eq!(restart_count(&server, "steady"), 0);

    // Deletion runs preStop before SIGTERM and finishes well within the 5 s grace period.
    let t = Instant::now();
    server.ok(&["delete", "pod", "steady", "--wait=false"]);
    wait_for("steady to be deleted", Duration::from_secs(30), || {
        (!server.kubectl(&["get", "pod", "steady"]).status.success()).then_some(())
    });
    let took = t.elapsed();
    assert!(took < Duration::from_secs(5), "deletion took {took:?}");
    assert_eq!(
        std::fs::read_to_string(host.join("log")).unwrap_or_default(),
        "prestop\nterm\n"
    );
    server.ok(&["delete", "pod", "live", "gate", "--wait=false"]);
    wait_for("the pods to be deleted", Duration::from_secs(30), || {
        server
            .ok(&["get", "pods", "-o", "name"])
            .trim()
            .is_empty()
            .then_some(())
    });
    wait_for("pod directories removed", Duration::from_secs(30), || {
        (std::fs::read_dir(data.join("agent/pods")).map_or(0, |d| d.count()) == 0).then_some(())
    });
    drop(agent);
    server.stop();
}
