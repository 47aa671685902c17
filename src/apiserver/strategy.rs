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

/// The array at `obj[field]`, if there is one (indexing would insert a null).
fn array_mut<'a>(obj: &'a mut Value, field: &str) -> impl Iterator<Item = &'a mut Value> {
    obj.get_mut(field)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

/// `obj[field]` when it is an object.
fn object_mut<'a>(obj: &'a mut Value, field: &str) -> Option<&'a mut Value> {
    obj.get_mut(field).filter(|v| v.is_object())
}

/// A rolling-update strategy: `type` defaults to RollingUpdate, whose parameters get `params`
/// where unset.
fn rolling_update(spec: &mut Value, field: &str, params: &[(&str, Value)]) {
    default(spec, field, json!({}));
    let Some(strategy) = object_mut(spec, field) else {
        return;
    };
    default(strategy, "type", json!("RollingUpdate"));
    if strategy["type"] == "RollingUpdate" {
        default(strategy, "rollingUpdate", json!({}));
        if let Some(ru) = object_mut(strategy, "rollingUpdate") {
            for (k, v) in params {
                default(ru, k, v.clone());
            }
        }
    }
}

/// An HTTPGet action's path and scheme.
fn http_get_defaults(handler: &mut Value) {
    if let Some(get) = object_mut(handler, "httpGet") {
        default(get, "path", json!("/"));
        default(get, "scheme", json!("HTTP"));
    }
}

fn probe_defaults(probe: &mut Value) {
    default(probe, "timeoutSeconds", json!(1));
    default(probe, "periodSeconds", json!(10));
    default(probe, "successThreshold", json!(1));
    default(probe, "failureThreshold", json!(3));
    http_get_defaults(probe);
}

/// `fieldRef.apiVersion` of env vars and downward API items.
fn field_ref_defaults(holder: &mut Value) {
    if let Some(f) = object_mut(holder, "fieldRef") {
        default(f, "apiVersion", json!("v1"));
    }
}

fn container_defaults(c: &mut Value, host_network: bool) {
    let image = c["image"].as_str().unwrap_or_default().to_string();
    default(c, "imagePullPolicy", json!(pull_policy(&image)));
    default(c, "terminationMessagePath", json!("/dev/termination-log"));
    default(c, "terminationMessagePolicy", json!("File"));
    default(c, "resources", json!({}));
    for p in array_mut(c, "ports") {
        default(p, "protocol", json!("TCP"));
        if host_network && p.get("hostPort").is_none_or(|h| h.is_null() || *h == 0) {
            p["hostPort"] = p["containerPort"].clone();
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = object_mut(c, probe) {
            probe_defaults(p);
        }
    }
    if let Some(lifecycle) = object_mut(c, "lifecycle") {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = object_mut(lifecycle, hook) {
                http_get_defaults(h);
            }
        }
    }
    for e in array_mut(c, "env") {
        if let Some(from) = object_mut(e, "valueFrom") {
            field_ref_defaults(from);
        }
    }
}

/// Volume sources: file modes 0644 where unset, a service-account token's hour, and an
/// emptyDir for a volume that names no source.
fn volume_defaults(v: &mut Value) {
    let sources = v
        .as_object()
        .map_or(0, |m| m.keys().filter(|k| *k != "name").count());
    if sources == 0 {
        v["emptyDir"] = json!({});
    }
    for kind in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(src) = object_mut(v, kind) {
            default(src, "defaultMode", json!(420));
            for item in array_mut(src, "items") {
                field_ref_defaults(item);
            }
            for proj in array_mut(src, "sources") {
                if let Some(t) = object_mut(proj, "serviceAccountToken") {
                    default(t, "expirationSeconds", json!(3600));
                }
                if let Some(d) = object_mut(proj, "downwardAPI") {
                    for item in array_mut(d, "items") {
                        field_ref_defaults(item);
                    }
                }
            }
        }
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
    let host_network = spec["hostNetwork"] == true;
    for field in ["containers", "initContainers", "ephemeralContainers"] {
        for c in array_mut(spec, field) {
            container_defaults(c, host_network);
        }
    }
    for v in array_mut(spec, "volumes") {
        volume_defaults(v);
    }
}

