//! Placement rules of the scheduler, end to end: the real `skiff server` (or `skiff scheduler`
//! alone), `skiff sim` nodes, and the stock kubectl.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{wait_for, Server, Sim};

const WAIT: Duration = Duration::from_secs(30);

fn apply(s: &Server, yaml: &str) {
    let out = s.kubectl_stdin(&["apply", "-f", "-"], yaml);
    assert!(
        out.status.success(),
        "kubectl apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A bare pod manifest; `extra_spec` is YAML indented under `spec:`.
fn pod_yaml(name: &str, cpu: &str, memory: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    test: scheduling
spec:
  terminationGracePeriodSeconds: 0
{extra_spec}  containers:
  - name: c
    image: registry.k8s.io/pause:3.10
    resources:
      requests:
        cpu: {cpu}
        memory: {memory}
"
    )
}

fn node_of(s: &Server, pod: &str) -> String {
    s.ok(&["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"])
}

fn wait_bound(s: &Server, pod: &str) -> String {
    wait_for(&format!("{pod} to be bound"), WAIT, || {
        let n = node_of(s, pod);
        (!n.is_empty()).then_some(n)
    })
}

/// The FailedScheduling messages recorded for `pod`.
fn failed_scheduling(s: &Server, pod: &str) -> String {
    s.ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod},reason=FailedScheduling"),
        "-o",
        "jsonpath={.items[*].message}",
    ])
}

/// Nodes of the pods matching `selector`, counted by node name.
fn pods_per_node(s: &Server, selector: &str) -> BTreeMap<String, usize> {
    let out = s.ok(&[
        "get",
        "pods",
        "-l",
        selector,
        "-o",
        "jsonpath={range .items[*]}{.spec.nodeName}{\"\\n\"}{end}",
    ]);
    let mut m = BTreeMap::new();
    for n in out.lines() {
        *m.entry(n.to_string()).or_default() += 1;
    }
    m
}

#[test]
fn taints_keep_off_all_but_the_tolerating_pod() {
    let s = Server::start();
    let _plain = Sim::start(&s, &["--nodes", "1", "--name-prefix", "plain-"]);
    let _tainted = Sim::start(
        &s,
        &[
            "--nodes",
            "1",
            "--name-prefix",
            "gpu-",
            "--taints",
            "dedicated=gpu:NoSchedule",
        ],
    );
    for i in 0..4 {
        apply(&s, &pod_yaml(&format!("p{i}"), "500m", "1Gi", ""));
    }
    for i in 0..4 {
        assert_eq!(wait_bound(&s, &format!("p{i}")), "plain-0");
    }
    // The untainted node is now busier, so only the taint kept the plain pods off gpu-0; a
    // tolerating pod goes there.
    let tolerating = "  tolerations:
  - key: dedicated
    operator: Equal
    value: gpu
    effect: NoSchedule
";
    apply(&s, &pod_yaml("tolerant", "500m", "1Gi", tolerating));
    assert_eq!(wait_bound(&s, "tolerant"), "gpu-0");

    // With the untainted node full, a plain pod waits and says why.
    apply(&s, &pod_yaml("big", "3", "1Gi", ""));
    let msg = wait_for("FailedScheduling for big", WAIT, || {
        let m = failed_scheduling(&s, "big");
        (!m.is_empty()).then_some(m)
    });
    assert!(
        msg.starts_with("0/2 nodes are available:")
            && msg.contains("1 Insufficient cpu")
            && msg.contains("1 node(s) had untolerated taint {dedicated: gpu}"),
        "{msg}"
    );
    assert_eq!(node_of(&s, "big"), "");
}

#[test]
fn node_selector_places_and_waits_for_a_matching_node() {
    let s = Server::start();
    let _ssd = Sim::start(
        &s,
        &[
            "--nodes",
            "1",
            "--name-prefix",
            "ssd-",
            "--labels",
            "disk=ssd",
        ],
    );
    let _hdd = Sim::start(&s, &["--nodes", "2", "--name-prefix", "hdd-"]);
    for i in 0..3 {
        apply(
            &s,
            &pod_yaml(
                &format!("ssd{i}"),
                "100m",
                "128Mi",
                "  nodeSelector:\n    disk: ssd\n",
            ),
        );
    }
    for i in 0..3 {
        assert_eq!(wait_bound(&s, &format!("ssd{i}")), "ssd-0");
    }

    apply(
        &s,
        &pod_yaml("nvme", "100m", "128Mi", "  nodeSelector:\n    disk: nvme\n"),
    );
    let msg = wait_for("FailedScheduling for nvme", WAIT, || {
        let m = failed_scheduling(&s, "nvme");
        (!m.is_empty()).then_some(m)
    });
    assert!(
        msg.starts_with(
            "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."
        ),
        "{msg}"
    );
    // A node that starts to match lets it schedule, without any change to the pod.
    s.ok(&["label", "node", "hdd-1", "disk=nvme"]);
    assert_eq!(wait_bound(&s, "nvme"), "hdd-1");
}

