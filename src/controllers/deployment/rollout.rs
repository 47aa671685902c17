//! How a Deployment moves between ReplicaSets: the new one made (or an old one revived by a
//! rollback), RollingUpdate and Recreate scaling, and the history kept.

use super::*;

impl Ctl {
    /// Creates the ReplicaSet for the current template (or revives an old one with it).
    pub(super) async fn ensure_new(
        &self,
        d: &Deployment,
        api: &Api<ReplicaSet>,
        r: &mut Rollout,
        initial: i32,
    ) -> Result<Arc<ReplicaSet>, kube::Error> {
        let max_rev = r.all.iter().map(|x| revision(x)).max().unwrap_or(0);
        if let Some(new) = r.new_rs.clone() {
            if revision(&new) < max_rev || new.annotations().get(REVISION).is_none() {
                // An old template came back (rollout undo): it becomes the newest revision.
                let mut history: Vec<String> = new
                    .annotations()
                    .get(REVISION_HISTORY)
                    .map(|h| h.split(',').map(str::to_string).collect())
                    .unwrap_or_default();
                if let Some(old) = new.annotations().get(REVISION) {
                    history.push(old.clone());
                }
                let mut ann = json!({REVISION: (max_rev + 1).to_string()});
                if !history.is_empty() {
                    ann[REVISION_HISTORY] = json!(history.join(","));
                }
                let patch = json!({"metadata": {"annotations": ann, "resourceVersion": new.resource_version()}});
                let updated = api
                    .patch(
                        &new.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await?;
                let updated = Arc::new(updated);
                replace(r, updated.clone());
                return Ok(updated);
            }
            return Ok(new);
        }
        let spec = &d.spec;
        let collisions = d
            .status
            .as_ref()
            .and_then(|s| s.collision_count)
            .unwrap_or(0);
        let template = deployment_template(d);
        let hash = template_hash(&template, collisions);
        let mut tpl = template.clone();
        tpl["metadata"]["labels"][HASH_LABEL] = json!(hash);
        let mut selector = serde_json::to_value(&spec.selector).unwrap_or_default();
        selector["matchLabels"][HASH_LABEL] = json!(hash);
        let mut annotations: BTreeMap<String, String> = d
            .annotations()
            .iter()
            .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let want = spec.replicas.unwrap_or(1);
        let (surge, _) = surge_and_unavailable(d);
        annotations.insert(REVISION.into(), (max_rev + 1).to_string());
        annotations.insert(DESIRED.into(), want.to_string());
        annotations.insert(MAX_REPLICAS.into(), (want + surge).to_string());
        let mut labels = d
            .spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        labels.insert(HASH_LABEL.into(), hash.clone());
        let rs = json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {
                "name": format!("{}-{hash}", d.name_any()),
                "namespace": d.namespace(),
                "labels": labels,
                "annotations": annotations,
                "ownerReferences": [Self::controller_ref(d)],
            },
            "spec": {
                "replicas": initial,
                "minReadySeconds": spec.min_ready_seconds.unwrap_or(0),
                "selector": selector,
                "template": tpl,
            },
        });
        let rs: ReplicaSet = serde_json::from_value(rs).map_err(kube::Error::SerdeError)?;
        match api.create(&PostParams::default(), &rs).await {
            Ok(created) => {
                let created = Arc::new(created);
                self.recorder
                    .record(
                        &events::reference(d),
                        Type::Normal,
                        "ScalingReplicaSet",
                        &format!(
                            "Scaled up replica set {} from 0 to {initial}",
                            created.name_any()
                        ),
                    )
                    .await;
                r.all.push(created.clone());
                r.written.push(created.clone());
                r.new_rs = Some(created.clone());
                r.created = true;
                Ok(created)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                // Ours already (made by an earlier sync our watch has not shown yet)?
                let name = format!("{}-{hash}", d.name_any());
                if let Ok(existing) = api.get(&name).await {
                    if owner_uid(&existing) == d.uid()
                        && template_without_hash(&existing) == template
                    {
                        let existing = Arc::new(existing);
                        r.all.push(existing.clone());
                        r.new_rs = Some(existing.clone());
                        return Ok(existing);
                    }
                }
                // A ReplicaSet of that name with another template: count the collision.
                let d_api: Api<Deployment> =
                    Api::namespaced(self.writer.clone(), &d.namespace().unwrap_or_default());
                let mut whole = d.clone();
                whole
                    .status
                    .get_or_insert_with(Default::default)
                    .collision_count = Some(collisions + 1);
                d_api
                    .replace_status(&d.name_any(), &PostParams::default(), &whole)
                    .await?;
                Err(kube::Error::Api(e))
            }
            Err(e) => Err(e),
        }
    }

    pub(super) async fn scale(
        &self,
        d: &Deployment,
        api: &Api<ReplicaSet>,
        rs: &Arc<ReplicaSet>,
        to: i32,
        r: &mut Rollout,
    ) -> Result<(), kube::Error> {
        let from = replicas(rs);
        let want = d.spec.replicas.unwrap_or(1);
        let (surge, _) = surge_and_unavailable(d);
        let noted = |key: &str, n: i32| rs.annotations().get(key) == Some(&n.to_string());
        if from == to && noted(DESIRED, want) && noted(MAX_REPLICAS, want + surge) {
            return Ok(());
        }
        // Guarded by the resourceVersion read: a decision made on a stale view fails and is
        // made again, rather than undoing a newer one.
        let patch = json!({
            "metadata": {
                "resourceVersion": rs.resource_version(),
                "annotations": {DESIRED: want.to_string(), MAX_REPLICAS: (want + surge).to_string()},
            },
            "spec": {"replicas": to},
        });
        let updated = api
            .patch(
                &rs.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        replace(r, Arc::new(updated));
        if from == to {
            return Ok(());
        }
        let verb = if to > from { "up" } else { "down" };
        self.recorder
            .record(
                &events::reference(d),
                Type::Normal,
                "ScalingReplicaSet",
                &format!(
                    "Scaled {verb} replica set {} from {from} to {to}",
                    rs.name_any()
                ),
            )
            .await;
        Ok(())
    }

    pub(super) async fn rolling(
        &self,
        d: &Deployment,
        api: &Api<ReplicaSet>,
        r: &mut Rollout,
    ) -> Result<(), kube::Error> {
        let want = d.spec.replicas.unwrap_or(1);
        let (surge, unavailable) = surge_and_unavailable(d);
        // New ReplicaSet: up to `replicas`, with at most `replicas + maxSurge` pods in all.
        let total: i32 = r.all.iter().map(|x| replicas(x)).sum();
        let initial = if r.new_rs.is_none() {
            (want + surge - total).clamp(0, want)
        } else {
            0
        };
        let new = self.ensure_new(d, api, r, initial).await?;
        let total: i32 = r.all.iter().map(|x| replicas(x)).sum();
        let current = replicas(&new);
        if current > want {
            self.scale(d, api, &new, want, r).await?;
        } else if current < want {
            let room = (want + surge - total).max(0);
            let to = current + room.min(want - current);
            if to != current {
                self.scale(d, api, &new, to, r).await?;
            }
        }
        // Old ReplicaSets: down, keeping `replicas - maxUnavailable` pods available.
        let new = r.new_rs.clone().unwrap_or(new);
        let mut old: Vec<Arc<ReplicaSet>> = r
            .all
            .iter()
            .filter(|x| x.uid() != new.uid() && replicas(x) > 0)
            .cloned()
            .collect();
        if old.is_empty() {
            return Ok(());
        }
        let all_pods: i32 = r.all.iter().map(|x| replicas(x)).sum();
        let min_available = want - unavailable;
        let new_unavailable = replicas(&new) - status_of(&new, |s| s.available_replicas);
        let mut budget = all_pods - min_available - new_unavailable.max(0);
        if budget <= 0 {
            return Ok(());
        }
        old.sort_by_key(|x| x.metadata.creation_timestamp.as_ref().map(|t| t.0));
        // First the old pods that are not available anyway.
        for rs in &old {
            if budget <= 0 {
                break;
            }
            let unhealthy = replicas(rs) - status_of(rs, |s| s.available_replicas);
            let cut = unhealthy.min(budget).max(0);
            if cut > 0 {
                self.scale(d, api, rs, replicas(rs) - cut, r).await?;
                budget -= cut;
            }
        }
        // Then available ones, while more than the minimum stay available.
        let available: i32 = r
            .all
            .iter()
            .map(|x| status_of(x, |s| s.available_replicas))
            .sum();
        let mut cut_total = (available - min_available).min(budget);
        for rs in &old {
            if cut_total <= 0 {
                break;
            }
            let Some(rs) = r.all.iter().find(|x| x.uid() == rs.uid()).cloned() else {
                continue;
            };
            let cut = replicas(&rs).min(cut_total);
            if cut > 0 {
                self.scale(d, api, &rs, replicas(&rs) - cut, r).await?;
                cut_total -= cut;
            }
        }
        Ok(())
    }

    pub(super) async fn recreate(
        &self,
        d: &Deployment,
        api: &Api<ReplicaSet>,
        r: &mut Rollout,
    ) -> Result<(), kube::Error> {
        let new_uid = r.new_rs.as_ref().and_then(|n| n.uid());
        let old: Vec<Arc<ReplicaSet>> = r
            .all
            .iter()
            .filter(|x| x.uid() != new_uid)
            .cloned()
            .collect();
        for rs in &old {
            if replicas(rs) > 0 {
                self.scale(d, api, rs, 0, r).await?;
            }
        }
        // Wait for the old pods to be gone before starting new ones.
        if old.iter().any(|rs| status_of(rs, |s| Some(s.replicas)) > 0) {
            return Ok(());
        }
        let want = d.spec.replicas.unwrap_or(1);
        let new = self.ensure_new(d, api, r, want).await?;
        if replicas(&new) != want {
            self.scale(d, api, &new, want, r).await?;
        }
        Ok(())
    }

    /// Deletes the oldest ReplicaSets beyond `revisionHistoryLimit` that run nothing.
    pub(super) async fn cleanup(&self, d: &Deployment, api: &Api<ReplicaSet>, r: &Rollout) {
        let limit = d.spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        let new_uid = r.new_rs.as_ref().and_then(|n| n.uid());
        let mut idle: Vec<&Arc<ReplicaSet>> = r
            .all
            .iter()
            .filter(|x| {
                x.uid() != new_uid && replicas(x) == 0 && status_of(x, |s| Some(s.replicas)) == 0
            })
            .filter(|x| x.metadata.deletion_timestamp.is_none())
            .collect();
        if idle.len() <= limit {
            return;
        }
        idle.sort_by_key(|x| revision(x));
        for rs in idle.iter().take(idle.len() - limit) {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: rs.uid(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            if let Err(e) = api.delete(&rs.name_any(), &dp).await {
                tracing::debug!(rs = %rs.name_any(), error = %e, "deleting an old replica set");
            }
        }
    }
}
