//! Printers of the workload groups: `apps`, `batch` and `autoscaling`.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::format::{
    age, arr_at, bool_ptr, container_cells, format_label_selector, format_labels, get,
    human_duration, int_at, opt_int, selector_string, str_at, time_at,
};
use super::{col, wide, Printer, AGE, CONTAINERS, IMAGES, NAME};

pub(super) fn printer(kind: &str) -> Option<&'static Printer> {
    Some(match kind {
        "Deployment" => &DEPLOYMENT,
        "ReplicaSet" => &REPLICA_SET,
        "StatefulSet" => &STATEFUL_SET,
        "DaemonSet" => &DAEMON_SET,
        "ControllerRevision" => &CONTROLLER_REVISION,
        "Job" => &JOB,
        "CronJob" => &CRON_JOB,
        "HorizontalPodAutoscaler" => &HPA,
        _ => return None,
    })
}

fn name(obj: &Value) -> Value {
    json!(str_at(obj, &["metadata", "name"]))
}

/// `spec.replicas`, which defaulting sets to 1 when absent.
fn replicas(obj: &Value) -> i64 {
    opt_int(obj, &["spec", "replicas"]).unwrap_or(1)
}

fn template_containers(obj: &Value) -> (String, String) {
    container_cells(arr_at(obj, &["spec", "template", "spec", "containers"]))
}

const SELECTOR_DOC: &str = "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.";

