use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use super::*;
use crate::registry::RESOURCES;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// A timestamp `secs` seconds before [`now`].
fn ago(secs: i64) -> String {
    (now() - Duration::seconds(secs))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn meta(name: &str, age_secs: i64) -> Value {
    json!({"name": name, "namespace": "default", "creationTimestamp": ago(age_secs), "resourceVersion": "42"})
}

fn cells(group: &str, kind: &str, obj: &Value) -> Vec<Value> {
    row_cells(group, kind, obj, now())
}

fn names(group: &str, kind: &str) -> Vec<(String, i64)> {
    column_definitions(group, kind)
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["priority"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn every_served_kind_has_one_cell_per_column() {
    for r in RESOURCES {
        let obj = json!({"metadata": meta("x", 30)});
        let cols = column_definitions(r.group, r.kind);
        let cells = row_cells(r.group, r.kind, &obj, now());
        assert_eq!(cols.len(), cells.len(), "{}/{}", r.group, r.kind);
        assert!(cols
            .iter()
            .any(|c| c["name"] == "Name" && c["format"] == "name"));
        for c in &cols {
            for key in ["name", "type", "format", "description", "priority"] {
                assert!(c.get(key).is_some(), "{} lacks {key}", r.kind);
            }
        }
    }
}

#[test]
fn pod_columns_and_wide_priorities() {
    assert_eq!(
        names("", "Pod"),
        [
            ("Name", 0),
            ("Ready", 0),
            ("Status", 0),
            ("Restarts", 0),
            ("Age", 0),
            ("IP", 1),
            ("Node", 1),
            ("Nominated Node", 1),
            ("Readiness Gates", 1)
        ]
        .map(|(n, p)| (n.to_string(), p))
    );
}

#[test]
fn pod_in_crash_loop_with_restarts() {
    let pod = json!({
        "metadata": meta("web", 600),
        "spec": {"nodeName": "node1", "containers": [{"name": "app", "image": "nginx"}]},
        "status": {
            "phase": "Running",
            "podIPs": [{"ip": "10.42.0.5"}],
            "containerStatuses": [{
                "name": "app", "ready": false, "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(300)}},
            }],
        },
    });
    assert_eq!(
        cells("", "Pod", &pod),
        json!([
            "web",
            "0/1",
            "CrashLoopBackOff",
            "3 (5m ago)",
            "10m",
            "10.42.0.5",
            "node1",
            "<none>",
            "<none>"
        ])
        .as_array()
        .unwrap()
        .clone()
    );
}

#[test]
fn pod_statuses_follow_upstream() {
    let base = |status: Value| {
        json!({
            "metadata": meta("p", 5),
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "init"}]},
            "status": status,
        })
    };
    let status_of = |pod: &Value| cells("", "Pod", pod)[2].clone();

    let creating = base(json!({
        "phase": "Pending",
        "initContainerStatuses": [{"name": "init", "state": {"terminated": {"exitCode": 0}}}],
        "containerStatuses": [
            {"name": "a", "state": {"waiting": {"reason": "ContainerCreating"}}},
            {"name": "b", "state": {"waiting": {"reason": "ContainerCreating"}}},
        ],
    }));
    assert_eq!(status_of(&creating), "ContainerCreating");

    let init = base(json!({
        "phase": "Pending",
        "initContainerStatuses": [{"name": "init", "state": {"running": {}}}],
    }));
    assert_eq!(status_of(&init), "Init:0/1");
    let init_crash = base(json!({
        "phase": "Pending",
        "initContainerStatuses": [{"name": "init", "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}],
    }));
    assert_eq!(status_of(&init_crash), "Init:CrashLoopBackOff");
    assert_eq!(cells("", "Pod", &init_crash)[3], "2");
    let init_failed = base(json!({
        "phase": "Pending",
        "initContainerStatuses": [{"name": "init", "state": {"terminated": {"exitCode": 3}}}],
    }));
    assert_eq!(status_of(&init_failed), "Init:ExitCode:3");

    let running = base(json!({
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"}],
        "initContainerStatuses": [{"name": "init", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
        "containerStatuses": [
            {"name": "a", "ready": true, "state": {"running": {}}},
            {"name": "b", "ready": true, "state": {"running": {}}},
        ],
    }));
    assert_eq!(status_of(&running), "Running");
    assert_eq!(cells("", "Pod", &running)[1], "2/2");
    assert_eq!(cells("", "Pod", &running)[3], "0");

    let mut terminating = running.clone();
    terminating["metadata"]["deletionTimestamp"] = json!(ago(1));
    assert_eq!(status_of(&terminating), "Terminating");

    let mut lost = terminating.clone();
    lost["status"]["reason"] = json!("NodeLost");
    assert_eq!(status_of(&lost), "Unknown");

    let completed = base(json!({
        "phase": "Succeeded",
        "initContainerStatuses": [{"name": "init", "state": {"terminated": {"exitCode": 0}}}],
        "containerStatuses": [
            {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "b", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
        ],
    }));
    assert_eq!(status_of(&completed), "Completed");
    let r = row("", "Pod", &completed, IncludeObject::None, now());
    assert_eq!(r["conditions"][0]["type"], "Completed");
    assert_eq!(r["conditions"][0]["reason"], "Succeeded");
    // A terminal pod being deleted keeps its terminal status.
    let mut deleted = completed.clone();
    deleted["metadata"]["deletionTimestamp"] = json!(ago(1));
    assert_eq!(status_of(&deleted), "Completed");

    let gated = json!({
        "metadata": meta("g", 5),
        "spec": {"containers": [{"name": "a"}]},
        "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]},
    });
    assert_eq!(status_of(&gated), "SchedulingGated");
}

#[test]
fn pod_sidecars_count_toward_ready_and_readiness_gates() {
    let pod = json!({
        "metadata": meta("s", 5),
        "spec": {
            "containers": [{"name": "a"}],
            "initContainers": [{"name": "proxy", "restartPolicy": "Always"}],
            "readinessGates": [{"conditionType": "example.com/ready"}, {"conditionType": "other"}],
        },
        "status": {
            "phase": "Running",
            "conditions": [{"type": "example.com/ready", "status": "True"}, {"type": "Initialized", "status": "True"}],
            "initContainerStatuses": [{"name": "proxy", "started": true, "ready": true, "state": {"running": {}}}],
            "containerStatuses": [{"name": "a", "ready": true, "state": {"running": {}}}],
        },
    });
    let c = cells("", "Pod", &pod);
    assert_eq!(c[1], "2/2");
    assert_eq!(c[2], "Running");
    assert_eq!(c[8], "1/2");
}

#[test]
fn nodeport_and_loadbalancer_services() {
    let svc = json!({
        "metadata": meta("web", 200),
        "spec": {
            "type": "NodePort", "clusterIP": "10.43.0.10", "clusterIPs": ["10.43.0.10"],
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
            "selector": {"app": "web", "tier": "fe"},
        },
    });
    assert_eq!(
        cells("", "Service", &svc),
        vec![
            json!("web"),
            json!("NodePort"),
            json!("10.43.0.10"),
            json!("<none>"),
            json!("80:30080/TCP,53/UDP"),
            json!("3m20s"),
            json!("app=web,tier=fe"),
        ]
    );
    let mut lb = svc.clone();
    lb["spec"]["type"] = json!("LoadBalancer");
    assert_eq!(cells("", "Service", &lb)[3], "<pending>");
    lb["status"] = json!({"loadBalancer": {"ingress": [{"ip": "192.168.1.20"}, {"hostname": "lb.example.com"}]}});
    assert_eq!(cells("", "Service", &lb)[3], "192.168.1.20,lb.example.com");
    let headless =
        json!({"metadata": meta("h", 1), "spec": {"type": "ClusterIP", "clusterIPs": ["None"]}});
    let c = cells("", "Service", &headless);
    assert_eq!(
        (c[2].clone(), c[4].clone(), c[6].clone()),
        (json!("None"), json!("<none>"), json!("<none>"))
    );
}

#[test]
fn deployment_two_of_three_ready() {
    let d = json!({
        "metadata": meta("web", 3 * 3600 + 300),
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}, {"name": "side", "image": "busybox"}]}},
        },
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
    });
    assert_eq!(
        cells("apps", "Deployment", &d),
        vec![
            json!("web"),
            json!("2/3"),
            json!(3),
            json!(2),
            json!("3h5m"),
            json!("nginx,side"),
            json!("nginx:1.27,busybox"),
            json!("app=web"),
        ]
    );
    let cols = names("apps", "Deployment");
    assert_eq!(cols[1].0, "Ready");
    assert_eq!(cols[5], ("Containers".to_string(), 1));
}

