//! One pass over a StatefulSet: its revisions, then its pods in ordinal order (create, replace
//! failed ones, wait for health when ordered), surplus pods from the top, the rolling update,
//! and the status.

use k8s_openapi::api::apps::v1::StatefulSetStatus;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::{json, Value};

use super::*;
use crate::controllers::history::{self, Owner};
use crate::controllers::pod_state::{available, phase, running_and_ready, terminating};
use crate::events::{self, Type};

/// What a pass counted, for the status.
#[derive(Default)]
struct Counts {
    replicas: i32,
    ready: i32,
    available: i32,
    current: i32,
    updated: i32,
    recheck: Option<Duration>,
}

fn revision_of(pod: &Pod) -> Option<&str> {
    pod.labels().get(REVISION_LABEL).map(String::as_str)
}

fn healthy(pod: &Pod) -> bool {
    running_and_ready(pod) && !terminating(pod)
}

/// The rolling update's maxUnavailable (default 1, percentages of `replicas` rounded up, at
/// least 1).
fn max_unavailable(set: &StatefulSet, replicas: i32) -> i32 {
    set.spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.as_ref())
        .and_then(|v| crate::controllers::int_or_percent(v, replicas, true))
        .unwrap_or(1)
        .max(1)
}

impl Ctl {
    pub(super) async fn sync(
        &self,
        set: &StatefulSet,
        pods: Vec<Arc<Pod>>,
        revisions: Vec<Arc<ControllerRevision>>,
    ) -> Result<Option<Duration>, kube::Error> {
        if set.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let ns = set.namespace().unwrap_or_default();
        let name = set.name_any();
        let pod_api: Api<Pod> = Api::namespaced(self.writer.clone(), &ns);
        let rev_api: Api<ControllerRevision> = Api::namespaced(self.writer.clone(), &ns);
        let reference = controller_ref(set);
        for p in pods.iter().filter(|p| orphan(p.as_ref())) {
            let patch = json!({"metadata": {"uid": p.uid(), "ownerReferences": [reference]}});
            if let Err(e) = pod_api
                .patch(
                    &p.name_any(),
                    &PatchParams::default(),
                    &Patch::Strategic(&patch),
                )
                .await
            {
                tracing::debug!(pod = %p.name_any(), error = %e, "adopting a pod");
            }
        }
        let status = set.status.clone().unwrap_or_default();
        let template = serde_json::to_value(&set.spec.template).map_err(kube::Error::SerdeError)?;
        let owner = Owner::of(
            reference.clone(),
            &ns,
            &set.spec.template,
            set.annotations(),
        );
        let found = history::ensure(
            &rev_api,
            &owner,
            revisions,
            &template,
            status.collision_count.unwrap_or(0),
        )
        .await?;
        let update = found.update.clone();
        let current = found
            .all
            .iter()
            .find(|r| Some(r.name_any()) == status.current_revision)
            .cloned()
            .unwrap_or_else(|| update.clone());

        let replicas = set.spec.replicas.unwrap_or(1).max(0);
        let start = set
            .spec
            .ordinals
            .as_ref()
            .and_then(|o| o.start)
            .unwrap_or(0)
            .max(0);
        let mut slots: Vec<Option<Arc<Pod>>> = vec![None; replicas as usize];
        let mut condemned: Vec<(i32, Arc<Pod>)> = Vec::new();
        for p in &pods {
            let Some(i) = ordinal(&name, &p.name_any()) else {
                continue;
            };
            if i >= start && i < start + replicas {
                slots[(i - start) as usize] = Some(p.clone());
            } else {
                condemned.push((i, p.clone()));
            }
        }
        condemned.sort_by_key(|(i, _)| std::cmp::Reverse(*i));

        let min_ready = i64::from(set.spec.min_ready_seconds.unwrap_or(0).max(0));
        let now = Timestamp::now();
        let mut counts = Counts::default();
        for p in &pods {
            self.count(
                p,
                &current.name_any(),
                &update.name_any(),
                min_ready,
                now,
                &mut counts,
            );
        }

        let ordered = set.spec.pod_management_policy.as_deref() != Some("Parallel");
        let rolling = set
            .spec
            .update_strategy
            .as_ref()
            .and_then(|u| u.type_.as_deref())
            .unwrap_or("RollingUpdate")
            == "RollingUpdate";
        let partition = if rolling {
            set.spec
                .update_strategy
                .as_ref()
                .and_then(|u| u.rolling_update.as_ref())
                .and_then(|r| r.partition)
                .unwrap_or(0)
                .clamp(0, replicas)
        } else {
            0
        };
        let first_unhealthy = slots
            .iter()
            .flatten()
            .chain(condemned.iter().map(|(_, p)| p))
            .find(|p| !healthy(p))
            .map(|p| p.name_any());

        let mut blocked = false;
        for (k, slot) in slots.iter().enumerate() {
            let i = start + k as i32;
            if let Some(p) = slot {
                if matches!(phase(p), "Failed" | "Succeeded") && !terminating(p) {
                    self.delete_pod(set, &pod_api, p).await;
                    if ordered {
                        blocked = true;
                        break;
                    }
                    continue;
                }
                if ordered && !healthy(p) {
                    blocked = true;
                    break;
                }
                if ordered {
                    let (ok, wait) = available(p, min_ready, now);
                    if !ok {
                        counts.recheck = wait.or(counts.recheck);
                        blocked = true;
                        break;
                    }
                }
                continue;
            }
            // Pods below the partition keep the current revision when created again.
            let rev = if rolling && i < start + partition {
                &current
            } else {
                &update
            };
            self.create_pod(set, &pod_api, rev, i).await?;
            counts.replicas += 1;
            if rev.name_any() == current.name_any() {
                counts.current += 1;
            }
            if rev.name_any() == update.name_any() {
                counts.updated += 1;
            }
            if ordered {
                blocked = true;
                break;
            }
        }
        if !blocked {
            for (_, p) in &condemned {
                if terminating(p) {
                    if ordered {
                        blocked = true;
                        break;
                    }
                    continue;
                }
                if ordered && first_unhealthy.as_ref().is_some_and(|u| *u != p.name_any()) {
                    blocked = true;
                    break;
                }
                self.release_claims(set, p).await;
                self.delete_pod(set, &pod_api, p).await;
                if ordered {
                    blocked = true;
                    break;
                }
            }
        }
        if !blocked && rolling {
            // Outdated pods go from the top down to the partition, as many at once as
            // maxUnavailable allows with the unhealthy ones counted.
            let max_unavailable = max_unavailable(set, replicas);
            let unavailable = slots
                .iter()
                .filter(|p| {
                    !p.as_ref()
                        .is_some_and(|p| healthy(p) && available(p, min_ready, now).0)
                })
                .count() as i32;
            let mut budget = max_unavailable - unavailable;
            for k in (partition..replicas).rev() {
                if budget <= 0 {
                    break;
                }
                let Some(p) = &slots[k as usize] else {
                    continue;
                };
                if revision_of(p) != Some(update.name_any().as_str()) && !terminating(p) {
                    self.delete_pod(set, &pod_api, p).await;
                    budget -= 1;
                }
            }
        }

        let mut keep: HashSet<String> = [current.name_any(), update.name_any()].into();
        keep.extend(pods.iter().filter_map(|p| revision_of(p).map(String::from)));
        let limit = set.spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        history::prune(&rev_api, &found.all, &keep, limit).await;

        self.write_status(set, &status, &counts, &current, &update, found.collisions)
            .await?;
        Ok(counts.recheck)
    }

