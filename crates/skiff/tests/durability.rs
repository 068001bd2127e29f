//! Restart and crash: nothing acknowledged is lost.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::Server;

fn configmap_versions(s: &Server) -> BTreeMap<String, String> {
    let out = s.ok(&["get", "cm", "-A", "-o", "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}={.metadata.resourceVersion}{\"\\n\"}{end}"]);
    out.lines()
        // The root-CA publisher's ConfigMaps are the controller manager's, not this test's.
        .filter(|l| !l.contains("/kube-root-ca.crt="))
        .filter_map(|l| {
            l.split_once('=')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        })
        .collect()
}

#[test]
fn restart_keeps_objects_and_resource_versions() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), 0);
    for i in 0..20 {
        s.ok(&[
            "create",
            "configmap",
            &format!("c{i}"),
            "--from-literal=a=b",
        ]);
    }
    let before = configmap_versions(&s);
    let ca = std::fs::read(dir.path().join("tls/ca.crt")).unwrap();
    s.stop();
    let s = Server::start_in(dir.path(), 0);
    assert_eq!(configmap_versions(&s), before);
    assert_eq!(
        std::fs::read(dir.path().join("tls/ca.crt")).unwrap(),
        ca,
        "CA reused"
    );
    s.stop();
}

#[test]
fn sigkill_loses_no_acknowledged_create() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), 0);
    let kubeconfig = s.kubeconfig.clone();
    // A client creating objects one by one, recording each acknowledged create.
    let writer = std::thread::spawn(move || {
        let mut acked = Vec::new();
        for i in 0..10_000 {
            let name = format!("k{i}");
            let out = std::process::Command::new(common::KUBECTL)
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args([
                    "create",
                    "configmap",
                    &name,
                    "--from-literal=a=b",
                    "--request-timeout",
                    "5s",
                ])
                .output()
                .unwrap();
            if !out.status.success() {
                break;
            }
            acked.push(name);
        }
        acked
    });
    common::wait_for("some creates", Duration::from_secs(60), || {
        (configmap_versions(&s).len() >= 15).then_some(())
    });
    s.kill9();
    let acked = writer.join().unwrap();
    assert!(acked.len() >= 15);
    let s = Server::start_in(dir.path(), 0);
    let present = configmap_versions(&s);
    for name in &acked {
        assert!(
            present.contains_key(&format!("default/{name}")),
            "{name} was acknowledged but is lost"
        );
    }
    s.stop();
}
