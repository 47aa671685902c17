//! Pod specs (pods and every pod template) and what a pod update may change.

use std::collections::HashSet;

use serde_json::Value;

use super::Errors;
use crate::apiserver::registry::object::name_problem;

fn items(v: &Value) -> impl Iterator<Item = (usize, &Value)> {
    v.as_array().into_iter().flatten().enumerate()
}

/// Whether the spec is a pod's own (an image is required) or a template's.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Pod,
    Template,
}

/// Validates a pod spec at `path` (`spec` or `spec.template.spec`).
pub fn spec(spec: &Value, path: &str, owner: Owner, errs: &mut Errors) {
    let volumes = volumes(&spec["volumes"], &format!("{path}.volumes"), errs);
    let containers = &spec["containers"];
    if containers.as_array().is_none_or(Vec::is_empty) {
        errs.required(&format!("{path}.containers"), "");
    }
    let mut names = HashSet::new();
    for field in ["initContainers", "containers"] {
        for (i, c) in items(&spec[field]) {
            container(
                c,
                &format!("{path}.{field}[{i}]"),
                owner,
                &volumes,
                &mut names,
                errs,
            );
            resize_policy(
                &c["resizePolicy"],
                &format!("{path}.{field}[{i}].resizePolicy"),
                spec["restartPolicy"].as_str() == Some("Never"),
                errs,
            );
        }
    }
    if spec["resources"].is_object() {
        pod_level(spec, &format!("{path}.resources"), errs);
    }
    errs.one_of(
        &format!("{path}.restartPolicy"),
        &spec["restartPolicy"],
        &["Always", "OnFailure", "Never"],
    );
    errs.one_of(
        &format!("{path}.dnsPolicy"),
        &spec["dnsPolicy"],
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
    );
    if let Some(g) = spec["terminationGracePeriodSeconds"].as_i64() {
        if g < 0 && owner == Owner::Template {
            errs.invalid(
                &format!("{path}.terminationGracePeriodSeconds"),
                &spec["terminationGracePeriodSeconds"],
                "must be greater than or equal to 0",
            );
        }
    }
    if let Some(d) = spec["activeDeadlineSeconds"].as_i64() {
        if d <= 0 {
            errs.invalid(
                &format!("{path}.activeDeadlineSeconds"),
                &spec["activeDeadlineSeconds"],
                "must be between 1 and 2147483647, inclusive",
            );
        }
    }
    for (i, t) in items(&spec["tolerations"]) {
        errs.one_of(
            &format!("{path}.tolerations[{i}].operator"),
            &t["operator"],
            &["Equal", "Exists"],
        );
        errs.one_of(
            &format!("{path}.tolerations[{i}].effect"),
            &t["effect"],
            &["NoSchedule", "PreferNoSchedule", "NoExecute", ""],
        );
    }
}

/// Checks the volumes and returns their names.
fn volumes(list: &Value, path: &str, errs: &mut Errors) -> HashSet<String> {
    let mut names = HashSet::new();
    for (i, v) in items(list) {
        let p = format!("{path}[{i}].name");
        match v["name"].as_str() {
            None | Some("") => errs.required(&p, ""),
            Some(n) => {
                if let Some(problem) = name_problem(n, true) {
                    errs.invalid(&p, &v["name"], &problem);
                } else if !names.insert(n.to_string()) {
                    errs.duplicate(&p, &v["name"]);
                }
            }
        }
    }
    names
}

