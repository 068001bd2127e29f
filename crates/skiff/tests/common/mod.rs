//! System-test harness: the real `skiff` binary under a temp dir on loopback, driven by the real
//! `kubectl`. Processes are stopped by PID.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The kubectl every test uses.
pub const KUBECTL: &str = "/usr/bin/kubectl";

/// A running `skiff server`.
pub struct Server {
    pub child: Child,
    pub data_dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub port: u16,
    _tmp: Option<tempfile::TempDir>,
}

fn require_kubectl() {
    assert!(
        Path::new(KUBECTL).exists(),
        "system tests need the stock kubectl at {KUBECTL}"
    );
}

impl Server {
    /// Starts a server on a fresh data dir.
    pub fn start() -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut s = Server::start_in(&dir, 0);
        s._tmp = Some(tmp);
        s
    }

    /// Starts a server on `data_dir` (port 0: any free port).
    pub fn start_in(data_dir: &Path, port: u16) -> Server {
        Server::start_with(data_dir, port, &[])
    }

    /// Starts a server on `data_dir` with extra flags.
    pub fn start_with(data_dir: &Path, port: u16, extra: &[&str]) -> Server {
        require_kubectl();
        let mut child = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args([
                "server",
                "--disable-agent",
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
                // Parallel servers must not fight over port 53.
                "--dns-port",
                "0",
            ])
            .arg("--https-listen-port")
            .arg(port.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("SKIFF_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start skiff server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut url = None;
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if let Some(u) = line.strip_prefix("skiff server is ready: API at ") {
                    url = Some(u.to_string());
                }
                if let Some(k) = line.strip_prefix("export KUBECONFIG=") {
                    let _ = tx.send((url.clone().unwrap_or_default(), PathBuf::from(k)));
                }
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let (url, kubeconfig) = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(v) => v,
            Err(_) => {
                let _ = child.kill();
                panic!("skiff server did not become ready within 60s");
            }
        };
        let port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in URL");
        Server {
            child,
            data_dir: data_dir.to_path_buf(),
            kubeconfig,
            port,
            _tmp: None,
        }
    }

    /// Runs kubectl against this server.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// Runs kubectl with `stdin` as input.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().expect("kubectl output")
    }

    /// Runs kubectl and returns stdout, failing the test on a non-zero exit.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// Runs kubectl expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Sends SIGTERM and waits for exit.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("skiff server did not exit on SIGTERM within 20s");
    }

    /// Kills the server with SIGKILL.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `f` until it returns `Some` or the deadline passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running `skiff sim`, stopped by PID when dropped.
pub struct Sim(pub Child);

impl Sim {
    pub fn start(server: &Server, args: &[&str]) -> Sim {
        let mut child = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .arg("sim")
            .arg("--kubeconfig")
            .arg(&server.kubeconfig)
            .args(args)
            .env("SKIFF_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start skiff sim");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("skiff sim is ready") {
                    let _ = tx.send(());
                }
            }
        });
        let mut sim = Sim(child);
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            sim.stop();
            panic!("skiff sim did not become ready within 30s");
        }
        sim
    }

    pub fn stop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let pid = self.0.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            for _ in 0..200 {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The processes a stopped agent left: those whose command line names its data dir
/// (containerd, the shims), containers whose root filesystem lies under it, and all their
/// descendants.
pub fn leftovers(marker: &str) -> Vec<u32> {
    let mut parent = std::collections::BTreeMap::new();
    let mut ours = std::collections::BTreeSet::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        // A container whose shim died first is re-parented to init; its root filesystem (an
        // overlay under the data dir) still names the marker.
        let root_mount = std::fs::read_to_string(e.path().join("mountinfo"))
            .ok()
            .and_then(|m| m.lines().next().map(str::to_string))
            .unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains(marker) || root_mount.contains(marker) {
            ours.insert(pid);
        }
        // `pid (comm) state ppid ...`; comm may hold spaces, so parse after the last ')'.
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        if let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok())
        {
            parent.insert(pid, ppid);
        }
    }
    loop {
        let more: Vec<u32> = parent
            .iter()
            .filter(|(pid, ppid)| ours.contains(*ppid) && !ours.contains(*pid))
            .map(|(pid, _)| *pid)
            .collect();
        if more.is_empty() {
            break;
        }
        ours.extend(more);
    }
    ours.into_iter().collect()
}

/// Stops by PID what a stopped agent left under `data_dir` (see [`leftovers`]), then unmounts
/// its mounts, deepest first.
pub fn remove_agent_leftovers(data_dir: &Path) {
    let marker = data_dir.to_string_lossy().into_owned();
    for pid in leftovers(&marker) {
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
}

/// What a system test with a real agent needs and this machine lacks (root, containerd, runc,
/// nft, ip, the CNI plugins, busybox, kubectl), if anything.
pub fn missing_agent_prerequisite() -> Option<String> {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    if !root {
        return Some("root".into());
    }
    for tool in ["containerd", "runc", "nft", "ip"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
            .unwrap_or(false);
        if !found {
            return Some(format!("`{tool}` on PATH"));
        }
    }
    for f in [
        "/usr/lib/cni/bridge",
        "/usr/lib/cni/host-local",
        "/usr/lib/cni/portmap",
        "/bin/busybox",
        KUBECTL,
    ] {
        if !Path::new(f).exists() {
            return Some(f.into());
        }
    }
    None
}
