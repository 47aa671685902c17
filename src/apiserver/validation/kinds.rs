//! The per-kind rules: a table from resource to the checks upstream's strategy runs.

use serde_json::{json, Value};

use super::pod::{self, Owner};
use super::{meta, Errors};
use crate::apiserver::catalog::ResourceDef;
use crate::apiserver::registry::object::name_problem;

const KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";
const MAX_DATA: usize = 1024 * 1024;

/// Runs the kind's checks on `obj` (`old` is set for updates).
pub fn validate(def: &ResourceDef, obj: &Value, old: Option<&Value>, errs: &mut Errors) {
    match (def.group, def.plural) {
        ("", "pods") => {
            pod::spec(&obj["spec"], "spec", Owner::Pod, errs);
            match old {
                Some(old) => pod::update(old, obj, errs),
                // Ephemeral containers only come through pods/NAME/ephemeralcontainers.
                None if !obj["spec"]["ephemeralContainers"].is_null() => {
                    errs.forbidden("spec.ephemeralContainers", "cannot be set on create")
                }
                None => {}
            }
        }
        ("", "podtemplates") => pod::spec(
            &obj["template"]["spec"],
            "template.spec",
            Owner::Template,
            errs,
        ),
        ("", "replicationcontrollers") => {
            let spec = &obj["spec"];
            non_negative(&spec["replicas"], "spec.replicas", errs);
            let selector = &spec["selector"];
            if selector.as_object().is_none_or(|m| m.is_empty()) {
                errs.required("spec.selector", "");
            } else if !map_matches(selector, &spec["template"]["metadata"]["labels"]) {
                errs.invalid(
                    "spec.template.metadata.labels",
                    &spec["template"]["metadata"]["labels"],
                    "`selector` does not match template `labels`",
                );
            }
            template(spec, &["Always"], errs);
        }
        ("apps", "deployments" | "replicasets" | "statefulsets" | "daemonsets") => {
            workload(def.kind, obj, old, errs)
        }
        ("batch", "jobs") => job(&obj["spec"], "spec", old.map(|o| &o["spec"]), errs),
        ("batch", "cronjobs") => {
            let spec = &obj["spec"];
            match spec["schedule"].as_str() {
                None | Some("") => errs.required("spec.schedule", ""),
                Some(s) => {
                    if let Some(problem) = cron_problem(s, spec["timeZone"].is_string()) {
                        errs.invalid("spec.schedule", &spec["schedule"], &problem);
                    }
                }
            }
            if let Some(tz) = spec["timeZone"].as_str() {
                if let Some(problem) = time_zone_problem(tz) {
                    errs.invalid("spec.timeZone", &spec["timeZone"], &problem);
                }
            }
            errs.one_of(
                "spec.concurrencyPolicy",
                &spec["concurrencyPolicy"],
                &["Allow", "Forbid", "Replace"],
            );
            job(
                &spec["jobTemplate"]["spec"],
                "spec.jobTemplate.spec",
                None,
                errs,
            );
        }
        ("", "services") => service(&obj["spec"], errs),
        ("", "configmaps") => config_data(obj, old, &["data", "binaryData"], errs),
        ("", "secrets") => {
            config_data(obj, old, &["data", "stringData"], errs);
            secret_type(obj, old, errs);
        }
        _ => {}
    }
}

fn non_negative(v: &Value, path: &str, errs: &mut Errors) {
    if v.as_i64().is_some_and(|n| n < 0) {
        errs.invalid(path, v, "must be greater than or equal to 0");
    }
}

/// Whether every `matchLabels` pair is in `labels`.
fn map_matches(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
}

/// Whether a LabelSelector (matchLabels and matchExpressions) selects `labels`, by the
/// registry's one selector implementation.
fn selector_matches(selector: &Value, labels: &Value) -> bool {
    crate::apiserver::registry::selector::label_selector_matches(selector, labels)
}

