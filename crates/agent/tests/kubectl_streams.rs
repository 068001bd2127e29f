//! End to end with the real kubectl: an in-process API server over TLS with nodes enabled, an
//! agent that joins with the token (its certificates from `/skiff/v1/node-certificate`), runs
//! a busybox pod through its own containerd and serves its API on port 10250; then
//! `kubectl logs` (plain, `--tail`, `--timestamps`, `--limit-bytes`, `-f`), `kubectl exec`
//! (with and without stdin) and `kubectl port-forward` reach the pod through
//! API server → agent → containerd's streaming server. Needs root, containerd, runc, the CNI
//! plugins, busybox-static and kubectl; port 10250 must be free.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use skiff_agent::image::{self, ImageConfig, LayerSource};
use skiff_agent::server::{self, bootstrap};

const NODE: &str = "streams-node";
const BRIDGE: &str = "skt23";

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

struct Kubectl {
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("kubectl");
        c.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        c
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl on PATH");
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args, None);
        assert!(ok, "kubectl {args:?} failed: {err}");
        out
    }
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Removes what the agent's containerd left on the host (found by our data dir).
fn cleanup_host(marker: &str) {
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if pid != std::process::id() && String::from_utf8_lossy(&cmd).contains(marker) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut ours: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(marker))
        .collect();
    ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in ours {
        let _ = Command::new("umount").args(["-l", m]).status();
    }
    let _ = Command::new("ip")
        .args(["link", "del", BRIDGE])
        .stderr(Stdio::null())
        .status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_exec_and_port_forward_reach_a_pod() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let marker = data.to_string_lossy().into_owned();
    std::fs::create_dir_all(data.join("agent/images")).unwrap();
    let rootfs = tmp.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let mut tar = Vec::new();
    image::build_archive(
        &LayerSource::Rootfs(&rootfs),
        "busybox:1.36",
        &ImageConfig {
            cmd: vec!["sh".into()],
            ..Default::default()
        },
        &mut tar,
    )
    .unwrap();
    std::fs::write(data.join("agent/images/busybox.tar"), tar).unwrap();

    // The API server, with nodes enabled (token, join endpoint, kubelet client certificate).
    let opts = skiff_pki::PkiOptions {
        host_name: String::new(),
        host_addresses: vec!["127.0.0.1".parse().unwrap()],
        extra_sans: vec![],
    };
    let pki = Arc::new(skiff_pki::ensure(&data.join("tls"), &opts).unwrap());
    let api = skiff_apiserver::memory_server_for_tests(false).await;
    let token = skiff_apiserver::join::enable_nodes(&api, &data, pki.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(skiff_apiserver::serve(
        api,
        listener,
        Some(skiff_pki::server_tls_config(&pki).unwrap()),
        std::future::pending(),
    ));
    let kubeconfig = data.join("kubeconfig.yaml");
    pki.write_admin_kubeconfig(&kubeconfig, &url).unwrap();
    let k = Kubectl { kubeconfig };

    // The agent joins with the token read from the server's data dir.
    let token_text = std::fs::read_to_string(data.join("token")).unwrap();
    assert_eq!(token_text.trim(), token.to_string());
    let mut config = skiff_agent::AgentConfig::new(data.clone());
    config.node_name = NODE.into();
    config.node_ip = Some("127.0.0.1".parse().unwrap());
    config.pod_cidr = "10.88.23.0/24".into();
    config.bridge_name = BRIDGE.into();
    let agent_dir = config.agent_dir();
    let creds = bootstrap::ensure_credentials(
        &url,
        token_text.trim(),
        &agent_dir,
        NODE,
        &["127.0.0.1".into()],
    )
    .await
    .unwrap();
    // A second start reuses the stored certificates.
    let again = bootstrap::ensure_credentials(
        &url,
        token_text.trim(),
        &agent_dir,
        NODE,
        &["127.0.0.1".into()],
    )
    .await
    .unwrap();
    assert_eq!(again.client_cert_pem, creds.client_cert_pem);
    // A token for another CA is refused before anything is sent.
    let other = tempfile::tempdir().unwrap();
    let bad = format!("K10{}::server:x", "0".repeat(64));
    let err = bootstrap::ensure_credentials(&url, &bad, other.path(), NODE, &[])
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("does not match the token's CA hash"),
        "{err:#}"
    );

    let client = kube::Client::try_from(creds.kube_config().await.unwrap()).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let agent = tokio::spawn(skiff_agent::run(
        config.clone(),
        client,
        stopped(stop_rx.clone()),
    ));
    let api_config = config.clone();
    let api_creds = creds.clone();
    let rx = stop_rx.clone();
    let agent_api = tokio::spawn(async move {
        server::run(&api_config, &api_creds, server::AGENT_PORT, stopped(rx)).await
    });

    let result = tokio::task::spawn_blocking(move || checks(&k)).await;

    let _ = stop_tx.send(true);
    let _ = agent.await;
    let _ = agent_api.await;
    cleanup_host(&marker);
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

