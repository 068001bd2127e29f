//! The whole control plane (API server, scheduler, controller manager) of the real `skiff
//! server`, with `skiff sim` nodes, driven by the stock kubectl.

mod common;

use std::time::Duration;

use common::{wait_for, Server, Sim};

/// Watches pods with `kubectl get -w` and tracks, at every event once `full` pods are ready,
/// the fewest ready pods not being deleted.
struct ReadyWatch {
    child: std::process::Child,
    reader: std::thread::JoinHandle<(usize, usize)>,
}

impl ReadyWatch {
    fn start(s: &Server, selector: &str, full: usize) -> ReadyWatch {
        let mut child = std::process::Command::new(common::KUBECTL)
            .arg("--kubeconfig")
            .arg(&s.kubeconfig)
            .args([
                "get",
                "pods",
                "-l",
                selector,
                "-w",
                "--output-watch-events",
                "-o",
                "json",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("kubectl get -w");
        let stdout = child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            let mut ready: std::collections::HashMap<String, bool> = Default::default();
            let (mut min, mut events, mut armed) = (usize::MAX, 0, false);
            let stream =
                serde_json::Deserializer::from_reader(stdout).into_iter::<serde_json::Value>();
            for ev in stream {
                let Ok(ev) = ev else { break };
                let pod = &ev["object"];
                let name = pod["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let is_ready = ev["type"] != "DELETED"
                    && pod["metadata"]["deletionTimestamp"].is_null()
                    && pod["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True");
                ready.insert(name, is_ready);
                let count = ready.values().filter(|r| **r).count();
                armed |= count >= full;
                if armed {
                    events += 1;
                    min = min.min(count);
                }
            }
            (min, events)
        });
        ReadyWatch { child, reader }
    }

    /// Stops the watch (by PID) and returns the fewest ready pods seen and the events counted.
    fn stop(mut self) -> (usize, usize) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reader.join().expect("watch reader")
    }
}

fn ready_replicas(s: &Server, deploy: &str) -> String {
    s.ok(&[
        "get",
        "deploy",
        deploy,
        "-o",
        "jsonpath={.status.readyReplicas}",
    ])
}

fn running_pods(s: &Server, selector: &str) -> usize {
    s.ok(&[
        "get",
        "pods",
        "-l",
        selector,
        "--field-selector",
        "status.phase=Running",
        "-o",
        "name",
    ])
    .lines()
    .count()
}

