//! A Deployment's status: the counts summed over its ReplicaSets and the Available and
//! Progressing conditions, with the progress deadline.

use super::*;

impl Ctl {
    pub(super) async fn update_status(
        &self,
        d: &Deployment,
        r: &Rollout,
    ) -> Result<Option<Duration>, kube::Error> {
        let want = d.spec.replicas.unwrap_or(1);
        let (_, unavailable) = surge_and_unavailable(d);
        let sum = |f: &dyn Fn(&ReplicaSet) -> i32| -> i32 { r.all.iter().map(|x| f(x)).sum() };
        let total = sum(&|x| status_of(x, |s| Some(s.replicas)));
        let ready = sum(&|x| status_of(x, |s| s.ready_replicas));
        let available = sum(&|x| status_of(x, |s| s.available_replicas));
        let updated = r
            .new_rs
            .as_ref()
            .map(|n| status_of(n, |s| Some(s.replicas)))
            .unwrap_or(0);
        let old = d.status.clone().unwrap_or_default();
        let now = Time(Timestamp::now());
        let mut conditions: Vec<Value> = old
            .conditions
            .iter()
            .flatten()
            .map(|c| serde_json::to_value(c).unwrap_or_default())
            .collect();
        let current = conditions
            .iter()
            .find(|c| c["type"] == "Progressing")
            .cloned();
        let mut set = |ty: &str, status: &str, reason: &str, message: String, progress: bool| {
            let existing = conditions.iter().position(|c| c["type"] == ty);
            let mut c = json!({"type": ty, "status": status, "reason": reason, "message": message,
                "lastUpdateTime": now, "lastTransitionTime": now});
            if let Some(i) = existing {
                let e = &conditions[i];
                if e["status"] == status {
                    c["lastTransitionTime"] = e["lastTransitionTime"].clone();
                    if e["reason"] == reason && e["message"] == c["message"] && !progress {
                        c["lastUpdateTime"] = e["lastUpdateTime"].clone();
                    }
                }
                conditions[i] = c;
            } else {
                conditions.push(c);
            }
        };
        if available >= want - unavailable {
            set(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
                false,
            );
        } else {
            set(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
                false,
            );
        }
        let paused = d.spec.paused.unwrap_or(false);
        let rs_name = r.new_rs.as_ref().map(|n| n.name_any()).unwrap_or_default();
        let complete = updated == want && total == want && available == want && r.new_rs.is_some();
        let progressed = old.updated_replicas.unwrap_or(0) != updated
            || old.ready_replicas.unwrap_or(0) != ready
            || old.available_replicas.unwrap_or(0) != available
            || old.replicas.unwrap_or(0) != total;
        let deadline = d.spec.progress_deadline_seconds.unwrap_or(600);
        let mut recheck = None;
        if paused {
            set(
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".into(),
                false,
            );
        } else if complete {
            set(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
                false,
            );
        } else if r.created {
            set(
                "Progressing",
                "True",
                "NewReplicaSetCreated",
                format!("Created new replica set \"{rs_name}\""),
                true,
            );
        } else if progressed
            || current.as_ref().is_none_or(|c| {
                c["reason"] == "DeploymentPaused" || c["reason"] == "NewReplicaSetAvailable"
            })
        {
            let reason = if current
                .as_ref()
                .is_some_and(|c| c["reason"] == "DeploymentPaused")
            {
                "DeploymentResumed"
            } else {
                "ReplicaSetUpdated"
            };
            let msg = if reason == "DeploymentResumed" {
                "Deployment is resumed".to_string()
            } else {
                format!("ReplicaSet \"{rs_name}\" is progressing.")
            };
            set(
                "Progressing",
                if reason == "DeploymentResumed" {
                    "Unknown"
                } else {
                    "True"
                },
                reason,
                msg,
                true,
            );
            recheck = Some(Duration::from_secs(deadline.max(1) as u64 + 1));
        } else if let Some(c) = &current {
            // No progress: past the deadline, the rollout has failed.
            let since = c["lastUpdateTime"]
                .as_str()
                .and_then(|t| t.parse::<Timestamp>().ok());
            let waited = since.map_or(0, |t| Timestamp::now().duration_since(t).as_secs());
            if c["reason"] != "ProgressDeadlineExceeded" {
                if waited > i64::from(deadline) {
                    set(
                        "Progressing",
                        "False",
                        "ProgressDeadlineExceeded",
                        format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
                        false,
                    );
                } else {
                    recheck = Some(Duration::from_secs(
                        (i64::from(deadline) - waited).max(0) as u64 + 1,
                    ));
                }
            }
        }
        let mut status = json!({
            "observedGeneration": d.metadata.generation,
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": available,
            "unavailableReplicas": (want - available).max(0),
            "conditions": conditions,
        });
        if let Some(c) = old.collision_count {
            status["collisionCount"] = json!(c);
        }
        let before = serde_json::to_value(&old).unwrap_or_default();
        let changed = [
            "observedGeneration",
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
            "unavailableReplicas",
            "conditions",
        ]
        .iter()
        .any(|k| {
            before[*k].as_i64().unwrap_or(0) != status[*k].as_i64().unwrap_or(0)
                || (*k == "conditions" && before[*k] != status[*k])
        });
        if changed {
            let api: Api<Deployment> =
                Api::namespaced(self.writer.clone(), &d.namespace().unwrap_or_default());
            // Zero counts are omitted on the wire, as upstream's omitempty does.
            for k in [
                "replicas",
                "updatedReplicas",
                "readyReplicas",
                "availableReplicas",
                "unavailableReplicas",
            ] {
                if status[k] == 0 {
                    status[k] = Value::Null;
                }
            }
            // Upstream's role grants `update` on the status, not `patch`.
            let mut whole = d.clone();
            whole.status = Some(serde_json::from_value(status).map_err(kube::Error::SerdeError)?);
            api.replace_status(&d.name_any(), &PostParams::default(), &whole)
                .await?;
        }
        Ok(recheck)
    }
}
