//! PodSecurity: the Pod Security Standards a namespace asks for in its
//! `pod-security.kubernetes.io/{enforce,warn,audit}` labels. Pods that violate the `enforce`
//! level are refused (403, upstream's message); violations of the `warn` level, and of any level
//! by a workload's pod template, come back as warnings; `audit` violations are logged.

mod checks;

use axum::response::Response;
use serde_json::Value;

use super::{lookup, Attributes, Operation};

const PREFIX: &str = "pod-security.kubernetes.io/";

/// A Pod Security Standard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    /// The level a label names; an unknown value is the strictest, as upstream.
    fn parse(label: Option<&str>) -> Level {
        match label {
            None | Some("privileged") => Level::Privileged,
            Some("baseline") => Level::Baseline,
            _ => Level::Restricted,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// The pod spec a write carries: a pod's, or a workload's template.
fn pod_spec<'a>(a: &Attributes<'_>, obj: &'a Value) -> Option<(&'a Value, bool)> {
    if a.subresource.is_some() {
        return None;
    }
    match (a.def.group, a.def.plural) {
        ("", "pods") => Some((&obj["spec"], true)),
        ("", "podtemplates") => Some((&obj["template"]["spec"], false)),
        ("", "replicationcontrollers")
        | ("apps", "deployments" | "replicasets" | "statefulsets" | "daemonsets")
        | ("batch", "jobs") => Some((&obj["spec"]["template"]["spec"], false)),
        ("batch", "cronjobs") => Some((
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

/// Enforces, warns and audits; returns the warnings for the response.
pub async fn validate(
    a: &Attributes<'_>,
    obj: &Value,
    old: Option<&Value>,
) -> Result<Vec<String>, Response> {
    if a.op == Operation::Delete {
        return Ok(Vec::new());
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
    let Some(namespace) = lookup(a.reg, "", "namespaces", None, ns).await else {
        return Ok(Vec::new());
    };
    let labels = &namespace["metadata"]["labels"];
    let level = |mode: &str| Level::parse(labels[format!("{PREFIX}{mode}")].as_str());
    let (enforce, warn, audit) = (level("enforce"), level("warn"), level("audit"));
    let mut warnings = Vec::new();
    if let Some(v) = violations(spec, enforce) {
        if is_pod {
            return Err(a.forbidden(&format!(
                "violates PodSecurity \"{}:latest\": {v}",
                enforce.name()
            )));
        }
        warnings.push(format!(
            "would violate PodSecurity \"{}:latest\": {v}",
            enforce.name()
        ));
    }
    if warn != enforce || !is_pod {
        if let Some(v) = violations(spec, warn) {
            let w = format!("would violate PodSecurity \"{}:latest\": {v}", warn.name());
            if !warnings.contains(&w) {
                warnings.push(w);
            }
        }
    }
    if let Some(v) = violations(spec, audit) {
        tracing::info!(
            target: "k1s::audit::pod_security",
            namespace = ns,
            name = a.name,
            level = audit.name(),
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
        assert_eq!(Level::parse(Some("bogus")), Level::Restricted);
    }
}
