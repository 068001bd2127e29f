//! batch/v1 Jobs and CronJobs, with a cron schedule checker in the manner of robfig/cron's
//! standard parser (five fields or a descriptor).

use serde_json::Value;

use super::apps::{go_label_selector, selector_matches, validate_label_selector};
use super::errors::{immutable, invalid, non_negative, not_supported, required, Raw};
use super::json::{get, i, opt_s, present, s};
use super::pod;
use crate::Cause;

fn validate_job_spec(spec: &Value, path: &str, is_template: bool, errs: &mut Vec<Cause>) {
    for f in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
    ] {
        non_negative(&format!("{path}.{f}"), i(spec, f), errs);
    }
    if let Some(mode) = opt_s(spec, "completionMode") {
        if mode != "NonIndexed" && mode != "Indexed" {
            errs.push(not_supported(
                format!("{path}.completionMode"),
                mode,
                &["NonIndexed", "Indexed"],
            ));
        }
        if mode == "Indexed" {
            if !present(spec, "completions") {
                errs.push(required(
                    format!("{path}.completions"),
                    "when completion mode is Indexed",
                ));
            }
            if let Some(p) = i(spec, "parallelism").filter(|p| *p > 100_000) {
                errs.push(invalid(
                    format!("{path}.parallelism"),
                    p,
                    "must be less than or equal to 100000 when completion mode is Indexed",
                ));
            }
        }
    }
    let manual = spec.get("manualSelector").and_then(Value::as_bool) == Some(true);
    let sel = get(spec, "selector");
    let tmpl = get(spec, "template");
    let labels = tmpl
        .pointer("/metadata/labels")
        .unwrap_or(&super::json::NULL);
    if sel.is_object() {
        validate_label_selector(sel, &format!("{path}.selector"), errs);
        if !selector_matches(sel, labels) {
            errs.push(invalid(
                format!("{path}.template.metadata.labels"),
                Raw(super::core::go_string_map(labels)),
                "`selector` does not match template `labels`",
            ));
        }
    } else if manual && !is_template {
        errs.push(required(format!("{path}.selector"), ""));
    }
    errs.extend(pod::validate_pod_template_spec(
        tmpl,
        &format!("{path}.template"),
    ));
    let rp = s(get(tmpl, "spec"), "restartPolicy");
    if rp != "OnFailure" && rp != "Never" {
        errs.push(not_supported(
            format!("{path}.template.spec.restartPolicy"),
            rp,
            &["OnFailure", "Never"],
        ));
    }
}

/// `ValidateJob` minus ObjectMeta. The generated selector is checked once present.
pub fn validate_job(job: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    validate_job_spec(get(job, "spec"), "spec", false, &mut errs);
    let spec = get(job, "spec");
    let manual = spec.get("manualSelector").and_then(Value::as_bool) == Some(true);
    let uid = job
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !manual && !uid.is_empty() && spec.get("selector").is_some_and(Value::is_object) {
        let want = serde_json::json!({ "batch.kubernetes.io/controller-uid": uid });
        if !selector_matches(get(spec, "selector"), &want) {
            errs.push(invalid(
                "spec.selector",
                Raw(go_label_selector(get(spec, "selector"))),
                "`selector` not auto-generated",
            ));
        }
    }
    errs
}

/// `ValidateJobUpdate` minus ObjectMeta.
pub fn validate_job_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = validate_job(new);
    let (ns, os) = (get(new, "spec"), get(old, "spec"));
    for f in [
        "completions",
        "selector",
        "completionMode",
        "podFailurePolicy",
        "backoffLimitPerIndex",
    ] {
        // Indexed jobs may scale completions together with parallelism.
        if f == "completions"
            && s(ns, "completionMode") == "Indexed"
            && i(ns, "completions") == i(ns, "parallelism")
        {
            continue;
        }
        if f == "selector" {
            if ns.get(f) != os.get(f) {
                errs.push(invalid(
                    "spec.selector",
                    Raw(go_label_selector(get(ns, f))),
                    super::FIELD_IMMUTABLE,
                ));
            }
            continue;
        }
        immutable(&format!("spec.{f}"), ns.get(f), os.get(f), &mut errs);
    }
    // A suspended job that never started may change its scheduling directives; otherwise the
    // template is fixed.
    let suspended = ns.get("suspend").and_then(Value::as_bool) == Some(true);
    if ns.get("template") != os.get("template") && !suspended {
        errs.push(invalid(
            "spec.template",
            Raw(get(ns, "template").to_string()),
            super::FIELD_IMMUTABLE,
        ));
    }
    errs
}