    fn count(
        &self,
        p: &Pod,
        current: &str,
        update: &str,
        min_ready: i64,
        now: Timestamp,
        c: &mut Counts,
    ) {
        if phase(p).is_empty() {
            return;
        }
        c.replicas += 1;
        if running_and_ready(p) {
            c.ready += 1;
            let (ok, wait) = available(p, min_ready, now);
            if ok {
                c.available += 1;
            } else if let Some(w) = wait {
                c.recheck = Some(c.recheck.map_or(w, |r| r.min(w)));
            }
        }
        if !terminating(p) {
            if revision_of(p) == Some(current) {
                c.current += 1;
            }
            if revision_of(p) == Some(update) {
                c.updated += 1;
            }
        }
    }

    async fn create_pod(
        &self,
        set: &StatefulSet,
        api: &Api<Pod>,
        rev: &ControllerRevision,
        i: i32,
    ) -> Result<(), kube::Error> {
        let name = format!("{}-{i}", set.name_any());
        let template = history::template_of(rev);
        let mut pod_labels: BTreeMap<String, String> =
            serde_json::from_value(template["metadata"]["labels"].clone()).unwrap_or_default();
        pod_labels.insert(POD_NAME_LABEL.into(), name.clone());
        pod_labels.insert(POD_INDEX_LABEL.into(), i.to_string());
        pod_labels.insert(REVISION_LABEL.into(), rev.name_any());
        let mut spec = template["spec"].clone();
        spec["hostname"] = json!(name);
        if let Some(svc) = set.spec.service_name.as_deref().filter(|s| !s.is_empty()) {
            spec["subdomain"] = json!(svc);
        }
        for claim in set.spec.volume_claim_templates.iter().flatten() {
            let vol = claim.name_any();
            let volume = json!({"name": vol, "persistentVolumeClaim":
                {"claimName": format!("{vol}-{name}")}});
            let volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
            let mut volumes: Vec<Value> =
                volumes.into_iter().filter(|v| v["name"] != vol).collect();
            volumes.push(volume);
            spec["volumes"] = json!(volumes);
        }
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": set.namespace(),
                "labels": pod_labels,
                "annotations": template["metadata"]["annotations"],
                "finalizers": template["metadata"]["finalizers"],
                "ownerReferences": [controller_ref(set)],
            },
            "spec": spec,
        });
        let pod: Pod = serde_json::from_value(pod).map_err(kube::Error::SerdeError)?;
        self.create_claims(set, &name).await?;
        let about = events::reference(set);
        match api.create(&PostParams::default(), &pod).await {
            Ok(_) => {
                self.recorder
                    .record(
                        &about,
                        Type::Normal,
                        "SuccessfulCreate",
                        &format!(
                            "create Pod {name} in StatefulSet {} successful",
                            set.name_any()
                        ),
                    )
                    .await;
                Ok(())
            }
            // Still there from before (terminating, or not yet in the watch): wait for it.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => {
                let msg = match &e {
                    kube::Error::Api(s) => s.message.clone(),
                    other => other.to_string(),
                };
                self.recorder
                    .record(
                        &about,
                        Type::Warning,
                        "FailedCreate",
                        &format!(
                            "create Pod {name} in StatefulSet {} failed error: {msg}",
                            set.name_any()
                        ),
                    )
                    .await;
                Err(e)
            }
        }
    }

    async fn delete_pod(&self, set: &StatefulSet, api: &Api<Pod>, p: &Pod) {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: p.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&p.name_any(), &dp).await {
            Ok(_) => {
                self.recorder
                    .record(
                        &events::reference(set),
                        Type::Normal,
                        "SuccessfulDelete",
                        &format!(
                            "delete Pod {} in StatefulSet {} successful",
                            p.name_any(),
                            set.name_any()
                        ),
                    )
                    .await
            }
            Err(e) => tracing::debug!(pod = %p.name_any(), error = %e, "deleting a pod"),
        }
    }

    async fn write_status(
        &self,
        set: &StatefulSet,
        old: &StatefulSetStatus,
        c: &Counts,
        current: &ControllerRevision,
        update: &ControllerRevision,
        collisions: i32,
    ) -> Result<(), kube::Error> {
        let rolling = set
            .spec
            .update_strategy
            .as_ref()
            .and_then(|u| u.type_.as_deref())
            .unwrap_or("RollingUpdate")
            == "RollingUpdate";
        let (mut current_name, mut current_count) = (current.name_any(), c.current);
        // A finished rolling update makes the update revision the current one.
        if rolling && c.updated == c.replicas && c.ready == c.replicas {
            current_name = update.name_any();
            current_count = c.updated;
        }
        let status = StatefulSetStatus {
            observed_generation: set.metadata.generation,
            replicas: c.replicas,
            ready_replicas: Some(c.ready),
            available_replicas: Some(c.available),
            current_replicas: Some(current_count),
            updated_replicas: Some(c.updated),
            current_revision: Some(current_name),
            update_revision: Some(update.name_any()),
            collision_count: Some(collisions),
            conditions: old.conditions.clone(),
        };
        if &status == old {
            return Ok(());
        }
        let mut whole = set.clone();
        whole.status = Some(status);
        let api: Api<StatefulSet> =
            Api::namespaced(self.writer.clone(), &set.namespace().unwrap_or_default());
        api.replace_status(&set.name_any(), &PostParams::default(), &whole)
            .await?;
        Ok(())
    }
}
