//! PodSecurity: the Pod Security Standards a namespace asks for in its
//! `pod-security.kubernetes.io/{enforce,warn,audit}[-version]` labels, with the defaults and
//! exemptions of the plugin's configuration file ([`policy::Config`]). Pods that violate the
//! `enforce` level are refused (403, upstream's message); violations of the `warn` level, and of
//! any level by a workload's pod template, come back as warnings; `audit` violations are logged.
//! Namespace writes are checked too ([`namespace`]): malformed labels are refused, and tightening
//! `enforce` warns about the existing pods that would not be admitted again.

mod checks;
mod namespace;
mod policy;

pub use policy::{Config, Level, LevelVersion, Policy, Version};

use axum::response::Response;
use serde_json::Value;

use super::{lookup, Attributes, Operation};

/// The pod spec a write carries: a pod's, or a workload's template.
fn pod_spec<'a>(a: &Attributes<'_>, obj: &'a Value) -> Option<(&'a Value, bool)> {
    match (a.def.group, a.def.plural, a.subresource) {
        ("", "pods", None | Some("ephemeralcontainers")) => Some((&obj["spec"], true)),
        (_, _, Some(_)) => None,
        ("", "podtemplates", _) => Some((&obj["template"]["spec"], false)),
        ("", "replicationcontrollers", _)
        | ("apps", "deployments" | "replicasets" | "statefulsets" | "daemonsets", _)
        | ("batch", "jobs", _) => Some((&obj["spec"]["template"]["spec"], false)),
        ("batch", "cronjobs", _) => Some((
            &obj["spec"]["jobTemplate"]["spec"]["template"]["spec"],
            false,
        )),
        _ => None,
    }
}

/// `allowPrivilegeEscalation != false (container "c" must ...), ...` for a level, if violated.
fn violations(spec: &Value, level: Level) -> Option<String> {
    if level == Level::Privileged {
        return None;
    }
    let failures = checks::check(spec, level == Level::Restricted);
    if failures.is_empty() {
        return None;
    }
    let parts: Vec<String> = failures
        .iter()
        .map(|f| format!("{} ({})", f.reason, f.detail))
        .collect();
    Some(parts.join(", "))
}

/// Just the reasons (`host namespaces, privileged`), as the namespace warnings list them.
fn reasons(spec: &Value, level: Level) -> Option<String> {
    if level == Level::Privileged {
        return None;
    }
    let failures = checks::check(spec, level == Level::Restricted);
    (!failures.is_empty()).then(|| {
        failures
            .iter()
            .map(|f| f.reason.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    })
}

/// Enforces, warns and audits; returns the warnings for the response.
pub async fn validate(
    a: &Attributes<'_>,
    obj: &Value,
    old: Option<&Value>,
) -> Result<Vec<String>, Response> {
    if a.op == Operation::Delete {
        return Ok(Vec::new());
    }
    let cfg = &a.reg.admission.pod_security;
    if a.is("", "namespaces") {
        return namespace::validate(a, cfg, obj, old).await;
    }
    let Some((spec, is_pod)) = pod_spec(a, obj) else {
        return Ok(Vec::new());
    };
    // Pod updates that leave the spec alone are not evaluated again.
    if a.op == Operation::Update
        && old.is_some_and(|o| pod_spec(a, o).map(|(s, _)| s) == Some(spec))
    {
        return Ok(Vec::new());
    }
    let Some(ns) = a.namespace else {
        return Ok(Vec::new());
    };
    let runtime_class = spec["runtimeClassName"].as_str().unwrap_or_default();
    if cfg.exempt_namespaces.iter().any(|n| n == ns)
        || a.user
            .is_some_and(|u| cfg.exempt_usernames.contains(&u.name))
        || (!runtime_class.is_empty()
            && cfg
                .exempt_runtime_classes
                .iter()
                .any(|r| r == runtime_class))
    {
        return Ok(Vec::new());
    }
    let Some(namespace) = lookup(a.reg, "", "namespaces", None, ns).await else {
        return Ok(Vec::new());
    };
    let (policy, _) = Policy::from_labels(&namespace["metadata"]["labels"], &cfg.defaults);
    let mut warnings = Vec::new();
    if let Some(v) = violations(spec, policy.enforce.level) {
        if is_pod {
            return Err(a.forbidden(&format!("violates PodSecurity \"{}\": {v}", policy.enforce)));
        }
        warnings.push(format!(
            "would violate PodSecurity \"{}\": {v}",
            policy.enforce
        ));
    }
    if policy.warn != policy.enforce || !is_pod {
        if let Some(v) = violations(spec, policy.warn.level) {
            let w = format!("would violate PodSecurity \"{}\": {v}", policy.warn);
            if !warnings.contains(&w) {
                warnings.push(w);
            }
        }
    }
    if let Some(v) = violations(spec, policy.audit.level) {
        tracing::info!(
            target: "k1s::audit::pod_security",
            namespace = ns,
            name = a.name,
            level = %policy.audit,
            "would violate PodSecurity: {v}"
        );
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_plain_pod_violates_restricted_as_upstream_words_it() {
        let spec = json!({"containers": [{"name": "nginx", "image": "nginx"}]});
        assert_eq!(violations(&spec, Level::Baseline), None);
        assert_eq!(
            violations(&spec, Level::Restricted).expect("violations"),
            "allowPrivilegeEscalation != false (container \"nginx\" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container \"nginx\" must set securityContext.capabilities.drop=[\"ALL\"]), runAsNonRoot != true (pod or container \"nginx\" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container \"nginx\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        );
        let hardened = json!({
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
        });
        assert_eq!(violations(&hardened, Level::Restricted), None);
    }

    #[test]
    fn baseline_refuses_privileged_host_access() {
        let spec = json!({
            "hostNetwork": true,
            "containers": [{"name": "a", "securityContext": {"privileged": true, "capabilities": {"add": ["NET_ADMIN"]}},
                "ports": [{"containerPort": 80, "hostPort": 8080}]}],
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
        });
        assert_eq!(
            violations(&spec, Level::Baseline).expect("violations"),
            "non-default capabilities (container \"a\" must not include \"NET_ADMIN\" in securityContext.capabilities.add), host namespaces (hostNetwork=true), hostPath volumes (volume \"root\"), hostPort (container \"a\" uses hostPort 8080), privileged (container \"a\" must not set securityContext.privileged=true)"
        );
        assert_eq!(Level::parse("bogus"), Err(Level::Restricted));
    }
}
