//! System tests of the datastore: `skiff server` on a 3-member etcd cluster surviving the loss
//! of a member, snapshots (SQLite and etcd) and migration between SQLite and etcd, with the real
//! binary and the real kubectl. etcd is Debian's `/usr/bin/etcd`, started on loopback and
//! stopped by PID; the tests fail (never skip) when it is missing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{wait_for, Server, KUBECTL};
use skiff_store::etcd::{EtcdCluster, EtcdProcess};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn skiff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(args)
        .env("SKIFF_LOG", "warn")
        .output()
        .expect("run skiff")
}

fn skiff_ok(args: &[&str]) -> String {
    let out = skiff(args);
    assert!(
        out.status.success(),
        "skiff {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The configmap names in `default`.
fn configmaps(s: &Server) -> BTreeSet<String> {
    s.ok(&["get", "configmaps", "-n", "default", "-o", "name"])
        .lines()
        .filter_map(|l| l.strip_prefix("configmap/"))
        .filter(|n| *n != "kube-root-ca.crt")
        .map(str::to_owned)
        .collect()
}

/// `kubectl get configmaps -w`, printing one `TYPE NAME RV` line per event.
struct Watcher {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Watcher {
    fn start(s: &Server) -> Watcher {
        let mut child = Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(&s.kubeconfig)
            .args([
                "get",
                "configmaps",
                "-n",
                "default",
                "-w",
                "--output-watch-events",
                "-o",
                r#"jsonpath={.type} {.object.metadata.name} {.object.metadata.resourceVersion}{"\n"}"#,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("kubectl get -w");
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Watcher { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn has(&self, line_prefix: &str) -> bool {
        self.lines().iter().any(|l| l.starts_with(line_prefix))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a kubectl write until it is acknowledged, counting failed attempts (a member just died:
/// a request may fail; one that failed but landed shows up as `AlreadyExists`/`NotFound` on the
/// retry, which also counts as acknowledged).
fn write_until_acked(s: &Server, args: &[&str], landed: &str, failures: &mut usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = s.kubectl(args);
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || err.contains(landed) {
            return;
        }
        *failures += 1;
        eprintln!("kubectl {args:?} failed: {err}");
        assert!(
            Instant::now() < deadline,
            "kubectl {args:?} kept failing: {err}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn server_on_a_3_member_etcd_cluster_survives_a_killed_member() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime();
    let mut cluster = rt
        .block_on(EtcdCluster::start(
            &tmp.path().join("etcd"),
            3,
            Duration::from_secs(30),
        ))
        .expect("starting a 3-member etcd cluster");
    let endpoints = cluster.endpoints().join(",");
    let server = Server::start_with(
        &tmp.path().join("skiff"),
        0,
        &["--datastore-endpoint", &endpoints],
    );

    for i in 0..5 {
        server.ok(&["create", "configmap", &format!("pre{i}"), "-n", "default"]);
    }
    let watcher = Watcher::start(&server);
    wait_for(
        "the watcher's initial list",
        Duration::from_secs(20),
        || {
            (0..5)
                .all(|i| watcher.has(&format!("ADDED pre{i} ")))
                .then_some(())
        },
    );

    // The leader is the hardest member to lose: writes wait for a new election.
    let victim = rt.block_on(cluster.leader_index()).expect("leader");
    cluster.members[victim].kill();

    let mut failures = 0;
    let mut live = BTreeSet::new();
    for i in 0..20 {
        let name = format!("after{i:02}");
        write_until_acked(
            &server,
            &[
                "create",
                "configmap",
                &name,
                "-n",
                "default",
                "--from-literal=k=v",
            ],
            "AlreadyExists",
            &mut failures,
        );
        live.insert(name);
    }
    for i in 0..5 {
        let name = format!("after{i:02}");
        write_until_acked(
            &server,
            &[
                "label",
                "configmap",
                &name,
                "-n",
                "default",
                "touched=yes",
                "--overwrite",
            ],
            "\0never",
            &mut failures,
        );
    }
    for i in 15..20 {
        let name = format!("after{i:02}");
        write_until_acked(
            &server,
            &["delete", "configmap", &name, "-n", "default"],
            "NotFound",
            &mut failures,
        );
        live.remove(&name);
    }
    // Requests that could not reach the dead member are sent to another one; only a write
    // racing the election can fail, with an error etcd itself calls ambiguous (not retried).
    assert!(
        failures <= 2,
        "{failures} kubectl writes failed after the member was killed"
    );

    // Every acknowledged write is there.
    let mut want: BTreeSet<String> = (0..5).map(|i| format!("pre{i}")).collect();
    want.extend(live.iter().cloned());
    assert_eq!(configmaps(&server), want);
    let labelled = server.ok(&[
        "get",
        "configmaps",
        "-n",
        "default",
        "-l",
        "touched=yes",
        "-o",
        "name",
    ]);
    assert_eq!(labelled.lines().count(), 5, "{labelled}");

    // The watcher saw every later event exactly once, in resourceVersion order.
    let expected = 20 + 5 + 5;
    let lines = wait_for("every watch event", Duration::from_secs(30), || {
        let lines: Vec<String> = watcher
            .lines()
            .into_iter()
            .filter(|l| l.contains(" after"))
            .collect();
        (lines.len() >= expected).then_some(lines)
    });
    std::thread::sleep(Duration::from_millis(500));
    let late: Vec<String> = watcher
        .lines()
        .into_iter()
        .filter(|l| l.contains(" after"))
        .collect();
    assert_eq!(late.len(), expected, "duplicate events: {late:#?}");
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut last_rv = 0u64;
    for l in &lines {
        let parts: Vec<&str> = l.split(' ').collect();
        assert_eq!(parts.len(), 3, "{l}");
        let rv: u64 = parts[2].parse().expect("numeric resourceVersion");
        assert!(rv > last_rv, "events out of order: {lines:#?}");
        last_rv = rv;
        *counts
            .entry((parts[0].to_owned(), parts[1].to_owned()))
            .or_default() += 1;
    }
    for i in 0..20 {
        let name = format!("after{i:02}");
        assert_eq!(
            counts.get(&("ADDED".into(), name.clone())),
            Some(&1),
            "{name}"
        );
        let modified = if i < 5 { Some(&1) } else { None };
        assert_eq!(
            counts.get(&("MODIFIED".into(), name.clone())),
            modified,
            "{name}"
        );
        let deleted = if i >= 15 { Some(&1) } else { None };
        assert_eq!(
            counts.get(&("DELETED".into(), name.clone())),
            deleted,
            "{name}"
        );
    }
    drop(watcher);
    server.stop();
}

fn db_of(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("db/state.db").display())
}

#[test]
fn sqlite_snapshot_restore_brings_every_object_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("skiff");
    let dir_s = dir.to_str().unwrap();
    let snap = tmp.path().join("snap.db");
    let server = Server::start_in(&dir, 0);
    for i in 0..20 {
        server.ok(&["create", "configmap", &format!("cm{i:02}"), "-n", "default"]);
    }
    server.ok(&["create", "namespace", "team-a"]);
    server.ok(&[
        "create",
        "secret",
        "generic",
        "s1",
        "-n",
        "team-a",
        "--from-literal=a=b",
    ]);
    // Saved while the server runs.
    skiff_ok(&[
        "datastore",
        "snapshot",
        "save",
        snap.to_str().unwrap(),
        "--data-dir",
        dir_s,
    ]);
    server.ok(&["create", "configmap", "after-snapshot", "-n", "default"]);
    let out = skiff(&[
        "datastore",
        "snapshot",
        "restore",
        snap.to_str().unwrap(),
        "--data-dir",
        dir_s,
    ]);
    assert!(
        !out.status.success(),
        "restore under a running server must be refused"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("stop the server"));
    server.stop();

    // The cluster wiped: the database is gone.
    std::fs::remove_dir_all(dir.join("db")).unwrap();
    skiff_ok(&[
        "datastore",
        "snapshot",
        "restore",
        snap.to_str().unwrap(),
        "--data-dir",
        dir_s,
    ]);
    let server = Server::start_in(&dir, 0);
    let want: BTreeSet<String> = (0..20).map(|i| format!("cm{i:02}")).collect();
    assert_eq!(configmaps(&server), want);
    let secret = server.ok(&[
        "get",
        "secret",
        "s1",
        "-n",
        "team-a",
        "-o",
        "jsonpath={.data.a}",
    ]);
    assert_eq!(secret, "Yg==");
    // The restored cluster takes writes.
    server.ok(&["create", "configmap", "new", "-n", "default"]);
    server.stop();
}

#[test]
fn etcd_snapshot_restore_brings_every_object_back() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime();
    let member = rt
        .block_on(EtcdProcess::start(
            &tmp.path().join("etcd"),
            Duration::from_secs(20),
        ))
        .expect("starting etcd");
    let url = member.client_url().to_owned();
    let dir = tmp.path().join("skiff");
    let snap = tmp.path().join("etcd.snap");
    let server = Server::start_with(&dir, 0, &["--datastore-endpoint", &url]);
    for i in 0..10 {
        server.ok(&["create", "configmap", &format!("cm{i}"), "-n", "default"]);
    }
    skiff_ok(&[
        "datastore",
        "snapshot",
        "save",
        snap.to_str().unwrap(),
        "--datastore-endpoint",
        &url,
    ]);
    server.stop();
    // The cluster wiped: the member and its data are gone.
    drop(member);
    std::fs::remove_dir_all(tmp.path().join("etcd")).unwrap();

    let (client_url, peer_url) = EtcdProcess::free_urls().unwrap();
    let restored = tmp.path().join("etcd-restored");
    skiff_ok(&[
        "datastore",
        "snapshot",
        "restore",
        snap.to_str().unwrap(),
        "--etcd-data-dir",
        restored.to_str().unwrap(),
        "--etcd-name",
        "restored",
        "--etcd-peer-url",
        &peer_url,
    ]);
    let _member = rt
        .block_on(EtcdProcess::start_named(
            &restored,
            "restored",
            &client_url,
            &peer_url,
            Duration::from_secs(20),
        ))
        .expect("starting etcd on the restored data");
    let server = Server::start_with(&dir, 0, &["--datastore-endpoint", &client_url]);
    let want: BTreeSet<String> = (0..10).map(|i| format!("cm{i}")).collect();
    assert_eq!(configmaps(&server), want);
    server.ok(&["create", "configmap", "new", "-n", "default"]);
    server.stop();
}

#[test]
fn migrate_sqlite_to_etcd_and_back_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime();
    let member = rt
        .block_on(EtcdProcess::start(
            &tmp.path().join("etcd"),
            Duration::from_secs(20),
        ))
        .expect("starting etcd");
    let url = member.client_url().to_owned();
    let dir = tmp.path().join("skiff");

    let server = Server::start_in(&dir, 0);
    for i in 0..15 {
        server.ok(&[
            "create",
            "configmap",
            &format!("cm{i:02}"),
            "-n",
            "default",
            "--from-literal=i=x",
        ]);
    }
    server.ok(&["create", "namespace", "team-a"]);
    server.ok(&["create", "serviceaccount", "robot", "-n", "team-a"]);
    let before_ns = server.ok(&["get", "namespaces", "-o", "name"]);
    server.stop();

    let out = skiff_ok(&["datastore", "migrate", "--from", &db_of(&dir), "--to", &url]);
    assert!(out.contains("copied"), "{out}");
    // A second migration into the now non-empty etcd is refused without --force.
    let again = skiff(&["datastore", "migrate", "--from", &db_of(&dir), "--to", &url]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    let server = Server::start_with(&dir, 0, &["--datastore-endpoint", &url]);
    let want: BTreeSet<String> = (0..15).map(|i| format!("cm{i:02}")).collect();
    assert_eq!(configmaps(&server), want);
    assert_eq!(server.ok(&["get", "namespaces", "-o", "name"]), before_ns);
    server.ok(&["get", "serviceaccount", "robot", "-n", "team-a"]);
    assert_eq!(
        server.ok(&[
            "get",
            "configmap",
            "cm07",
            "-n",
            "default",
            "-o",
            "jsonpath={.data.i}"
        ]),
        "x"
    );
    // The cluster keeps working on etcd; then everything goes back to SQLite.
    server.ok(&["create", "configmap", "on-etcd", "-n", "default"]);
    server.ok(&["delete", "configmap", "cm00", "-n", "default"]);
    server.stop();

    skiff_ok(&[
        "datastore",
        "migrate",
        "--from",
        &url,
        "--to",
        &db_of(&dir),
        "--force",
    ]);
    let server = Server::start_in(&dir, 0);
    let mut want = want;
    want.remove("cm00");
    want.insert("on-etcd".into());
    assert_eq!(configmaps(&server), want);
    server.ok(&["get", "serviceaccount", "robot", "-n", "team-a"]);
    server.ok(&["create", "configmap", "back-on-sqlite", "-n", "default"]);
    server.stop();
    drop(member);
}

#[test]
fn server_on_etcd_over_tls_with_client_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = skiff_pki::ensure(
        &tmp.path().join("etcd-pki"),
        &skiff_pki::PkiOptions::for_this_host(Vec::new()),
    )
    .unwrap();
    let year = Duration::from_secs(365 * 24 * 3600);
    let (server_cert, server_key) = pki
        .issue_server_cert("etcd", &["127.0.0.1".to_owned()], year)
        .unwrap();
    let (client_cert, client_key) = pki.issue_client_cert("skiff", &[], year).unwrap();
    let write = |name: &str, pem: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, pem).unwrap();
        p
    };
    let tls = skiff_store::etcd::EtcdServerTls {
        ca_file: write("ca.pem", pki.ca_cert_pem()),
        cert_file: write("etcd.pem", &server_cert),
        key_file: write("etcd-key.pem", &server_key),
        client_cert_file: write("client.pem", &client_cert),
        client_key_file: write("client-key.pem", &client_key),
    };
    let rt = runtime();
    let member = rt
        .block_on(EtcdProcess::start_tls(
            &tmp.path().join("etcd"),
            &tls,
            Duration::from_secs(20),
        ))
        .expect("starting etcd with TLS");
    let url = member.client_url().to_owned();
    assert!(url.starts_with("https://"), "{url}");
    let (ca, cert, key) = (
        tls.ca_file.to_str().unwrap(),
        tls.client_cert_file.to_str().unwrap(),
        tls.client_key_file.to_str().unwrap(),
    );
    // Without a client certificate etcd refuses the connection.
    let mut opts = skiff_store::EtcdOptions::new([url.clone()]);
    opts.ca_file = Some(tls.ca_file.clone());
    opts.dial_timeout = Duration::from_secs(1);
    opts.compaction_interval = None;
    assert!(
        rt.block_on(skiff_store::EtcdStore::connect(opts)).is_err(),
        "etcd accepted a client without a certificate"
    );
    let server = Server::start_with(
        &tmp.path().join("skiff"),
        0,
        &[
            "--datastore-endpoint",
            &url,
            "--datastore-cafile",
            ca,
            "--datastore-certfile",
            cert,
            "--datastore-keyfile",
            key,
        ],
    );
    server.ok(&["create", "configmap", "over-tls", "-n", "default"]);
    assert!(configmaps(&server).contains("over-tls"));
    server.stop();
}
