//! Per-kind behaviour, as small tables of functions: defaulting (upstream's `SetDefaults_*`,
//! applied to every create and update as decoding does upstream) and the status a new object
//! starts with.

use serde_json::{json, Value};

use super::catalog::ResourceDef;

/// Sets `obj[field]` to `value` when it is missing or null.
fn default(obj: &mut Value, field: &str, value: Value) {
    if !obj.is_object() {
        return;
    }
    if obj.get(field).is_none_or(Value::is_null) {
        obj[field] = value;
    }
}

/// `Always` for `:latest` or untagged images, `IfNotPresent` otherwise (digests included).
fn pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn container_defaults(c: &mut Value) {
    let image = c["image"].as_str().unwrap_or_default().to_string();
    default(c, "imagePullPolicy", json!(pull_policy(&image)));
    default(c, "terminationMessagePath", json!("/dev/termination-log"));
    default(c, "terminationMessagePolicy", json!("File"));
    default(c, "resources", json!({}));
    for p in c["ports"].as_array_mut().into_iter().flatten() {
        default(p, "protocol", json!("TCP"));
    }
}

/// Upstream's pod spec defaults.
pub fn pod_spec_defaults(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "securityContext", json!({}));
    default(spec, "enableServiceLinks", json!(true));
    for field in ["containers", "initContainers", "ephemeralContainers"] {
        for c in spec[field].as_array_mut().into_iter().flatten() {
            container_defaults(c);
        }
    }
}

/// The QoS class of a pod spec, as upstream computes it.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .flat_map(|f| spec[*f].as_array().into_iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let req = &c["resources"]["requests"];
        let lim = &c["resources"]["limits"];
        for r in ["cpu", "memory"] {
            let (q, l) = (req.get(r).or(lim.get(r)), lim.get(r));
            any |= q.is_some() || l.is_some();
            if l.is_none() || q != l {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

fn template_defaults(obj: &mut Value) {
    if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
        pod_spec_defaults(spec);
    }
}

/// Applies the kind's defaults to an object about to be written.
pub fn apply_defaults(def: &ResourceDef, obj: &mut Value) {
    match (def.group, def.plural) {
        ("", "pods") => {
            if let Some(spec) = obj.get_mut("spec") {
                pod_spec_defaults(spec);
            }
        }
        ("", "podtemplates") => {
            if let Some(spec) = obj.pointer_mut("/template/spec") {
                pod_spec_defaults(spec);
            }
        }
        ("", "replicationcontrollers") => {
            default(&mut obj["spec"], "replicas", json!(1));
            template_defaults(obj);
        }
        ("", "services") => {
            let spec = &mut obj["spec"];
            default(spec, "type", json!("ClusterIP"));
            default(spec, "sessionAffinity", json!("None"));
            default(spec, "internalTrafficPolicy", json!("Cluster"));
            for p in spec["ports"].as_array_mut().into_iter().flatten() {
                default(p, "protocol", json!("TCP"));
                let port = p["port"].clone();
                default(p, "targetPort", port);
            }
        }
        ("", "namespaces") | ("", "configmaps") => {}
        ("", "secrets") => default(obj, "type", json!("Opaque")),
        ("apps", "deployments") => {
            let spec = &mut obj["spec"];
            default(spec, "replicas", json!(1));
            default(
                spec,
                "strategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
            );
            default(spec, "revisionHistoryLimit", json!(10));
            default(spec, "progressDeadlineSeconds", json!(600));
            template_defaults(obj);
        }
        ("apps", "replicasets") => {
            default(&mut obj["spec"], "replicas", json!(1));
            template_defaults(obj);
        }
        ("apps", "statefulsets") => {
            let spec = &mut obj["spec"];
            default(spec, "replicas", json!(1));
            default(spec, "podManagementPolicy", json!("OrderedReady"));
            default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
            );
            default(spec, "revisionHistoryLimit", json!(10));
            default(
                spec,
                "persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            );
            template_defaults(obj);
        }
        ("apps", "daemonsets") => {
            let spec = &mut obj["spec"];
            default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
            default(spec, "revisionHistoryLimit", json!(10));
            template_defaults(obj);
        }
        ("batch", "jobs") => {
            let spec = &mut obj["spec"];
            if spec.get("completions").is_none() && spec.get("parallelism").is_none() {
                spec["completions"] = json!(1);
            }
            default(spec, "parallelism", json!(1));
            default(spec, "backoffLimit", json!(6));
            default(spec, "completionMode", json!("NonIndexed"));
            default(spec, "suspend", json!(false));
            default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
            template_defaults(obj);
        }
        ("batch", "cronjobs") => {
            let spec = &mut obj["spec"];
            default(spec, "concurrencyPolicy", json!("Allow"));
            default(spec, "suspend", json!(false));
            default(spec, "successfulJobsHistoryLimit", json!(3));
            default(spec, "failedJobsHistoryLimit", json!(1));
            if let Some(pod) = obj.pointer_mut("/spec/jobTemplate/spec/template/spec") {
                pod_spec_defaults(pod);
            }
        }
        _ => {}
    }
}

/// The status a new object of the kind starts with, if the kind has one.
pub fn initial_status(def: &ResourceDef, obj: &Value) -> Option<Value> {
    match (def.group, def.plural) {
        ("", "pods") => Some(json!({"phase": "Pending", "qosClass": qos_class(&obj["spec"])})),
        _ if def.has_subresource("status") => Some(json!({})),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::catalog::find;

    #[test]
    fn pods_get_upstreams_defaults() {
        let pods = find("", "v1", "pods").expect("pods");
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "busybox", "ports": [{"containerPort": 80}]},
            {"name": "b", "image": "registry:5000/x/y:1.2"},
        ]}});
        apply_defaults(pods, &mut pod);
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(spec["containers"][1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(spec["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(
            initial_status(pods, &pod).expect("status")["qosClass"],
            "BestEffort"
        );
    }

    #[test]
    fn qos_classes() {
        let g = json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]});
        assert_eq!(qos_class(&g), "Guaranteed");
        let b = json!({"containers": [{"resources": {"requests": {"cpu": "1"}}}]});
        assert_eq!(qos_class(&b), "Burstable");
    }

    #[test]
    fn deployments_and_services() {
        let d = find("apps", "v1", "deployments").expect("deployments");
        let mut obj = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x:1"}]}}}});
        apply_defaults(d, &mut obj);
        assert_eq!(obj["spec"]["replicas"], 1);
        assert_eq!(obj["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(obj["spec"]["template"]["spec"]["restartPolicy"], "Always");
        let s = find("", "v1", "services").expect("services");
        let mut svc = json!({"spec": {"ports": [{"port": 80}]}});
        apply_defaults(s, &mut svc);
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
    }
}