#[test]
fn deployments_heal_scale_roll_out_and_undo() {
    let s = Server::start();
    let _sim = Sim::start(&s, &["--nodes", "3", "--cpu", "16", "--pods", "110"]);
    s.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.27",
        "--replicas=5",
    ]);
    wait_for("5 ready replicas", Duration::from_secs(60), || {
        (ready_replicas(&s, "web") == "5").then_some(())
    });

    // A deleted pod is replaced.
    let victim = s.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    s.ok(&["delete", "pod", &victim, "--wait=false"]);
    wait_for(
        "the deleted pod to be replaced",
        Duration::from_secs(60),
        || {
            let names = s.ok(&["get", "pods", "-l", "app=web", "-o", "name"]);
            (!names.contains(&victim) && running_pods(&s, "app=web") == 5).then_some(())
        },
    );

    // Scale to 20 and back to 2.
    s.ok(&["scale", "deployment", "web", "--replicas=20"]);
    wait_for("20 ready", Duration::from_secs(90), || {
        (ready_replicas(&s, "web") == "20").then_some(())
    });
    s.ok(&["scale", "deployment", "web", "--replicas=2"]);
    wait_for("2 pods", Duration::from_secs(60), || {
        (s.ok(&["get", "pods", "-l", "app=web", "-o", "name"])
            .lines()
            .count()
            == 2)
            .then_some(())
    });

    // A new image rolls out; `rollout status` ends; `rollout undo` returns to the old template.
    s.ok(&["scale", "deployment", "web", "--replicas=4"]);
    wait_for("4 ready", Duration::from_secs(60), || {
        (ready_replicas(&s, "web") == "4").then_some(())
    });
    let watch = ReadyWatch::start(&s, "app=web", 4);
    s.ok(&["set", "image", "deployment/web", "nginx=nginx:1.28"]);
    let out = s.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    // maxUnavailable defaults to 25% of 4 = 1: never fewer than 3 ready pods at any event.
    let (min_ready, events) = watch.stop();
    assert!(events > 4, "the watch saw the rollout ({events} events)");
    assert!(
        min_ready >= 3,
        "ready pods fell to {min_ready} during the rollout"
    );
    let image = s.ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(image, "nginx:1.28");
    let history = s.ok(&["rollout", "history", "deployment/web"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");
    s.ok(&["rollout", "undo", "deployment/web"]);
    let out = s.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let image = s.ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(image, "nginx:1.27");
    let rs = s.ok(&[
        "get",
        "rs",
        "-l",
        "app=web",
        "-o",
        "jsonpath={range .items[*]}{.spec.replicas}{\" \"}{end}",
    ]);
    let mut counts: Vec<&str> = rs.split_whitespace().collect();
    counts.sort();
    assert_eq!(
        counts,
        ["0", "4"],
        "old ReplicaSet back at full size, new one at zero"
    );

    // Deleting the Deployment removes its ReplicaSets and pods (garbage collector).
    s.ok(&["delete", "deployment", "web"]);
    wait_for("ReplicaSets and pods gone", Duration::from_secs(60), || {
        let left = s.ok(&["get", "rs,pods", "-l", "app=web", "-o", "name"]);
        left.trim().is_empty().then_some(())
    });

    // With --cascade=orphan they stay, without their owner reference.
    s.ok(&[
        "create",
        "deployment",
        "keep",
        "--image=nginx:1.27",
        "--replicas=2",
    ]);
    wait_for("2 ready", Duration::from_secs(60), || {
        (ready_replicas(&s, "keep") == "2").then_some(())
    });
    s.ok(&["delete", "deployment", "keep", "--cascade=orphan"]);
    wait_for(
        "orphaned ReplicaSet released",
        Duration::from_secs(60),
        || {
            let owners = s.ok(&[
                "get",
                "rs",
                "-l",
                "app=keep",
                "-o",
                "jsonpath={.items[*].metadata.ownerReferences}",
            ]);
            let count = s
                .ok(&["get", "rs", "-l", "app=keep", "-o", "name"])
                .lines()
                .count();
            (count == 1 && matches!(owners.trim(), "" | "[]")).then_some(())
        },
    );
    assert_eq!(running_pods(&s, "app=keep"), 2);
}

#[test]
fn namespaces_empty_then_go() {
    let s = Server::start();
    s.ok(&["create", "namespace", "tmp"]);
    wait_for("default service account", Duration::from_secs(30), || {
        s.kubectl(&["get", "sa", "default", "-n", "tmp"])
            .status
            .success()
            .then_some(())
    });
    s.ok(&[
        "create",
        "configmap",
        "a",
        "-n",
        "tmp",
        "--from-literal=x=y",
    ]);
    s.ok(&[
        "create",
        "secret",
        "generic",
        "b",
        "-n",
        "tmp",
        "--from-literal=x=y",
    ]);
    s.ok(&["delete", "namespace", "tmp", "--timeout=60s"]);
    let err = s.fails(&["get", "namespace", "tmp"]);
    assert!(err.contains("NotFound"), "{err}");
}

#[test]
fn unschedulable_pods_wait_for_a_node_that_fits() {
    let s = Server::start();
    let _small = Sim::start(
        &s,
        &["--nodes", "2", "--cpu", "1", "--name-prefix", "small-"],
    );
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: big\nspec:\n  containers:\n  - name: c\n    image: busybox:1.36\n    resources:\n      requests:\n        cpu: \"4\"\n";
    let out = s.kubectl_stdin(&["apply", "-f", "-"], pod);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let msg = wait_for(
        "FailedScheduling condition",
        Duration::from_secs(30),
        || {
            let m = s.ok(&[
                "get",
                "pod",
                "big",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}",
            ]);
            (!m.is_empty()).then_some(m)
        },
    );
    assert!(
        msg.starts_with("0/2 nodes are available: 2 Insufficient cpu."),
        "{msg}"
    );
    let events = s.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=big",
        "-o",
        "jsonpath={.items[*].reason}",
    ]);
    assert!(events.contains("FailedScheduling"), "{events}");
    // A node that fits arrives; the pod is scheduled without polling delays.
    let _big = Sim::start(&s, &["--nodes", "1", "--cpu", "8", "--name-prefix", "big-"]);
    wait_for(
        "pod scheduled on the big node",
        Duration::from_secs(30),
        || {
            (s.ok(&["get", "pod", "big", "-o", "jsonpath={.spec.nodeName}"]) == "big-0")
                .then_some(())
        },
    );
}

