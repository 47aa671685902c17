//! The CronJob controller, as upstream's (cronjob_controllerv2): at each time the schedule
//! fires (in `spec.timeZone`, else the controller's zone) it creates a Job from
//! `jobTemplate`, named `NAME-<minutes since the epoch>` so a time is never run twice, with the
//! `batch.kubernetes.io/cronjob-scheduled-timestamp` annotation. A time missed by more than
//! `startingDeadlineSeconds` is skipped (`MissSchedule`); `concurrencyPolicy` Forbid skips a
//! time while a Job is active and Replace deletes the active ones first. The status lists the
//! active Jobs and the last scheduled and successful times; finished Jobs beyond the
//! success and failure history limits are deleted. Suspended CronJobs start nothing.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use super::cache::{controller_of, Cache, Change};
use super::pacer::Pacer;
use crate::cron::Schedule;
use crate::events::{self, Recorder, Type};

const KIND: &str = "CronJob";
/// The annotation with the time a Job was scheduled for.
pub const SCHEDULED_AT: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Past this many missed times, upstream warns that the clock or the controller was off.
const TOO_MANY_MISSED: usize = 100;

/// How a Job ended, if it has.
fn finished(job: &Job) -> Option<&'static str> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .filter(|c| c.status == "True")
        .find_map(|c| match c.type_.as_str() {
            "Complete" => Some("Complete"),
            "Failed" => Some("Failed"),
            _ => None,
        })
}

/// The most recent time the schedule fired in `(earliest, now]`, how many such times there
/// were, and the next time after `now`.
pub fn most_recent(
    schedule: &Schedule,
    tz: &TimeZone,
    earliest: Timestamp,
    now: Timestamp,
) -> (Option<Timestamp>, usize, Option<Timestamp>) {
    let (mut last, mut missed) = (None, 0);
    let mut t = earliest;
    loop {
        match schedule.next(t, tz) {
            Some(n) if n <= now => {
                last = Some(n);
                missed += 1;
                t = n;
                if missed > 100_000 {
                    // Decades of minutes: jump to the recent past rather than walk them all.
                    t = now - jiff::SignedDuration::from_hours(24);
                }
            }
            next => return (last, missed, next),
        }
    }
}

/// The Job name for a scheduled time: `NAME-<minutes since the epoch>`.
pub fn job_name(cron_job: &str, at: Timestamp) -> String {
    format!("{cron_job}-{}", at.as_second().div_euclid(60))
}

struct Ctl {
    writer: Client,
    recorder: Recorder,
}

/// Runs until `stop` turns true.
pub async fn run(shared: Client, writer: Client, mut stop: watch::Receiver<bool>) {
    let mut cj_events = watcher(Api::<CronJob>::all(shared.clone()), Default::default())
        .default_backoff()
        .boxed();
    let mut job_events = watcher(Api::<Job>::all(shared), Default::default())
        .default_backoff()
        .boxed();
    let ctl = Ctl {
        recorder: Recorder::new(writer.clone(), "cronjob-controller", None),
        writer,
    };
    let mut cron_jobs: Cache<CronJob> = Cache::default();
    let mut jobs: Cache<Job> = Cache::default();
    let mut dirty: HashSet<String> = HashSet::new();
    let mut pacer: Pacer<String> = Pacer::default();
    loop {
        pacer.arm(!dirty.is_empty());
        tokio::select! {
            ev = cj_events.next() => match ev {
                Some(Ok(ev)) => match cron_jobs.apply(ev) {
                    Change::Resynced => dirty.extend(cron_jobs.items.keys().cloned()),
                    Change::Applied { new, .. } => { dirty.insert(new.uid().unwrap_or_default()); }
                    Change::Deleted(_) | Change::None => {}
                },
                Some(Err(_)) => continue,
                None => return,
            },
            ev = job_events.next() => match ev {
                Some(Ok(ev)) => match jobs.apply(ev) {
                    Change::Resynced => dirty.extend(cron_jobs.items.keys().cloned()),
                    Change::Applied { new: j, .. } | Change::Deleted(j) => {
                        dirty.extend(controller_of(j.as_ref(), KIND));
                    }
                    Change::None => {}
                },
                Some(Err(_)) => continue,
                None => return,
            },
            due = pacer.next() => dirty.extend(due),
            _ = stop.changed() => return,
        }
        if !(cron_jobs.synced && jobs.synced && pacer.ready(!dirty.is_empty())) {
            continue;
        }
        for uid in std::mem::take(&mut dirty) {
            let Some(cj) = cron_jobs.items.get(&uid).cloned() else {
                continue;
            };
            let ns = cj.namespace().unwrap_or_default();
            let owned: Vec<Arc<Job>> = jobs
                .in_namespace(&ns)
                .filter(|j| controller_of(j.as_ref(), KIND).as_deref() == Some(uid.as_str()))
                .cloned()
                .collect();
            match ctl.sync(&cj, &owned).await {
                Ok(Some(after)) => pacer.after(uid, after),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(cronjob = %cj.name_any(), error = %e, "syncing a cronjob");
                    pacer.after(uid, Duration::from_secs(1));
                }
            }
        }
    }
}

