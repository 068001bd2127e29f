//! batch/v1 defaults, and the selector a Job gets once its uid is known.

use serde_json::{json, Map, Value};

use super::core::pod_template;
use super::{field, has, map, set_default};

/// Job defaults (SetDefaults_Job).
pub fn job(obj: &mut Value) {
    let tmpl_labels = obj
        .pointer("/spec/template/metadata/labels")
        .cloned()
        .filter(|l| l.is_object());
    let spec = field(obj, "spec");
    if !has(spec, "completions") && !has(spec, "parallelism") {
        spec["completions"] = json!(1);
        spec["parallelism"] = json!(1);
    }
    set_default(spec, "parallelism", json!(1));
    let backoff = if has(spec, "backoffLimitPerIndex") {
        json!(i32::MAX)
    } else {
        json!(6)
    };
    set_default(spec, "backoffLimit", backoff);
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    set_default(spec, "manualSelector", json!(false));
    let replacement = if has(spec, "podFailurePolicy") {
        "Failed"
    } else {
        "TerminatingOrFailed"
    };
    set_default(spec, "podReplacementPolicy", json!(replacement));
    if let Some(rules) = spec
        .pointer_mut("/podFailurePolicy/rules")
        .and_then(Value::as_array_mut)
    {
        for r in rules {
            for c in super::items(r, "onPodConditions") {
                set_default(c, "status", json!("True"));
            }
        }
    }
    if has(spec, "template") {
        pod_template(field(spec, "template"));
    }
    if let Some(labels) = tmpl_labels {
        let meta = field(obj, "metadata");
        if meta
            .get("labels")
            .and_then(Value::as_object)
            .is_none_or(Map::is_empty)
        {
            meta["labels"] = labels;
        }
    }
}

/// CronJob defaults; the job template's pod template gets pod defaults.
pub fn cron_job(obj: &mut Value) {
    let spec = field(obj, "spec");
    set_default(spec, "concurrencyPolicy", json!("Allow"));
    set_default(spec, "suspend", json!(false));
    set_default(spec, "successfulJobsHistoryLimit", json!(3));
    set_default(spec, "failedJobsHistoryLimit", json!(1));
    if let Some(t) = spec.pointer_mut("/jobTemplate/spec/template") {
        pod_template(t);
    }
}

/// Generates a Job's selector and pod template labels from its uid, as upstream's job strategy
/// does at create (call after setting `metadata.uid`). With `spec.manualSelector: true` the
/// user's selector is kept. When the Job's own labels were copied from the template (upstream
/// shares the map), they receive the same labels.
pub fn job_selector(obj: &mut Value, uid: &str) {
    if obj.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let tmpl_labels = obj.pointer("/spec/template/metadata/labels").cloned();
    let shared = tmpl_labels.is_some() && obj.pointer("/metadata/labels") == tmpl_labels.as_ref();
    let add = |labels: &mut Map<String, Value>| {
        for (k, v) in [
            ("batch.kubernetes.io/controller-uid", uid),
            ("batch.kubernetes.io/job-name", name.as_str()),
            ("controller-uid", uid),
            ("job-name", name.as_str()),
        ] {
            labels.entry(k.to_string()).or_insert_with(|| json!(v));
        }
    };
    let spec = field(obj, "spec");
    spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    add(map(field(
        field(field(spec, "template"), "metadata"),
        "labels",
    )));
    if shared {
        add(map(field(field(obj, "metadata"), "labels")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_defaults_and_selector() {
        let mut j = json!({"metadata": {"name": "pi"}, "spec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": {"restartPolicy": "Never", "containers": []}}}});
        job(&mut j);
        let s = &j["spec"];
        assert_eq!(
            (
                s["completions"].clone(),
                s["parallelism"].clone(),
                s["backoffLimit"].clone()
            ),
            (json!(1), json!(1), json!(6))
        );
        assert_eq!(s["completionMode"], "NonIndexed");
        assert_eq!(s["suspend"], false);
        assert_eq!(s["template"]["spec"]["restartPolicy"], "Never");
        assert_eq!(j["metadata"]["labels"], json!({"a": "b"}));
        job_selector(&mut j, "u1");
        assert_eq!(
            j["spec"]["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}})
        );
        let tl = &j["spec"]["template"]["metadata"]["labels"];
        assert_eq!(tl["job-name"], "pi");
        assert_eq!(tl["controller-uid"], "u1");
        assert_eq!(tl["batch.kubernetes.io/job-name"], "pi");
        assert_eq!(
            j["metadata"]["labels"]["batch.kubernetes.io/controller-uid"],
            "u1"
        );
    }

    #[test]
    fn parallelism_only() {
        let mut j = json!({"spec": {"parallelism": 3}});
        job(&mut j);
        assert!(j["spec"].get("completions").is_none());
        let mut j = json!({"spec": {"completions": 3}});
        job(&mut j);
        assert_eq!(j["spec"]["parallelism"], 1);
    }

    #[test]
    fn cron_job_defaults() {
        let mut c = json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}}});
        cron_job(&mut c);
        let s = &c["spec"];
        assert_eq!(s["concurrencyPolicy"], "Allow");
        assert_eq!(s["successfulJobsHistoryLimit"], 3);
        assert_eq!(s["failedJobsHistoryLimit"], 1);
        assert_eq!(s["suspend"], false);
        assert_eq!(
            s["jobTemplate"]["spec"]["template"]["spec"]["dnsPolicy"],
            "ClusterFirst"
        );
        assert!(s["jobTemplate"]["spec"].get("backoffLimit").is_none());
    }

    #[test]
    fn manual_selector_kept() {
        let mut j =
            json!({"spec": {"manualSelector": true, "selector": {"matchLabels": {"x": "y"}}}});
        job_selector(&mut j, "u");
        assert_eq!(j["spec"]["selector"], json!({"matchLabels": {"x": "y"}}));
    }
}