#[test]
fn anti_affinity_spreads_one_replica_per_node() {
    let s = Server::start();
    let _sim = Sim::start(&s, &["--nodes", "3"]);
    let deploy = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: spread
spec:
  replicas: 3
  selector:
    matchLabels: {app: spread}
  template:
    metadata:
      labels: {app: spread}
    spec:
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector:
              matchLabels: {app: spread}
            topologyKey: kubernetes.io/hostname
      containers:
      - name: c
        image: nginx:1.27
"#;
    let out = s.kubectl_stdin(&["apply", "-f", "-"], deploy);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nodes = wait_for("3 pods on nodes", Duration::from_secs(60), || {
        let n = s.ok(&[
            "get",
            "pods",
            "-l",
            "app=spread",
            "-o",
            "jsonpath={.items[*].spec.nodeName}",
        ]);
        (n.split_whitespace().filter(|x| !x.is_empty()).count() == 3).then_some(n)
    });
    let mut nodes: Vec<&str> = nodes.split_whitespace().collect();
    nodes.sort();
    nodes.dedup();
    assert_eq!(nodes.len(), 3, "one replica per node");
}

#[test]
fn a_node_that_stops_heartbeating_goes_unknown_and_its_pods_move() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(
        dir.path(),
        0,
        &[
            "--node-monitor-grace-period",
            "3s",
            "--default-unreachable-toleration-seconds",
            "2",
            "--default-not-ready-toleration-seconds",
            "2",
        ],
    );
    let _sim = Sim::start(&s, &["--nodes", "3", "--lease-renew-interval", "1s"]);
    s.ok(&[
        "create",
        "deployment",
        "app",
        "--image=nginx:1.27",
        "--replicas=3",
    ]);
    wait_for("3 ready", Duration::from_secs(60), || {
        (ready_replicas(&s, "app") == "3").then_some(())
    });
    // Stop sim-0: it no longer renews its Lease.
    s.ok(&["label", "node", "sim-0", "skiff.dev/sim-stopped=true"]);
    wait_for(
        "sim-0 Ready=Unknown with the unreachable taint",
        Duration::from_secs(30),
        || {
            let ready = s.ok(&[
                "get",
                "node",
                "sim-0",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            let taints = s.ok(&[
                "get",
                "node",
                "sim-0",
                "-o",
                "jsonpath={.spec.taints[*].key}",
            ]);
            (ready == "Unknown" && taints.contains("node.kubernetes.io/unreachable")).then_some(())
        },
    );
    wait_for(
        "pods recreated on the other nodes",
        Duration::from_secs(60),
        || {
            let pods: serde_json::Value =
                serde_json::from_str(&s.ok(&["get", "pods", "-l", "app=app", "-o", "json"]))
                    .unwrap();
            let live = pods["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["metadata"].get("deletionTimestamp").is_none())
                .filter(|p| p["status"]["phase"] == "Running")
                .filter(|p| matches!(p["spec"]["nodeName"].as_str(), Some("sim-1" | "sim-2")))
                .count();
            (live >= 3).then_some(())
        },
    );
}

/// `name nodeName deletionTimestamp` of each pod matching `selector`, one per line.
fn pods_with_nodes(s: &Server, selector: &str) -> Vec<(String, String, bool)> {
    s.ok(&[
        "get",
        "pods",
        "-l",
        selector,
        "-o",
        r#"jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.metadata.deletionTimestamp}{"\n"}{end}"#,
    ])
    .lines()
    .map(|l| {
        let mut f = l.split(' ');
        let name = f.next().unwrap_or_default().to_string();
        let node = f.next().unwrap_or_default().to_string();
        let deleting = f.next().is_some_and(|d| !d.is_empty());
        (name, node, deleting)
    })
    .collect()
}

#[test]
fn a_daemonset_follows_nodes_added_and_removed() {
    let s = Server::start();
    let _sim = Sim::start(&s, &["--nodes", "2"]);
    let ds = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: agent, image: "busybox:1.36"}]
"#;
    let out = s.kubectl_stdin(&["apply", "-f", "-"], ds);
    assert!(out.status.success(), "{out:?}");
    let on_nodes = |s: &Server| {
        let mut nodes: Vec<String> = pods_with_nodes(s, "app=agent")
            .into_iter()
            .filter(|(_, node, deleting)| !deleting && !node.is_empty())
            .map(|(_, node, _)| node)
            .collect();
        nodes.sort();
        nodes
    };
    wait_for("a daemon pod on each node", Duration::from_secs(60), || {
        (on_nodes(&s) == ["sim-0", "sim-1"]).then_some(())
    });
    wait_for("2 daemon pods ready", Duration::from_secs(60), || {
        (s.ok(&["get", "ds", "agent", "-o", "jsonpath={.status.numberReady}"]) == "2").then_some(())
    });

    // A node joins: it gets its daemon pod.
    let _extra = Sim::start(&s, &["--nodes", "1", "--name-prefix", "extra-"]);
    wait_for(
        "a daemon pod on the new node",
        Duration::from_secs(60),
        || (on_nodes(&s) == ["extra-0", "sim-0", "sim-1"]).then_some(()),
    );
    wait_for("3 desired and ready", Duration::from_secs(60), || {
        (s.ok(&[
            "get",
            "ds",
            "agent",
            "-o",
            "jsonpath={.status.desiredNumberScheduled}/{.status.numberReady}",
        ]) == "3/3")
            .then_some(())
    });

    // The node is deleted: its daemon pod goes.
    s.ok(&["delete", "node", "extra-0"]);
    wait_for(
        "the daemon pod of the deleted node to go",
        Duration::from_secs(60),
        || (on_nodes(&s) == ["sim-0", "sim-1"]).then_some(()),
    );
    wait_for("2 desired", Duration::from_secs(30), || {
        (s.ok(&[
            "get",
            "ds",
            "agent",
            "-o",
            "jsonpath={.status.desiredNumberScheduled}",
        ]) == "2")
            .then_some(())
    });
}

