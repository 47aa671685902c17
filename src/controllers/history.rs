//! ControllerRevisions, as upstream's StatefulSet and DaemonSet controllers keep them: one per
//! distinct pod template, named `OWNER-HASH`, holding the patch that restores the template
//! (`{"spec":{"template":{..., "$patch":"replace"}}}`, which `kubectl rollout undo` applies),
//! numbered by `revision`. Going back to an earlier template renumbers its revision instead of
//! making a new one; a name taken by a different template bumps the owner's `collisionCount`.
//! Revisions no live pod uses are pruned beyond `revisionHistoryLimit`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::ResourceExt;
use serde_json::{json, Value};

/// The label every revision carries with its hash.
pub const HASH_LABEL: &str = "controller.kubernetes.io/hash";

/// How many names taken by other templates are tried before giving up.
const MAX_COLLISIONS: i32 = 16;

/// The patch a revision stores for `template`.
pub fn patch_data(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(m) = t.as_object_mut() {
        m.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// The pod template a revision restores.
pub fn template_of(rev: &ControllerRevision) -> Value {
    let mut t = rev.data.0["spec"]["template"].clone();
    if let Some(m) = t.as_object_mut() {
        m.remove("$patch");
    }
    t
}

/// The hash naming a revision of `data` after `collisions` collisions.
pub fn hash(data: &Value, collisions: i32) -> String {
    super::deployment::template_hash(data, collisions)
}

/// The owner a revision belongs to.
pub struct Owner<'a> {
    pub reference: OwnerReference,
    pub namespace: &'a str,
    /// The owner's template labels, which the revision carries (so the owner's selector finds it).
    pub labels: BTreeMap<String, String>,
    /// The owner's annotations, copied to new revisions (`kubernetes.io/change-cause` among them).
    pub annotations: BTreeMap<String, String>,
}

impl<'a> Owner<'a> {
    /// The owner of a workload object with a pod template (StatefulSet, DaemonSet).
    pub fn of(
        reference: OwnerReference,
        namespace: &'a str,
        template: &k8s_openapi::api::core::v1::PodTemplateSpec,
        annotations: &BTreeMap<String, String>,
    ) -> Owner<'a> {
        Owner {
            reference,
            namespace,
            labels: template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default(),
            annotations: annotations.clone(),
        }
    }
}

/// The revision of `template` after [`ensure`]: it, every revision the owner has, and the
/// collision count to report.
pub struct Found {
    pub update: Arc<ControllerRevision>,
    pub all: Vec<Arc<ControllerRevision>>,
    pub collisions: i32,
}

/// A revision's number (0 when unset).
pub fn number(rev: &ControllerRevision) -> i64 {
    rev.revision.unwrap_or(0)
}

/// Finds, renumbers or creates the revision of `template` among `owned` (the owner's revisions).
pub async fn ensure(
    api: &Api<ControllerRevision>,
    owner: &Owner<'_>,
    mut owned: Vec<Arc<ControllerRevision>>,
    template: &Value,
    mut collisions: i32,
) -> Result<Found, kube::Error> {
    owned.sort_by_key(|r| (number(r), r.creation_timestamp().map(|t| t.0)));
    let data = patch_data(template);
    let latest = owned.last().map_or(0, |r| number(r));
    if let Some(same) = owned.iter().rev().find(|r| r.data.0 == data).cloned() {
        if number(&same) == latest {
            return Ok(Found {
                update: same,
                all: owned,
                collisions,
            });
        }
        let renumbered = api
            .patch(
                &same.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"revision": latest + 1})),
            )
            .await?;
        let renumbered = Arc::new(renumbered);
        for r in owned.iter_mut() {
            if r.uid() == renumbered.uid() {
                *r = renumbered.clone();
            }
        }
        return Ok(Found {
            update: renumbered,
            all: owned,
            collisions,
        });
    }
    loop {
        let h = hash(&data, collisions);
        let mut labels = owner.labels.clone();
        labels.insert(HASH_LABEL.into(), h.clone());
        let mut rev = ControllerRevision {
            data: RawExtension(data.clone()),
            revision: Some(latest + 1),
            ..Default::default()
        };
        rev.metadata.name = Some(format!("{}-{h}", owner.reference.name));
        rev.metadata.namespace = Some(owner.namespace.to_string());
        rev.metadata.labels = Some(labels);
        rev.metadata.annotations =
            (!owner.annotations.is_empty()).then(|| owner.annotations.clone());
        rev.metadata.owner_references = Some(vec![owner.reference.clone()]);
        match api.create(&PostParams::default(), &rev).await {
            Ok(created) => {
                let created = Arc::new(created);
                owned.push(created.clone());
                return Ok(Found {
                    update: created,
                    all: owned,
                    collisions,
                });
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let existing = api.get(&rev.name_any()).await?;
                let ours = existing
                    .owner_references()
                    .iter()
                    .any(|r| r.uid == owner.reference.uid && r.controller == Some(true));
                if ours && existing.data.0 == data {
                    let existing = Arc::new(existing);
                    if !owned.iter().any(|r| r.uid() == existing.uid()) {
                        owned.push(existing.clone());
                    }
                    return Ok(Found {
                        update: existing,
                        all: owned,
                        collisions,
                    });
                }
                collisions += 1;
                if collisions > MAX_COLLISIONS {
                    return Err(kube::Error::Api(s));
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Deletes the oldest revisions not in `keep` beyond `limit` of them.
pub async fn prune(
    api: &Api<ControllerRevision>,
    all: &[Arc<ControllerRevision>],
    keep: &HashSet<String>,
    limit: usize,
) {
    let mut spare: Vec<&Arc<ControllerRevision>> = all
        .iter()
        .filter(|r| !keep.contains(&r.name_any()))
        .collect();
    spare.sort_by_key(|r| number(r));
    let excess = spare.len().saturating_sub(limit);
    for r in spare.into_iter().take(excess) {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: r.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        if let Err(e) = api.delete(&r.name_any(), &dp).await {
            tracing::debug!(revision = %r.name_any(), error = %e, "pruning a revision");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_patch_restores_the_template() {
        let t = json!({"metadata": {"labels": {"app": "a"}}, "spec": {"containers": []}});
        let rev = ControllerRevision {
            data: RawExtension(patch_data(&t)),
            ..Default::default()
        };
        assert_eq!(rev.data.0["spec"]["template"]["$patch"], json!("replace"));
        assert_eq!(template_of(&rev), t);
        assert_ne!(hash(&patch_data(&t), 0), hash(&patch_data(&t), 1));
    }
}
