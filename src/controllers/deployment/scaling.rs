//! Scaling events, as upstream's `sync`: when a Deployment's `replicas` changes (or it is
//! paused), its active ReplicaSets are resized without starting or advancing a rollout. One
//! active ReplicaSet takes the whole count; during a rolling update the new `replicas +
//! maxSurge` is shared out in proportion to each ReplicaSet's size, read against the
//! `max-replicas` annotation it was last scaled under, the leftover going to the largest.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::Api;
use kube::ResourceExt;

use super::{replicas, status_of, surge_and_unavailable, Ctl, Rollout, DESIRED, MAX_REPLICAS};

fn annotation(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.annotations().get(key).and_then(|v| v.parse().ok())
}

/// Whether an active ReplicaSet was last sized for another `replicas` than the Deployment's.
pub(super) fn is_scaling_event(d: &Deployment, r: &Rollout) -> bool {
    let want = d.spec.replicas.unwrap_or(1);
    r.all
        .iter()
        .filter(|rs| replicas(rs) > 0)
        .any(|rs| annotation(rs, DESIRED).is_some_and(|n| n != want))
}

/// The new size of each ReplicaSet (same order as `sets`, all active) when `replicas + maxSurge`
/// is shared out in proportion, as upstream's `GetProportion`.
fn proportional(d: &Deployment, sets: &[Arc<ReplicaSet>]) -> Vec<i32> {
    let want = d.spec.replicas.unwrap_or(1);
    let (surge, _) = surge_and_unavailable(d);
    let allowed = if want > 0 { want + surge } else { 0 };
    let total: i32 = sets.iter().map(|rs| replicas(rs)).sum();
    let to_add = allowed - total;
    let status_replicas = d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let mut added = 0;
    let mut sizes: Vec<i32> = Vec::with_capacity(sets.len());
    for rs in sets {
        let size = replicas(rs);
        let mut share = 0;
        if to_add != 0 && size != 0 && to_add != added {
            let fraction = if want == 0 {
                -size
            } else {
                let before = annotation(rs, MAX_REPLICAS)
                    .filter(|n| *n != 0)
                    .unwrap_or(status_replicas);
                if before == 0 {
                    0
                } else {
                    ((size as f64) * (allowed as f64) / (before as f64)).round() as i32 - size
                }
            };
            let left = to_add - added;
            share = if to_add > 0 {
                fraction.min(left)
            } else {
                fraction.max(left)
            };
        }
        added += share;
        sizes.push(size + share);
    }
    if let Some(first) = sizes.first_mut() {
        *first = (*first + to_add - added).max(0);
    }
    sizes
}

impl Ctl {
    /// Resizes the active ReplicaSets to the Deployment's `replicas` (a scaling event, or any
    /// sync of a paused Deployment).
    pub(super) async fn sync_scale(
        &self,
        d: &Deployment,
        api: &Api<ReplicaSet>,
        r: &mut Rollout,
    ) -> Result<(), kube::Error> {
        let want = d.spec.replicas.unwrap_or(1);
        let new_uid = r.new_rs.as_ref().and_then(|n| n.uid());
        let mut active: Vec<Arc<ReplicaSet>> = r
            .all
            .iter()
            .filter(|rs| replicas(rs) > 0)
            .cloned()
            .collect();
        // One active ReplicaSet (or none: the newest) takes the whole count.
        let only = match active.len() {
            0 => r.new_rs.clone().or_else(|| {
                r.all
                    .iter()
                    .max_by_key(|rs| rs.metadata.creation_timestamp.as_ref().map(|t| t.0))
                    .cloned()
            }),
            1 => active.first().cloned(),
            _ => None,
        };
        if let Some(rs) = only {
            return self.scale(d, api, &rs, want, r).await;
        }
        // The new ReplicaSet saturated: the old ones go to zero.
        if let Some(new) = r.new_rs.clone() {
            if replicas(&new) == want
                && annotation(&new, DESIRED) == Some(want)
                && status_of(&new, |s| s.available_replicas) == want
            {
                for rs in active.iter().filter(|rs| rs.uid() != new_uid) {
                    self.scale(d, api, rs, 0, r).await?;
                }
                return Ok(());
            }
        }
        let rolling = d.spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) != Some("Recreate");
        if !rolling {
            return Ok(());
        }
        let (surge, _) = surge_and_unavailable(d);
        let allowed = if want > 0 { want + surge } else { 0 };
        let total: i32 = active.iter().map(|rs| replicas(rs)).sum();
        // Larger first; on a tie newer first when growing, older first when shrinking.
        let created = |rs: &ReplicaSet| rs.metadata.creation_timestamp.as_ref().map(|t| t.0);
        if allowed > total {
            active.sort_by(|a, b| {
                replicas(b)
                    .cmp(&replicas(a))
                    .then_with(|| created(b).cmp(&created(a)))
            });
        } else {
            active.sort_by(|a, b| {
                replicas(b)
                    .cmp(&replicas(a))
                    .then_with(|| created(a).cmp(&created(b)))
            });
        }
        let sizes = proportional(d, &active);
        for (rs, size) in active.iter().zip(sizes) {
            self.scale(d, api, rs, size, r).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(replicas: i32, surge: i32) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "d"},
            "spec": {
                "replicas": replicas,
                "selector": {},
                "template": {},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": 0}},
            },
            "status": {"replicas": 13},
        }))
        .expect("deployment")
    }

    fn rs(size: i32, max: i32) -> Arc<ReplicaSet> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": format!("rs-{size}"), "annotations": {MAX_REPLICAS: max.to_string()}},
                "spec": {"replicas": size, "selector": {}},
            }))
            .expect("replicaset"),
        )
    }

    #[test]
    fn shares_follow_the_sizes_and_the_leftover_goes_to_the_largest() {
        // upstream's documented example: 10 replicas, maxSurge 3, mid-rollout 8 old + 5 new;
        // scaled to 15 the 18 allowed pods split 11 old + 7 new.
        let sets = [rs(8, 13), rs(5, 13)];
        assert_eq!(proportional(&deployment(15, 3), &sets), vec![11, 7]);
        // Down to 5: 8 allowed.
        assert_eq!(proportional(&deployment(5, 3), &sets), vec![5, 3]);
        // Down to zero: nothing is left.
        assert_eq!(proportional(&deployment(0, 3), &sets), vec![0, 0]);
    }

    #[test]
    fn a_set_without_the_annotation_reads_the_deployment_status() {
        let sets = [rs(8, 0), rs(5, 0)];
        assert_eq!(proportional(&deployment(15, 3), &sets), vec![11, 7]);
    }
}
