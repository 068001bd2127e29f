//! The agent's HTTPS API against a real containerd (started by the test, as the agent does):
//! logs (tail, follow, previous), exec and port-forward over WebSocket through containerd's
//! streaming server, and client-certificate authorization. Needs root, containerd and runc.

use std::time::Duration;

use k8s_cri::v1 as cri;
use skiff_agent::image::{self, ImageConfig, LayerSource};
use skiff_agent::runtime::{Containerd, ContainerdPaths, Runtime};
use skiff_agent::server::{self, AgentApi};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const BUSYBOX: &str = "docker.io/library/busybox-agent-api-test:1";

struct Env {
    _dir: tempfile::TempDir,
    containerd: Option<Containerd>,
    runtime: Runtime,
    sandbox: String,
    addr: std::net::SocketAddr,
    ca: String,
    apiserver: (String, String),
    node: (String, String),
    http_port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn setup() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let agent_dir = dir.path().join("agent");
    std::fs::create_dir_all(agent_dir.join("images")).unwrap();
    let paths = ContainerdPaths::new(&agent_dir);
    let containerd = Containerd::start(paths.clone(), image::PAUSE_IMAGE)
        .await
        .expect("containerd starts (needs root, containerd and runc)");
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static installed");
    let mut tar = Vec::new();
    image::build_archive(
        &LayerSource::Binary {
            name: "busybox",
            contents: &busybox,
        },
        BUSYBOX,
        &ImageConfig::default(),
        &mut tar,
    )
    .unwrap();
    std::fs::write(agent_dir.join("images/busybox.tar"), tar).unwrap();
    image::import_local_images(&containerd.socket(), &agent_dir)
        .await
        .unwrap();
    let runtime = Runtime::connect(&containerd.socket().to_string_lossy()).unwrap();

