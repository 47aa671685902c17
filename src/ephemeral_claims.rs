//! Generic ephemeral volumes' claims, as upstream's `component-helpers/storage/ephemeral`: a
//! pod's volume `V` with a `volumeClaimTemplate` is backed by the claim `POD-V`, which the
//! ephemeral volume controller creates owned by the pod; the scheduler and the kubelet use it
//! only when the pod is its controlling owner.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;

/// The claim behind `pod`'s generic ephemeral volume `volume`.
pub fn claim_name(pod: &Pod, volume: &str) -> String {
    format!("{}-{volume}", pod.name_any())
}

/// The claims a pod's generic ephemeral volumes ask for: (claim name, claim to create).
pub fn wanted_claims(pod: &Pod) -> Vec<(String, PersistentVolumeClaim)> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: pod.name_any(),
        uid: pod.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    spec.volumes
        .iter()
        .flatten()
        .filter_map(|v| {
            let template = v.ephemeral.as_ref()?.volume_claim_template.as_ref()?;
            let name = claim_name(pod, &v.name);
            let meta = template.metadata.clone().unwrap_or_default();
            let claim = PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: pod.namespace(),
                    labels: meta.labels,
                    annotations: meta.annotations,
                    owner_references: Some(vec![owner.clone()]),
                    ..Default::default()
                },
                spec: Some(template.spec.clone()),
                status: None,
            };
            Some((name, claim))
        })
        .collect()
}

/// Whether `claim` was made for `pod` (the pod is its controlling owner); upstream's error if not.
pub fn is_for_pod(pod: &Pod, claim: &PersistentVolumeClaim) -> Result<(), String> {
    let uid = pod.uid().unwrap_or_default();
    if claim
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && o.uid == uid)
    {
        return Ok(());
    }
    let ns = pod.namespace().unwrap_or_default();
    Err(format!(
        "PVC {ns}/{} was not created for pod {ns}/{} (pod is not owner)",
        claim.name_any(),
        pod.name_any()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {"containers": [{"name": "c"}], "volumes": [
                {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {
                    "metadata": {"labels": {"type": "scratch"}},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}},
                {"name": "cfg", "configMap": {"name": "x"}},
            ]},
        }))
        .expect("pod")
    }

    #[test]
    fn claims_come_from_the_template_owned_by_the_pod() {
        let wanted = wanted_claims(&pod());
        assert_eq!(wanted.len(), 1);
        let (name, claim) = &wanted[0];
        assert_eq!(name, "web-scratch");
        assert_eq!(claim.metadata.namespace.as_deref(), Some("default"));
        let labels: &BTreeMap<String, String> = claim.labels();
        assert_eq!(labels.get("type").map(String::as_str), Some("scratch"));
        let owner = &claim.owner_references()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Pod", "u1"));
        assert_eq!(owner.controller, Some(true));
        assert!(is_for_pod(&pod(), claim).is_ok());
        let mut stranger = claim.clone();
        stranger.metadata.owner_references = None;
        assert_eq!(
            is_for_pod(&pod(), &stranger).unwrap_err(),
            "PVC default/web-scratch was not created for pod default/web (pod is not owner)"
        );
    }
}
