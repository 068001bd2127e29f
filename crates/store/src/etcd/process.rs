//! Local etcd members for tests and benchmarks: Debian's `/usr/bin/etcd` (package
//! `etcd-server`) on loopback, on free ports, in a caller-owned data directory, stopped by PID.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{Error, Result};

/// Where Debian's `etcd-server` package installs the server.
pub const ETCD_BINARY: &str = "/usr/bin/etcd";

/// One running etcd member. Killed (SIGKILL) and reaped on drop.
pub struct EtcdProcess {
    name: String,
    child: Option<Child>,
    client_url: String,
    peer_url: String,
    data_dir: PathBuf,
    initial_cluster: String,
    timing: [&'static str; 2],
    tls: Option<EtcdServerTls>,
}

/// TLS for a member's client port: it serves `cert_file` and requires client certificates
/// signed by `ca_file`; `client_cert_file`/`client_key_file` are what readiness checks present.
#[derive(Clone, Debug)]
pub struct EtcdServerTls {
    /// CA of the serving and client certificates (PEM).
    pub ca_file: PathBuf,
    /// Serving certificate (PEM), valid for 127.0.0.1.
    pub cert_file: PathBuf,
    /// Its key (PEM).
    pub key_file: PathBuf,
    /// A client certificate signed by `ca_file` (PEM).
    pub client_cert_file: PathBuf,
    /// Its key (PEM).
    pub client_key_file: PathBuf,
}

/// A free loopback port (the listener is closed before etcd binds it: a small race that tests
/// tolerate better than a fixed port).
fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::Backend(format!("finding a free port: {e}")))?;
    Ok(l.local_addr()
        .map_err(|e| Error::Backend(e.to_string()))?
        .port())
}

/// A member to start: name, client URL, peer URL.
struct Member {
    name: String,
    client_url: String,
    peer_url: String,
}

impl Member {
    fn new(name: String) -> Result<Member> {
        Ok(Member {
            name,
            client_url: format!("http://127.0.0.1:{}", free_port()?),
            peer_url: format!("http://127.0.0.1:{}", free_port()?),
        })
    }
}

impl EtcdProcess {
    /// Starts a one-member cluster with its data in `data_dir` (created if missing) and waits
    /// until it serves reads, failing after `deadline`.
    pub async fn start(data_dir: &Path, deadline: Duration) -> Result<EtcdProcess> {
        let m = Member::new("skiff0".into())?;
        let initial = format!("{}={}", m.name, m.peer_url);
        // One member needs no elections with peers: short timeouts make it leader sooner.
        let p = Self::spawn(&m, data_dir, &initial, "new", ["10", "100"])?;
        p.wait_ready(deadline).await?;
        Ok(p)
    }

    /// Starts a one-member cluster whose client port speaks TLS and requires client
    /// certificates (`https://127.0.0.1:PORT`).
    pub async fn start_tls(
        data_dir: &Path,
        tls: &EtcdServerTls,
        deadline: Duration,
    ) -> Result<EtcdProcess> {
        let mut m = Member::new("skiff0".into())?;
        m.client_url = m.client_url.replace("http://", "https://");
        let initial = format!("{}={}", m.name, m.peer_url);
        let mut p = Self::spawn_with(&m, data_dir, &initial, "new", ["10", "100"], Some(tls))?;
        p.tls = Some(tls.clone());
        p.wait_ready(deadline).await?;
        Ok(p)
    }

    /// Starts a one-member cluster named `name` at the given URLs (e.g. on a data directory
    /// made by `etcdctl snapshot restore` for that name and peer URL).
    pub async fn start_named(
        data_dir: &Path,
        name: &str,
        client_url: &str,
        peer_url: &str,
        deadline: Duration,
    ) -> Result<EtcdProcess> {
        let m = Member {
            name: name.to_owned(),
            client_url: client_url.to_owned(),
            peer_url: peer_url.to_owned(),
        };
        let initial = format!("{}={}", m.name, m.peer_url);
        let p = Self::spawn(&m, data_dir, &initial, "new", ["10", "100"])?;
        p.wait_ready(deadline).await?;
        Ok(p)
    }

    /// Two free loopback URLs: `(client, peer)`.
    pub fn free_urls() -> Result<(String, String)> {
        let m = Member::new(String::new())?;
        Ok((m.client_url, m.peer_url))
    }

