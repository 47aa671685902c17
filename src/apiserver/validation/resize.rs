//! `pods/NAME/resize`, as upstream's in-place pod resize: what a resize keeps of the request
//! (the pod's own resources, the containers' resources and resize policies, nothing else) and
//! what it may change (the cpu and memory requests and limits of the pod and of its app,
//! sidecar and init containers, never the pod's QoS class, never removing a request or limit).

use serde_json::Value;

use super::Errors;
use crate::apiserver::strategy::qos_class;

const LISTS: [&str; 2] = ["containers", "initContainers"];

/// The stored pod `old` with the resources and resize policies of `new`'s containers, as
/// upstream's `dropNonResizeUpdates`. Lists whose containers were added, removed, renamed or
/// reordered are taken from `new` whole, for [`update`] to refuse.
pub fn merge(old: &Value, new: &Value) -> Value {
    let mut merged = old.clone();
    if let Some(spec) = merged["spec"].as_object_mut() {
        match new["spec"].get("resources").filter(|r| !r.is_null()) {
            Some(r) => {
                spec.insert("resources".into(), r.clone());
            }
            None => {
                spec.remove("resources");
            }
        }
    }
    for field in LISTS {
        let (Some(olds), Some(news)) = (
            merged["spec"][field].as_array_mut(),
            new["spec"][field].as_array(),
        ) else {
            if merged["spec"][field] != new["spec"][field] {
                merged["spec"][field] = new["spec"][field].clone();
            }
            continue;
        };
        let same =
            olds.len() == news.len() && olds.iter().zip(news).all(|(o, n)| o["name"] == n["name"]);
        if !same {
            *olds = news.clone();
            continue;
        }
        for (o, n) in olds.iter_mut().zip(news) {
            for key in ["resources", "resizePolicy"] {
                match (o.as_object_mut(), n.get(key)) {
                    (Some(obj), Some(v)) => {
                        obj.insert(key.to_string(), v.clone());
                    }
                    (Some(obj), None) => {
                        obj.remove(key);
                    }
                    _ => {}
                }
            }
        }
    }
    merged
}

/// The resource names of a requests or limits map.
fn names(list: &Value) -> Vec<&str> {
    list.as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k.as_str())
        .collect()
}

/// Whether anything but cpu and memory differs between two containers' resources, or their
/// resize policies differ.
fn other_than_cpu_memory(old: &Value, new: &Value) -> bool {
    let strip = |c: &Value| {
        let mut r = c["resources"].clone();
        for part in ["requests", "limits"] {
            if let Some(m) = r.get_mut(part).and_then(Value::as_object_mut) {
                m.remove("cpu");
                m.remove("memory");
                if m.is_empty() {
                    r.as_object_mut().map(|o| o.remove(part));
                }
            }
        }
        if r.as_object().is_some_and(serde_json::Map::is_empty) {
            r = Value::Null;
        }
        r
    };
    strip(old) != strip(new) || old["resizePolicy"] != new["resizePolicy"]
}

/// Checks a resize of the pod's own resources (PodLevelResources), as upstream's: cpu and
/// memory may change or be added, nothing may be removed.
fn pod_level(old: &Value, new: &Value, errs: &mut Errors) {
    if old.is_object() && !new.is_object() {
        errs.forbidden("spec.resources", "pod-level resources cannot be removed");
        return;
    }
    for part in ["requests", "limits"] {
        let kept = names(&new[part]);
        if names(&old[part]).iter().any(|k| !kept.contains(k)) {
            errs.forbidden(
                &format!("spec.resources.{part}"),
                &format!("pod-level resource {part} cannot be removed"),
            );
        }
    }
    let as_container = |r: &Value| serde_json::json!({"resources": r});
    if other_than_cpu_memory(&as_container(old), &as_container(new)) {
        errs.forbidden(
            "spec",
            "only cpu and memory resources are mutable at pod-level",
        );
    }
}