/// A pod's own containers ask for what they are limited to, where they ask for nothing, as
/// upstream defaults pods (not templates); this decides the QoS class.
fn requests_from_limits(spec: &mut Value) {
    for field in ["containers", "initContainers"] {
        for c in array_mut(spec, field) {
            let limits = c["resources"]["limits"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            if limits.is_empty() {
                continue;
            }
            let Some(res) = object_mut(c, "resources") else {
                continue;
            };
            default(res, "requests", json!({}));
            if let Some(req) = res.get_mut("requests").and_then(Value::as_object_mut) {
                for (k, v) in limits {
                    req.entry(k).or_insert(v);
                }
            }
        }
    }
}

/// A pod's own `spec.resources` with limits also asks (as upstream's `defaultPodRequests`): for
/// cpu and memory, what its containers ask for together where it names no request, then its
/// limit where it still names none.
fn pod_level_requests(spec: &mut Value) {
    let limits = spec["resources"]["limits"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if limits.is_empty() {
        return;
    }
    let aggregate = crate::quota::container_aggregate(spec, "requests");
    let Some(res) = object_mut(spec, "resources") else {
        return;
    };
    default(res, "requests", json!({}));
    let Some(req) = res.get_mut("requests").and_then(Value::as_object_mut) else {
        return;
    };
    for name in ["cpu", "memory"] {
        if let Some(v) = aggregate.get(name).filter(|v| **v > 0) {
            let like = limits.get(name).and_then(Value::as_str).unwrap_or_default();
            req.entry(name)
                .or_insert_with(|| json!(crate::quantity::format(*v, like)));
        }
    }
    for (k, v) in limits {
        if crate::quota::pod_level_resource(&k) {
            req.entry(k).or_insert(v);
        }
    }
}

/// The QoS class from a pod's own `spec.resources`, when it sets cpu or memory there, as
/// upstream's `ComputePodQOS` (the containers' resources do not count then).
fn pod_level_qos(spec: &Value) -> Option<&'static str> {
    let pick = |part: &str| -> std::collections::BTreeMap<&str, i128> {
        ["cpu", "memory"]
            .into_iter()
            .filter_map(|k| {
                let v = spec["resources"][part][k].as_str()?;
                Some((k, crate::quantity::milli(v).filter(|q| *q > 0)?))
            })
            .collect()
    };
    let (req, lim) = (pick("requests"), pick("limits"));
    if req.is_empty() && lim.is_empty() {
        return None;
    }
    let guaranteed =
        lim.len() == 2 && req.iter().all(|(k, v)| lim.get(k) == Some(v)) && req.len() == lim.len();
    Some(if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    })
}

/// The QoS class of a pod spec, as upstream computes it.
pub fn qos_class(spec: &Value) -> &'static str {
    if let Some(class) = pod_level_qos(spec) {
        return class;
    }
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

/// A Secret's `stringData` is written into `data` (base64), winning over the same keys there,
/// and never stored, as upstream's conversion does.
fn merge_string_data(obj: &mut Value) {
    use base64::Engine;
    let Some(string_data) = obj.as_object_mut().and_then(|o| o.remove("stringData")) else {
        return;
    };
    for (k, v) in string_data.as_object().into_iter().flatten() {
        if let Some(text) = v.as_str() {
            let b64 = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
            if !obj["data"].is_object() {
                obj["data"] = json!({});
            }
            obj["data"][k] = json!(b64);
        }
    }
}