/// A LabelSelector as Go's `%#v` prints it, the way upstream's "field is immutable" shows it.
fn go_selector(sel: &Value) -> String {
    let labels = match sel["matchLabels"].as_object() {
        Some(m) if !m.is_empty() => super::go_value(&sel["matchLabels"]),
        Some(_) => "map[string]string{}".into(),
        None => "map[string]string(nil)".into(),
    };
    let exprs = match sel["matchExpressions"].as_array() {
        None => "[]v1.LabelSelectorRequirement(nil)".to_string(),
        Some(list) => {
            let items: Vec<String> = list
                .iter()
                .map(|e| {
                    let values = match e["values"].as_array() {
                        None => "[]string(nil)".to_string(),
                        Some(v) => format!(
                            "[]string{{{}}}",
                            v.iter()
                                .map(|x| format!("{:?}", x.as_str().unwrap_or_default()))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    };
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{:?}, Operator:{:?}, Values:{values}}}",
                        e["key"].as_str().unwrap_or_default(),
                        e["operator"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
        }
    };
    format!("v1.LabelSelector{{MatchLabels:{labels}, MatchExpressions:{exprs}}}")
}

/// The pod template of a controller: valid, and restarting as the controller needs.
fn template(spec: &Value, restart: &[&str], errs: &mut Errors) {
    let t = &spec["template"];
    meta::labels(
        &t["metadata"]["labels"],
        "spec.template.metadata.labels",
        errs,
    );
    pod::spec(&t["spec"], "spec.template.spec", Owner::Template, errs);
    errs.one_of(
        "spec.template.spec.restartPolicy",
        &t["spec"]["restartPolicy"],
        restart,
    );
}

fn workload(kind: &str, obj: &Value, old: Option<&Value>, errs: &mut Errors) {
    let spec = &obj["spec"];
    non_negative(&spec["replicas"], "spec.replicas", errs);
    non_negative(&spec["minReadySeconds"], "spec.minReadySeconds", errs);
    non_negative(
        &spec["revisionHistoryLimit"],
        "spec.revisionHistoryLimit",
        errs,
    );
    let selector = &spec["selector"];
    if !selector.is_object() {
        errs.required("spec.selector", "");
    } else {
        let empty = selector["matchLabels"]
            .as_object()
            .is_none_or(|m| m.is_empty())
            && selector["matchExpressions"]
                .as_array()
                .is_none_or(|m| m.is_empty());
        if empty {
            errs.invalid_raw(
                "spec.selector",
                &go_selector(selector),
                &format!("empty selector is invalid for {}", kind.to_lowercase()),
            );
        } else if !selector_matches(selector, &spec["template"]["metadata"]["labels"]) {
            errs.invalid(
                "spec.template.metadata.labels",
                &spec["template"]["metadata"]["labels"],
                "`selector` does not match template `labels`",
            );
        }
    }
    template(spec, &["Always"], errs);
    if kind == "Deployment" {
        errs.one_of(
            "spec.strategy.type",
            &spec["strategy"]["type"],
            &["Recreate", "RollingUpdate"],
        );
        let ru = &spec["strategy"]["rollingUpdate"];
        let zero = |v: &Value| v == 0 || v == "0%" || v == "0";
        if !ru.is_null() && zero(&ru["maxUnavailable"]) && zero(&ru["maxSurge"]) {
            errs.invalid(
                "spec.strategy.rollingUpdate.maxUnavailable",
                &ru["maxUnavailable"],
                "may not be 0 when `maxSurge` is 0",
            );
        }
        if let (Some(p), m) = (
            spec["progressDeadlineSeconds"].as_i64(),
            spec["minReadySeconds"].as_i64().unwrap_or(0),
        ) {
            if p <= m {
                errs.invalid(
                    "spec.progressDeadlineSeconds",
                    &spec["progressDeadlineSeconds"],
                    "must be greater than minReadySeconds",
                );
            }
        }
    }
    if let Some(old) = old {
        if old["spec"]["selector"] != spec["selector"] {
            errs.invalid_raw(
                "spec.selector",
                &go_selector(&spec["selector"]),
                "field is immutable",
            );
        }
        if kind == "StatefulSet" {
            let fixed = |s: &Value| {
                let mut s = s.clone();
                if let Some(o) = s.as_object_mut() {
                    for f in [
                        "replicas",
                        "ordinals",
                        "template",
                        "updateStrategy",
                        "persistentVolumeClaimRetentionPolicy",
                        "minReadySeconds",
                        "selector",
                        "revisionHistoryLimit",
                    ] {
                        o.remove(f);
                    }
                }
                s
            };
            if fixed(&old["spec"]) != fixed(spec) {
                errs.forbidden("spec", "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden");
            }
        }
    }
}

fn job(spec: &Value, path: &str, old: Option<&Value>, errs: &mut Errors) {
    for f in [
        "parallelism",
        "completions",
        "backoffLimit",
        "ttlSecondsAfterFinished",
    ] {
        non_negative(&spec[f], &format!("{path}.{f}"), errs);
    }
    if spec["activeDeadlineSeconds"]
        .as_i64()
        .is_some_and(|d| d <= 0)
    {
        errs.invalid(
            &format!("{path}.activeDeadlineSeconds"),
            &spec["activeDeadlineSeconds"],
            "must be greater than 0",
        );
    }
    errs.one_of(
        &format!("{path}.completionMode"),
        &spec["completionMode"],
        &["NonIndexed", "Indexed"],
    );
    let t = &spec["template"];
    pod::spec(
        &t["spec"],
        &format!("{path}.template.spec"),
        Owner::Template,
        errs,
    );
    match t["spec"]["restartPolicy"].as_str() {
        Some("OnFailure" | "Never") => {}
        None => errs.required(
            &format!("{path}.template.spec.restartPolicy"),
            "valid values: \"OnFailure\", \"Never\"",
        ),
        Some(_) => errs.one_of(
            &format!("{path}.template.spec.restartPolicy"),
            &t["spec"]["restartPolicy"],
            &["OnFailure", "Never"],
        ),
    }
    if spec["selector"].is_object()
        && !selector_matches(&spec["selector"], &t["metadata"]["labels"])
    {
        errs.invalid(
            &format!("{path}.template.metadata.labels"),
            &t["metadata"]["labels"],
            "`selector` does not match template `labels`",
        );
    }
    if let Some(old) = old {
        if old["selector"] != spec["selector"] {
            errs.invalid_raw(
                &format!("{path}.selector"),
                &go_selector(&spec["selector"]),
                "field is immutable",
            );
        }
        if old["completions"] != spec["completions"] && spec["completionMode"] != "Indexed" {
            errs.invalid(
                &format!("{path}.completions"),
                &spec["completions"],
                "field is immutable",
            );
        }
        if old["template"] != spec["template"] && spec["suspend"] != true {
            errs.invalid_raw(
                &format!("{path}.template"),
                "core.PodTemplateSpec{...}",
                "field is immutable",
            );
        }
    }
}

/// A five-field cron schedule or a descriptor (`@hourly`, `@every 5m`), without `TZ=`.
fn cron_problem(s: &str, has_time_zone: bool) -> Option<String> {
    if s.contains("TZ") {
        return Some(if has_time_zone {
            "cannot use both timeZone field and TZ or CRON_TZ in schedule".into()
        } else {
            "cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into()
        });
    }
    crate::cron::Schedule::parse(s).err()
}

/// An IANA time zone name this machine knows (upstream's `validateTimeZone`).
fn time_zone_problem(tz: &str) -> Option<String> {
    if tz.is_empty() {
        return Some("timeZone must be nil or non-empty string".into());
    }
    let bad_part = tz.split('/').any(|p| {
        p.is_empty()
            || p == "."
            || p == ".."
            || p.starts_with('-')
            || !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_+".contains(c))
    });
    if bad_part {
        return Some(format!("unknown time zone {tz}"));
    }
    if tz.eq_ignore_ascii_case("Local") {
        return Some(
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones"
                .into(),
        );
    }
    jiff::tz::TimeZone::get(tz)
        .is_err()
        .then(|| format!("unknown time zone {tz}"))
}

fn service(spec: &Value, errs: &mut Errors) {
    let ty = spec["type"].as_str().unwrap_or("ClusterIP");
    errs.one_of(
        "spec.type",
        &spec["type"],
        &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
    );
    errs.one_of(
        "spec.sessionAffinity",
        &spec["sessionAffinity"],
        &["ClientIP", "None"],
    );
    errs.one_of(
        "spec.externalTrafficPolicy",
        &spec["externalTrafficPolicy"],
        &["Cluster", "Local"],
    );
    errs.one_of(
        "spec.internalTrafficPolicy",
        &spec["internalTrafficPolicy"],
        &["Cluster", "Local"],
    );
    let headless = spec["clusterIP"] == "None";
    let ports = spec["ports"].as_array().cloned().unwrap_or_default();
    if ty == "ExternalName" {
        if spec["externalName"].as_str().is_none_or(str::is_empty) {
            errs.required("spec.externalName", "");
        }
    } else if ports.is_empty() && !headless {
        errs.required("spec.ports", "");
    }
    let mut names = std::collections::HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        match p["name"].as_str().filter(|n| !n.is_empty()) {
            None if ports.len() > 1 => errs.required(&format!("{path}.name"), ""),
            None => {}
            Some(n) => {
                if let Some(problem) = name_problem(n, true) {
                    errs.invalid(&format!("{path}.name"), &p["name"], &problem);
                } else if !names.insert(n.to_string()) {
                    errs.duplicate(&format!("{path}.name"), &p["name"]);
                }
            }
        }
        match p["port"].as_i64() {
            Some(n) if (1..=65535).contains(&n) => {}
            None => errs.required(&format!("{path}.port"), ""),
            Some(_) => errs.invalid(
                &format!("{path}.port"),
                &p["port"],
                "must be between 1 and 65535, inclusive",
            ),
        }
        errs.one_of(
            &format!("{path}.protocol"),
            &p["protocol"],
            &["SCTP", "TCP", "UDP"],
        );
        if let Some(t) = p["targetPort"].as_i64() {
            if !(1..=65535).contains(&t) {
                errs.invalid(
                    &format!("{path}.targetPort"),
                    &p["targetPort"],
                    "must be between 1 and 65535, inclusive",
                );
            }
        }
        if p["nodePort"].as_i64().is_some_and(|n| n != 0)
            && !matches!(ty, "NodePort" | "LoadBalancer")
        {
            errs.forbidden(
                &format!("{path}.nodePort"),
                &format!("may not be used when `type` is '{ty}'"),
            );
        }
    }
    meta::labels(&spec["selector"], "spec.selector", errs);
}

/// ConfigMap and Secret data: valid keys, at most 1 MiB, and `immutable` honoured.
fn config_data(obj: &Value, old: Option<&Value>, fields: &[&str], errs: &mut Errors) {
    let mut total = 0;
    for field in fields {
        for (k, v) in obj[*field].as_object().into_iter().flatten() {
            let ok = !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                && k != "."
                && k != "..";
            if !ok {
                errs.invalid(&format!("{field}[{k}]"), &json!(k), KEY_MSG);
            }
            total += v.as_str().map_or(0, str::len);
        }
    }
    if total > MAX_DATA {
        errs.too_long(
            if fields[0] == "data" && fields[1] == "binaryData" {
                "[]"
            } else {
                "data"
            },
            &format!("must have at most {MAX_DATA} bytes"),
        );
    }
    if let Some(old) = old {
        if old["immutable"] == true {
            if obj["immutable"] != true {
                errs.forbidden("immutable", "field is immutable when `immutable` is set");
            }
            for field in fields {
                if old[*field] != obj[*field] {
                    errs.forbidden(field, "field is immutable when `immutable` is set");
                }
            }
        }
    }
}

/// A Secret's type never changes, and the well-known types need their keys.
fn secret_type(obj: &Value, old: Option<&Value>, errs: &mut Errors) {
    let ty = obj["type"].as_str().unwrap_or("Opaque");
    if let Some(old) = old {
        if old["type"] != obj["type"] {
            errs.invalid("type", &obj["type"], "field is immutable");
        }
    }
    let has = |k: &str| obj["data"].get(k).is_some() || obj["stringData"].get(k).is_some();
    let need: &[&str] = match ty {
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        _ => &[],
    };
    for k in need {
        if !has(k) {
            errs.required(&format!("data[{k}]"), "");
        }
    }
    if ty == "kubernetes.io/basic-auth" && !has("username") && !has("password") {
        errs.required("data[username]", "");
        errs.required("data[password]", "");
    }
    if ty == "kubernetes.io/service-account-token"
        && obj["metadata"]["annotations"]["kubernetes.io/service-account.name"]
            .as_str()
            .is_none_or(str::is_empty)
    {
        errs.required(
            "metadata.annotations[kubernetes.io/service-account.name]",
            "",
        );
    }
}
