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
        // Shims and containers the agent's containerd started (found by our data dir in their
        // command line) would outlive the test: stop them by PID.
        let marker = self.data_dir.to_string_lossy().into_owned();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmd).contains(&marker) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
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

    let server = Server::start_in(&data, 0);
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