    let log_dir = agent_dir.join("logs/default_web_uid1");
    let host_ns = cri::NamespaceOption {
        network: cri::NamespaceMode::Node as i32,
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    };
    let sandbox_config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "web".into(),
            uid: "uid1".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: log_dir.to_string_lossy().into_owned(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: "/skiff-agent-api-test".into(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(host_ns.clone()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let sandbox = runtime
        .cri()
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(sandbox_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let http_port = free_port();
    let script = format!(
        "echo hello; echo oops >&2; echo served > /dev/shm/index.html; \
         /busybox httpd -p 127.0.0.1:{http_port} -h /dev/shm; \
         i=0; while true; do echo tick $i; i=$((i+1)); /busybox sleep 0.2; done"
    );
    let start = |attempt: u32, cmd: Vec<String>| {
        let runtime = runtime.clone();
        let sandbox = sandbox.clone();
        let sandbox_config = sandbox_config.clone();
        let host_ns = host_ns.clone();
        async move {
            let id = runtime
                .cri()
                .create_container(cri::CreateContainerRequest {
                    pod_sandbox_id: sandbox.clone(),
                    config: Some(cri::ContainerConfig {
                        metadata: Some(cri::ContainerMetadata {
                            name: "c".into(),
                            attempt,
                        }),
                        image: Some(cri::ImageSpec {
                            image: BUSYBOX.into(),
                            ..Default::default()
                        }),
                        command: cmd,
                        log_path: format!("c/{attempt}.log"),
                        linux: Some(cri::LinuxContainerConfig {
                            security_context: Some(cri::LinuxContainerSecurityContext {
                                namespace_options: Some(host_ns),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    sandbox_config: Some(sandbox_config),
                })
                .await
                .unwrap()
                .into_inner()
                .container_id;
            runtime
                .cri()
                .start_container(cri::StartContainerRequest {
                    container_id: id.clone(),
                })
                .await
                .unwrap();
            id
        }
    };
    // A first attempt that exits (the `previous` one), then the running one.
    let first = start(
        0,
        vec![
            "/busybox".into(),
            "sh".into(),
            "-c".into(),
            "echo first-run".into(),
        ],
    )
    .await;
    wait_for("first container to exit", || {
        let runtime = runtime.clone();
        let first = first.clone();
        async move {
            runtime
                .cri()
                .container_status(cri::ContainerStatusRequest {
                    container_id: first,
                    verbose: false,
                })
                .await
                .unwrap()
                .into_inner()
                .status
                .unwrap()
                .state
                == cri::ContainerState::ContainerExited as i32
        }
    })
    .await;
    start(1, vec!["/busybox".into(), "sh".into(), "-c".into(), script]).await;

    let pki_dir = dir.path().join("tls");
    let pki = skiff_pki::ensure(&pki_dir, &skiff_pki::PkiOptions::default()).unwrap();
    let (sc, sk) = pki
        .issue_server_cert("node-1", &["127.0.0.1".into()], Duration::from_secs(3600))
        .unwrap();
    let tls = server::tls_config(pki.ca_cert_pem(), &sc, &sk).unwrap();
    let apiserver = pki
        .issue_client_cert(
            server::APISERVER_USER,
            &["system:masters"],
            Duration::from_secs(3600),
        )
        .unwrap();
    let node = pki
        .issue_client_cert(
            "system:node:node-1",
            &["system:nodes"],
            Duration::from_secs(3600),
        )
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        AgentApi::new(runtime.clone(), Some(agent_dir.join("logs"))).serve(
            listener,
            Some(tls),
            std::future::pending(),
        ),
    );
    Env {
        containerd: Some(containerd),
        runtime,
        sandbox,
        addr,
        ca: pki.ca_cert_pem().to_string(),
        apiserver,
        node,
        http_port,
        _dir: dir,
    }
}

impl Env {
    async fn teardown(mut self) {
        let mut cri = self.runtime.cri();
        let _ = cri
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: self.sandbox.clone(),
            })
            .await;
        let _ = cri
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: self.sandbox.clone(),
            })
            .await;
        if let Some(c) = self.containerd.take() {
            c.stop().await;
        }
        for h in [
            "cpu",
            "memory",
            "pids",
            "cpuset",
            "devices",
            "freezer",
            "blkio",
            "hugetlb",
            "net_cls",
            "perf_event",
            "systemd",
            "unified",
        ] {
            let _ = std::fs::remove_dir(format!("/sys/fs/cgroup/{h}/skiff-agent-api-test"));
        }
    }

    async fn connect(
        &self,
        as_node: bool,
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let id = if as_node { &self.node } else { &self.apiserver };
        let cfg = skiff_pki::client_tls_config(&self.ca, Some((&id.0, &id.1))).unwrap();
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        tokio_rustls::TlsConnector::from(cfg)
            .connect(
                rustls::pki_types::ServerName::IpAddress(self.addr.ip().into()),
                tcp,
            )
            .await
            .unwrap()
    }

    /// Sends a GET and returns the stream positioned after the response head, and the head.
    async fn get(
        &self,
        path: &str,
        extra: &str,
        as_node: bool,
    ) -> (
        tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
        String,
        Vec<u8>,
    ) {
        let mut s = self.connect(as_node).await;
        let req = format!("GET {path} HTTP/1.1\r\nHost: node-1\r\n{extra}\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
                .await
                .expect("response head in time")
                .unwrap();
            assert!(
                n > 0,
                "closed before the head: {}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..i]).to_string();
                let rest = buf[i + 4..].to_vec();
                return (s, head, rest);
            }
        }
    }
}

async fn wait_for<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads a response body (chunked or until close) until `pred` holds on what was read.
async fn read_until(
    s: &mut (impl AsyncRead + Unpin),
    mut got: Vec<u8>,
    pred: impl Fn(&str) -> bool,
) -> String {
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !pred(&String::from_utf8_lossy(&got)) {
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("timed out; got {:?}", String::from_utf8_lossy(&got)))
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Writes one masked WebSocket binary frame.
async fn ws_send(s: &mut (impl AsyncWrite + Unpin), payload: &[u8]) {
    let mask = [7u8, 1, 9, 3];
    let mut f = vec![0x82u8];
    assert!(payload.len() < 126);
    f.push(0x80 | payload.len() as u8);
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&f).await.unwrap();
}

/// Reads one WebSocket frame: (opcode, payload).
async fn ws_recv(s: &mut (impl AsyncRead + Unpin), pending: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
    let mut chunk = [0u8; 4096];
    loop {
        if pending.len() >= 2 {
            let op = pending[0] & 0x0f;
            let len0 = (pending[1] & 0x7f) as usize;
            let (len, hdr) = match len0 {
                126 if pending.len() >= 4 => {
                    (u16::from_be_bytes([pending[2], pending[3]]) as usize, 4)
                }
                127 if pending.len() >= 10 => (
                    u64::from_be_bytes(pending[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                126 | 127 => (usize::MAX, 0),
                n => (n, 2),
            };
            if len != usize::MAX && pending.len() >= hdr + len {
                let payload = pending[hdr..hdr + len].to_vec();
                pending.drain(..hdr + len);
                return Some((op, payload));
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(15), s.read(&mut chunk))
            .await
            .expect("websocket frame in time")
            .unwrap_or(0);
        if n == 0 {
            return None;
        }
        pending.extend_from_slice(&chunk[..n]);
    }
}

const WS: &str = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

#[tokio::test]
async fn agent_api_on_containerd() {
    use futures::FutureExt;
    let env = setup().await;
    // Tear the pod and containerd down even when an assertion fails.
    let result = std::panic::AssertUnwindSafe(checks(&env))
        .catch_unwind()
        .await;
    env.teardown().await;
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

async fn checks(env: &Env) {
    // Without a client certificate the TLS handshake fails.
    let cfg = skiff_pki::client_tls_config(&env.ca, None).unwrap();
    let tcp = tokio::net::TcpStream::connect(env.addr).await.unwrap();
    let refused = match tokio_rustls::TlsConnector::from(cfg)
        .connect(
            rustls::pki_types::ServerName::IpAddress(env.addr.ip().into()),
            tcp,
        )
        .await
    {
        Err(_) => true,
        Ok(mut s) => {
            let _ = s
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: n\r\n\r\n")
                .await;
            let mut b = [0u8; 64];
            !matches!(s.read(&mut b).await, Ok(n) if n > 0)
        }
    };
    assert!(refused, "a client without a certificate got an answer");

    // Only the API server's identity may call.
    let (_, head, _) = env.get("/healthz", "", true).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");

    // Logs: the whole file, then the tail with timestamps, then `previous`.
    let (mut s, head, rest) = env
        .get("/containerLogs/default/web/c?limitBytes=6", "", false)
        .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let body = read_until(&mut s, rest, |b| b.contains("\r\n0\r\n")).await;
    // Chunked: exactly the first 6 bytes, then the end. containerd copies stdout and stderr
    // concurrently, so either line may come first in the file.
    assert!(
        body == "6\r\nhello\n\r\n0\r\n\r\n" || body == "6\r\noops\nh\r\n0\r\n\r\n",
        "{body:?}"
    );

    // Both streams land in one file.
    let (mut s, _, rest) = env
        .get("/containerLogs/default/web/c?follow=true", "", false)
        .await;
    let body = read_until(&mut s, rest, |b| {
        b.contains("hello\n") && b.contains("oops\n")
    })
    .await;
    assert!(
        body.contains("hello\n") && body.contains("oops\n"),
        "{body:?}"
    );
    drop(s);

    let (mut s, _, rest) = env
        .get(
            "/containerLogs/default/web/c?previous=true&timestamps=true",
            "",
            false,
        )
        .await;
    let body = read_until(&mut s, rest, |b| b.contains("\r\n0\r\n")).await;
    assert!(body.contains("Z first-run\n"), "{body:?}");

    // Follow streams new lines as the container writes them.
    let (mut s, head, rest) = env
        .get(
            "/containerLogs/default/web/c?follow=true&tailLines=1",
            "",
            false,
        )
        .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let body = read_until(&mut s, rest, |b| b.matches("tick").count() >= 4).await;
    assert!(!body.contains("hello"), "tailLines=1: {body:?}");
    drop(s);

    let (_, head, _) = env.get("/containerLogs/default/nope/c", "", false).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    // Exec over WebSocket (v4.channel.k8s.io): stdout arrives on channel 1, the exit status on 3.
    let (mut s, head, rest) = env
        .get(
            "/exec/default/web/c?command=/busybox&command=echo&command=hi%20there&output=1&stdout=1",
            &format!("{WS}Sec-WebSocket-Protocol: v4.channel.k8s.io\r\n"),
            false,
        )
        .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-protocol: v4.channel.k8s.io"),
        "{head}"
    );
    let mut pending = rest;
    let mut stdout = Vec::new();
    let mut status = Vec::new();
    while let Some((op, p)) = ws_recv(&mut s, &mut pending).await {
        if op == 8 {
            break;
        }
        match p.first() {
            Some(1) => stdout.extend_from_slice(&p[1..]),
            Some(3) => status.extend_from_slice(&p[1..]),
            _ => {}
        }
    }
    assert_eq!(String::from_utf8_lossy(&stdout), "hi there\n");
    assert!(
        String::from_utf8_lossy(&status).contains("Success"),
        "{:?}",
        String::from_utf8_lossy(&status)
    );

    // Port-forward over WebSocket: channel 0 carries data, after the port's announcement.
    let port = env.http_port;
    let (mut s, head, rest) = env
        .get(
            &format!("/portForward/default/web?port={port}"),
            &format!("{WS}Sec-WebSocket-Protocol: v4.channel.k8s.io\r\n"),
            false,
        )
        .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut pending = rest;
    // The two announcements (data and error channel) come first.
    for _ in 0..2 {
        let (_, p) = ws_recv(&mut s, &mut pending).await.unwrap();
        assert_eq!(&p[1..3], &port.to_le_bytes());
    }
    let mut req = vec![0u8];
    req.extend_from_slice(b"GET /index.html HTTP/1.0\r\n\r\n");
    ws_send(&mut s, &req).await;
    let mut data = Vec::new();
    while !String::from_utf8_lossy(&data).contains("served") {
        let Some((op, p)) = ws_recv(&mut s, &mut pending).await else {
            break;
        };
        if op == 8 {
            break;
        }
        if p.first() == Some(&0) {
            data.extend_from_slice(&p[1..]);
        }
    }
    assert!(
        String::from_utf8_lossy(&data).contains("served"),
        "{:?}",
        String::from_utf8_lossy(&data)
    );
    drop(s);
}
