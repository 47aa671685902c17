//! A StatefulSet's claims: one per volume claim template and pod (`TEMPLATE-POD`), created
//! before the pod and never replaced. With `whenDeleted: Delete` a claim is owned by the set,
//! so the garbage collector removes it with the set; with `whenScaled: Delete` a claim of a pod
//! scaled away gets that pod as owner, so it goes when the pod does.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::PostParams;

use super::*;
use crate::events::{self, Type};

fn policy(set: &StatefulSet) -> (bool, bool) {
    let p = set.spec.persistent_volume_claim_retention_policy.as_ref();
    let delete = |v: Option<&String>| v.map(String::as_str) == Some("Delete");
    (
        delete(p.and_then(|p| p.when_deleted.as_ref())),
        delete(p.and_then(|p| p.when_scaled.as_ref())),
    )
}

impl Ctl {
    /// Creates the claims pod `pod` needs that do not exist yet.
    pub(super) async fn create_claims(
        &self,
        set: &StatefulSet,
        pod: &str,
    ) -> Result<(), kube::Error> {
        let ns = set.namespace().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.writer.clone(), &ns);
        let (with_set, _) = policy(set);
        for t in set.spec.volume_claim_templates.iter().flatten() {
            let name = format!("{}-{pod}", t.name_any());
            let mut claim = PersistentVolumeClaim {
                spec: t.spec.clone(),
                ..Default::default()
            };
            claim.metadata.name = Some(name.clone());
            claim.metadata.namespace = Some(ns.clone());
            claim.metadata.labels = Some(claim_labels(set, t.metadata.labels.as_ref()));
            claim.metadata.annotations = t.metadata.annotations.clone();
            if with_set {
                claim.metadata.owner_references = Some(vec![OwnerReference {
                    controller: Some(true),
                    block_owner_deletion: None,
                    ..controller_ref(set)
                }]);
            }
            match api.create(&PostParams::default(), &claim).await {
                Ok(_) => {
                    self.recorder
                        .record(
                            &events::reference(set),
                            Type::Normal,
                            "SuccessfulCreate",
                            &format!(
                                "create Claim {name} Pod {pod} in StatefulSet {} success",
                                set.name_any()
                            ),
                        )
                        .await
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => {
                    self.recorder
                        .record(
                            &events::reference(set),
                            Type::Warning,
                            "FailedCreate",
                            &format!(
                                "create Claim {name} for Pod {pod} in StatefulSet {} failed error: {e}",
                                set.name_any()
                            ),
                        )
                        .await;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Before pod `p` is scaled away: with `whenScaled: Delete`, makes it the owner of its
    /// claims.
    pub(super) async fn release_claims(&self, set: &StatefulSet, p: &Pod) {
        let (_, with_pod) = policy(set);
        if !with_pod {
            return;
        }
        let ns = set.namespace().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.writer.clone(), &ns);
        for t in set.spec.volume_claim_templates.iter().flatten() {
            let name = format!("{}-{}", t.name_any(), p.name_any());
            let Ok(mut claim) = api.get(&name).await else {
                continue;
            };
            let refs = claim.metadata.owner_references.get_or_insert_with(Vec::new);
            if refs.iter().any(|r| Some(&r.uid) == p.metadata.uid.as_ref()) {
                continue;
            }
            // The pod becomes the only owner, so the claim goes with it.
            refs.retain(|r| r.uid != set.uid().unwrap_or_default());
            refs.push(OwnerReference {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: p.name_any(),
                uid: p.uid().unwrap_or_default(),
                controller: Some(false),
                block_owner_deletion: None,
            });
            if let Err(e) = api.replace(&name, &PostParams::default(), &claim).await {
                tracing::debug!(claim = %name, error = %e, "handing a claim to its pod");
            }
        }
    }
}
