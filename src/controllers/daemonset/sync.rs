//! One pass over a DaemonSet: its revision, the pods each node should have (create, remove
//! failed, surplus and misplaced ones), the rolling update, and the status.

use k8s_openapi::api::apps::v1::DaemonSetStatus;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PostParams, Preconditions};
use serde_json::json;

use super::*;
use crate::controllers::history::{self, Owner, HASH_LABEL};
use crate::controllers::pod_state::{available, phase, ready_since, terminating};
use crate::events::{self, Type};

/// The most pods created in one pass (upstream's burstReplicas).
const BURST: usize = 250;

/// Resolves `maxUnavailable`/`maxSurge` against `total`, rounding percentages up.
fn resolve(v: Option<&IntOrString>, total: i32, default: i32) -> i32 {
    v.and_then(|v| crate::controllers::int_or_percent(v, total, true))
        .unwrap_or(default)
}

fn oldest_first(pods: &mut [Arc<Pod>]) {
    pods.sort_by_key(|p| (p.creation_timestamp().map(|t| t.0), p.name_any()));
}

impl Ctl {
    pub(super) async fn sync(
        &self,
        ds: &DaemonSet,
        nodes: &[Arc<Node>],
        by_node: BTreeMap<String, Vec<Arc<Pod>>>,
        revisions: Vec<Arc<ControllerRevision>>,
        expect: &mut Expectation,
    ) -> Result<Option<Duration>, kube::Error> {
        if ds.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let ns = ds.namespace().unwrap_or_default();
        let rev_api: Api<ControllerRevision> = Api::namespaced(self.writer.clone(), &ns);
        let pod_api: Api<Pod> = Api::namespaced(self.writer.clone(), &ns);
        let status = ds.status.clone().unwrap_or_default();
        let template = serde_json::to_value(&ds.spec.template).map_err(kube::Error::SerdeError)?;
        let owner = Owner::of(controller_ref(ds), &ns, &ds.spec.template, ds.annotations());
        let found = history::ensure(
            &rev_api,
            &owner,
            revisions,
            &template,
            status.collision_count.unwrap_or(0),
        )
        .await?;
        let hash = found
            .update
            .labels()
            .get(HASH_LABEL)
            .cloned()
            .unwrap_or_default();
        let generation = ds.metadata.generation.unwrap_or(0).to_string();
        let updated = |p: &Pod| match p.labels().get(REVISION_LABEL) {
            Some(h) => *h == hash,
            None => p.labels().get(GENERATION_LABEL) == Some(&generation),
        };

        let mut spec = ds.spec.template.spec.clone().unwrap_or_default();
        add_daemon_tolerations(&mut spec);
        let min_ready = i64::from(ds.spec.min_ready_seconds.unwrap_or(0).max(0));
        let now = Timestamp::now();
        let strategy = ds.spec.update_strategy.as_ref();
        let rolling = strategy
            .and_then(|s| s.type_.as_deref())
            .unwrap_or("RollingUpdate")
            == "RollingUpdate";
        let ru = strategy.and_then(|s| s.rolling_update.as_ref());

        let mut create_on: Vec<String> = Vec::new();
        let mut delete: Vec<Arc<Pod>> = Vec::new();
        // Per eligible node: its live pods, oldest first.
        let mut eligible: Vec<(String, Vec<Arc<Pod>>)> = Vec::new();
        let mut misscheduled = 0;
        for node in nodes {
            let name = node.name_any();
            let pods = by_node.get(&name).cloned().unwrap_or_default();
            let (run, stay) = should_run(&spec, node);
            let mut live: Vec<Arc<Pod>> = pods.into_iter().filter(|p| !terminating(p)).collect();
            oldest_first(&mut live);
            if run {
                let (failed, mut running): (Vec<_>, Vec<_>) =
                    live.into_iter().partition(|p| phase(p) == "Failed");
                for p in failed {
                    self.recorder
                        .record(
                            &events::reference(ds),
                            Type::Warning,
                            "FailedDaemonPod",
                            &format!(
                                "Found failed daemon pod {ns}/{} on node {name}, will try to kill it",
                                p.name_any()
                            ),
                        )
                        .await;
                    delete.push(p);
                }
                if running.is_empty() {
                    create_on.push(name.clone());
                } else if running.len() > 1 {
                    // With maxSurge an updated pod may stand beside the old one it replaces.
                    let surging = running.len() == 2
                        && rolling
                        && resolve(ru.and_then(|r| r.max_surge.as_ref()), 1, 0) > 0
                        && (updated(&running[0]) != updated(&running[1]));
                    if !surging {
                        delete.extend(running.drain(1..));
                    }
                }
                eligible.push((name, running));
            } else {
                if !live.is_empty() {
                    misscheduled += 1;
                }
                if !stay {
                    delete.extend(live);
                }
            }
        }
        let desired = eligible.len() as i32;

        if rolling && expect.satisfied() {
            let max_unavailable = resolve(ru.and_then(|r| r.max_unavailable.as_ref()), desired, 1);
            let max_surge = resolve(ru.and_then(|r| r.max_surge.as_ref()), desired, 0);
            self.roll(
                &eligible,
                &updated,
                (max_unavailable, max_surge),
                min_ready,
                now,
                &mut create_on,
                &mut delete,
            );
        }
        if expect.satisfied() {
            create_on.truncate(BURST);
            self.create(ds, &pod_api, &spec, &hash, &generation, create_on, expect)
                .await;
            self.delete(ds, &pod_api, delete, expect).await;
        }

        // The status, from each eligible node's oldest pod.
        let (mut current, mut ready, mut avail, mut upd) = (0, 0, 0, 0);
        let mut recheck: Option<Duration> = None;
        for (_, pods) in &eligible {
            let Some(p) = pods.first() else { continue };
            current += 1;
            if ready_since(p).is_some() {
                ready += 1;
            }
            let (ok, wait) = available(p, min_ready, now);
            if ok {
                avail += 1;
            } else if let Some(w) = wait {
                recheck = Some(recheck.map_or(w, |r: Duration| r.min(w)));
            }
            if pods.iter().any(|p| updated(p)) {
                upd += 1;
            }
        }
        let new = DaemonSetStatus {
            observed_generation: ds.metadata.generation,
            desired_number_scheduled: desired,
            current_number_scheduled: current,
            number_misscheduled: misscheduled,
            number_ready: ready,
            number_available: Some(avail),
            number_unavailable: Some(desired - avail),
            updated_number_scheduled: Some(upd),
            collision_count: Some(found.collisions),
            conditions: status.conditions.clone(),
        };
        let mut keep: HashSet<String> = [found.update.name_any()].into();
        for r in &found.all {
            let h = r.labels().get(HASH_LABEL);
            if by_node
                .values()
                .flatten()
                .any(|p| p.labels().get(REVISION_LABEL) == h)
            {
                keep.insert(r.name_any());
            }
        }
        let limit = ds.spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        history::prune(&rev_api, &found.all, &keep, limit).await;
        if new != status {
            let mut whole = ds.clone();
            whole.status = Some(new);
            let api: Api<DaemonSet> = Api::namespaced(self.writer.clone(), &ns);
            api.replace_status(&ds.name_any(), &PostParams::default(), &whole)
                .await?;
        }
        Ok(recheck)
    }