/// Applies the kind's defaults to an object about to be written.
pub fn apply_defaults(def: &ResourceDef, obj: &mut Value) {
    if def.group.is_empty() && def.plural == "secrets" {
        default(obj, "type", json!("Opaque"));
        merge_string_data(obj);
        return;
    }
    if def.group.is_empty() && def.plural == "podtemplates" {
        if let Some(spec) = obj.pointer_mut("/template/spec") {
            pod_spec_defaults(spec);
        }
        return;
    }
    let Some(spec) = object_mut(obj, "spec") else {
        return;
    };
    match (def.group, def.plural) {
        ("", "pods") => {
            pod_spec_defaults(spec);
            requests_from_limits(spec);
            pod_level_requests(spec);
        }
        ("", "replicationcontrollers") | ("apps", "replicasets") => {
            default(spec, "replicas", json!(1));
        }
        ("", "services") => {
            default(spec, "type", json!("ClusterIP"));
            default(spec, "sessionAffinity", json!("None"));
            default(spec, "internalTrafficPolicy", json!("Cluster"));
            if matches!(spec["type"].as_str(), Some("NodePort" | "LoadBalancer")) {
                default(spec, "externalTrafficPolicy", json!("Cluster"));
            }
            if spec["type"] == "LoadBalancer" {
                default(spec, "allocateLoadBalancerNodePorts", json!(true));
            }
            if spec["sessionAffinity"] == "ClientIP" {
                default(spec, "sessionAffinityConfig", json!({}));
                if let Some(c) = object_mut(spec, "sessionAffinityConfig") {
                    default(c, "clientIP", json!({}));
                    if let Some(ip) = object_mut(c, "clientIP") {
                        default(ip, "timeoutSeconds", json!(10800));
                    }
                }
            }
            for p in array_mut(spec, "ports") {
                default(p, "protocol", json!("TCP"));
                let port = p["port"].clone();
                if p.get("targetPort")
                    .is_none_or(|t| t.is_null() || *t == 0 || *t == "")
                {
                    p["targetPort"] = port;
                }
            }
        }
        ("apps", "deployments") => {
            default(spec, "replicas", json!(1));
            rolling_update(
                spec,
                "strategy",
                &[("maxUnavailable", json!("25%")), ("maxSurge", json!("25%"))],
            );
            default(spec, "revisionHistoryLimit", json!(10));
            default(spec, "progressDeadlineSeconds", json!(600));
        }
        ("apps", "statefulsets") => {
            default(spec, "replicas", json!(1));
            default(spec, "podManagementPolicy", json!("OrderedReady"));
            // Unlike the other kinds, `rollingUpdate` is defaulted only when given.
            default(spec, "updateStrategy", json!({}));
            if let Some(strategy) = object_mut(spec, "updateStrategy") {
                default(strategy, "type", json!("RollingUpdate"));
                if strategy["type"] == "RollingUpdate" {
                    if let Some(ru) = object_mut(strategy, "rollingUpdate") {
                        default(ru, "partition", json!(0));
                        default(ru, "maxUnavailable", json!(1));
                    }
                }
            }
            default(spec, "revisionHistoryLimit", json!(10));
            default(
                spec,
                "persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            );
        }
        ("apps", "daemonsets") => {
            rolling_update(
                spec,
                "updateStrategy",
                &[("maxUnavailable", json!(1)), ("maxSurge", json!(0))],
            );
            default(spec, "revisionHistoryLimit", json!(10));
        }
        ("batch", "jobs") => {
            if spec.get("completions").is_none() && spec.get("parallelism").is_none() {
                spec["completions"] = json!(1);
            }
            default(spec, "parallelism", json!(1));
            default(spec, "backoffLimit", json!(6));
            default(spec, "completionMode", json!("NonIndexed"));
            default(spec, "suspend", json!(false));
            default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
        }
        ("autoscaling", "horizontalpodautoscalers") => {
            default(spec, "minReplicas", json!(1));
            if def.version == "v2" && spec["metrics"].as_array().is_none_or(Vec::is_empty) {
                spec["metrics"] = json!([{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 80}}}]);
            }
            // A given behavior gets upstream's rules for what it leaves out (the scale-down
            // window stays unset: the controller's --horizontal-pod-autoscaler-downscale-stabilization).
            if let Some(b) = spec.get_mut("behavior").filter(|b| b.is_object()) {
                let up = json!([{"type": "Pods", "value": 4, "periodSeconds": 15},
                                {"type": "Percent", "value": 100, "periodSeconds": 15}]);
                let down = json!([{"type": "Percent", "value": 100, "periodSeconds": 15}]);
                for (key, policies, window) in [("scaleUp", up, Some(0)), ("scaleDown", down, None)]
                {
                    if !b[key].is_object() {
                        b[key] = json!({});
                    }
                    default(&mut b[key], "selectPolicy", json!("Max"));
                    default(&mut b[key], "policies", policies);
                    if let Some(w) = window {
                        default(&mut b[key], "stabilizationWindowSeconds", json!(w));
                    }
                }
            }
        }
        ("batch", "cronjobs") => {
            default(spec, "concurrencyPolicy", json!("Allow"));
            default(spec, "suspend", json!(false));
            default(spec, "successfulJobsHistoryLimit", json!(3));
            default(spec, "failedJobsHistoryLimit", json!(1));
            if let Some(pod) = spec.pointer_mut("/jobTemplate/spec/template/spec") {
                pod_spec_defaults(pod);
            }
        }
        _ => {}
    }
    if let Some(pod) = spec.pointer_mut("/template/spec") {
        pod_spec_defaults(pod);
    }
}