#[test]
fn a_statefulset_creates_in_order_and_scales_down_in_reverse() {
    let s = Server::start();
    let _sim = Sim::start(&s, &["--nodes", "2"]);
    let sts = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: "nginx:1.27"}]
"#;
    // Every observation must be a prefix web-0..web-k: web-(k+1) never exists before web-k
    // (creation), and web-k never goes before web-(k+1) (scale down).
    let live = |s: &Server| {
        let mut ordinals: Vec<u32> = pods_with_nodes(s, "app=web")
            .into_iter()
            .filter(|(_, _, deleting)| !deleting)
            .map(|(name, _, _)| {
                name.strip_prefix("web-")
                    .and_then(|o| o.parse().ok())
                    .unwrap_or_else(|| panic!("unexpected pod {name}"))
            })
            .collect();
        ordinals.sort();
        let prefix: Vec<u32> = (0..ordinals.len() as u32).collect();
        assert_eq!(ordinals, prefix, "pods out of order");
        ordinals.len()
    };
    let out = s.kubectl_stdin(&["apply", "-f", "-"], sts);
    assert!(out.status.success(), "{out:?}");
    wait_for("web-0..2", Duration::from_secs(60), || {
        (live(&s) == 3).then_some(())
    });
    wait_for("3 ready", Duration::from_secs(60), || {
        (s.ok(&[
            "get",
            "sts",
            "web",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ]) == "3")
            .then_some(())
    });

    s.ok(&["scale", "statefulset", "web", "--replicas=1"]);
    wait_for("only web-0", Duration::from_secs(60), || {
        (live(&s) == 1).then_some(())
    });
    let names: Vec<String> = pods_with_nodes(&s, "app=web")
        .into_iter()
        .filter(|(_, _, deleting)| !deleting)
        .map(|(n, _, _)| n)
        .collect();
    assert_eq!(names, ["web-0"]);
}