/// `ValidateCronJobCreate`/`Update` minus ObjectMeta.
pub fn validate_cron_job(cj: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let name = cj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.len() > 52 {
        errs.push(invalid(
            "metadata.name",
            name,
            "must be no more than 52 characters",
        ));
    }
    let spec = get(cj, "spec");
    let sched = s(spec, "schedule");
    if sched.is_empty() {
        errs.push(required("spec.schedule", ""));
    } else {
        if let Err(e) = parse_cron(sched) {
            errs.push(invalid("spec.schedule", sched, &e));
        }
        if sched.contains("TZ") {
            errs.push(invalid(
                "spec.schedule",
                sched,
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            ));
        }
    }
    non_negative(
        "spec.startingDeadlineSeconds",
        i(spec, "startingDeadlineSeconds"),
        &mut errs,
    );
    match s(spec, "concurrencyPolicy") {
        "" => errs.push(required("spec.concurrencyPolicy", "")),
        "Allow" | "Forbid" | "Replace" => {}
        p => errs.push(not_supported(
            "spec.concurrencyPolicy",
            p,
            &["Allow", "Forbid", "Replace"],
        )),
    }
    let jt = get(spec, "jobTemplate");
    super::meta::validate_labels(
        jt.pointer("/metadata/labels").unwrap_or(&super::json::NULL),
        "spec.jobTemplate.metadata.labels",
        &mut errs,
    );
    validate_job_spec(get(jt, "spec"), "spec.jobTemplate.spec", true, &mut errs);
    non_negative(
        "spec.successfulJobsHistoryLimit",
        i(spec, "successfulJobsHistoryLimit"),
        &mut errs,
    );
    non_negative(
        "spec.failedJobsHistoryLimit",
        i(spec, "failedJobsHistoryLimit"),
        &mut errs,
    );
    if let Some(tz) = opt_s(spec, "timeZone") {
        validate_time_zone(tz, &mut errs);
    }
    errs
}

fn validate_time_zone(tz: &str, errs: &mut Vec<Cause>) {
    let p = "spec.timeZone";
    if tz.is_empty() {
        errs.push(invalid(p, tz, "timeZone must be nil or non-empty string"));
        return;
    }
    let part_ok = |part: &str| {
        !(part == "." || part == ".." || part.starts_with('-'))
            && (1..=14).contains(&part.len())
            && part
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b".-_+".contains(&c))
    };
    if !tz.split('/').all(part_ok) {
        errs.push(invalid(p, tz, &format!("unknown time zone {tz}")));
        return;
    }
    if tz.eq_ignore_ascii_case("local") {
        errs.push(invalid(
            p,
            tz,
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
        ));
    }
}

/// Checks a cron schedule as robfig/cron's `ParseStandard` does, returning its error text.
pub fn parse_cron(spec: &str) -> Result<(), String> {
    let spec = spec.trim();
    if let Some(desc) = spec.strip_prefix('@') {
        return match desc {
            "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly" => {
                Ok(())
            }
            d if d.starts_with("every ") => {
                let dur = d["every ".len()..].trim();
                if parse_go_duration(dur) {
                    Ok(())
                } else {
                    Err(format!(
                        "failed to parse duration {spec}: time: invalid duration {}",
                        super::errors::go_quote(dur)
                    ))
                }
            }
            _ => Err(format!("unrecognized descriptor: {spec}")),
        };
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: [{}]",
            fields.len(),
            fields.join(" ")
        ));
    }
    const MONTHS: &[&str] = &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    const DOW: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    let bounds: [(u32, u32, &[&str], u32); 5] = [
        (0, 59, &[], 0),
        (0, 23, &[], 0),
        (1, 31, &[], 0),
        (1, 12, MONTHS, 1),
        (0, 6, DOW, 0),
    ];
    for (field, (min, max, names, base)) in fields.iter().zip(bounds) {
        for expr in field.split(',') {
            parse_range(expr, min, max, names, base)?;
        }
    }
    Ok(())
}