/// The fields a field selector may name for the kind, besides `metadata.name` and
/// `metadata.namespace` (upstream's per-kind field label sets), with the value an unset one has.
pub fn field_labels(def: &ResourceDef) -> &'static [(&'static str, &'static str)] {
    match (def.group, def.plural) {
        ("", "pods") => &[
            ("spec.nodeName", ""),
            ("spec.restartPolicy", ""),
            ("spec.schedulerName", ""),
            ("spec.serviceAccountName", ""),
            ("spec.hostNetwork", "false"),
            ("status.phase", ""),
            ("status.podIP", ""),
            ("status.nominatedNodeName", ""),
        ],
        ("", "events") => &[
            ("involvedObject.kind", ""),
            ("involvedObject.namespace", ""),
            ("involvedObject.name", ""),
            ("involvedObject.uid", ""),
            ("involvedObject.apiVersion", ""),
            ("involvedObject.resourceVersion", ""),
            ("involvedObject.fieldPath", ""),
            ("reason", ""),
            ("reportingComponent", ""),
            ("source", ""),
            ("type", ""),
        ],
        ("events.k8s.io", "events") => &[
            ("regarding.kind", ""),
            ("regarding.namespace", ""),
            ("regarding.name", ""),
            ("regarding.uid", ""),
            ("regarding.apiVersion", ""),
            ("regarding.resourceVersion", ""),
            ("regarding.fieldPath", ""),
            ("reason", ""),
            ("reportingController", ""),
            ("type", ""),
        ],
        ("", "secrets") => &[("type", "")],
        ("", "namespaces") => &[("status.phase", "")],
        ("", "nodes") => &[("spec.unschedulable", "false")],
        ("", "replicationcontrollers") | ("apps", "replicasets") => &[("status.replicas", "0")],
        ("", "services") => &[("spec.clusterIP", ""), ("spec.type", "")],
        ("batch", "jobs") => &[("status.successful", "0")],
        ("certificates.k8s.io", "certificatesigningrequests") => &[("spec.signerName", "")],
        _ => &[],
    }
}

/// Whether the kind counts spec changes in `metadata.generation`, as upstream's strategies that
/// set it on create do.
pub fn tracks_generation(def: &ResourceDef) -> bool {
    matches!(
        (def.group, def.plural),
        ("", "pods" | "replicationcontrollers")
            | (
                "apps",
                "deployments" | "replicasets" | "statefulsets" | "daemonsets"
            )
            | ("batch", "jobs" | "cronjobs")
            | ("policy", "poddisruptionbudgets")
            | ("networking.k8s.io", "networkpolicies" | "ingresses")
            | ("autoscaling", "horizontalpodautoscalers")
            | (
                "admissionregistration.k8s.io",
                "validatingwebhookconfigurations"
                    | "mutatingwebhookconfigurations"
                    | "validatingadmissionpolicies"
                    | "validatingadmissionpolicybindings"
                    | "mutatingadmissionpolicies"
                    | "mutatingadmissionpolicybindings"
            )
            | ("flowcontrol.apiserver.k8s.io", _)
            | ("apiextensions.k8s.io", "customresourcedefinitions")
            | ("resource.k8s.io", "deviceclasses" | "resourceclaims")
    )
}

/// What create adds once the object has its name and uid: a Job's generated selector and the
/// labels that go with it (unless `manualSelector` is set).
pub fn prepare_create(def: &ResourceDef, obj: &mut Value) {
    if (def.group, def.plural) != ("batch", "jobs") || obj["spec"]["manualSelector"] == true {
        return;
    }
    let uid = obj["metadata"]["uid"].clone();
    let name = obj["metadata"]["name"].clone();
    let Some(spec) = object_mut(obj, "spec") else {
        return;
    };
    if spec.get("selector").is_none_or(Value::is_null) {
        spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    }
    default(spec, "template", json!({}));
    let Some(template) = object_mut(spec, "template") else {
        return;
    };
    default(template, "metadata", json!({}));
    let Some(meta) = object_mut(template, "metadata") else {
        return;
    };
    default(meta, "labels", json!({}));
    if let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut) {
        for (k, v) in [
            ("batch.kubernetes.io/controller-uid", &uid),
            ("batch.kubernetes.io/job-name", &name),
            ("controller-uid", &uid),
            ("job-name", &name),
        ] {
            labels.entry(k).or_insert_with(|| v.clone());
        }
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
        let mut full = json!({"spec": {"hostNetwork": true, "volumes": [{"name": "v"}, {"name": "s", "secret": {"secretName": "x"}}],
            "containers": [{"name": "a", "image": "x:1", "ports": [{"containerPort": 8080}],
                "resources": {"limits": {"cpu": "1"}},
                "livenessProbe": {"httpGet": {"port": 80}},
                "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}});
        apply_defaults(pods, &mut full);
        let c = &full["spec"]["containers"][0];
        assert_eq!(c["ports"][0]["hostPort"], 8080);
        assert_eq!(c["resources"]["requests"]["cpu"], "1");
        assert_eq!(c["livenessProbe"]["periodSeconds"], 10);
        assert_eq!(c["livenessProbe"]["httpGet"]["scheme"], "HTTP");
        assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
        assert_eq!(full["spec"]["volumes"][0]["emptyDir"], json!({}));
        assert_eq!(full["spec"]["volumes"][1]["secret"]["defaultMode"], 420);
        assert_eq!(
            initial_status(pods, &full).expect("status")["qosClass"],
            "Burstable"
        );
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