#[test]
fn other_workloads() {
    let rs = json!({
        "metadata": meta("web-abc", 60),
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
        "status": {"replicas": 2, "readyReplicas": 1},
    });
    assert_eq!(
        cells("apps", "ReplicaSet", &rs),
        vec![
            json!("web-abc"),
            json!(2),
            json!(2),
            json!(1),
            json!("60s"),
            json!("c"),
            json!("i"),
            json!("app=web")
        ]
    );
    let sts = json!({"metadata": meta("db", 60), "spec": {"replicas": 3}, "status": {"readyReplicas": 3}});
    assert_eq!(cells("apps", "StatefulSet", &sts)[1], "3/3");
    let ds = json!({
        "metadata": meta("agent", 60),
        "spec": {"template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}}}},
        "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 1, "updatedNumberScheduled": 2, "numberAvailable": 1},
    });
    let c = cells("apps", "DaemonSet", &ds);
    assert_eq!(
        &c[1..7],
        &[
            json!(2),
            json!(2),
            json!(1),
            json!(2),
            json!(1),
            json!("kubernetes.io/os=linux")
        ]
    );
    assert_eq!(c[10], "<none>");
    let rc = json!({"metadata": meta("rc", 60), "spec": {"replicas": 2, "selector": {"app": "x"}}, "status": {"replicas": 2, "readyReplicas": 2}});
    assert_eq!(cells("", "ReplicationController", &rc)[7], "app=x");
    let cr = json!({
        "metadata": {"name": "agent-5d8f", "creationTimestamp": ago(60), "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "controller": true}]},
        "revision": 4,
    });
    assert_eq!(
        cells("apps", "ControllerRevision", &cr),
        vec![
            json!("agent-5d8f"),
            json!("daemonset.apps/agent"),
            json!(4),
            json!("60s")
        ]
    );
}

#[test]
fn jobs_and_cronjobs() {
    let job = json!({
        "metadata": meta("pi", 400),
        "spec": {"completions": 1, "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}}, "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}},
        "status": {"succeeded": 1, "startTime": ago(400), "completionTime": ago(380), "conditions": [{"type": "Complete", "status": "True"}]},
    });
    assert_eq!(
        cells("batch", "Job", &job)[..5],
        [
            json!("pi"),
            json!("Complete"),
            json!("1/1"),
            json!("20s"),
            json!("6m40s")
        ]
    );
    assert_eq!(
        cells("batch", "Job", &job)[7],
        "batch.kubernetes.io/controller-uid=u1"
    );
    let running = json!({"metadata": meta("j", 10), "spec": {"parallelism": 3}, "status": {"startTime": ago(10)}});
    let c = cells("batch", "Job", &running);
    assert_eq!(
        (c[1].clone(), c[2].clone(), c[3].clone()),
        (json!("Running"), json!("0/1 of 3"), json!("10s"))
    );
    let cj = json!({
        "metadata": meta("hourly", 7200),
        "spec": {"schedule": "0 * * * *", "suspend": false, "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}},
        "status": {"active": [{"name": "hourly-1"}], "lastScheduleTime": ago(600)},
    });
    assert_eq!(
        cells("batch", "CronJob", &cj),
        vec![
            json!("hourly"),
            json!("0 * * * *"),
            json!("<none>"),
            json!("False"),
            json!(1),
            json!("10m"),
            json!("120m"),
            json!("c"),
            json!("busybox"),
            json!("<none>"),
        ]
    );
}

#[test]
fn nodes_with_roles() {
    let node = json!({
        "metadata": {"name": "n1", "creationTimestamp": ago(2 * 86400 + 3 * 3600), "labels": {
            "node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/master": "", "kubernetes.io/role": "etcd"}},
        "spec": {"unschedulable": true},
        "status": {
            "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": "n1"}],
            "nodeInfo": {"kubeletVersion": "v1.32.0", "osImage": "Debian GNU/Linux 12 (bookworm)", "kernelVersion": "6.1.0", "containerRuntimeVersion": "containerd://1.7.0"},
        },
    });
    assert_eq!(
        cells("", "Node", &node),
        vec![
            json!("n1"),
            json!("Ready,SchedulingDisabled"),
            json!("control-plane,etcd,master"),
            json!("2d3h"),
            json!("v1.32.0"),
            json!("10.0.0.1"),
            json!("<none>"),
            json!("Debian GNU/Linux 12 (bookworm)"),
            json!("6.1.0"),
            json!("containerd://1.7.0"),
        ]
    );
    let bare = json!({"metadata": {"name": "n2"}});
    let c = cells("", "Node", &bare);
    assert_eq!(
        (c[1].clone(), c[2].clone(), c[3].clone(), c[7].clone()),
        (
            json!("Unknown"),
            json!("<none>"),
            json!("<unknown>"),
            json!("<unknown>")
        )
    );
}