#[test]
fn topology_spread_balances_zones() {
    let s = Server::start();
    // Zone a has three times the nodes of zone b: spreading by node alone would not balance.
    let _a = Sim::start(
        &s,
        &[
            "--nodes",
            "3",
            "--name-prefix",
            "a-",
            "--labels",
            "topology.kubernetes.io/zone=a",
        ],
    );
    let _b = Sim::start(
        &s,
        &[
            "--nodes",
            "1",
            "--name-prefix",
            "b-",
            "--labels",
            "topology.kubernetes.io/zone=b",
        ],
    );
    apply(
        &s,
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: spread
spec:
  replicas: 6
  selector:
    matchLabels:
      app: spread
  template:
    metadata:
      labels:
        app: spread
    spec:
      terminationGracePeriodSeconds: 0
      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: topology.kubernetes.io/zone
        whenUnsatisfiable: DoNotSchedule
        labelSelector:
          matchLabels:
            app: spread
      containers:
      - name: c
        image: registry.k8s.io/pause:3.10
        resources:
          requests:
            cpu: 100m
            memory: 64Mi
",
    );
    let per_node = wait_for("6 spread pods bound", WAIT, || {
        let m = pods_per_node(&s, "app=spread");
        (!m.is_empty() && !m.contains_key("") && m.values().sum::<usize>() == 6).then_some(m)
    });
    let zone_a: usize = per_node
        .iter()
        .filter(|(n, _)| n.starts_with("a-"))
        .map(|(_, c)| c)
        .sum();
    let zone_b: usize = per_node
        .iter()
        .filter(|(n, _)| n.starts_with("b-"))
        .map(|(_, c)| c)
        .sum();
    assert_eq!((zone_a, zone_b), (3, 3), "{per_node:?}");
}

/// `skiff scheduler` as a child process, stopped by PID.
struct SchedulerProc(Child);

impl Drop for SchedulerProc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let pid = self.0.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn most_allocated_packs_pods_onto_the_fewest_nodes() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_with(&tmp.path().join("data"), 0, &["--disable-scheduler"]);
    let config = tmp.path().join("scheduler.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
- schedulerName: default-scheduler
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: MostAllocated
        resources:
        - name: cpu
          weight: 1
        - name: memory
          weight: 1
",
    )
    .unwrap();
    let _sched = SchedulerProc(
        Command::new(env!("CARGO_BIN_EXE_skiff"))
            .arg("scheduler")
            .arg("--kubeconfig")
            .arg(&s.kubeconfig)
            .arg("--config")
            .arg(&config)
            .env("SKIFF_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start skiff scheduler"),
    );
    let _sim = Sim::start(&s, &["--nodes", "3", "--cpu", "4", "--memory", "16Gi"]);
    // Six pods of 500m fit on one node; LeastAllocated would spread them over all three.
    for i in 0..6 {
        apply(&s, &pod_yaml(&format!("pack{i}"), "500m", "2Gi", ""));
    }
    let per_node = wait_for("6 packed pods bound", WAIT, || {
        let m = pods_per_node(&s, "test=scheduling");
        (!m.contains_key("") && m.values().sum::<usize>() == 6).then_some(m)
    });
    assert_eq!(per_node.len(), 1, "{per_node:?}");
}

#[test]
fn preemption_evicts_a_lower_priority_pod_and_nominates_its_node() {
    let s = Server::start();
    let _sim = Sim::start(&s, &["--nodes", "2", "--cpu", "2", "--memory", "8Gi"]);
    s.ok(&["create", "priorityclass", "low", "--value=100"]);
    s.ok(&["create", "priorityclass", "high", "--value=1000000"]);
    for i in 0..4 {
        apply(
            &s,
            &pod_yaml(&format!("low{i}"), "1", "1Gi", "  priorityClassName: low\n"),
        );
    }
    for i in 0..4 {
        wait_bound(&s, &format!("low{i}"));
    }
    apply(
        &s,
        &pod_yaml("important", "1", "1Gi", "  priorityClassName: high\n"),
    );
    let node = wait_bound(&s, "important");
    assert_eq!(
        s.ok(&[
            "get",
            "pod",
            "important",
            "-o",
            "jsonpath={.status.nominatedNodeName}"
        ]),
        node
    );
    assert_eq!(
        s.ok(&["get", "pod", "important", "-o", "jsonpath={.spec.priority}"]),
        "1000000"
    );
    // Exactly one low-priority pod, on that node, made room.
    let low_left = wait_for("the victim to be gone", WAIT, || {
        let m = pods_per_node(&s, "test=scheduling");
        (m.values().sum::<usize>() == 4).then_some(m)
    });
    assert_eq!(low_left.get(&node), Some(&2), "{low_left:?}");
    let preempted = wait_for("the Preempted event", WAIT, || {
        let m = s.ok(&[
            "get",
            "events",
            "--field-selector",
            "reason=Preempted",
            "-o",
            "jsonpath={.items[*].message}",
        ]);
        (!m.is_empty()).then_some(m)
    });
    assert!(
        preempted.starts_with("Preempted by pod ")
            && preempted.ends_with(&format!(" on node {node}")),
        "{preempted}"
    );
}