fn container(
    c: &Value,
    path: &str,
    owner: Owner,
    volumes: &HashSet<String>,
    names: &mut HashSet<String>,
    errs: &mut Errors,
) {
    match c["name"].as_str() {
        None | Some("") => errs.required(&format!("{path}.name"), ""),
        Some(n) => {
            if let Some(problem) = name_problem(n, true) {
                errs.invalid(&format!("{path}.name"), &c["name"], &problem);
            } else if !names.insert(n.to_string()) {
                errs.duplicate(&format!("{path}.name"), &c["name"]);
            }
        }
    }
    if owner == Owner::Pod && c["image"].as_str().is_none_or(|i| i.trim().is_empty()) {
        errs.required(&format!("{path}.image"), "");
    }
    errs.one_of(
        &format!("{path}.imagePullPolicy"),
        &c["imagePullPolicy"],
        &["Always", "IfNotPresent", "Never"],
    );
    errs.one_of(
        &format!("{path}.terminationMessagePolicy"),
        &c["terminationMessagePolicy"],
        &["File", "FallbackToLogsOnError"],
    );
    let mut port_names = HashSet::new();
    for (i, p) in items(&c["ports"]) {
        let pp = format!("{path}.ports[{i}]");
        match p["containerPort"].as_i64() {
            None | Some(0) => errs.required(&format!("{pp}.containerPort"), ""),
            Some(n) if !(1..=65535).contains(&n) => errs.invalid(
                &format!("{pp}.containerPort"),
                &p["containerPort"],
                "must be between 1 and 65535, inclusive",
            ),
            _ => {}
        }
        if let Some(h) = p["hostPort"].as_i64() {
            if !(0..=65535).contains(&h) {
                errs.invalid(
                    &format!("{pp}.hostPort"),
                    &p["hostPort"],
                    "must be between 1 and 65535, inclusive",
                );
            }
        }
        errs.one_of(
            &format!("{pp}.protocol"),
            &p["protocol"],
            &["SCTP", "TCP", "UDP"],
        );
        if let Some(n) = p["name"].as_str().filter(|n| !n.is_empty()) {
            if !port_names.insert(n.to_string()) {
                errs.duplicate(&format!("{pp}.name"), &p["name"]);
            }
        }
    }
    for (i, e) in items(&c["env"]) {
        if e["name"].as_str().is_none_or(str::is_empty) {
            errs.required(&format!("{path}.env[{i}].name"), "");
        }
    }
    resources(&c["resources"], &format!("{path}.resources"), errs);
    let mut mount_paths = HashSet::new();
    for (i, m) in items(&c["volumeMounts"]) {
        let mp = format!("{path}.volumeMounts[{i}]");
        match m["name"].as_str() {
            None | Some("") => errs.required(&format!("{mp}.name"), ""),
            Some(n) if !volumes.contains(n) => errs.not_found(&format!("{mp}.name"), &m["name"]),
            _ => {}
        }
        match m["mountPath"].as_str() {
            None | Some("") => errs.required(&format!("{mp}.mountPath"), ""),
            Some(p) => {
                if !mount_paths.insert(p.to_string()) {
                    errs.invalid(
                        &format!("{mp}.mountPath"),
                        &m["mountPath"],
                        "must be unique",
                    );
                }
            }
        }
    }
}

/// A container's resize policies, as upstream's `validateResizePolicy`: each of cpu and memory
/// at most once, and only `NotRequired` in a pod that is never restarted.
fn resize_policy(list: &Value, path: &str, never: bool, errs: &mut Errors) {
    let mut seen = HashSet::new();
    for (i, p) in items(list) {
        let name = &p["resourceName"];
        if !seen.insert(name.to_string()) {
            errs.duplicate(&format!("{path}[{i}]"), name);
        }
        match name.as_str() {
            None | Some("") => errs.required(path, ""),
            _ => errs.one_of(path, name, &["cpu", "memory"]),
        }
        let policy = &p["restartPolicy"];
        match policy.as_str() {
            None | Some("") => errs.required(path, ""),
            _ => errs.one_of(path, policy, &["NotRequired", "RestartContainer"]),
        }
        if never && policy.as_str().is_some_and(|p| p != "NotRequired") {
            errs.invalid(
                path,
                policy,
                "must be 'NotRequired' when `restartPolicy` is 'Never'",
            );
        }
    }
}

/// A pod's own `spec.resources` (PodLevelResources), as upstream's `validatePodResources`:
/// only cpu, memory and hugepages, no claims, no request above its limit, requests covering
/// what the containers ask for together, and no container limited above the pod.
pub(super) fn pod_level(spec: &Value, path: &str, errs: &mut Errors) {
    let r = &spec["resources"];
    if r.get("claims").is_some_and(|c| !c.is_null()) {
        errs.forbidden(
            &format!("{path}.claims"),
            "claims cannot be set for Resources at pod-level",
        );
    }
    let quantity = |v: &Value| v.as_str().and_then(crate::quantity::milli);
    for part in ["limits", "requests"] {
        for (name, v) in r[part].as_object().into_iter().flatten() {
            let field = format!("{path}.{part}[{name}]");
            if !crate::quota::pod_level_resource(name) {
                errs.0.push(super::FieldError {
                    kind: super::Kind::NotSupported,
                    field,
                    value: Some(super::go_value(&Value::String(name.clone()))),
                    detail: "supported values: \"cpu\", \"hugepages-\", \"memory\"".into(),
                });
            } else if quantity(v).is_some_and(|q| q < 0) {
                errs.invalid(&field, v, "must be greater than or equal to 0");
            }
        }
    }
    for (name, req) in r["requests"].as_object().into_iter().flatten() {
        let Some(lim) = r["limits"].get(name) else {
            continue;
        };
        if let (Some(rq), Some(lq)) = (quantity(req), quantity(lim)) {
            if rq > lq {
                errs.invalid(
                    &format!("{path}.requests"),
                    req,
                    &format!(
                        "must be less than or equal to {name} limit of {}",
                        lim.as_str().unwrap_or_default()
                    ),
                );
            }
        }
    }
    let aggregate = crate::quota::container_aggregate(spec, "requests");
    for (name, req) in r["requests"].as_object().into_iter().flatten() {
        let (Some(pod), Some(sum)) = (quantity(req), aggregate.get(name)) else {
            continue;
        };
        if pod < *sum {
            errs.invalid(
                &format!("{path}.requests[{name}]"),
                req,
                &format!(
                    "must be greater than or equal to aggregate container requests of {}",
                    crate::quantity::format(*sum, req.as_str().unwrap_or_default())
                ),
            );
        }
    }
    for (i, c) in items(&spec["containers"]) {
        for (name, lim) in c["resources"]["limits"].as_object().into_iter().flatten() {
            let Some(pod_lim) = r["limits"].get(name) else {
                continue;
            };
            if let (Some(cq), Some(pq)) = (quantity(lim), quantity(pod_lim)) {
                if cq > pq {
                    errs.invalid(
                        &format!("{path}.containers[{i}][{name}].limits"),
                        lim,
                        &format!(
                            "must be less than or equal to pod limits of {}",
                            pod_lim.as_str().unwrap_or_default()
                        ),
                    );
                }
            }
        }
    }
}