#[test]
fn core_config_kinds() {
    let ns = json!({"metadata": meta("kube-system", 86400), "status": {"phase": "Active"}});
    assert_eq!(
        cells("", "Namespace", &ns),
        vec![json!("kube-system"), json!("Active"), json!("24h")]
    );
    let cm = json!({"metadata": meta("cfg", 5), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
    assert_eq!(
        cells("", "ConfigMap", &cm),
        vec![json!("cfg"), json!(3), json!("5s")]
    );
    let secret = json!({"metadata": meta("tls", 5), "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}});
    assert_eq!(
        cells("", "Secret", &secret),
        vec![
            json!("tls"),
            json!("kubernetes.io/tls"),
            json!(2),
            json!("5s")
        ]
    );
    let sa = json!({"metadata": meta("default", 5)});
    assert_eq!(
        cells("", "ServiceAccount", &sa),
        vec![json!("default"), json!(0), json!("5s")]
    );
    let rq = json!({
        "metadata": meta("quota", 5),
        "status": {"hard": {"pods": "10", "limits.cpu": "2", "requests.memory": "1Gi"}, "used": {"pods": "3", "limits.cpu": "500m"}},
    });
    assert_eq!(
        cells("", "ResourceQuota", &rq),
        vec![
            json!("quota"),
            json!("5s"),
            json!("pods: 3/10, requests.memory: 0/1Gi"),
            json!("limits.cpu: 500m/2")
        ]
    );
    let pt = json!({"metadata": meta("tmpl", 5), "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}});
    assert_eq!(
        cells("", "PodTemplate", &pt),
        vec![json!("tmpl"), json!("c"), json!("i"), json!("a=b")]
    );
}

#[test]
fn limitrange_uses_default_table() {
    assert_eq!(
        names("", "LimitRange"),
        vec![("Name".to_string(), 0), ("Created At".to_string(), 0)]
    );
    assert_eq!(column_definitions("", "LimitRange")[1]["type"], "date");
    let lr = json!({"metadata": {"name": "limits", "creationTimestamp": "2024-04-30T10:00:00Z"}});
    assert_eq!(
        cells("", "LimitRange", &lr),
        vec![json!("limits"), json!("2024-04-30T10:00:00Z")]
    );
}

#[test]
fn endpoints_and_slices() {
    let ep = json!({
        "metadata": meta("web", 5),
        "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "fd00::3"}], "ports": [{"port": 80}, {"port": 443}]}],
    });
    assert_eq!(
        cells("", "Endpoints", &ep)[1],
        "10.0.0.1:80,10.0.0.2:80,[fd00::3]:80 + 3 more..."
    );
    assert_eq!(
        cells("", "Endpoints", &json!({"metadata": meta("e", 1)}))[1],
        "<none>"
    );
    let slice = json!({
        "metadata": meta("web-x1", 5),
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 80}, {"name": "named"}],
        "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}],
    });
    assert_eq!(
        cells("discovery.k8s.io", "EndpointSlice", &slice),
        vec![
            json!("web-x1"),
            json!("IPv4"),
            json!("80,named"),
            json!("10.0.0.1,10.0.0.2"),
            json!("5s")
        ]
    );
    let empty = json!({"metadata": meta("e", 1), "addressType": "IPv4"});
    assert_eq!(
        cells("discovery.k8s.io", "EndpointSlice", &empty)[2],
        "<unset>"
    );
}

#[test]
fn events_in_both_groups() {
    let ev = json!({
        "metadata": meta("web.17a", 120),
        "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{app}"},
        "reason": "BackOff", "message": "Back-off restarting failed container\n", "type": "Warning",
        "source": {"component": "kubelet", "host": "n1"},
        "firstTimestamp": ago(3600), "lastTimestamp": ago(30), "count": 12,
    });
    let want = vec![
        json!("30s"),
        json!("Warning"),
        json!("BackOff"),
        json!("pod/web"),
        json!("spec.containers{app}"),
        json!("kubelet, n1"),
        json!("Back-off restarting failed container"),
        json!("60m"),
        json!(12),
        json!("web.17a"),
    ];
    assert_eq!(cells("", "Event", &ev), want);
    assert_eq!(names("", "Event")[0], ("Last Seen".to_string(), 0));
    assert_eq!(names("", "Event")[9], ("Name".to_string(), 1));
    let new = crate::convert::from_storage("events.k8s.io", "v1", "Event", ev.clone()).unwrap();
    assert_eq!(cells("events.k8s.io", "Event", &new), want);
    let series = json!({
        "metadata": meta("s", 60), "eventTime": "2024-05-01T11:59:00.000000Z",
        "series": {"count": 4, "lastObservedTime": "2024-05-01T11:59:50.123456Z"},
        "reportingComponent": "scheduler", "reportingInstance": "",
        "involvedObject": {"kind": "Node"},
    });
    let c = cells("", "Event", &series);
    assert_eq!(
        (
            c[0].clone(),
            c[3].clone(),
            c[5].clone(),
            c[7].clone(),
            c[8].clone()
        ),
        (
            json!("9s"),
            json!("node"),
            json!("scheduler"),
            json!("60s"),
            json!(4)
        )
    );
}

#[test]
fn storage_kinds() {
    let pv = json!({
        "metadata": meta("pv1", 5),
        "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Retain",
                 "claimRef": {"namespace": "default", "name": "data"}, "storageClassName": "local", "volumeMode": "Filesystem"},
        "status": {"phase": "Bound"},
    });
    assert_eq!(
        cells("", "PersistentVolume", &pv),
        vec![
            json!("pv1"),
            json!("10Gi"),
            json!("RWO,RWX"),
            json!("Retain"),
            json!("Bound"),
            json!("default/data"),
            json!("local"),
            json!("<unset>"),
            json!(""),
            json!("5s"),
            json!("Filesystem")
        ]
    );
    let pending = json!({"metadata": meta("data", 5), "spec": {"resources": {"requests": {"storage": "1Gi"}}, "storageClassName": "local"}, "status": {"phase": "Pending"}});
    assert_eq!(
        cells("", "PersistentVolumeClaim", &pending),
        vec![
            json!("data"),
            json!("Pending"),
            json!(""),
            json!(""),
            json!(""),
            json!("local"),
            json!("<unset>"),
            json!("5s"),
            json!("<unset>")
        ]
    );
    let bound = json!({"metadata": meta("data", 5), "spec": {"volumeName": "pv1"}, "status": {"phase": "Bound", "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"]}});
    let c = cells("", "PersistentVolumeClaim", &bound);
    assert_eq!(
        (c[3].clone(), c[4].clone(), c[5].clone()),
        (json!("10Gi"), json!("RWO"), json!(""))
    );
    let sc = json!({"metadata": {"name": "local", "creationTimestamp": ago(5), "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}}, "provisioner": "rancher.io/local-path"});
    assert_eq!(
        cells("storage.k8s.io", "StorageClass", &sc),
        vec![
            json!("local (default)"),
            json!("rancher.io/local-path"),
            json!("Delete"),
            json!("Immediate"),
            json!(false),
            json!("5s")
        ]
    );
}

#[test]
fn networking_policy_scheduling_coordination() {
    let ing = json!({
        "metadata": meta("web", 5),
        "spec": {"ingressClassName": "nginx", "rules": [{"host": "a.example.com"}, {"host": "b.example.com"}, {}], "tls": [{"hosts": ["a.example.com"]}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.5"}]}},
    });
    assert_eq!(
        cells("networking.k8s.io", "Ingress", &ing),
        vec![
            json!("web"),
            json!("nginx"),
            json!("a.example.com,b.example.com"),
            json!("192.168.1.5"),
            json!("80, 443"),
            json!("5s")
        ]
    );
    let many = json!({"metadata": meta("m", 1), "spec": {"rules": [{"host": "a"}, {"host": "b"}, {"host": "c"}, {"host": "d"}, {"host": "e"}]}});
    let c = cells("networking.k8s.io", "Ingress", &many);
    assert_eq!(
        (c[1].clone(), c[2].clone(), c[4].clone()),
        (json!("<none>"), json!("a,b,c + 2 more..."), json!("80"))
    );
    let ic = json!({"metadata": meta("nginx", 5), "spec": {"controller": "k8s.io/ingress-nginx", "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "p"}}});
    assert_eq!(
        cells("networking.k8s.io", "IngressClass", &ic)[2],
        "IngressParameters.k8s.example.com/p"
    );
    let np = json!({"metadata": meta("deny", 5), "spec": {"podSelector": {}}});
    assert_eq!(
        cells("networking.k8s.io", "NetworkPolicy", &np),
        vec![json!("deny"), json!("<none>"), json!("5s")]
    );
    let pdb = json!({"metadata": meta("web", 5), "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}});
    assert_eq!(
        cells("policy", "PodDisruptionBudget", &pdb),
        vec![
            json!("web"),
            json!("50%"),
            json!("N/A"),
            json!(1),
            json!("5s")
        ]
    );
    let pc = json!({"metadata": meta("system-node-critical", 5), "value": 2000001000, "preemptionPolicy": "PreemptLowerPriority"});
    assert_eq!(
        cells("scheduling.k8s.io", "PriorityClass", &pc),
        vec![
            json!("system-node-critical"),
            json!(2000001000),
            json!(false),
            json!("5s"),
            json!("PreemptLowerPriority")
        ]
    );
    let lease = json!({"metadata": meta("n1", 5), "spec": {"holderIdentity": "n1"}});
    assert_eq!(
        cells("coordination.k8s.io", "Lease", &lease),
        vec![json!("n1"), json!("n1"), json!("5s")]
    );
}

#[test]
fn hpa_targets_in_both_versions() {
    let v2 = json!({
        "metadata": meta("web", 5),
        "spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
            "minReplicas": 1, "maxReplicas": 10,
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}},
                {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "500Mi"}}},
                {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "10"}}},
            ],
        },
        "status": {"currentReplicas": 2, "desiredReplicas": 2, "currentMetrics": [
            {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 35, "averageValue": "35m"}}},
        ]},
    });
    let want = vec![
        json!("web"),
        json!("Deployment/web"),
        json!("cpu: 35%/80%, memory: <unknown>/500Mi + 1 more..."),
        json!("1"),
        json!(10),
        json!(2),
        json!("5s"),
    ];
    assert_eq!(cells("autoscaling", "HorizontalPodAutoscaler", &v2), want);
    // A v1 object prints through its v2 form; with only the CPU target there is no reordering.
    let v1 = json!({
        "apiVersion": "autoscaling/v1",
        "metadata": meta("web", 5),
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 4, "targetCPUUtilizationPercentage": 50},
        "status": {"currentReplicas": 1, "desiredReplicas": 1, "currentCPUUtilizationPercentage": 20},
    });
    assert_eq!(
        cells("autoscaling", "HorizontalPodAutoscaler", &v1)[2],
        "cpu: 20%/50%"
    );
    let none = json!({"metadata": meta("h", 5), "spec": {"maxReplicas": 3}});
    let c = cells("autoscaling", "HorizontalPodAutoscaler", &none);
    assert_eq!(
        (c[2].clone(), c[3].clone()),
        (json!("<none>"), json!("<unset>"))
    );
}

