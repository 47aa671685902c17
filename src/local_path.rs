//! What the built-in local-path provisioner, the kubelets that hold its volumes' data and the
//! API server's node rules agree on: the provisioner's name, the annotation that marks its
//! volumes, the finalizer that keeps a volume until its node has removed its data, and the
//! node a volume is pinned to.
//!
//! A kubelet puts [`FINALIZER`] on a volume before it first makes the volume's directory, and
//! takes it off once the volume is being deleted and its data is gone (reclaim policy Delete)
//! or kept (Retain). A volume whose node was deleted for good has the finalizer taken off by
//! the provisioner, as no kubelet will come back for it.

#[cfg(any(feature = "controllers", feature = "kubelet"))]
use k8s_openapi::api::core::v1::PersistentVolume;
#[cfg(any(feature = "controllers", feature = "kubelet", test))]
use serde_json::json;
use serde_json::Value;

/// The provisioner claims are handed to, as k3s ships Rancher's.
pub const PROVISIONER: &str = "rancher.io/local-path";

/// The annotation naming the provisioner of a volume.
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

/// Keeps a local-path volume until the node holding its data has dealt with it.
pub const FINALIZER: &str = "k1s.io/local-path-data";

/// Whether `name` has the form the provisioner names volumes with: `pvc-` and a claim's uid.
pub fn provisioner_name(name: &str) -> bool {
    name.strip_prefix("pvc-").is_some_and(|uid| {
        uid.len() == 36
            && uid.char_indices().all(|(i, c)| {
                if matches!(i, 8 | 13 | 18 | 23) {
                    c == '-'
                } else {
                    c.is_ascii_hexdigit()
                }
            })
    })
}

/// The one node the volume `pv` (as JSON) is pinned to: every term of its required node
/// affinity asks for that node's hostname alone.
pub fn pinned_node(pv: &Value) -> Option<&str> {
    let terms = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"].as_array()?;
    let mut node = None;
    for t in terms {
        let named = t["matchExpressions"].as_array()?.iter().find_map(|e| {
            let values = e["values"].as_array()?;
            (e["key"] == "kubernetes.io/hostname" && e["operator"] == "In" && values.len() == 1)
                .then(|| values[0].as_str())
                .flatten()
        })?;
        if node.is_some_and(|n| n != named) {
            return None;
        }
        node = Some(named);
    }
    node
}

/// The merge patch that sets `pv`'s finalizers to `finalizers`, refused with 409 when the
/// volume changed since `pv` was read, so nobody else's change is lost.
#[cfg(any(feature = "controllers", feature = "kubelet"))]
fn finalizers_patch(rv: Option<&String>, finalizers: Vec<&String>) -> Value {
    json!({"metadata": {"resourceVersion": rv, "finalizers": finalizers}})
}

/// Whether finalizers `f` hold [`FINALIZER`].
#[cfg(any(feature = "controllers", feature = "kubelet"))]
fn holds(f: Option<&Vec<String>>) -> bool {
    f.is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

/// Whether `pv` was made by the built-in provisioner.
#[cfg(any(feature = "controllers", feature = "kubelet"))]
pub fn provisioned(pv: &PersistentVolume) -> bool {
    pv.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROVISIONED_BY))
        .is_some_and(|p| p == PROVISIONER)
}

/// Whether `pv` carries [`FINALIZER`].
#[cfg(any(feature = "controllers", feature = "kubelet"))]
pub fn has_finalizer(pv: &PersistentVolume) -> bool {
    holds(pv.metadata.finalizers.as_ref())
}

/// The one node `pv` is pinned to.
#[cfg(any(feature = "controllers", feature = "kubelet"))]
pub fn pinned_node_of(pv: &PersistentVolume) -> Option<String> {
    let v = serde_json::to_value(pv).ok()?;
    pinned_node(&v).map(str::to_string)
}

/// The patch that puts [`FINALIZER`] on `pv` (None when it has it).
#[cfg(any(feature = "controllers", feature = "kubelet"))]
pub fn add_finalizer_patch(pv: &PersistentVolume) -> Option<Value> {
    let m = &pv.metadata;
    if holds(m.finalizers.as_ref()) {
        return None;
    }
    let finalizer = FINALIZER.to_string();
    let mut f: Vec<&String> = m.finalizers.iter().flatten().collect();
    f.push(&finalizer);
    Some(finalizers_patch(m.resource_version.as_ref(), f))
}

/// The patch that takes [`FINALIZER`] off `pv` (None when it does not have it).
#[cfg(any(feature = "controllers", feature = "kubelet"))]
pub fn remove_finalizer_patch(pv: &PersistentVolume) -> Option<Value> {
    let m = &pv.metadata;
    if !holds(m.finalizers.as_ref()) {
        return None;
    }
    let f = m.finalizers.iter().flatten().filter(|x| *x != FINALIZER);
    Some(finalizers_patch(m.resource_version.as_ref(), f.collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(terms: Value) -> Value {
        json!({
            "metadata": {"name": "pvc-1", "resourceVersion": "7",
                "finalizers": ["kubernetes.io/pv-protection"]},
            "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": terms}}},
        })
    }

    fn host(values: &[&str]) -> Value {
        json!({"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": values}]})
    }

    #[test]
    fn volumes_are_pinned_to_one_node_only() {
        assert_eq!(pinned_node(&pv(json!([host(&["n1"])]))), Some("n1"));
        assert_eq!(
            pinned_node(&pv(json!([host(&["n1"]), host(&["n1"])]))),
            Some("n1")
        );
        for loose in [
            json!([]),
            json!([host(&["n1", "n2"])]),
            json!([host(&["n1"]), host(&["n2"])]),
            json!([host(&["n1"]), {"matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["a"]}]}]),
        ] {
            assert_eq!(pinned_node(&pv(loose.clone())), None, "{loose}");
        }
        assert_eq!(pinned_node(&json!({})), None);
    }

    #[test]
    fn only_the_provisioners_names_are_recognised() {
        assert!(provisioner_name("pvc-0f8fad5b-d9cb-469f-a165-70867728950e"));
        for other in [
            "handmade",
            "pvc-",
            "pvc-data",
            "pvc-0f8fad5b-d9cb-469f-a165-70867728950",
            "pvc-0f8fad5bxd9cb-469f-a165-70867728950e",
        ] {
            assert!(!provisioner_name(other), "{other}");
        }
    }

    #[cfg(any(feature = "controllers", feature = "kubelet"))]
    #[test]
    fn the_finalizer_goes_on_and_off_without_losing_others() {
        let mut v: PersistentVolume =
            serde_json::from_value(pv(json!([host(&["n1"])]))).expect("pv");
        assert_eq!(pinned_node_of(&v).as_deref(), Some("n1"));
        let add = add_finalizer_patch(&v).expect("missing");
        assert_eq!(
            add,
            json!({"metadata": {"resourceVersion": "7",
                "finalizers": ["kubernetes.io/pv-protection", FINALIZER]}})
        );
        v.metadata
            .finalizers
            .as_mut()
            .expect("finalizers")
            .push(FINALIZER.into());
        assert!(add_finalizer_patch(&v).is_none());
        let remove = remove_finalizer_patch(&v).expect("present");
        assert_eq!(
            remove["metadata"]["finalizers"],
            json!(["kubernetes.io/pv-protection"])
        );
        v.metadata.finalizers = None;
        assert!(remove_finalizer_patch(&v).is_none());
        assert_eq!(
            add_finalizer_patch(&v).expect("none")["metadata"]["finalizers"],
            json!([FINALIZER])
        );
    }
}
