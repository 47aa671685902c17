//! The Job controller, as upstream's: a Job runs pods from its template until `completions`
//! succeed (or, without `completions`, until one succeeds and the rest stop), at most
//! `parallelism` at a time, with NonIndexed or Indexed completion (`JOB_COMPLETION_INDEX`, the
//! `batch.kubernetes.io/job-completion-index` annotation and label, hostname `NAME-INDEX`).
//! It fails the Job past `backoffLimit` failed pods, past `activeDeadlineSeconds`, or on a
//! `podFailurePolicy` FailJob rule (Ignore rules do not count a failure), honours `suspend`,
//! recreates failed pods after an exponential backoff (10 s doubling to 6 min), and counts pods
//! through the `batch.kubernetes.io/job-tracking` finalizer and `uncountedTerminatedPods`, so a
//! pod deleted right after finishing is still counted exactly once. Finished Jobs with
//! `ttlSecondsAfterFinished` are deleted when it runs out (the TTL-after-finished controller).

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy,
};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::pacer::Pacer;
use crate::events::{self, Recorder, Type};
use crate::informer::Informer;

mod pods;

pub const TRACKING: &str = "batch.kubernetes.io/job-tracking";
pub const INDEX: &str = "batch.kubernetes.io/job-completion-index";
const MAX_BACKOFF: Duration = Duration::from_secs(360);

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}

fn finished(pod: &Pod) -> bool {
    matches!(phase(pod), Some("Succeeded" | "Failed"))
}

fn index_of(pod: &Pod) -> Option<i32> {
    pod.annotations().get(INDEX).and_then(|i| i.parse().ok())
}

fn condition<'a>(job: &'a Job, ty: &str) -> Option<&'a JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == ty && c.status == "True")
}

/// When a Job finished (Complete or Failed), if it did.
fn finished_at(job: &Job) -> Option<Timestamp> {
    ["Complete", "Failed"].iter().find_map(|t| {
        condition(job, t).map(|c| {
            c.last_transition_time
                .as_ref()
                .map_or(Timestamp::now(), |t| t.0)
        })
    })
}

/// `0-2,4,6-7`, as upstream writes completed indexes.
pub fn compress(indexes: &BTreeSet<i32>) -> String {
    let mut parts = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

fn expand(s: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.parse::<i32>().ok()),
        }
    }
    out
}

/// What a failed pod's `podFailurePolicy` says: (action, rule index), if a rule matches.
fn failure_rule(job: &Job, pod: &Pod) -> Option<(String, usize)> {
    let policy = job.spec.as_ref()?.pod_failure_policy.as_ref()?;
    let status = pod.status.as_ref()?;
    for (i, rule) in policy.rules.iter().enumerate() {
        if let Some(codes) = &rule.on_exit_codes {
            let hit = status.container_statuses.iter().flatten().any(|c| {
                if codes.container_name.as_deref().is_some_and(|n| n != c.name) {
                    return false;
                }
                let Some(code) = c
                    .state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .map(|t| t.exit_code)
                else {
                    return false;
                };
                if code == 0 {
                    return false;
                }
                match codes.operator.as_str() {
                    "In" => codes.values.contains(&code),
                    "NotIn" => !codes.values.contains(&code),
                    _ => false,
                }
            });
            if hit {
                return Some((rule.action.clone(), i));
            }
        }
        for pattern in rule.on_pod_conditions.iter().flatten() {
            let want = pattern.status.as_deref().unwrap_or("True");
            if status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == pattern.type_ && c.status == want)
            {
                return Some((rule.action.clone(), i));
            }
        }
    }
    None
}

struct Ctl {
    writer: Client,
    ttl: Client,
    recorder: Recorder,
}