/// Whether `name` may be asked for beyond what is configured (cpu, memory, ephemeral storage;
/// not hugepages nor extended resources), as upstream's `IsOvercommitAllowed`.
fn overcommit_allowed(name: &str) -> bool {
    native_resource(name) && !name.starts_with("hugepages-")
}

/// Unprefixed or under kubernetes.io, as upstream's `IsNativeResource`.
fn native_resource(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

/// The page size of a `hugepages-<size>` resource, in bytes.
fn huge_page_size(name: &str) -> Option<i128> {
    name.strip_prefix("hugepages-")
        .and_then(crate::quantity::milli)
        .map(|m| m / 1000)
}

/// Upstream's standard resource names (compute resources and quota names).
const STANDARD_RESOURCES: [&str; 18] = [
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
    "requests.storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "pods",
    "services",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "configmaps",
    "persistentvolumeclaims",
    "services.nodeports",
];

/// What is wrong with a container resource name, as upstream's `validateResourceName` and
/// `validateContainerResourceName`.
fn resource_name_problems(name: &str) -> Vec<String> {
    let qualified = super::meta::qualified_name_problems(name);
    if !qualified.is_empty() {
        return qualified;
    }
    let mut out = Vec::new();
    if !name.contains('/') {
        let huge = ["hugepages-", "requests.hugepages-"]
            .iter()
            .any(|p| name.starts_with(p));
        if !huge && !STANDARD_RESOURCES.contains(&name) && name != "services.loadbalancers" {
            out.push("must be a standard resource type or fully qualified".to_string());
        }
        let container = matches!(name, "cpu" | "memory" | "ephemeral-storage")
            || name.starts_with("hugepages-");
        if !container {
            out.push("must be a standard resource for containers".to_string());
        }
    } else if !native_resource(name)
        && !super::meta::qualified_name_problems(&format!("requests.{name}")).is_empty()
    {
        out.push("doesn't follow extended resource name standard".to_string());
    }
    out
}

/// A container's requests and limits, as upstream's `ValidateResourceRequirements`: standard
/// or extended names, no negative amounts, whole extended resources, hugepages in whole
/// pages and only beside cpu or memory, no request above its limit, and hugepages and
/// extended resources (which cannot be overcommitted) with a limit equal to the request.
pub fn resources(r: &Value, path: &str, errs: &mut Errors) {
    let quantity = |v: &Value| v.as_str().and_then(crate::quantity::milli);
    let (mut cpu_or_memory, mut huge) = (false, false);
    for part in ["limits", "requests"] {
        for (name, v) in r[part].as_object().into_iter().flatten() {
            let at = format!("{path}.{part}[{name}]");
            for p in resource_name_problems(name) {
                errs.invalid(&at, &Value::String(name.clone()), &p);
            }
            let q = quantity(v);
            if q.is_some_and(|q| q < 0) {
                errs.invalid(&at, v, "must be greater than or equal to 0");
            }
            if !native_resource(name) && q.is_some_and(|q| q % 1000 != 0) {
                errs.invalid(&at, v, "must be an integer");
            }
            if let Some(page) = huge_page_size(name) {
                huge = true;
                if q.is_some_and(|q| page <= 0 || (q / 1000) % page != 0 || q % 1000 != 0) {
                    let amount = v.as_str().unwrap_or_default();
                    errs.invalid(
                        &at,
                        v,
                        &format!("{amount} is not positive integer multiple of {name}"),
                    );
                }
            }
            cpu_or_memory |= matches!(name.as_str(), "cpu" | "memory");
        }
    }
    for (name, req) in r["requests"].as_object().into_iter().flatten() {
        let Some(lim) = r["limits"].get(name) else {
            if !overcommit_allowed(name) {
                errs.required(
                    &format!("{path}.limits"),
                    "Limit must be set for non overcommitable resources",
                );
            }
            continue;
        };
        let (Some(rq), Some(lq)) = (quantity(req), quantity(lim)) else {
            continue;
        };
        let lim = lim.as_str().unwrap_or_default();
        if rq != lq && !overcommit_allowed(name) {
            errs.invalid(
                &format!("{path}.requests"),
                req,
                &format!("must be equal to {name} limit of {lim}"),
            );
        } else if rq > lq {
            errs.invalid(
                &format!("{path}.requests"),
                req,
                &format!("must be less than or equal to {name} limit of {lim}"),
            );
        }
    }
    if huge && !cpu_or_memory {
        errs.forbidden(path, "HugePages require cpu or memory");
    }
}

/// What a pod update may change in the spec: container images, activeDeadlineSeconds,
/// added tolerations, terminationGracePeriodSeconds; everything else is fixed once created.
pub fn update(old: &Value, new: &Value, errs: &mut Errors) {
    let mask = |spec: &Value| {
        let mut s = spec.clone();
        for field in ["containers", "initContainers"] {
            if let Some(list) = s.get_mut(field).and_then(Value::as_array_mut) {
                for c in list {
                    if let Some(c) = c.as_object_mut() {
                        c.remove("image");
                    }
                }
            }
        }
        if let Some(o) = s.as_object_mut() {
            for f in [
                "activeDeadlineSeconds",
                "tolerations",
                "terminationGracePeriodSeconds",
                "schedulingGates",
            ] {
                o.remove(f);
            }
        }
        s
    };
    if mask(&old["spec"]) != mask(&new["spec"]) {
        errs.forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        );
    }
    let old_tol = old["spec"]["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let new_tol = new["spec"]["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if old_tol.iter().any(|t| !new_tol.contains(t)) {
        errs.forbidden(
            "spec.tolerations",
            "existing toleration can not be modified except its tolerationSeconds",
        );
    }
}

/// Fields an ephemeral container may not set, as upstream forbids them.
const NOT_FOR_EPHEMERAL: &[&str] = &[
    "ports",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "resources",
    "resizePolicy",
    "restartPolicy",
];

/// What `pods/NAME/ephemeralcontainers` may change: ephemeral containers are only added, each
/// valid, named uniquely among all the pod's containers, without ports, probes, lifecycle
/// hooks or resources, and targeting (if at all) one of the pod's containers.
pub fn ephemeral_update(old: &Value, new: &Value, errs: &mut Errors) {
    let path = "spec.ephemeralContainers";
    let old_list = old["spec"]["ephemeralContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let new_list = new["spec"]["ephemeralContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for o in &old_list {
        let name = o["name"].as_str().unwrap_or_default();
        match new_list
            .iter()
            .position(|n| n["name"].as_str() == Some(name))
        {
            None => errs.forbidden(
                path,
                &format!("existing ephemeral containers {name:?} may not be removed\n"),
            ),
            Some(i) if new_list[i] != *o => errs.forbidden(
                &format!("{path}[{i}]"),
                &format!("existing ephemeral containers {name:?} may not be changed\n"),
            ),
            Some(_) => {}
        }
    }
    let volumes = volumes(
        &new["spec"]["volumes"],
        "spec.volumes",
        &mut Errors::default(),
    );
    let mut names: HashSet<String> = ["initContainers", "containers"]
        .iter()
        .flat_map(|f| items(&new["spec"][*f]))
        .filter_map(|(_, c)| c["name"].as_str().map(str::to_string))
        .collect();
    let targets = names.clone();
    for (i, c) in new_list.iter().enumerate() {
        let cp = format!("{path}[{i}]");
        let existing = old_list.iter().any(|o| o["name"] == c["name"]);
        container(c, &cp, Owner::Pod, &volumes, &mut names, errs);
        if existing {
            continue;
        }
        for f in NOT_FOR_EPHEMERAL {
            if !c[*f].is_null() && c[*f] != Value::Object(Default::default()) {
                errs.forbidden(
                    &format!("{cp}.{f}"),
                    "cannot be set for an Ephemeral Container",
                );
            }
        }
        for (j, m) in items(&c["volumeMounts"]) {
            if m["subPath"].as_str().is_some_and(|s| !s.is_empty()) {
                errs.forbidden(
                    &format!("{cp}.volumeMounts[{j}].subPath"),
                    "cannot be set for an Ephemeral Container",
                );
            }
        }
        if let Some(t) = c["targetContainerName"].as_str().filter(|t| !t.is_empty()) {
            if !targets.contains(t) {
                errs.not_found(
                    &format!("{cp}.targetContainerName"),
                    &c["targetContainerName"],
                );
            }
        }
    }
}
