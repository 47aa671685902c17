//! A Job's pods: whether it has succeeded or failed, creating and deleting pods towards
//! `parallelism` (with the failure backoff), the pod made from the template, releasing the
//! tracking finalizer, writing the status, and the TTL after finishing.

use super::*;

impl Ctl {
    pub(super) fn verdict(
        &self,
        job: &Job,
        spec: &k8s_openapi::api::batch::v1::JobSpec,
        st: &JobStatus,
        pods: &[Arc<Pod>],
    ) -> Verdict {
        if let Some(c) = condition(job, "FailureTarget") {
            return Verdict::Failed(
                if c.reason.as_deref() == Some("PodFailurePolicy") {
                    "PodFailurePolicy"
                } else if c.reason.as_deref() == Some("DeadlineExceeded") {
                    "DeadlineExceeded"
                } else {
                    "BackoffLimitExceeded"
                },
                c.message.clone().unwrap_or_default(),
            );
        }
        if let Some(c) = st
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "FailureTarget")
        {
            return Verdict::Failed("PodFailurePolicy", c.message.clone().unwrap_or_default());
        }
        let uncounted = st.uncounted_terminated_pods.clone().unwrap_or_default();
        let failed =
            st.failed.unwrap_or(0) + uncounted.failed.as_ref().map_or(0, |f| f.len() as i32);
        let succeeded =
            st.succeeded.unwrap_or(0) + uncounted.succeeded.as_ref().map_or(0, |s| s.len() as i32);
        if failed > spec.backoff_limit.unwrap_or(6) {
            return Verdict::Failed(
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit".into(),
            );
        }
        if let (Some(deadline), Some(start)) =
            (spec.active_deadline_seconds, st.start_time.as_ref())
        {
            if !spec.suspend.unwrap_or(false)
                && Timestamp::now().duration_since(start.0).as_secs() >= deadline
            {
                return Verdict::Failed(
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline".into(),
                );
            }
        }
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        match spec.completions {
            Some(n) if indexed => {
                let done = expand(st.completed_indexes.as_deref().unwrap_or_default());
                if (0..n).all(|i| done.contains(&i)) {
                    return Verdict::Succeeded;
                }
            }
            Some(n) => {
                if succeeded >= n {
                    return Verdict::Succeeded;
                }
            }
            None => {
                let running = pods.iter().any(|p| !finished(p));
                if succeeded > 0 && !running {
                    return Verdict::Succeeded;
                }
            }
        }
        Verdict::Running
    }

    /// Creates or deletes pods towards `parallelism`; returns when to look again (backoff).
    pub(super) async fn manage(
        &self,
        job: &Job,
        spec: &k8s_openapi::api::batch::v1::JobSpec,
        st: &JobStatus,
        pods: &[Arc<Pod>],
        active: &[&Arc<Pod>],
        expect: &mut Expect,
    ) -> Result<Option<Duration>, kube::Error> {
        let parallelism = spec.parallelism.unwrap_or(1).max(0) as usize;
        let succeeded = st.succeeded.unwrap_or(0)
            + st.uncounted_terminated_pods
                .as_ref()
                .and_then(|u| u.succeeded.as_ref())
                .map_or(0, |s| s.len() as i32);
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        let want = match spec.completions {
            _ if indexed => parallelism,
            Some(n) => parallelism.min((n - succeeded).max(0) as usize),
            None if succeeded > 0 => 0,
            None => parallelism,
        };
        let api = self.api(job);
        if active.len() > want {
            let mut extra: Vec<&&Arc<Pod>> = active.iter().collect();
            extra.sort_by_key(|p| Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0)));
            for p in extra.into_iter().take(active.len() - want) {
                self.delete_pod(job, &api, p).await;
            }
            return Ok(None);
        }
        // Failed pods are replaced after a backoff: 10 s doubling per failure, up to 6 minutes.
        let failures = st.failed.unwrap_or(0)
            + st.uncounted_terminated_pods
                .as_ref()
                .and_then(|u| u.failed.as_ref())
                .map_or(0, |f| f.len() as i32);
        if failures > 0 {
            let last = pods
                .iter()
                .filter(|p| phase(p) == Some("Failed"))
                .filter_map(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0))
                .max();
            let delay = Duration::from_secs(10)
                .saturating_mul(1 << (failures - 1).min(6))
                .min(MAX_BACKOFF);
            if let Some(last) = last {
                let waited = Timestamp::now().duration_since(last).unsigned_abs();
                if waited < delay {
                    return Ok(Some(delay - waited + Duration::from_millis(100)));
                }
            }
        }
        let missing = want - active.len();
        if missing == 0 {
            return Ok(None);
        }
        let indexes: Vec<Option<i32>> = if indexed {
            let done = expand(st.completed_indexes.as_deref().unwrap_or_default());
            let running: HashSet<i32> = active.iter().filter_map(|p| index_of(p)).collect();
            (0..spec.completions.unwrap_or(0))
                .filter(|i| !done.contains(i) && !running.contains(i))
                .take(missing)
                .map(Some)
                .collect()
        } else {
            vec![None; missing]
        };
        expect.creations = indexes.len() as i64;
        expect.since = Some(Instant::now());
        for i in indexes {
            let pod = self.pod_for(job, i);
            match api.create(&PostParams::default(), &pod).await {
                Ok(p) => {
                    self.recorder
                        .record(
                            &events::reference(job),
                            Type::Normal,
                            "SuccessfulCreate",
                            &format!("Created pod: {}", p.name_any()),
                        )
                        .await
                }
                Err(e) => {
                    expect.creations = 0;
                    let msg = match &e {
                        kube::Error::Api(s) => s.message.clone(),
                        other => other.to_string(),
                    };
                    self.recorder
                        .record(
                            &events::reference(job),
                            Type::Warning,
                            "FailedCreate",
                            &format!("Error creating: {msg}"),
                        )
                        .await;
                    return Err(e);
                }
            }
        }
        Ok(None)
    }

    pub(super) fn pod_for(&self, job: &Job, index: Option<i32>) -> Pod {
        let name = job.name_any();
        let template = job
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let mut t = serde_json::to_value(&template).unwrap_or_default();
        let prefix = match index {
            Some(i) => format!("{name}-{i}-"),
            None => format!("{name}-"),
        };
        let mut meta = json!({
            "generateName": prefix,
            "namespace": job.namespace(),
            "labels": t["metadata"]["labels"],
            "annotations": t["metadata"]["annotations"],
            "finalizers": [TRACKING],
            "ownerReferences": [OwnerReference {
                api_version: "batch/v1".into(), kind: "Job".into(), name: name.clone(),
                uid: job.uid().unwrap_or_default(), controller: Some(true), block_owner_deletion: Some(true),
            }],
        });
        let mut spec = t["spec"].take();
        if let Some(i) = index {
            meta["annotations"][INDEX] = json!(i.to_string());
            meta["labels"][INDEX] = json!(i.to_string());
            spec["hostname"] = json!(format!("{name}-{i}"));
            let env = json!({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {"fieldPath": format!("metadata.annotations['{INDEX}']")}}});
            for field in ["containers", "initContainers"] {
                for c in spec
                    .get_mut(field)
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    match c["env"].as_array_mut() {
                        Some(list) => list.push(env.clone()),
                        None => c["env"] = json!([env.clone()]),
                    }
                }
            }
        }
        serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}),
        )
        .unwrap_or_default()
    }

    pub(super) async fn delete_pod(&self, job: &Job, api: &Api<Pod>, p: &Pod) {
        // What the controller deletes itself is not counted: released before it goes.
        if p.finalizers().iter().any(|f| f == TRACKING) {
            self.release(api, p).await;
        }
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
                        &events::reference(job),
                        Type::Normal,
                        "SuccessfulDelete",
                        &format!("Deleted pod: {}", p.name_any()),
                    )
                    .await
            }
            Err(e) => tracing::debug!(pod = %p.name_any(), error = %e, "deleting a job's pod"),
        }
    }

    /// Removes the tracking finalizer from a counted pod.
    pub(super) async fn release(&self, api: &Api<Pod>, p: &Pod) {
        let kept: Vec<&String> = p
            .finalizers()
            .iter()
            .filter(|f| f.as_str() != TRACKING)
            .collect();
        let patch =
            json!({"metadata": {"resourceVersion": p.resource_version(), "finalizers": kept}});
        if let Err(e) = api
            .patch(
                &p.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            tracing::debug!(pod = %p.name_any(), error = %e, "releasing a job's pod");
        }
    }

    pub(super) async fn write_if_changed(
        &self,
        job: &Job,
        old: &JobStatus,
        new: JobStatus,
    ) -> Result<(), kube::Error> {
        let norm = |s: &JobStatus| {
            let mut v = serde_json::to_value(s).unwrap_or_default();
            for k in ["active", "ready", "terminating", "succeeded", "failed"] {
                if v[k] == 0 {
                    v[k] = Value::Null;
                }
            }
            if let Some(m) = v.as_object_mut() {
                m.retain(|_, x| !x.is_null());
            }
            v
        };
        if norm(old) == norm(&new) {
            return Ok(());
        }
        self.write_status(job, new).await
    }

    pub(super) async fn write_status(
        &self,
        job: &Job,
        status: JobStatus,
    ) -> Result<(), kube::Error> {
        let mut whole = job.clone();
        whole.status = Some(status);
        let api: Api<Job> =
            Api::namespaced(self.writer.clone(), &job.namespace().unwrap_or_default());
        api.replace_status(&job.name_any(), &PostParams::default(), &whole)
            .await?;
        Ok(())
    }

    /// Deletes a finished Job once its `ttlSecondsAfterFinished` ran out.
    pub(super) async fn expire(&self, job: &Job) -> Result<Option<Duration>, kube::Error> {
        let (Some(ttl), Some(done)) = (
            job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished),
            finished_at(job),
        ) else {
            return Ok(None);
        };
        let left = i64::from(ttl) - Timestamp::now().duration_since(done).as_secs();
        if left > 0 {
            return Ok(Some(Duration::from_secs(left as u64)));
        }
        let api: Api<Job> = Api::namespaced(self.ttl.clone(), &job.namespace().unwrap_or_default());
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            preconditions: Some(Preconditions {
                uid: job.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&job.name_any(), &dp).await {
            Ok(_) => Ok(None),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(None),
            Err(e) => Err(e),
        }
    }
}