fn reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        field_path: None,
    }
}

fn until(t: Timestamp) -> Duration {
    let d = t.duration_since(Timestamp::now());
    Duration::try_from(d).unwrap_or_default() + Duration::from_millis(100)
}

impl Ctl {
    async fn sync(
        &self,
        cj: &CronJob,
        owned: &[Arc<Job>],
    ) -> Result<Option<Duration>, kube::Error> {
        if cj.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let about = events::reference(cj);
        let ns = cj.namespace().unwrap_or_default();
        let jobs_api: Api<Job> = Api::namespaced(self.writer.clone(), &ns);
        let old = cj.status.clone().unwrap_or_default();
        let mut status = old.clone();
        let mut active: Vec<ObjectReference> = old.active.clone().unwrap_or_default();

        // Finished Jobs leave the active list; vanished ones too.
        let by_uid = |uid: &Option<String>| owned.iter().find(|j| j.metadata.uid == *uid);
        let mut kept = Vec::new();
        for r in active.drain(..) {
            match by_uid(&r.uid) {
                Some(j) => match finished(j) {
                    Some(how) => {
                        self.recorder
                            .record(
                                &about,
                                Type::Normal,
                                "SawCompletedJob",
                                &format!("Saw completed job: {}, condition: {how}", j.name_any()),
                            )
                            .await;
                        if how == "Complete" {
                            let done = j.status.as_ref().and_then(|s| s.completion_time.clone());
                            if done.as_ref().map(|t| t.0)
                                > status.last_successful_time.as_ref().map(|t| t.0)
                            {
                                status.last_successful_time = done;
                            }
                        }
                    }
                    None => kept.push(r),
                },
                None => {
                    self.recorder
                        .record(
                            &about,
                            Type::Normal,
                            "MissingJob",
                            &format!(
                                "Active job went missing: {}",
                                r.name.clone().unwrap_or_default()
                            ),
                        )
                        .await;
                }
            }
        }
        active = kept;
        for j in owned {
            let listed = active.iter().any(|r| r.uid == j.metadata.uid);
            if !listed && finished(j).is_none() && j.metadata.deletion_timestamp.is_none() {
                let scheduled = j.annotations().contains_key(SCHEDULED_AT);
                if scheduled {
                    // Created by an earlier pass whose status write was lost: list it again.
                    active.push(reference(j));
                }
            }
        }

        let mut recheck = None;
        let suspended = cj.spec.suspend.unwrap_or(false);
        if !suspended {
            recheck = self
                .schedule(cj, owned, &mut active, &mut status, &jobs_api)
                .await?;
        }
        self.prune(cj, owned, &jobs_api).await;

        status.active = (!active.is_empty()).then_some(active);
        if status != old {
            let mut whole = cj.clone();
            whole.status = Some(status);
            let api: Api<CronJob> = Api::namespaced(self.writer.clone(), &ns);
            api.replace_status(&cj.name_any(), &PostParams::default(), &whole)
                .await?;
        }
        Ok(recheck)
    }