/// Checks a resize of `old` into `new` (after [`merge`] and defaulting).
pub fn update(old: &Value, new: &Value, errs: &mut Errors) {
    let annotations = &old["metadata"]["annotations"];
    if annotations.get("kubernetes.io/config.mirror").is_some() {
        errs.forbidden("", "static pods cannot be resized");
        return;
    }
    if old["spec"]["os"]["name"].as_str() == Some("windows") {
        errs.forbidden("", "windows pods cannot be resized");
        return;
    }
    pod_level(&old["spec"]["resources"], &new["spec"]["resources"], errs);
    if new["spec"]["resources"].is_object() {
        super::pod::pod_level(&new["spec"], "spec.resources", errs);
    }
    let mut shape_ok = true;
    for field in LISTS {
        let olds = old["spec"][field].as_array().cloned().unwrap_or_default();
        let news = new["spec"][field].as_array().cloned().unwrap_or_default();
        if olds.len() != news.len() {
            errs.forbidden(
                &format!("spec.{field}"),
                "containers may not be added or removed on resize",
            );
            shape_ok = false;
            continue;
        }
        for (i, (o, n)) in olds.iter().zip(&news).enumerate() {
            if o["name"] != n["name"] {
                errs.forbidden(
                    &format!("spec.{field}[{i}].name"),
                    "containers may not be renamed or reordered on resize",
                );
                shape_ok = false;
            }
        }
    }
    if !shape_ok {
        return;
    }
    let mut other = false;
    let mut init_other = false;
    for field in LISTS {
        let olds = old["spec"][field].as_array().cloned().unwrap_or_default();
        let news = new["spec"][field].as_array().cloned().unwrap_or_default();
        for (i, (o, n)) in olds.iter().zip(&news).enumerate() {
            let path = format!("spec.{field}[{i}].resources");
            for part in ["requests", "limits"] {
                let kept = names(&n["resources"][part]);
                if names(&o["resources"][part])
                    .iter()
                    .any(|k| !kept.contains(k))
                {
                    let what = if part == "requests" {
                        "resource requests cannot be removed"
                    } else {
                        "resource limits cannot be removed"
                    };
                    errs.forbidden(&format!("{path}.{part}"), what);
                }
            }
            if other_than_cpu_memory(o, n) {
                if field == "containers" {
                    other = true;
                } else {
                    init_other = true;
                }
            }
            if field == "initContainers"
                && o["resources"] != n["resources"]
                && n["restartPolicy"].as_str() != Some("Always")
                && n["resizePolicy"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["restartPolicy"].as_str() == Some("RestartContainer"))
            {
                errs.forbidden(
                    &format!("spec.{field}[{i}].resizePolicy"),
                    "non-sidecar init containers with a resize policy of RestartContainer cannot be resized",
                );
            }
            super::pod::resources(&n["resources"], &path, errs);
        }
    }
    if other {
        errs.forbidden("spec", "only cpu and memory resources are mutable");
    }
    if init_other {
        errs.forbidden(
            "spec",
            "only cpu and memory resources for init or sidecar containers are mutable",
        );
    }
    let before = old["status"]["qosClass"]
        .as_str()
        .unwrap_or_else(|| qos_class(&old["spec"]));
    let after = qos_class(&new["spec"]);
    if before != after {
        errs.invalid(
            "spec",
            &Value::String(after.to_string()),
            "Pod QOS Class may not change as a result of resizing",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(cpu: &str, mem_limit: Option<&str>) -> Value {
        let mut res = json!({"requests": {"cpu": cpu, "memory": "32Mi"}, "limits": {}});
        if let Some(m) = mem_limit {
            res["limits"]["memory"] = json!(m);
        }
        json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "busybox", "resources": res,
                "resizePolicy": [{"resourceName": "cpu", "restartPolicy": "NotRequired"}]}]},
            "status": {"qosClass": "Burstable"},
        })
    }

    fn check(old: &Value, new: &Value) -> Vec<String> {
        let mut errs = Errors::default();
        update(old, &merge(old, new), &mut errs);
        errs.0
            .iter()
            .map(|e| format!("{}: {}", e.field, e.detail))
            .collect()
    }

    #[test]
    fn only_resources_and_policies_are_kept() {
        let old = pod("100m", Some("64Mi"));
        let mut new = pod("200m", Some("128Mi"));
        new["spec"]["containers"][0]["image"] = json!("other");
        new["spec"]["restartPolicy"] = json!("Never");
        new["metadata"]["labels"] = json!({"a": "b"});
        let m = merge(&old, &new);
        assert_eq!(m["spec"]["containers"][0]["image"], "busybox");
        assert_eq!(
            m["spec"]["containers"][0]["resources"]["requests"]["cpu"],
            "200m"
        );
        assert!(m["spec"]["restartPolicy"].is_null());
        assert!(m["metadata"]["labels"].is_null());
        assert!(check(&old, &new).is_empty(), "{:?}", check(&old, &new));
    }

    #[test]
    fn upstreams_refusals() {
        let old = pod("100m", Some("64Mi"));
        // Removing a limit.
        let e = check(&old, &pod("100m", None));
        assert_eq!(
            e,
            ["spec.containers[0].resources.limits: resource limits cannot be removed"]
        );
        // Another resource.
        let mut new = pod("100m", Some("64Mi"));
        new["spec"]["containers"][0]["resources"]["limits"]["ephemeral-storage"] = json!("1Gi");
        assert_eq!(
            check(&old, &new),
            ["spec: only cpu and memory resources are mutable"]
        );
        // A renamed container.
        let mut new = pod("100m", Some("64Mi"));
        new["spec"]["containers"][0]["name"] = json!("d");
        assert_eq!(
            check(&old, &new),
            ["spec.containers[0].name: containers may not be renamed or reordered on resize"]
        );
        // A request above its limit.
        let mut new = pod("100m", Some("64Mi"));
        new["spec"]["containers"][0]["resources"]["requests"]["memory"] = json!("128Mi");
        assert_eq!(
            check(&old, &new),
            ["spec.containers[0].resources.requests: must be less than or equal to memory limit of 64Mi"]
        );
        // Burstable into Guaranteed.
        let mut new = pod("100m", Some("64Mi"));
        new["spec"]["containers"][0]["resources"] = json!({
            "requests": {"cpu": "100m", "memory": "64Mi"},
            "limits": {"cpu": "100m", "memory": "64Mi"}});
        assert_eq!(
            check(&old, &new),
            ["spec: Pod QOS Class may not change as a result of resizing"]
        );
        // The pod's own resources: changed and added, never removed.
        let mut level = pod("100m", Some("64Mi"));
        level["spec"]["resources"] =
            json!({"requests": {"cpu": "200m"}, "limits": {"memory": "128Mi"}});
        let mut grown = level.clone();
        grown["spec"]["resources"] = json!({"requests": {"cpu": "300m", "memory": "64Mi"},
            "limits": {"memory": "256Mi"}});
        assert!(
            check(&level, &grown).is_empty(),
            "{:?}",
            check(&level, &grown)
        );
        assert!(
            check(&old, &level).is_empty(),
            "added: {:?}",
            check(&old, &level)
        );
        assert_eq!(
            merge(&old, &grown)["spec"]["resources"]["limits"]["memory"],
            "256Mi"
        );
        let mut shrunk = level.clone();
        shrunk["spec"]["resources"] = json!({"requests": {"cpu": "200m"}});
        assert_eq!(
            check(&level, &shrunk),
            ["spec.resources.limits: pod-level resource limits cannot be removed"]
        );
        assert_eq!(
            check(&level, &pod("100m", Some("64Mi"))),
            ["spec.resources: pod-level resources cannot be removed"]
        );
        let mut small = level.clone();
        small["spec"]["resources"]["requests"]["cpu"] = json!("50m");
        assert_eq!(
            check(&level, &small),
            ["spec.resources.requests[cpu]: must be greater than or equal to aggregate container requests of 100m"]
        );
        let mut huge = level.clone();
        huge["spec"]["resources"]["limits"]["hugepages-2Mi"] = json!("2Mi");
        assert_eq!(
            check(&level, &huge),
            ["spec: only cpu and memory resources are mutable at pod-level"]
        );
        // Static pods.
        let mut mirror = old.clone();
        mirror["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "x"});
        assert_eq!(
            check(&mirror, &pod("200m", Some("64Mi"))),
            [": static pods cannot be resized"]
        );
    }
}