#[test]
fn include_object_variants() {
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("a", 5), "data": {"k": "v"}});
    let t = to_table(
        "",
        "ConfigMap",
        std::slice::from_ref(&cm),
        IncludeObject::Metadata,
        now(),
    );
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(t["metadata"], json!({}));
    assert_eq!(t["columnDefinitions"].as_array().unwrap().len(), 3);
    assert_eq!(t["rows"][0]["cells"], json!(["a", 1, "5s"]));
    assert_eq!(
        t["rows"][0]["object"],
        json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": cm["metadata"]})
    );
    assert!(t["rows"][0].get("conditions").is_none());
    let full = to_table(
        "",
        "ConfigMap",
        std::slice::from_ref(&cm),
        IncludeObject::Object,
        now(),
    );
    assert_eq!(full["rows"][0]["object"], cm);
    let none = to_table(
        "",
        "ConfigMap",
        std::slice::from_ref(&cm),
        IncludeObject::None,
        now(),
    );
    assert_eq!(none["rows"][0]["object"], Value::Null);
    let empty = to_table("", "ConfigMap", &[], IncludeObject::Metadata, now());
    assert_eq!(empty["rows"], json!([]));

    assert_eq!(IncludeObject::parse("").unwrap(), IncludeObject::Metadata);
    assert_eq!(
        IncludeObject::parse("Object").unwrap(),
        IncludeObject::Object
    );
    assert_eq!(IncludeObject::parse("None").unwrap(), IncludeObject::None);
    assert_eq!(
        IncludeObject::parse("all").unwrap_err(),
        "unrecognized includeObject value: \"all\""
    );
}

#[test]
fn single_object_tables_and_list_meta() {
    let cm = json!({"metadata": meta("a", 5)});
    let t = object_to_table("", "ConfigMap", &cm, IncludeObject::Metadata, false, now());
    assert_eq!(t["metadata"], json!({"resourceVersion": "42"}));
    assert_eq!(t["rows"].as_array().unwrap().len(), 1);
    let no_headers = object_to_table("", "ConfigMap", &cm, IncludeObject::None, true, now());
    assert_eq!(no_headers["columnDefinitions"], Value::Null);
    let mut list = to_table("", "ConfigMap", &[cm], IncludeObject::None, now());
    set_list_meta(&mut list, "100", "", None);
    assert_eq!(list["metadata"], json!({"resourceVersion": "100"}));
    set_list_meta(&mut list, "100", "tok", Some(7));
    assert_eq!(
        list["metadata"],
        json!({"resourceVersion": "100", "continue": "tok", "remainingItemCount": 7})
    );
}

#[test]
fn missing_creation_timestamp_is_unknown_age() {
    let cm = json!({"metadata": {"name": "a"}});
    assert_eq!(cells("", "ConfigMap", &cm)[2], "<unknown>");
}