/// Runs until `stop` turns true.
pub async fn run(
    shared: Client,
    pod_informer: Informer<Pod>,
    writer: Client,
    ttl: Client,
    mut stop: watch::Receiver<bool>,
) {
    let mut job_events = watcher(Api::<Job>::all(shared.clone()), Default::default())
        .default_backoff()
        .boxed();
    let mut pod_events = pod_informer.subscribe();
    let ctl = Ctl {
        recorder: Recorder::new(writer.clone(), "job-controller", None),
        writer,
        ttl,
    };
    let mut jobs: HashMap<String, Arc<Job>> = HashMap::new();
    let mut pods: HashMap<String, HashMap<String, Arc<Pod>>> = HashMap::new(); // job uid -> pods
    let (mut job_init, mut pod_init) = (HashMap::new(), Vec::new());
    let (mut jobs_synced, mut pods_synced) = (false, false);
    let mut dirty: HashSet<String> = HashSet::new();
    let mut pacer: Pacer<String> = Pacer::default();
    // Pods created and not yet seen, per Job: no more are made until they show up.
    let mut expect: HashMap<String, Expect> = HashMap::new();
    let owner = |p: &Pod| -> Option<String> {
        p.owner_references()
            .iter()
            .find(|r| r.controller == Some(true) && r.kind == "Job")
            .map(|r| r.uid.clone())
    };
    loop {
        pacer.arm(!dirty.is_empty());
        tokio::select! {
            ev = job_events.next() => match ev {
                Some(Ok(watcher::Event::Init)) => job_init.clear(),
                Some(Ok(watcher::Event::InitApply(j))) => { job_init.insert(j.uid().unwrap_or_default(), Arc::new(j)); }
                Some(Ok(watcher::Event::InitDone)) => {
                    jobs = std::mem::take(&mut job_init);
                    dirty.extend(jobs.keys().cloned());
                    jobs_synced = true;
                }
                Some(Ok(watcher::Event::Apply(j))) => {
                    let uid = j.uid().unwrap_or_default();
                    jobs.insert(uid.clone(), Arc::new(j));
                    dirty.insert(uid);
                }
                Some(Ok(watcher::Event::Delete(j))) => {
                    let uid = j.uid().unwrap_or_default();
                    jobs.remove(&uid);
                    expect.remove(&uid);
                }
                Some(Err(_)) => continue,
                None => return,
            },
            ev = pod_events.next() => match ev {
                Some(watcher::Event::Init) => pod_init.clear(),
                Some(watcher::Event::InitApply(p)) => pod_init.push(p),
                Some(watcher::Event::InitDone) => {
                    pods.clear();
                    for p in std::mem::take(&mut pod_init) {
                        if let Some(o) = owner(&p) {
                            pods.entry(o).or_default().insert(p.uid().unwrap_or_default(), p);
                        }
                    }
                    pods_synced = true;
                    dirty.extend(jobs.keys().cloned());
                }
                Some(watcher::Event::Apply(p)) => {
                    if let Some(o) = owner(&p) {
                        let seen = pods.entry(o.clone()).or_default().insert(p.uid().unwrap_or_default(), p);
                        if seen.is_none() {
                            if let Some(e) = expect.get_mut(&o) {
                                e.creations -= 1;
                            }
                        }
                        dirty.insert(o);
                    }
                }
                Some(watcher::Event::Delete(p)) => {
                    if let Some(o) = owner(&p) {
                        if let Some(m) = pods.get_mut(&o) {
                            m.remove(&p.uid().unwrap_or_default());
                        }
                        dirty.insert(o);
                    }
                }
                None => return,
            },
            due = pacer.next() => dirty.extend(due),
            _ = stop.changed() => return,
        }
        if !(jobs_synced && pods_synced && pacer.ready(!dirty.is_empty())) {
            continue;
        }
        for uid in std::mem::take(&mut dirty) {
            let Some(job) = jobs.get(&uid).cloned() else {
                pods.remove(&uid);
                continue;
            };
            let mine: Vec<Arc<Pod>> = pods
                .get(&uid)
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default();
            let e = expect.entry(uid.clone()).or_default();
            match ctl.sync(&job, &mine, e).await {
                Ok(Some(after)) => pacer.after(uid, after),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(job = %job.name_any(), error = %e, "syncing a job");
                    let after = if matches!(&e, kube::Error::Api(s) if s.code == 409) {
                        Duration::from_millis(50)
                    } else {
                        Duration::from_secs(1)
                    };
                    pacer.after(uid, after);
                }
            }
        }
    }
}

/// Pods a Job's controller created and has not seen in its watch yet.
#[derive(Default)]
struct Expect {
    creations: i64,
    since: Option<Instant>,
}

impl Expect {
    fn met(&self) -> bool {
        self.creations <= 0
            || self
                .since
                .is_some_and(|t| t.elapsed() > Duration::from_secs(300))
    }
}

/// The outcome a sync reached.
enum Verdict {
    Running,
    Failed(&'static str, String),
    Succeeded,
}

impl Ctl {
    fn api(&self, job: &Job) -> Api<Pod> {
        Api::namespaced(self.writer.clone(), &job.namespace().unwrap_or_default())
    }