const DEPLOYMENT: Printer = Printer {
    columns: &[
        NAME,
        col("Ready", "string", "Number of the pod with ready state"),
        col("Up-to-date", "string", "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
        col("Available", "string", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
        AGE,
        CONTAINERS,
        IMAGES,
        wide("Selector", "string", SELECTOR_DOC),
    ],
    cells: |d, now| {
        let (names, images) = template_containers(d);
        vec![
            name(d),
            json!(format!("{}/{}", int_at(d, &["status", "readyReplicas"]), replicas(d))),
            json!(int_at(d, &["status", "updatedReplicas"])),
            json!(int_at(d, &["status", "availableReplicas"])),
            json!(age(d, now)),
            json!(names),
            json!(images),
            json!(selector_string(get(d, &["spec", "selector"]))),
        ]
    },
    conditions: None,
};

const REPLICA_SET: Printer = Printer {
    columns: &[
        NAME,
        col("Desired", "integer", "Replicas is the number of desired replicas. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller/#what-is-a-replicationcontroller"),
        col("Current", "integer", "Replicas is the most recently observed number of replicas. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller/#what-is-a-replicationcontroller"),
        col("Ready", "integer", "The number of ready replicas for this replica set."),
        AGE,
        CONTAINERS,
        IMAGES,
        wide("Selector", "string", "Selector is a label query over pods that should match the replica count. If the selector is empty, it is defaulted to the labels present on the pod template. Label keys and values that must match in order to be controlled by this replica set. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors"),
    ],
    cells: |rs, now| {
        let (names, images) = template_containers(rs);
        vec![
            name(rs),
            json!(replicas(rs)),
            json!(int_at(rs, &["status", "replicas"])),
            json!(int_at(rs, &["status", "readyReplicas"])),
            json!(age(rs, now)),
            json!(names),
            json!(images),
            json!(format_label_selector(get(rs, &["spec", "selector"]))),
        ]
    },
    conditions: None,
};

const STATEFUL_SET: Printer = Printer {
    columns: &[
        NAME,
        col("Ready", "string", "Number of the pod with ready state"),
        AGE,
        CONTAINERS,
        IMAGES,
    ],
    cells: |s, now| {
        let (names, images) = template_containers(s);
        vec![
            name(s),
            json!(format!(
                "{}/{}",
                int_at(s, &["status", "readyReplicas"]),
                replicas(s)
            )),
            json!(age(s, now)),
            json!(names),
            json!(images),
        ]
    },
    conditions: None,
};

const DAEMON_SET: Printer = Printer {
    columns: &[
        NAME,
        col("Desired", "integer", "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod). More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/"),
        col("Current", "integer", "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod. More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/"),
        col("Ready", "integer", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready."),
        col("Up-to-date", "integer", "The total number of nodes that are running updated daemon pod"),
        col("Available", "integer", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)"),
        col("Node Selector", "string", "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must match a node's labels for the pod to be scheduled on that node. More info: https://kubernetes.io/docs/concepts/configuration/assign-pod-node/"),
        AGE,
        CONTAINERS,
        IMAGES,
        wide("Selector", "string", "A label query over pods that are managed by the daemon set. Must match in order to be controlled. If empty, defaulted to labels on Pod template. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors"),
    ],
    cells: |ds, now| {
        let (names, images) = template_containers(ds);
        vec![
            name(ds),
            json!(int_at(ds, &["status", "desiredNumberScheduled"])),
            json!(int_at(ds, &["status", "currentNumberScheduled"])),
            json!(int_at(ds, &["status", "numberReady"])),
            json!(int_at(ds, &["status", "updatedNumberScheduled"])),
            json!(int_at(ds, &["status", "numberAvailable"])),
            json!(format_labels(get(ds, &["spec", "template", "spec", "nodeSelector"]))),
            json!(age(ds, now)),
            json!(names),
            json!(images),
            json!(format_label_selector(get(ds, &["spec", "selector"]))),
        ]
    },
    conditions: None,
};

const CONTROLLER_REVISION: Printer = Printer {
    columns: &[
        NAME,
        col("Controller", "string", "Controller of the object"),
        col(
            "Revision",
            "string",
            "Revision indicates the revision of the state represented by Data.",
        ),
        AGE,
    ],
    cells: |cr, now| {
        let controller = arr_at(cr, &["metadata", "ownerReferences"])
            .iter()
            .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
            .map_or_else(
                || "<none>".to_string(),
                |r| {
                    let group = str_at(r, &["apiVersion"])
                        .rsplit_once('/')
                        .map_or("", |(g, _)| g);
                    let kind = str_at(r, &["kind"]);
                    let group_kind = if group.is_empty() {
                        kind.to_string()
                    } else {
                        format!("{kind}.{group}")
                    };
                    let n = str_at(r, &["name"]);
                    if group_kind.is_empty() {
                        n.to_string()
                    } else {
                        format!("{}/{n}", group_kind.to_lowercase())
                    }
                },
            );
        vec![
            name(cr),
            json!(controller),
            json!(int_at(cr, &["revision"])),
            json!(age(cr, now)),
        ]
    },
    conditions: None,
};

/// The first condition of a type decides, as upstream's `hasJobCondition`.
fn job_condition(job: &Value, ty: &str) -> bool {
    arr_at(job, &["status", "conditions"])
        .iter()
        .find(|c| str_at(c, &["type"]) == ty)
        .is_some_and(|c| str_at(c, &["status"]) == "True")
}

const JOB_SELECTOR_DOC: &str = "A label query over pods that should match the pod count. Normally, the system sets this field for you. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";

const JOB: Printer = Printer {
    columns: &[
        NAME,
        col("Status", "string", "Status of the job."),
        col("Completions", "string", "The number of pods which reached phase Succeeded. The value increases monotonically for a given spec. However, it may decrease in reaction to scale down of elastic indexed jobs."),
        col("Duration", "string", "Time required to complete the job."),
        AGE,
        CONTAINERS,
        IMAGES,
        wide("Selector", "string", JOB_SELECTOR_DOC),
    ],
    cells: job_cells,
    conditions: None,
};

fn job_cells(job: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let succeeded = int_at(job, &["status", "succeeded"]);
    let completions = match opt_int(job, &["spec", "completions"]) {
        Some(c) => format!("{succeeded}/{c}"),
        None => {
            let parallelism = opt_int(job, &["spec", "parallelism"]).unwrap_or(0);
            if parallelism > 1 {
                format!("{succeeded}/1 of {parallelism}")
            } else {
                format!("{succeeded}/1")
            }
        }
    };
    let duration = match (
        time_at(job, &["status", "startTime"]),
        time_at(job, &["status", "completionTime"]),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(start, now),
        (Some(start), Some(end)) => human_duration(start, end),
    };
    let deleting = get(job, &["metadata", "deletionTimestamp"]).is_some_and(|v| !v.is_null());
    let status = if job_condition(job, "Complete") {
        "Complete"
    } else if job_condition(job, "Failed") {
        "Failed"
    } else if deleting {
        "Terminating"
    } else if job_condition(job, "Suspended") {
        "Suspended"
    } else if job_condition(job, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) = template_containers(job);
    vec![
        name(job),
        json!(status),
        json!(completions),
        json!(duration),
        json!(age(job, now)),
        json!(names),
        json!(images),
        json!(format_label_selector(get(job, &["spec", "selector"]))),
    ]
}

const CRON_JOB: Printer = Printer {
    columns: &[
        NAME,
        col("Schedule", "string", "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron."),
        col("Timezone", "string", "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones. If not specified, this will default to the time zone of the kube-controller-manager process. The set of valid time zone names and the time zone offset is loaded from the system-wide time zone database by the API server during CronJob validation and the controller manager during execution. If no system-wide time zone database can be found a bundled version of the database is used instead. If the time zone name becomes invalid during the lifetime of a CronJob or due to a change in host configuration, the controller will stop creating new new Jobs and will create a system event with the reason UnknownTimeZone. More information can be found in https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/#time-zones"),
        col("Suspend", "boolean", "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions.  Defaults to false."),
        col("Active", "integer", "A list of pointers to currently running jobs."),
        col("Last Schedule", "string", "Information when was the last time the job was successfully scheduled."),
        AGE,
        CONTAINERS,
        IMAGES,
        wide("Selector", "string", JOB_SELECTOR_DOC),
    ],
    cells: |cj, now| {
        let last = match time_at(cj, &["status", "lastScheduleTime"]) {
            Some(t) => human_duration(t, now),
            None => "<none>".to_string(),
        };
        let tz = super::format::opt_str(cj, &["spec", "timeZone"]).unwrap_or("<none>");
        let job_spec = get(cj, &["spec", "jobTemplate", "spec"]).unwrap_or(&Value::Null);
        let (names, images) =
            container_cells(arr_at(job_spec, &["template", "spec", "containers"]));
        vec![
            name(cj),
            json!(str_at(cj, &["spec", "schedule"])),
            json!(tz),
            json!(bool_ptr(get(cj, &["spec", "suspend"]))),
            json!(arr_at(cj, &["status", "active"]).len()),
            json!(last),
            json!(age(cj, now)),
            json!(names),
            json!(images),
            json!(format_label_selector(get(job_spec, &["selector"]))),
        ]
    },
    conditions: None,
};

const HPA: Printer = Printer {
    columns: &[
        NAME,
        col("Reference", "string", "scaleTargetRef points to the target resource to scale, and is used to the pods for which metrics should be collected, as well as to actually change the replica count."),
        col("Targets", "string", "metrics contains the specifications for which to use to calculate the desired replica count (the maximum replica count across all metrics will be used).  The desired replica count is calculated multiplying the ratio between the target value and the current value by the current number of pods.  Ergo, metrics used must decrease as the pod count is increased, and vice-versa.  See the individual metric source types for more information about how each type of metric must respond."),
        col("MinPods", "string", "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down. It defaults to 1 pod."),
        col("MaxPods", "string", "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up. It cannot be less that minReplicas."),
        col("Replicas", "string", "currentReplicas is current number of replicas of pods managed by this autoscaler."),
        AGE,
    ],
    cells: hpa_cells,
    conditions: None,
};

fn hpa_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    // autoscaling/v1 objects print through the v2 shape, as upstream's internal type does.
    let converted;
    let hpa = if str_at(obj, &["apiVersion"]) == "autoscaling/v1"
        || get(obj, &["spec", "targetCPUUtilizationPercentage"]).is_some()
    {
        converted = crate::convert::hpa_v1_to_v2(obj.clone());
        &converted
    } else {
        obj
    };
    let reference = format!(
        "{}/{}",
        str_at(hpa, &["spec", "scaleTargetRef", "kind"]),
        str_at(hpa, &["spec", "scaleTargetRef", "name"])
    );
    let min_pods = opt_int(hpa, &["spec", "minReplicas"])
        .map_or_else(|| "<unset>".to_string(), |m| m.to_string());
    vec![
        name(hpa),
        json!(reference),
        json!(format_hpa_metrics(
            arr_at(hpa, &["spec", "metrics"]),
            arr_at(hpa, &["status", "currentMetrics"])
        )),
        json!(min_pods),
        json!(int_at(hpa, &["spec", "maxReplicas"])),
        json!(int_at(hpa, &["status", "currentReplicas"])),
        json!(age(hpa, now)),
    ]
}

fn q(v: &Value, path: &[&str]) -> String {
    super::format::quantity(get(v, path))
}

/// Upstream's `formatHPAMetrics`: the first two metrics as `current/target`, then `+ N more...`.
fn format_hpa_metrics(specs: &[Value], statuses: &[Value]) -> String {
    if specs.is_empty() {
        return "<none>".to_string();
    }
    let status = |i: usize, key: &str| {
        statuses
            .get(i)
            .and_then(|s| s.get(key))
            .filter(|v| !v.is_null())
    };
    let unknown = || "<unknown>".to_string();
    let mut list: Vec<String> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let text = match str_at(spec, &["type"]) {
            "External" | "Object" => {
                let key = if str_at(spec, &["type"]) == "External" {
                    "external"
                } else {
                    "object"
                };
                let target = get(spec, &[key, "target"]).unwrap_or(&Value::Null);
                if get(target, &["averageValue"]).is_some() {
                    let current = status(i, key)
                        .and_then(|s| get(s, &["current", "averageValue"]))
                        .map_or_else(unknown, |v| super::format::quantity(Some(v)));
                    format!("{current}/{} (avg)", q(target, &["averageValue"]))
                } else {
                    let current =
                        status(i, key).map_or_else(unknown, |s| q(s, &["current", "value"]));
                    format!("{current}/{}", q(target, &["value"]))
                }
            }
            "Pods" => {
                let current =
                    status(i, "pods").map_or_else(unknown, |s| q(s, &["current", "averageValue"]));
                format!("{current}/{}", q(spec, &["pods", "target", "averageValue"]))
            }
            "Resource" | "ContainerResource" => {
                let key = if str_at(spec, &["type"]) == "Resource" {
                    "resource"
                } else {
                    "containerResource"
                };
                let res_name = str_at(spec, &[key, "name"]);
                let target = get(spec, &[key, "target"]).unwrap_or(&Value::Null);
                if get(target, &["averageValue"]).is_some() {
                    let current =
                        status(i, key).map_or_else(unknown, |s| q(s, &["current", "averageValue"]));
                    format!("{res_name}: {current}/{}", q(target, &["averageValue"]))
                } else {
                    let current = status(i, key)
                        .and_then(|s| opt_int(s, &["current", "averageUtilization"]))
                        .map_or_else(unknown, |u| format!("{u}%"));
                    let target = opt_int(target, &["averageUtilization"])
                        .map_or_else(|| "<auto>".to_string(), |u| format!("{u}%"));
                    format!("{res_name}: {current}/{target}")
                }
            }
            _ => "<unknown type>".to_string(),
        };
        list.push(text);
    }
    const MAX: usize = 2;
    let count = list.len();
    if count > MAX {
        list.truncate(MAX);
        return format!("{} + {} more...", list.join(", "), count - MAX);
    }
    list.join(", ")
}
