//! PodSecurity on namespace writes, as upstream's `ValidateNamespace`: malformed
//! `pod-security.kubernetes.io/*` labels are refused (422); labelling an exempt namespace warns
//! that the policy will be ignored; tightening `enforce` evaluates the pods already there and
//! warns about those the new level would refuse (they keep running), one line per distinct set
//! of violations: `web-1 (and 2 other pods): host namespaces, privileged`.

use std::collections::HashMap;

use axum::response::Response;
use serde_json::Value;

use super::policy::{Config, Level, Policy, MODES, PREFIX};
use crate::apiserver::admission::{list, Attributes, Operation};
use crate::apiserver::validation;

/// The most pods evaluated for one namespace write, as upstream bounds it.
const MAX_PODS: usize = 3000;

pub async fn validate(
    a: &Attributes<'_>,
    cfg: &Config,
    obj: &Value,
    old: Option<&Value>,
) -> Result<Vec<String>, Response> {
    let labels = &obj["metadata"]["labels"];
    let (policy, errs) = Policy::from_labels(labels, &cfg.defaults);
    if !errs.0.is_empty() {
        return Err(validation::response(a.def, a.name, &errs.0));
    }
    if cfg.exempt_namespaces.iter().any(|n| n == a.name) {
        return Ok(exempt_warning(a.name, &policy, labels)
            .into_iter()
            .collect());
    }
    let Some(old) = old.filter(|_| a.op == Operation::Update) else {
        return Ok(Vec::new());
    };
    let (before, _) = Policy::from_labels(&old["metadata"]["labels"], &cfg.defaults);
    let (now, then) = (policy.enforce, before.enforce);
    if now == then
        || now.level == Level::Privileged
        || (now.level < then.level && now.version == then.version)
    {
        return Ok(Vec::new());
    }
    let pods = list(a.reg, "", "pods", Some(a.name)).await;
    let mut warnings = pod_warnings(cfg, now.level, &pods);
    if !warnings.is_empty() {
        warnings.insert(
            0,
            format!(
                "existing pods in namespace {:?} violate the new PodSecurity enforce level {:?}",
                a.name,
                now.to_string()
            ),
        );
    }
    Ok(warnings)
}

/// `namespace "kube-system" is exempt from Pod Security, and the policy (enforce=baseline:latest)
/// will be ignored`, when the labels ask for anything beyond privileged.
fn exempt_warning(name: &str, policy: &Policy, labels: &Value) -> Option<String> {
    let parts: Vec<String> = MODES
        .iter()
        .filter(|mode| {
            policy.mode(mode).level != Level::Privileged
                && (!labels[format!("{PREFIX}{mode}")].is_null()
                    || !labels[format!("{PREFIX}{mode}-version")].is_null())
        })
        .map(|mode| format!("{mode}={}", policy.mode(mode)))
        .collect();
    (!parts.is_empty()).then(|| {
        format!(
            "namespace {name:?} is exempt from Pod Security, and the policy ({}) will be ignored",
            parts.join(", ")
        )
    })
}

/// One warning per distinct set of violations, naming the first pod (by name) that has it.
fn pod_warnings(cfg: &Config, level: Level, pods: &[Value]) -> Vec<String> {
    let mut pods: Vec<&Value> = pods.iter().collect();
    pods.sort_by(|a, b| {
        a["metadata"]["name"]
            .as_str()
            .cmp(&b["metadata"]["name"].as_str())
    });
    let total = pods.len();
    let mut seen: HashMap<String, (String, usize)> = HashMap::new();
    for pod in pods.iter().take(MAX_PODS) {
        let spec = &pod["spec"];
        let class = spec["runtimeClassName"].as_str().unwrap_or_default();
        if !class.is_empty() && cfg.exempt_runtime_classes.iter().any(|r| r == class) {
            continue;
        }
        let Some(why) = super::reasons(spec, level) else {
            continue;
        };
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        seen.entry(why).or_insert_with(|| (name.to_string(), 0)).1 += 1;
    }
    let mut out: Vec<String> = seen
        .into_iter()
        .map(|(why, (first, count))| match count {
            1 => format!("{first}: {why}"),
            2 => format!("{first} (and 1 other pod): {why}"),
            n => format!("{first} (and {} other pods): {why}", n - 1),
        })
        .collect();
    out.sort();
    if total > MAX_PODS {
        out.push(format!(
            "new PodSecurity enforce level only checked against the first {MAX_PODS} of {total} existing pods"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_with_the_same_violations_share_a_line() {
        let pod = |name: &str, host: bool| json!({"metadata": {"name": name}, "spec": {"hostNetwork": host, "containers": [{"name": "c"}]}});
        let pods = [
            pod("b", true),
            pod("a", true),
            pod("c", true),
            pod("ok", false),
        ];
        let got = pod_warnings(&Config::default(), Level::Baseline, &pods);
        assert_eq!(got, ["a (and 2 other pods): host namespaces"]);
        let got = pod_warnings(&Config::default(), Level::Baseline, &pods[..2]);
        assert_eq!(got, ["a (and 1 other pod): host namespaces"]);
    }

    #[test]
    fn exempt_namespaces_warn_only_about_labelled_strict_modes() {
        let labels = json!({"pod-security.kubernetes.io/enforce": "baseline"});
        let (p, _) = Policy::from_labels(&labels, &Policy::default());
        assert_eq!(
            exempt_warning("kube-system", &p, &labels).as_deref(),
            Some("namespace \"kube-system\" is exempt from Pod Security, and the policy (enforce=baseline:latest) will be ignored")
        );
        assert_eq!(
            exempt_warning("kube-system", &Policy::default(), &json!({})),
            None
        );
    }
}