fn checks(k: &Kubectl) {
    wait_for("the node to register", Duration::from_secs(60), || {
        k.run(&["get", "node", NODE], None).0.then_some(())
    });
    let manifest = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: default}}
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 1
  containers:
  - name: ticker
    image: busybox:1.36
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo hello; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.3; done"]
  - name: web
    image: busybox:1.36
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo served > /www/index.html && exec httpd -f -p 8080 -h /www"]
"#
    );
    let (ok, _, err) = k.run(&["apply", "-f", "-"], Some(&manifest));
    assert!(ok, "apply: {err}");
    wait_for("the pod to run", Duration::from_secs(60), || {
        (k.ok(&["get", "pod", "web", "-o", "jsonpath={.status.phase}"]) == "Running").then_some(())
    });

    // kubectl logs and its options.
    let logs = wait_for("ticks in the log", Duration::from_secs(20), || {
        let out = k.ok(&["logs", "web", "-c", "ticker"]);
        out.contains("tick 2").then_some(out)
    });
    assert!(logs.starts_with("hello\ntick 0\n"), "{logs:?}");
    let tail = k.ok(&["logs", "web", "-c", "ticker", "--tail=1"]);
    assert_eq!(tail.lines().count(), 1, "{tail:?}");
    assert!(tail.starts_with("tick "), "{tail:?}");
    let ts = k.ok(&[
        "logs",
        "web",
        "-c",
        "ticker",
        "--timestamps",
        "--limit-bytes=200",
    ]);
    let first = ts.lines().next().unwrap();
    let (stamp, msg) = first.split_once(' ').unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
        "{first:?}"
    );
    assert_eq!(msg, "hello");
    assert_eq!(
        k.ok(&["logs", "web", "-c", "ticker", "--limit-bytes=3"]),
        "hel"
    );
    let since = k.ok(&["logs", "web", "-c", "ticker", "--since=1h"]);
    assert!(since.starts_with("hello\n"), "{since:?}");
    // kubectl picks a default container itself; the API insists on one, as upstream's.
    let (ok, _, err) = k.run(
        &["get", "--raw", "/api/v1/namespaces/default/pods/web/log"],
        None,
    );
    assert!(
        !ok && err.contains(
            "a container name must be specified for pod web, choose one of: [ticker web]"
        ),
        "{err}"
    );

    // kubectl logs -f streams lines as they are written.
    let mut follow = k
        .cmd(&["logs", "-f", "web", "-c", "ticker", "--tail=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let first: u64 = lines.next().unwrap().unwrap()["tick ".len()..]
        .parse()
        .unwrap();
    for want in first + 1..first + 4 {
        let l = lines.next().expect("another line").unwrap();
        assert_eq!(l, format!("tick {want}"));
    }
    let _ = Command::new("kill").arg(follow.id().to_string()).status();
    let _ = follow.wait();

    // kubectl exec: a command, and stdin.
    assert_eq!(
        k.ok(&["exec", "web", "-c", "ticker", "--", "echo", "hi"]),
        "hi\n"
    );
    let (ok, out, err) = k.run(
        &["exec", "-i", "web", "-c", "ticker", "--", "cat"],
        Some("from stdin\n"),
    );
    assert!(ok, "exec -i: {err}");
    assert_eq!(out, "from stdin\n");
    let (ok, _, err) = k.run(
        &["exec", "web", "-c", "ticker", "--", "sh", "-c", "exit 7"],
        None,
    );
    assert!(!ok && err.contains("exit code 7"), "{err}");

    // kubectl cp goes through exec with tar on both ends.
    let local = std::env::temp_dir().join(format!("skiff-cp-{}", std::process::id()));
    std::fs::write(&local, "copied content\n").unwrap();
    let local_s = local.to_string_lossy().into_owned();
    k.ok(&["cp", &local_s, "default/web:/tmp/copied", "-c", "ticker"]);
    let _ = std::fs::remove_file(&local);
    assert_eq!(
        k.ok(&["exec", "web", "-c", "ticker", "--", "cat", "/tmp/copied"]),
        "copied content\n"
    );

    // kubectl attach streams the running container's output.
    let mut attach = k
        .cmd(&["attach", "web", "-c", "ticker"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(attach.stdout.take().unwrap()).lines();
    let l = lines.next().expect("attached output").unwrap();
    assert!(l.starts_with("tick "), "{l:?}");
    let _ = Command::new("kill").arg(attach.id().to_string()).status();
    let _ = attach.wait();

    // nodes/proxy reaches the agent's own endpoints.
    assert_eq!(
        k.ok(&[
            "get",
            "--raw",
            &format!("/api/v1/nodes/{NODE}/proxy/healthz")
        ]),
        "ok\n"
    );

    // kubectl port-forward to the pod's port 8080.
    let mut pf = k
        .cmd(&["port-forward", "pod/web", ":8080"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(pf.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let port: u16 = line
        .trim()
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|r| r.split_once(' '))
        .map(|(p, _)| p.parse().unwrap())
        .unwrap_or_else(|| panic!("unexpected port-forward output {line:?}"));
    let mut body = String::new();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").unwrap();
    s.read_to_string(&mut body).unwrap();
    let _ = Command::new("kill").arg(pf.id().to_string()).status();
    let _ = pf.wait();
    assert!(body.contains("served"), "{body:?}");

    let (ok, _, err) = k.run(
        &["delete", "pod", "web", "--wait=true", "--timeout=30s"],
        None,
    );
    assert!(ok, "delete: {err}");
}