    /// Starts the Job of the most recent unmet time, if it should; returns when to look again.
    async fn schedule(
        &self,
        cj: &CronJob,
        owned: &[Arc<Job>],
        active: &mut Vec<ObjectReference>,
        status: &mut CronJobStatus,
        jobs_api: &Api<Job>,
    ) -> Result<Option<Duration>, kube::Error> {
        let about = events::reference(cj);
        let schedule = match Schedule::parse(&cj.spec.schedule) {
            Ok(s) => s,
            Err(e) => {
                self.recorder
                    .record(
                        &about,
                        Type::Warning,
                        "UnparseableSchedule",
                        &format!("unparseable schedule: {:?} : {e}", cj.spec.schedule),
                    )
                    .await;
                return Ok(None);
            }
        };
        let tz = match cj.spec.time_zone.as_deref() {
            None => TimeZone::system(),
            Some(name) => match TimeZone::get(name) {
                Ok(tz) => tz,
                Err(_) => {
                    self.recorder
                        .record(
                            &about,
                            Type::Warning,
                            "UnknownTimeZone",
                            &format!("invalid timeZone: {name:?}: unknown time zone {name}"),
                        )
                        .await;
                    return Ok(None);
                }
            },
        };
        let now = Timestamp::now();
        let created = cj.creation_timestamp().map_or(now, |t| t.0);
        let mut earliest = status.last_schedule_time.as_ref().map_or(created, |t| t.0);
        let deadline = cj.spec.starting_deadline_seconds;
        if let Some(sds) = deadline {
            let cutoff = now - jiff::SignedDuration::from_secs(sds);
            if cutoff > earliest {
                earliest = cutoff;
            }
        }
        let (last, missed, next) = most_recent(&schedule, &tz, earliest, now);
        let again = next.map(until);
        let Some(at) = last else {
            return Ok(again);
        };
        if missed > TOO_MANY_MISSED {
            self.recorder
                .record(&about, Type::Warning, "TooManyMissedTimes",
                    &format!("too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"))
                .await;
        }
        if deadline.is_some_and(|sds| at + jiff::SignedDuration::from_secs(sds) < now) {
            self.recorder
                .record(
                    &about,
                    Type::Warning,
                    "MissSchedule",
                    &format!(
                        "Missed scheduled time to start a job: {}",
                        at.strftime("%a, %d %b %Y %H:%M:%S +0000")
                    ),
                )
                .await;
            return Ok(again);
        }
        let name = job_name(&cj.name_any(), at);
        if owned.iter().any(|j| j.name_any() == name)
            || active
                .iter()
                .any(|r| r.name.as_deref() == Some(name.as_str()))
        {
            return Ok(again);
        }
        match cj.spec.concurrency_policy.as_deref().unwrap_or("Allow") {
            "Forbid" if !active.is_empty() => {
                self.recorder
                    .record(&about, Type::Normal, "JobAlreadyActive",
                        "Not starting job because prior execution is running and concurrency policy is Forbid")
                    .await;
                return Ok(again);
            }
            "Replace" => {
                for r in active.drain(..) {
                    let jname = r.name.clone().unwrap_or_default();
                    let dp = DeleteParams {
                        propagation_policy: Some(PropagationPolicy::Background),
                        ..Default::default()
                    };
                    match jobs_api.delete(&jname, &dp).await {
                        Ok(_) => {
                            self.recorder
                                .record(
                                    &about,
                                    Type::Normal,
                                    "SuccessfulDelete",
                                    &format!("Deleted job {jname}"),
                                )
                                .await
                        }
                        Err(kube::Error::Api(s)) if s.code == 404 => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            _ => {}
        }
        let job = self.job_for(cj, &name, at, &tz)?;
        let created = match jobs_api.create(&PostParams::default(), &job).await {
            Ok(j) => {
                self.recorder
                    .record(
                        &about,
                        Type::Normal,
                        "SuccessfulCreate",
                        &format!("Created job {name}"),
                    )
                    .await;
                j
            }
            Err(kube::Error::Api(s)) if s.code == 409 => jobs_api.get(&name).await?,
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
                        &format!("Error creating job: {msg}"),
                    )
                    .await;
                return Err(e);
            }
        };
        if controller_of(&created, KIND) == cj.uid() {
            active.push(reference(&created));
        }
        status.last_schedule_time = Some(Time(at));
        Ok(again)
    }

    fn job_for(
        &self,
        cj: &CronJob,
        name: &str,
        at: Timestamp,
        tz: &TimeZone,
    ) -> Result<Job, kube::Error> {
        let template = &cj.spec.job_template;
        let meta = template.metadata.clone().unwrap_or_default();
        let mut job = Job {
            spec: template.spec.clone(),
            ..Default::default()
        };
        job.metadata.name = Some(name.to_string());
        job.metadata.namespace = cj.namespace();
        job.metadata.labels = meta.labels;
        let mut annotations = meta.annotations.unwrap_or_default();
        // RFC 3339 in the CronJob's zone, `Z` for a zero offset as Go writes it.
        let zoned = at.to_zoned(tz.clone());
        let offset = if zoned.offset().seconds() == 0 {
            "Z".to_string()
        } else {
            zoned.strftime("%:z").to_string()
        };
        annotations.insert(
            SCHEDULED_AT.into(),
            format!("{}{offset}", zoned.strftime("%Y-%m-%dT%H:%M:%S")),
        );
        job.metadata.annotations = Some(annotations);
        job.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "batch/v1".into(),
            kind: KIND.into(),
            name: cj.name_any(),
            uid: cj.uid().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
        Ok(job)
    }

    /// Deletes the oldest finished Jobs beyond the history limits.
    async fn prune(&self, cj: &CronJob, owned: &[Arc<Job>], jobs_api: &Api<Job>) {
        for (how, limit) in [
            (
                "Complete",
                cj.spec.successful_jobs_history_limit.unwrap_or(3),
            ),
            ("Failed", cj.spec.failed_jobs_history_limit.unwrap_or(1)),
        ] {
            let mut done: Vec<&Arc<Job>> = owned
                .iter()
                .filter(|j| finished(j) == Some(how) && j.metadata.deletion_timestamp.is_none())
                .collect();
            done.sort_by_key(|j| {
                j.status
                    .as_ref()
                    .and_then(|s| s.start_time.as_ref().map(|t| t.0))
                    .or(j.creation_timestamp().map(|t| t.0))
            });
            let excess = done.len().saturating_sub(limit.max(0) as usize);
            for j in done.into_iter().take(excess) {
                let dp = DeleteParams {
                    propagation_policy: Some(PropagationPolicy::Background),
                    ..Default::default()
                };
                match jobs_api.delete(&j.name_any(), &dp).await {
                    Ok(_) => {
                        self.recorder
                            .record(
                                &events::reference(cj),
                                Type::Normal,
                                "SuccessfulDelete",
                                &format!("Deleted job {}", j.name_any()),
                            )
                            .await
                    }
                    Err(e) => {
                        tracing::debug!(job = %j.name_any(), error = %e, "pruning a finished job")
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn the_most_recent_unmet_time_wins() {
        let s = Schedule::parse("*/5 * * * *").expect("parse");
        let (last, missed, next) = most_recent(
            &s,
            &TimeZone::UTC,
            at("2026-11-30T10:00:00Z"),
            at("2026-11-30T10:17:00Z"),
        );
        assert_eq!(last, Some(at("2026-11-30T10:15:00Z")));
        assert_eq!(missed, 3);
        assert_eq!(next, Some(at("2026-11-30T10:20:00Z")));
        let (last, missed, _) = most_recent(
            &s,
            &TimeZone::UTC,
            at("2026-11-30T10:15:00Z"),
            at("2026-11-30T10:17:00Z"),
        );
        assert_eq!((last, missed), (None, 0));
        assert_eq!(
            job_name("backup", at("2026-11-30T10:15:00Z")),
            "backup-29933895"
        );
    }
}