    fn spawn(
        m: &Member,
        data_dir: &Path,
        initial_cluster: &str,
        state: &str,
        timing: [&'static str; 2],
    ) -> Result<EtcdProcess> {
        Self::spawn_with(m, data_dir, initial_cluster, state, timing, None)
    }

    fn spawn_with(
        m: &Member,
        data_dir: &Path,
        initial_cluster: &str,
        state: &str,
        timing: [&'static str; 2],
        tls: Option<&EtcdServerTls>,
    ) -> Result<EtcdProcess> {
        if !Path::new(ETCD_BINARY).exists() {
            return Err(Error::Backend(format!(
                "{ETCD_BINARY} is missing: install Debian's etcd-server package"
            )));
        }
        std::fs::create_dir_all(data_dir)
            .map_err(|e| Error::Backend(format!("creating {}: {e}", data_dir.display())))?;
        let log = std::fs::File::create(data_dir.with_extension("log"))
            .map_err(|e| Error::Backend(format!("creating the etcd log: {e}")))?;
        let log2 = log.try_clone().map_err(|e| Error::Backend(e.to_string()))?;
        let mut cmd = Command::new(ETCD_BINARY);
        if let Some(tls) = tls {
            cmd.arg("--cert-file")
                .arg(&tls.cert_file)
                .arg("--key-file")
                .arg(&tls.key_file)
                .arg("--trusted-ca-file")
                .arg(&tls.ca_file)
                .arg("--client-cert-auth");
        }
        let child = cmd
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen-client-urls", &m.client_url])
            .args(["--advertise-client-urls", &m.client_url])
            .args(["--listen-peer-urls", &m.peer_url])
            .args(["--initial-advertise-peer-urls", &m.peer_url])
            .args(["--initial-cluster", initial_cluster])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", "skiff-test"])
            .args(["--heartbeat-interval", timing[0]])
            .args(["--election-timeout", timing[1]])
            .args(["--logger", "zap", "--log-level", "warn"])
            .env_remove("ETCDCTL_API")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| Error::Backend(format!("starting {ETCD_BINARY}: {e}")))?;
        Ok(EtcdProcess {
            name: m.name.clone(),
            child: Some(child),
            client_url: m.client_url.clone(),
            peer_url: m.peer_url.clone(),
            data_dir: data_dir.to_owned(),
            initial_cluster: initial_cluster.to_owned(),
            timing,
            tls: tls.cloned(),
        })
    }

    /// Waits until the member answers a read (which needs a leader), or fails after
    /// `deadline` with the tail of its log.
    pub async fn wait_ready(&self, deadline: Duration) -> Result<()> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let attempt = async {
                let mut opts = etcd_client::ConnectOptions::new()
                    .with_connect_timeout(Duration::from_millis(500))
                    .with_require_leader(true);
                if let Some(tls) = &self.tls {
                    let read = |p: &Path| {
                        std::fs::read(p).map_err(|e| {
                            etcd_client::Error::InvalidArgs(format!("{}: {e}", p.display()))
                        })
                    };
                    opts = opts.with_tls(
                        etcd_client::TlsOptions::new()
                            .ca_certificate(etcd_client::Certificate::from_pem(read(&tls.ca_file)?))
                            .identity(etcd_client::Identity::from_pem(
                                read(&tls.client_cert_file)?,
                                read(&tls.client_key_file)?,
                            )),
                    );
                }
                let mut c =
                    etcd_client::Client::connect([self.client_url.as_str()], Some(opts)).await?;
                c.get("health", None).await
            };
            let last = match tokio::time::timeout(Duration::from_secs(2), attempt).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".to_owned(),
            };
            if tokio::time::Instant::now() >= until {
                let log = std::fs::read_to_string(self.data_dir.with_extension("log"))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                return Err(Error::Backend(format!(
                    "etcd {} at {} not ready within {deadline:?}: {last}; log tail:\n{}",
                    self.name,
                    self.client_url,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The member's client URL (`http://127.0.0.1:PORT`).
    pub fn client_url(&self) -> &str {
        &self.client_url
    }

    /// The member's peer URL.
    pub fn peer_url(&self) -> &str {
        &self.peer_url
    }

    /// The member's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The member's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts a killed member again on the same ports and data directory, and waits until it
    /// serves reads.
    pub async fn restart(&mut self, deadline: Duration) -> Result<()> {
        self.kill();
        let m = Member {
            name: self.name.clone(),
            client_url: self.client_url.clone(),
            peer_url: self.peer_url.clone(),
        };
        let fresh = Self::spawn_with(
            &m,
            &self.data_dir,
            &self.initial_cluster,
            "existing",
            self.timing,
            self.tls.as_ref(),
        )?;
        *self = fresh;
        self.wait_ready(deadline).await
    }

    /// Kills the member with SIGKILL (no clean shutdown) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster of local members, each on its own client and peer ports.
pub struct EtcdCluster {
    /// The members, in start order.
    pub members: Vec<EtcdProcess>,
}

impl EtcdCluster {
    /// Starts `size` members with data directories `<base>/member<i>` and waits until every
    /// member serves reads.
    pub async fn start(base: &Path, size: usize, deadline: Duration) -> Result<EtcdCluster> {
        let plan: Vec<Member> = (0..size)
            .map(|i| Member::new(format!("skiff{i}")))
            .collect::<Result<_>>()?;
        let initial: Vec<String> = plan
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect();
        let initial = initial.join(",");
        let mut members = Vec::new();
        for (i, m) in plan.iter().enumerate() {
            // Half etcd's default timing: real elections between peers, sooner.
            members.push(EtcdProcess::spawn(
                m,
                &base.join(format!("member{i}")),
                &initial,
                "new",
                ["50", "500"],
            )?);
        }
        let cluster = EtcdCluster { members };
        for m in &cluster.members {
            m.wait_ready(deadline).await?;
        }
        Ok(cluster)
    }

    /// The index of the member that is the leader now (members that do not answer are
    /// skipped).
    pub async fn leader_index(&self) -> Result<usize> {
        for m in &self.members {
            if m.child.is_none() {
                continue;
            }
            let Ok(mut c) = etcd_client::Client::connect([m.client_url()], None).await else {
                continue;
            };
            let Ok(status) = c.status().await else {
                continue;
            };
            let leader = status.leader();
            for (i, other) in self.members.iter().enumerate() {
                if other.child.is_none() {
                    continue;
                }
                let Ok(mut c) = etcd_client::Client::connect([other.client_url()], None).await
                else {
                    continue;
                };
                if let Ok(st) = c.status().await {
                    if st.header().map(|h| h.member_id()) == Some(leader) {
                        return Ok(i);
                    }
                }
            }
        }
        Err(Error::Backend("no etcd member reports a leader".into()))
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| m.client_url().to_owned())
            .collect()
    }
}