    /// Which old pods a rolling update replaces now (upstream's `rollingUpdate`).
    #[allow(clippy::too_many_arguments)]
    fn roll(
        &self,
        eligible: &[(String, Vec<Arc<Pod>>)],
        updated: &dyn Fn(&Pod) -> bool,
        (max_unavailable, max_surge): (i32, i32),
        min_ready: i64,
        now: Timestamp,
        create_on: &mut Vec<String>,
        delete: &mut Vec<Arc<Pod>>,
    ) {
        let ok = |p: &Pod| available(p, min_ready, now).0;
        let mut unavailable = 0;
        let mut candidates: Vec<&Arc<Pod>> = Vec::new();
        let mut surging = 0;
        for (node, pods) in eligible {
            let new = pods.iter().find(|p| updated(p));
            let old = pods.iter().find(|p| !updated(p));
            match (new, old) {
                (None, None) => unavailable += 1,
                (Some(n), None) => {
                    if !ok(n) {
                        unavailable += 1;
                    }
                }
                (Some(n), Some(o)) => {
                    // A surge pod: the old one goes once the new one is available.
                    surging += 1;
                    if ok(n) {
                        delete.push(o.clone());
                    }
                }
                (None, Some(o)) => {
                    if !ok(o) {
                        // Old and unavailable anyway: replace it at once.
                        unavailable += 1;
                        delete.push(o.clone());
                        if max_surge > 0 {
                            create_on.push(node.clone());
                        }
                    } else {
                        candidates.push(o);
                    }
                }
            }
        }
        if max_surge > 0 {
            for o in candidates {
                if surging >= max_surge {
                    break;
                }
                surging += 1;
                if let Some(n) = target_node(o) {
                    create_on.push(n);
                }
            }
        } else {
            for o in candidates {
                if unavailable >= max_unavailable {
                    break;
                }
                unavailable += 1;
                delete.push(o.clone());
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn create(
        &self,
        ds: &DaemonSet,
        api: &Api<Pod>,
        spec: &PodSpec,
        hash: &str,
        generation: &str,
        nodes: Vec<String>,
        expect: &mut Expectation,
    ) {
        if nodes.is_empty() {
            return;
        }
        let meta = ds.spec.template.metadata.clone().unwrap_or_default();
        let mut labels = meta.labels.clone().unwrap_or_default();
        labels.insert(REVISION_LABEL.into(), hash.into());
        labels.insert(GENERATION_LABEL.into(), generation.into());
        let mut base = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "generateName": format!("{}-", ds.name_any()),
                "namespace": ds.namespace(),
                "labels": labels,
                "annotations": meta.annotations,
                "finalizers": meta.finalizers,
                "ownerReferences": [controller_ref(ds)],
            },
            "spec": spec,
        });
        let preferred = base["spec"]["affinity"]["nodeAffinity"]
            ["preferredDuringSchedulingIgnoredDuringExecution"]
            .clone();
        expect.creates = nodes.iter().cloned().collect();
        expect.since = Some(Instant::now());
        let pp = &PostParams::default();
        let about = events::reference(ds);
        let mut failed_on: Vec<String> = Vec::new();
        for chunk in nodes.chunks(32) {
            let results = futures::future::join_all(chunk.iter().map(|node| {
                let mut na = json!({"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms":
                    [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}});
                if !preferred.is_null() {
                    na["preferredDuringSchedulingIgnoredDuringExecution"] = preferred.clone();
                }
                base["spec"]["affinity"]["nodeAffinity"] = na;
                let pod: Result<Pod, _> = serde_json::from_value::<Pod>(base.clone());
                async move {
                    match pod {
                        Ok(pod) => (node, api.create(pp, &pod).await),
                        Err(e) => (node, Err(kube::Error::SerdeError(e))),
                    }
                }
            }))
            .await;
            for (node, r) in results {
                match r {
                    Ok(p) => {
                        self.recorder
                            .record(
                                &about,
                                Type::Normal,
                                "SuccessfulCreate",
                                &format!("Created pod: {}", p.name_any()),
                            )
                            .await
                    }
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
                                &format!("Error creating: {msg}"),
                            )
                            .await;
                        failed_on.push(node.clone());
                    }
                }
            }
        }
        for n in failed_on {
            expect.creates.remove(&n);
        }
    }

    async fn delete(
        &self,
        ds: &DaemonSet,
        api: &Api<Pod>,
        pods: Vec<Arc<Pod>>,
        expect: &mut Expectation,
    ) {
        if pods.is_empty() {
            return;
        }
        expect.deletes = pods.iter().map(|p| p.uid().unwrap_or_default()).collect();
        expect.since = Some(Instant::now());
        let results = futures::future::join_all(pods.iter().map(|p| {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: p.uid(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            let name = p.name_any();
            async move { (api.delete(&name, &dp).await, name) }
        }))
        .await;
        for ((r, name), p) in results.into_iter().zip(&pods) {
            match r {
                Ok(_) => {
                    self.recorder
                        .record(
                            &events::reference(ds),
                            Type::Normal,
                            "SuccessfulDelete",
                            &format!("Deleted pod: {name}"),
                        )
                        .await
                }
                Err(e) => {
                    expect.deletes.remove(&p.uid().unwrap_or_default());
                    tracing::debug!(pod = %name, error = %e, "deleting a daemon pod");
                }
            }
        }
    }
}