    async fn sync(
        &self,
        job: &Job,
        pods: &[Arc<Pod>],
        expect: &mut Expect,
    ) -> Result<Option<Duration>, kube::Error> {
        if job.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let spec = job.spec.clone().unwrap_or_default();
        let status = job.status.clone().unwrap_or_default();
        let pod_api = self.api(job);
        let mut uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
        let mut known: HashSet<String> = uncounted
            .succeeded
            .iter()
            .flatten()
            .chain(uncounted.failed.iter().flatten())
            .cloned()
            .collect();
        // 1. Finished pods still carrying the tracking finalizer are recorded as uncounted.
        let mut policy_failure: Option<String> = None;
        let mut recorded = false;
        let gone = |p: &Pod| finished(p) || p.metadata.deletion_timestamp.is_some();
        for p in pods
            .iter()
            .filter(|p| gone(p) && p.finalizers().iter().any(|f| f == TRACKING))
        {
            let uid = p.uid().unwrap_or_default();
            if known.contains(&uid) {
                continue;
            }
            let list = if phase(p) == Some("Succeeded") {
                uncounted.succeeded.get_or_insert_with(Vec::new)
            } else {
                match failure_rule(job, p) {
                    Some((action, _)) if action == "Ignore" => {
                        // Not a failure: only released.
                        self.release(&pod_api, p).await;
                        continue;
                    }
                    Some((action, i)) if action == "FailJob" => {
                        let container = p
                            .status
                            .as_ref()
                            .and_then(|s| s.container_statuses.as_ref())
                            .and_then(|c| {
                                c.iter().find(|c| {
                                    c.state
                                        .as_ref()
                                        .and_then(|s| s.terminated.as_ref())
                                        .is_some_and(|t| t.exit_code != 0)
                                })
                            });
                        policy_failure = Some(match container {
                            Some(c) => format!(
                                "Container {} for pod {}/{} failed with exit code {} matching FailJob rule at index {i}",
                                c.name,
                                p.namespace().unwrap_or_default(),
                                p.name_any(),
                                c.state.as_ref().and_then(|s| s.terminated.as_ref()).map_or(0, |t| t.exit_code)
                            ),
                            None => format!("Pod {}/{} has condition matching FailJob rule at index {i}", p.namespace().unwrap_or_default(), p.name_any()),
                        });
                        uncounted.failed.get_or_insert_with(Vec::new)
                    }
                    _ => uncounted.failed.get_or_insert_with(Vec::new),
                }
            };
            list.push(uid.clone());
            known.insert(uid);
            recorded = true;
        }
        let mut new_status = status.clone();
        if recorded {
            new_status.uncounted_terminated_pods = Some(uncounted.clone());
            if let Some(msg) = policy_failure {
                set_condition(&mut new_status, "FailureTarget", "PodFailurePolicy", &msg);
            }
            self.write_status(job, new_status).await?;
            return Ok(None); // the status event brings the next step
        }
        // 2. Recorded pods give up their finalizer; 3. released ones move into the counts.
        let by_uid: HashMap<String, &Arc<Pod>> = pods
            .iter()
            .map(|p| (p.uid().unwrap_or_default(), p))
            .collect();
        for (list, count) in [
            (&mut uncounted.succeeded, &mut new_status.succeeded),
            (&mut uncounted.failed, &mut new_status.failed),
        ] {
            let mut keep = Vec::new();
            for uid in list.take().unwrap_or_default() {
                match by_uid.get(&uid) {
                    Some(p) if p.finalizers().iter().any(|f| f == TRACKING) => {
                        self.release(&pod_api, p).await;
                        keep.push(uid);
                    }
                    _ => *count = Some(count.unwrap_or(0) + 1),
                }
            }
            *list = Some(keep);
        }
        new_status.uncounted_terminated_pods = Some(uncounted);
        if spec.completion_mode.as_deref() == Some("Indexed") {
            let mut done = expand(status.completed_indexes.as_deref().unwrap_or_default());
            for p in pods.iter().filter(|p| phase(p) == Some("Succeeded")) {
                if let Some(i) = index_of(p) {
                    done.insert(i);
                }
            }
            let text = compress(&done);
            if status.completed_indexes.as_deref().unwrap_or_default() != text {
                new_status.completed_indexes = Some(text);
            }
        }
        // Finished Jobs only release pods, and go when their TTL runs out.
        if finished_at(job).is_some() {
            self.write_if_changed(job, &status, new_status).await?;
            return self.expire(job).await;
        }
        let verdict = self.verdict(job, &spec, &new_status, pods);
        let active: Vec<&Arc<Pod>> = pods
            .iter()
            .filter(|p| !finished(p) && p.metadata.deletion_timestamp.is_none())
            .collect();
        let terminating = pods
            .iter()
            .filter(|p| !finished(p) && p.metadata.deletion_timestamp.is_some())
            .count();
        let ready = active
            .iter()
            .filter(|p| crate::conditions::pod_ready(p))
            .count();
        let suspended = spec.suspend.unwrap_or(false);
        let mut recheck = None;
        match &verdict {
            Verdict::Failed(reason, message) => {
                for p in &active {
                    self.delete_pod(job, &pod_api, p).await;
                }
                set_condition(&mut new_status, "FailureTarget", reason, message);
                if active.is_empty() && terminating == 0 {
                    set_condition(&mut new_status, "Failed", reason, message);
                    self.recorder
                        .record(&events::reference(job), Type::Warning, reason, message)
                        .await;
                }
            }
            Verdict::Succeeded => {
                for p in &active {
                    self.delete_pod(job, &pod_api, p).await;
                }
                set_condition(
                    &mut new_status,
                    "SuccessCriteriaMet",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                );
                if active.is_empty() && terminating == 0 {
                    set_condition(
                        &mut new_status,
                        "Complete",
                        "CompletionsReached",
                        "Reached expected number of succeeded pods",
                    );
                    new_status.completion_time = Some(Time(Timestamp::now()));
                    self.recorder
                        .record(
                            &events::reference(job),
                            Type::Normal,
                            "Completed",
                            "Job completed",
                        )
                        .await;
                }
            }
            Verdict::Running if suspended => {
                for p in &active {
                    self.delete_pod(job, &pod_api, p).await;
                }
                if condition(job, "Suspended").is_none() {
                    set_condition(
                        &mut new_status,
                        "Suspended",
                        "JobSuspended",
                        "Job suspended",
                    );
                    self.recorder
                        .record(
                            &events::reference(job),
                            Type::Normal,
                            "Suspended",
                            "Job suspended",
                        )
                        .await;
                }
                new_status.start_time = None;
            }
            Verdict::Running => {
                if condition(job, "Suspended").is_some() {
                    set_condition_status(
                        &mut new_status,
                        "Suspended",
                        "False",
                        "JobResumed",
                        "Job resumed",
                    );
                    self.recorder
                        .record(
                            &events::reference(job),
                            Type::Normal,
                            "Resumed",
                            "Job resumed",
                        )
                        .await;
                }
                if new_status.start_time.is_none() {
                    new_status.start_time = Some(Time(Timestamp::now()));
                }
                if expect.met() {
                    recheck = self
                        .manage(job, &spec, &new_status, pods, &active, expect)
                        .await?;
                }
                if let Some(deadline) = spec.active_deadline_seconds {
                    let started = new_status
                        .start_time
                        .as_ref()
                        .map_or(Timestamp::now(), |t| t.0);
                    let left = deadline - Timestamp::now().duration_since(started).as_secs();
                    let wait = Duration::from_secs(left.max(0) as u64 + 1);
                    recheck = Some(recheck.map_or(wait, |r: Duration| r.min(wait)));
                }
            }
        }
        new_status.active = Some(active.len() as i32);
        new_status.ready = Some(ready as i32);
        new_status.terminating = Some(terminating as i32);
        self.write_if_changed(job, &status, new_status).await?;
        Ok(recheck)
    }
}

fn set_condition(st: &mut JobStatus, ty: &str, reason: &str, message: &str) {
    set_condition_status(st, ty, "True", reason, message)
}

fn set_condition_status(st: &mut JobStatus, ty: &str, status: &str, reason: &str, message: &str) {
    let now = Time(Timestamp::now());
    let list = st.conditions.get_or_insert_with(Vec::new);
    if let Some(c) = list.iter_mut().find(|c| c.type_ == ty) {
        if c.status == status {
            return;
        }
        c.status = status.into();
        c.reason = Some(reason.into());
        c.message = Some(message.into());
        c.last_transition_time = Some(now.clone());
        c.last_probe_time = Some(now);
        return;
    }
    list.push(JobCondition {
        type_: ty.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(now.clone()),
        last_transition_time: Some(now),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_are_ranges() {
        let set: BTreeSet<i32> = [0, 1, 2, 4, 6, 7].into_iter().collect();
        assert_eq!(compress(&set), "0-2,4,6-7");
        assert_eq!(expand("0-2,4,6-7"), set);
        assert_eq!(compress(&BTreeSet::new()), "");
    }
}
