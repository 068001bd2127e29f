//! kubectl v1.32's exec, attach and cp over WebSocket (`v5.channel.k8s.io`), which the agent
//! translates to SPDY towards containerd's streaming server, and port-forward tunneling SPDY
//! through WebSocket (`SPDY/3.1+portforward.k8s.io`): the same setup as
//! `kubectl_streams.rs` (an in-process API server over TLS, an agent joined with the token,
//! a busybox pod through the agent's own containerd). kubectl's `-v=4` log names the
//! negotiated subprotocol, which proves the WebSocket path (a failed upgrade would have
//! fallen back to SPDY silently). Needs root, containerd, runc, the CNI plugins,
//! busybox-static and kubectl; port 10250 must be free.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use skiff_agent::image::{self, ImageConfig, LayerSource};
use skiff_agent::server::{self, bootstrap};

const NODE: &str = "ws-node";
const BRIDGE: &str = "skt31";
/// kubectl's log line (at -v=4) once the WebSocket handshake picked a subprotocol.
const NEGOTIATED_V5: &str = "The subprotocol is v5.channel.k8s.io";

fn prerequisites() -> bool {
    let root = rustix::process::geteuid().is_root();
    let missing: Vec<&str> = [
        "/usr/bin/containerd",
        "/usr/sbin/runc",
        "/usr/lib/cni/bridge",
        "/bin/busybox",
    ]
    .into_iter()
    .filter(|f| !Path::new(f).exists())
    .collect();
    let kubectl = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !root || !missing.is_empty() || !kubectl {
        eprintln!("skipped: needs root (is {root}), kubectl (found: {kubectl}) and {missing:?}");
        return false;
    }
    true
}

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
        // kubectl v1.32's default, made explicit; the SPDY check turns it off.
        c.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "true")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args);
        c
    }

    /// Runs `cmd` with `stdin` piped in (from a thread: the output is read meanwhile);
    /// returns (exit code, stdout, stderr).
    fn output(mut cmd: Command, stdin: &[u8]) -> (Option<i32>, Vec<u8>, String) {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl on PATH");
        let mut input = child.stdin.take().unwrap();
        let stdin = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&stdin);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        (
            out.status.code(),
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
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
async fn kubectl_exec_attach_and_cp_over_websocket() {
    if !prerequisites() {
        return;
    }
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
    config.pod_cidr = "10.88.31.0/24".into();
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
metadata:
  name: ws
  namespace: default
  annotations: {{kubectl.kubernetes.io/default-container: main}}
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1.36
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.3; done"]
  - name: web
    image: busybox:1.36
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo served > /www/index.html && exec httpd -f -p 8080 -h /www"]
"#
    );
    let (ok, _, err) = k.run(&["apply", "-f", "-"], Some(&manifest));
    assert!(ok, "apply: {err}");
    wait_for("the pod to run", Duration::from_secs(60), || {
        (k.ok(&["get", "pod", "ws", "-o", "jsonpath={.status.phase}"]) == "Running").then_some(())
    });

    // stdout, stderr and the exit code, over WebSocket.
    let script = "echo out; echo err >&2; exit 3";
    let (code, out, err) = Kubectl::output(k.cmd(&["exec", "ws", "--", "sh", "-c", script]), b"");
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(out, b"out\n");
    assert!(err.starts_with("err\n"), "{err:?}");
    assert!(
        err.contains("command terminated with exit code 3"),
        "{err:?}"
    );
    let (code, out, log) = Kubectl::output(
        k.cmd(&["exec", "-v=4", "ws", "--", "sh", "-c", script]),
        b"",
    );
    assert_eq!((code, out.as_slice()), (Some(3), &b"out\n"[..]), "{log}");
    assert!(log.contains(NEGOTIATED_V5), "not over websocket: {log}");
    assert!(!log.to_lowercase().contains("fallback"), "{log}");

    // Success, and stdin piped in: the close signal ends cat's input.
    let (code, out, log) = Kubectl::output(k.cmd(&["exec", "-v=4", "ws", "--", "true"]), b"");
    assert_eq!(code, Some(0), "{log}");
    assert!(out.is_empty() && log.contains(NEGOTIATED_V5), "{log}");
    let (code, out, log) =
        Kubectl::output(k.cmd(&["exec", "-v=4", "-i", "ws", "--", "cat"]), b"hi\n");
    assert_eq!((code, out.as_slice()), (Some(0), &b"hi\n"[..]), "{log}");
    assert!(log.contains(NEGOTIATED_V5), "{log}");
    // Megabytes both ways at once (cat echoes while stdin still flows).
    let big: Vec<u8> = (0..4_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let (code, out, err) = Kubectl::output(k.cmd(&["exec", "-i", "ws", "--", "cat"]), &big);
    assert_eq!(code, Some(0), "{err}");
    assert!(out == big, "{} bytes back of {}", out.len(), big.len());

    // A TTY (under `script`, which gives kubectl a terminal): kubectl sends the terminal's
    // size on the resize channel, which must reach the exec's terminal. The command may
    // start before the first resize lands (as over SPDY), so it waits for the size, bounded.
    let kubeconfig = k.kubeconfig.to_string_lossy();
    let probe = "i=0; until [ \"$(stty size 2>/dev/null)\" = \"27 91\" ] || [ $i -ge 100 ]; \
                 do sleep 0.1; i=$((i+1)); done; stty size; tty";
    let inner = format!(
        "stty cols 91 rows 27; kubectl --kubeconfig {kubeconfig} -v=4 exec -it ws -- sh -c '{probe}'"
    );
    let mut tty = Command::new("script");
    tty.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "true")
        .args(["-qec", &inner, "/dev/null"]);
    let (code, out, err) = Kubectl::output(tty, b"");
    let out = String::from_utf8_lossy(&out);
    assert_eq!(code, Some(0), "{out} {err}");
    assert!(out.contains("27 91\r\n/dev/pts/"), "{out:?}");
    assert!(out.contains(NEGOTIATED_V5), "{out:?}");

    // kubectl cp into the pod and back out (tar over exec, stdin and stdout).
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("in.txt");
    let content: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&local, &content).unwrap();
    let local_s = local.to_string_lossy().into_owned();
    k.ok(&["cp", &local_s, "default/ws:/tmp/copied.txt"]);
    assert_eq!(
        k.ok(&["exec", "ws", "--", "wc", "-c", "/tmp/copied.txt"])
            .split_whitespace()
            .next(),
        Some(content.len().to_string().as_str())
    );
    let back = dir.path().join("back.txt");
    let back_s = back.to_string_lossy().into_owned();
    k.ok(&["cp", "default/ws:/tmp/copied.txt", &back_s]);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), content);

    // kubectl attach over WebSocket streams the container's output.
    let mut attach = k
        .cmd(&["attach", "-v=4", "ws", "-c", "main"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(attach.stdout.take().unwrap()).lines();
    let l = lines.next().expect("attached output").unwrap();
    assert!(l.starts_with("tick "), "{l:?}");
    let _ = Command::new("kill").arg(attach.id().to_string()).status();
    let mut log = String::new();
    attach
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    let _ = attach.wait();
    assert!(
        log.contains(NEGOTIATED_V5),
        "attach not over websocket: {log}"
    );

    // kubectl port-forward tunnels SPDY through WebSocket (`SPDY/3.1+portforward.k8s.io`).
    let mut pf = k
        .cmd(&["port-forward", "-v=4", "pod/ws", ":8080"])
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "true")
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
    let fetch = || {
        let mut body = String::new();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").unwrap();
        s.read_to_string(&mut body).unwrap();
        body
    };
    let (first, second) = (fetch(), fetch());
    let _ = Command::new("kill").arg(pf.id().to_string()).status();
    let mut log = String::new();
    pf.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    let _ = pf.wait();
    assert!(
        first.contains("served") && second.contains("served"),
        "{first:?} {second:?}"
    );
    assert!(
        log.contains("negotiated protocol: portforward.k8s.io"),
        "port-forward not over websocket: {log}"
    );
    assert!(!log.contains("fallback"), "{log}");

    // The SPDY path still works when kubectl is told not to try WebSocket.
    let mut spdy = k.cmd(&["exec", "-v=4", "ws", "--", "sh", "-c", script]);
    spdy.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false");
    let (code, out, log) = Kubectl::output(spdy, b"");
    assert_eq!((code, out.as_slice()), (Some(3), &b"out\n"[..]), "{log}");
    assert!(!log.contains(NEGOTIATED_V5), "{log}");

    let (ok, _, err) = k.run(
        &["delete", "pod", "ws", "--wait=true", "--timeout=30s"],
        None,
    );
    assert!(ok, "delete: {err}");
}
