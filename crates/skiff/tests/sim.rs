//! `skiff sim` against the real `skiff server`, observed with the stock kubectl.

mod common;

use std::time::Duration;

use common::{wait_for, Server, Sim};

#[test]
fn simulated_nodes_are_ready_and_run_pods() {
    let server = Server::start();
    let mut sim = Sim::start(
        &server,
        &[
            "--nodes",
            "3",
            "--cpu",
            "8",
            "--labels",
            "zone=z1",
            "--lease-renew-interval",
            "1s",
        ],
    );
    let out = server.ok(&["get", "nodes", "--no-headers"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for (i, line) in lines.iter().enumerate() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[0], format!("sim-{i}"), "{out}");
        assert_eq!(cols[1], "Ready", "{out}");
        assert_eq!(cols[4], "v1.32.0-skiff-sim", "{out}");
    }
    let cpu = server.ok(&[
        "get",
        "node",
        "sim-2",
        "-o",
        "jsonpath={.status.allocatable.cpu} {.metadata.labels.zone} {.spec.podCIDR}",
    ]);
    assert_eq!(cpu, "8 z1 10.42.2.0/24");
    server.ok(&["get", "lease", "-n", "kube-node-lease", "sim-0"]);

    server.kubectl_stdin(
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  nodeName: sim-2
  containers:
  - {name: web, image: nginx:1.27}
"#,
    );
    let line = wait_for("the pod to run", Duration::from_secs(20), || {
        let out = server.ok(&["get", "pods", "-o", "wide", "--no-headers"]);
        out.lines()
            .find(|l| l.starts_with("web ") && l.contains("Running"))
            .map(str::to_string)
    });
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[1], "1/1", "{line}");
    assert!(cols[5].starts_with("10.42.2."), "{line}");
    assert_eq!(cols[6], "sim-2", "{line}");

    // Deleting waits for the simulated kubelet to finish the pod.
    server.ok(&["delete", "pod", "web", "--timeout=20s"]);
    assert!(server
        .ok(&["get", "pods", "--no-headers"])
        .trim()
        .is_empty());
    sim.stop();
    server.stop();
}