fn parse_range(expr: &str, min: u32, max: u32, names: &[&str], base: u32) -> Result<(), String> {
    let parts: Vec<&str> = expr.split('/').collect();
    if parts.len() > 2 {
        return Err(format!("too many slashes: {expr}"));
    }
    let lh: Vec<&str> = parts[0].split('-').collect();
    let (start, end) = if lh[0] == "*" || lh[0] == "?" {
        (min, max)
    } else {
        let start = parse_int_or_name(lh[0], names, base)?;
        let end = match lh.len() {
            1 => start,
            2 => parse_int_or_name(lh[1], names, base)?,
            _ => return Err(format!("too many hyphens: {expr}")),
        };
        (start, end)
    };
    if parts.len() == 2 {
        let step = parse_int(parts[1])?;
        if step == 0 {
            return Err(format!("step of range should be a positive number: {expr}"));
        }
    }
    if start < min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({min}): {expr}"
        ));
    }
    if end > max {
        return Err(format!(
            "end of range ({end}) above maximum ({max}): {expr}"
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    Ok(())
}

fn parse_int_or_name(s: &str, names: &[&str], base: u32) -> Result<u32, String> {
    if let Some(pos) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return Ok(pos as u32 + base);
    }
    parse_int(s)
}

fn parse_int(s: &str) -> Result<u32, String> {
    match s.parse::<i64>() {
        Ok(n) if n < 0 => Err(format!("negative number ({n}) not allowed: {s}")),
        Ok(n) => Ok(n as u32),
        Err(_) => Err(format!(
            "failed to parse int from {s}: strconv.Atoi: parsing {}: invalid syntax",
            super::errors::go_quote(s)
        )),
    }
}

fn parse_go_duration(d: &str) -> bool {
    if d == "0" {
        return true;
    }
    let mut rest = d;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if n == 0 {
            return false;
        }
        rest = &rest[n..];
        let unit = ["ns", "us", "µs", "ms", "s", "m", "h"]
            .iter()
            .find(|u| rest.starts_with(**u));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(restart: &str) -> Value {
        let mut j = json!({"metadata": {"name": "j", "namespace": "n"}, "spec": {"template": {"spec": {"restartPolicy": restart, "containers": [{"name": "c", "image": "x"}]}}}});
        crate::defaults::apply("batch", "v1", "Job", &mut j);
        j
    }

    #[test]
    fn job_rules() {
        let mut j = job("Never");
        crate::defaults::job_selector(&mut j, "u1");
        j["metadata"]["uid"] = json!("u1");
        assert_eq!(validate_job(&j), vec![]);
        let e = validate_job(&job("Always"));
        assert_eq!(
            e,
            vec![not_supported(
                "spec.template.spec.restartPolicy",
                "Always",
                &["OnFailure", "Never"]
            )]
        );
        let mut j = job("Never");
        j["spec"]["parallelism"] = json!(-1);
        assert_eq!(
            validate_job(&j),
            vec![invalid(
                "spec.parallelism",
                -1i64,
                "must be greater than or equal to 0"
            )]
        );
    }

    #[test]
    fn job_update_immutables() {
        let old = job("Never");
        let mut new = old.clone();
        new["spec"]["completions"] = json!(5);
        assert_eq!(
            validate_job_update(&new, &old),
            vec![invalid("spec.completions", 5i64, "field is immutable")]
        );
        let mut new = old.clone();
        new["spec"]["parallelism"] = json!(5);
        assert_eq!(validate_job_update(&new, &old), vec![]);
    }

    #[test]
    fn cron_syntax() {
        for ok in [
            "*/5 * * * *",
            "0 0 1 JAN mon-fri",
            "@hourly",
            "@every 1h30m",
            "0-59/15 0,12 * * ?",
        ] {
            assert_eq!(parse_cron(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            parse_cron("* * * *"),
            Err("expected exactly 5 fields, found 4: [* * * *]".into())
        );
        assert_eq!(
            parse_cron("@foo"),
            Err("unrecognized descriptor: @foo".into())
        );
        assert_eq!(
            parse_cron("60 * * * *"),
            Err("end of range (60) above maximum (59): 60".into())
        );
        assert_eq!(
            parse_cron("x * * * *"),
            Err("failed to parse int from x: strconv.Atoi: parsing \"x\": invalid syntax".into())
        );
    }

    #[test]
    fn cron_job_rules() {
        let mut c = json!({"metadata": {"name": "c", "namespace": "n"}, "spec": {"schedule": "TZ=UTC * * * * *",
            "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "x"}]}}}}}});
        crate::defaults::apply("batch", "v1", "CronJob", &mut c);
        let e = validate_cron_job(&c);
        assert_eq!(e.len(), 2);
        assert_eq!(
            e[1],
            invalid(
                "spec.schedule",
                "TZ=UTC * * * * *",
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"
            )
        );
        c["spec"]["schedule"] = json!("@daily");
        c["spec"]["timeZone"] = json!("Local");
        assert_eq!(validate_cron_job(&c), vec![invalid("spec.timeZone", "Local", "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones")]);
        c["spec"]["timeZone"] = json!("Europe/Berlin");
        assert_eq!(validate_cron_job(&c), vec![]);
    }
}
