//! The HorizontalPodAutoscaler controller (autoscaling/v2), as upstream's: every sync period
//! (15 s, `--horizontal-pod-autoscaler-sync-period`) and whenever an autoscaler's spec changes,
//! it reads the target's `scale` subresource, computes a replica count for each metric from
//! `metrics.k8s.io` ([`calc`]), takes the largest, normalises it ([`behavior`]), updates the
//! scale when it differs, and reports status, the AbleToScale / ScalingActive / ScalingLimited
//! conditions and upstream's events (`SuccessfulRescale`, `FailedGetResourceMetric`, ...).
//! Resource and ContainerResource metrics are served; Pods, Object and External metrics need a
//! custom or external metrics API, which k1s does not serve, and are reported as such.

mod behavior;
mod calc;
mod status;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::autoscaling::v2::{HorizontalPodAutoscaler, MetricSpec, MetricStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use super::cache::{Cache, Change};
use crate::events::{self, Recorder, Type};
use calc::{Proposal, Sample, Target};
use status::Conditions;

/// How the autoscalers are run (`--horizontal-pod-autoscaler-*`).
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub sync_period: Duration,
    /// How long a scale-down waits for an autoscaler without `behavior`.
    pub downscale_stabilization: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sync_period: Duration::from_secs(15),
            downscale_stabilization: Duration::from_secs(300),
        }
    }
}

/// Why a metric gave no proposal: the condition reason and the message.
struct MetricError {
    reason: &'static str,
    message: String,
}

struct Ctl {
    shared: Client,
    writer: Client,
    recorder: Recorder,
    opts: Options,
    /// Scale targets resolved through discovery, by (apiVersion, kind).
    kinds: HashMap<(String, String), ApiResource>,
}

/// Runs until `stop` turns true.
pub async fn run(shared: Client, writer: Client, opts: Options, mut stop: watch::Receiver<bool>) {
    let mut events = watcher(
        Api::<HorizontalPodAutoscaler>::all(shared.clone()),
        Default::default(),
    )
    .default_backoff()
    .boxed();
    let mut hpas: Cache<HorizontalPodAutoscaler> = Cache::default();
    let mut history: HashMap<String, behavior::History> = HashMap::new();
    let mut tick = tokio::time::interval(opts.sync_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ctl = Ctl {
        recorder: Recorder::new(writer.clone(), "horizontal-pod-autoscaler", None),
        shared,
        writer,
        opts,
        kinds: HashMap::new(),
    };
    loop {
        let mut due: Vec<String> = Vec::new();
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(ev)) => match hpas.apply(ev) {
                    // A new autoscaler or a changed spec is looked at now; status writes wait.
                    Change::Applied { new, old } => {
                        if old.is_none_or(|o| o.metadata.generation != new.metadata.generation) {
                            due.push(new.uid().unwrap_or_default());
                        }
                    }
                    Change::Deleted(h) => { history.remove(&h.uid().unwrap_or_default()); }
                    Change::Resynced | Change::None => {}
                },
                Some(Err(_)) => continue,
                None => return,
            },
            _ = tick.tick() => due.extend(hpas.items.keys().cloned()),
            _ = stop.changed() => return,
        }
        if !hpas.synced {
            continue;
        }
        for uid in due {
            let Some(hpa) = hpas.items.get(&uid).cloned() else {
                continue;
            };
            let h = history.entry(uid).or_default();
            if let Err(e) = ctl.reconcile(&hpa, h).await {
                tracing::debug!(hpa = %hpa.name_any(), error = %e, "syncing an autoscaler");
            }
        }
    }
}

impl Ctl {
    /// The API resource of a scale target, through discovery once per kind.
    async fn resource(
        &mut self,
        api_version: &str,
        kind: &str,
    ) -> Result<ApiResource, kube::Error> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(r) = self.kinds.get(&key) {
            return Ok(r.clone());
        }
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (r, _) = kube::discovery::pinned_kind(&self.shared, &gvk).await?;
        self.kinds.insert(key, r.clone());
        Ok(r)
    }

    async fn reconcile(
        &mut self,
        hpa: &HorizontalPodAutoscaler,
        history: &mut behavior::History,
    ) -> Result<(), kube::Error> {
        let ns = hpa.namespace().unwrap_or_default();
        let spec = &hpa.spec;
        let target = &spec.scale_target_ref;
        let about = events::reference(hpa);
        let mut conds = Conditions::from(hpa);
        let api_version = target.api_version.clone().unwrap_or_default();
        let scale = match self.resource(&api_version, &target.kind).await {
            Ok(r) => {
                let api: Api<DynamicObject> = Api::namespaced_with(self.writer.clone(), &ns, &r);
                api.get_scale(&target.name).await.map(|s| (api, s))
            }
            Err(e) => Err(e),
        };
        let (api, mut scale) = match scale {
            Ok(x) => x,
            Err(e) => {
                let msg = format!(
                    "the HPA controller was unable to get the target's current scale: {}",
                    api_message(&e)
                );
                self.recorder
                    .record(&about, Type::Warning, "FailedGetScale", &api_message(&e))
                    .await;
                conds.set("AbleToScale", false, "FailedGetScale", &msg);
                let current = hpa.status.as_ref().and_then(|s| s.current_replicas);
                return self
                    .write_status(hpa, current, None, None, None, conds)
                    .await;
            }
        };
        conds.set(
            "AbleToScale",
            true,
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale",
        );
        let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let now = Instant::now();
        history.start(current, now);
        let min = spec.min_replicas.unwrap_or(1);
        let mut statuses: Option<Vec<MetricStatus>> = None;
        let mut reason = String::new();
        let desired;
        let mut rescale = true;
        if current == 0 && min != 0 {
            desired = 0;
            rescale = false;
            conds.set(
                "ScalingActive",
                false,
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero",
            );
        } else if current > spec.max_replicas {
            reason = "Current number of replicas above Spec.MaxReplicas".into();
            desired = spec.max_replicas;
        } else if current < min {
            reason = "Current number of replicas below Spec.MinReplicas".into();
            desired = min;
        } else {
            let selector = scale
                .status
                .as_ref()
                .and_then(|s| s.selector.clone())
                .unwrap_or_default();
            let (proposal, name, metric_statuses, error) =
                self.compute(hpa, &ns, &selector, current, &mut conds).await;
            statuses = Some(metric_statuses);
            let Some(mut proposed) = proposal else {
                if let Some(e) = error {
                    self.recorder
                        .record(&about, Type::Warning, "FailedComputeMetricsReplicas", &e)
                        .await;
                }
                return self
                    .write_status(hpa, Some(current), None, statuses, None, conds)
                    .await;
            };
            proposed = proposed.max(0);
            if proposed > current {
                reason = format!("{name} above target");
            } else if proposed < current {
                reason = "All metrics below target".into();
            }
            let n = behavior::normalize(
                history,
                spec.behavior.as_ref(),
                self.opts.downscale_stabilization,
                current,
                proposed,
                min,
                spec.max_replicas,
                now,
            );
            conds.set("AbleToScale", true, n.able.0, n.able.1);
            conds.set("ScalingLimited", n.limited.0, n.limited.1, n.limited.2);
            desired = n.replicas;
            rescale = desired != current;
        }
        let mut last_scale = None;
        if rescale {
            if let Some(s) = scale.spec.as_mut() {
                s.replicas = Some(desired);
            }
            match api
                .replace_scale(&target.name, &PostParams::default(), &scale)
                .await
            {
                Ok(_) => {
                    conds.set(
                        "AbleToScale",
                        true,
                        "SucceededRescale",
                        &format!(
                            "the HPA controller was able to update the target scale to {desired}"
                        ),
                    );
                    self.recorder
                        .record(
                            &about,
                            Type::Normal,
                            "SuccessfulRescale",
                            &format!("New size: {desired}; reason: {reason}"),
                        )
                        .await;
                    if spec.behavior.is_some() {
                        history.rescaled(current, desired, now);
                    }
                    last_scale = Some(Timestamp::now());
                }
                Err(e) => {
                    let msg = api_message(&e);
                    self.recorder
                        .record(
                            &about,
                            Type::Warning,
                            "FailedRescale",
                            &format!("New size: {desired}; reason: {reason}; error: {msg}"),
                        )
                        .await;
                    conds.set(
                        "AbleToScale",
                        false,
                        "FailedUpdateScale",
                        &format!("the HPA controller was unable to update the target scale: {msg}"),
                    );
                    return self
                        .write_status(hpa, Some(current), None, statuses, None, conds)
                        .await;
                }
            }
        }
        let desired = if rescale { desired } else { current };
        self.write_status(
            hpa,
            Some(current),
            Some(desired),
            statuses,
            last_scale,
            conds,
        )
        .await
    }

    /// The largest proposal over the metrics, the metric's name, each metric's status, and the
    /// error to report when no proposal stands.
    async fn compute(
        &self,
        hpa: &HorizontalPodAutoscaler,
        ns: &str,
        selector: &str,
        current: i32,
        conds: &mut Conditions,
    ) -> (Option<i32>, String, Vec<MetricStatus>, Option<String>) {
        let about = events::reference(hpa);
        if selector.is_empty() {
            self.recorder
                .record(
                    &about,
                    Type::Warning,
                    "SelectorRequired",
                    "selector is required",
                )
                .await;
            conds.set(
                "ScalingActive",
                false,
                "InvalidSelector",
                "the HPA target's scale is missing a selector",
            );
            return (None, String::new(), Vec::new(), None);
        }
        let specs = hpa.spec.metrics.clone().unwrap_or_default();
        let pods = self.pods(ns, selector).await;
        let samples = self.samples(ns, selector).await;
        let mut best: Option<(i32, String)> = None;
        let mut statuses = Vec::new();
        let mut invalid: Vec<MetricError> = Vec::new();
        for m in &specs {
            match self.metric(hpa, m, current, &pods, &samples) {
                Ok((replicas, name, status)) => {
                    statuses.push(status);
                    if best.as_ref().is_none_or(|(r, _)| replicas > *r) {
                        best = Some((replicas, name));
                    }
                }
                Err(e) => {
                    self.recorder
                        .record(&about, Type::Warning, e.reason, &e.message)
                        .await;
                    statuses.push(MetricStatus {
                        type_: String::new(),
                        ..Default::default()
                    });
                    invalid.push(e);
                }
            }
        }
        statuses.retain(|s| !s.type_.is_empty());
        let first = invalid.first().map(|e| {
            (
                e.reason,
                format!(
                    "the HPA was unable to compute the replica count: {}",
                    e.message
                ),
                format!(
                    "invalid metrics ({} invalid out of {}), first error is: {}",
                    invalid.len(),
                    specs.len(),
                    e.message
                ),
            )
        });
        let best_replicas = best.as_ref().map(|b| b.0).unwrap_or(0);
        if let Some((reason, condition, error)) = &first {
            if invalid.len() >= specs.len() || best_replicas < current {
                conds.set("ScalingActive", false, reason, condition);
                return (None, String::new(), statuses, Some(error.clone()));
            }
        }
        let Some((replicas, name)) = best else {
            return (None, String::new(), statuses, None);
        };
        conds.set(
            "ScalingActive",
            true,
            "ValidMetricFound",
            &format!("the HPA was able to successfully calculate a replica count from {name}"),
        );
        (Some(replicas), name, statuses, first.map(|f| f.2))
    }

    /// One metric's proposal: replicas, the metric's name and its status.
    fn metric(
        &self,
        hpa: &HorizontalPodAutoscaler,
        m: &MetricSpec,
        current: i32,
        pods: &Result<Vec<Pod>, String>,
        samples: &Result<HashMap<String, HashMap<String, Sample>>, String>,
    ) -> Result<(i32, String, MetricStatus), MetricError> {
        let (resource, container, target, reason) = match m.type_.as_str() {
            "Resource" => match &m.resource {
                Some(r) => (r.name.clone(), None, &r.target, "FailedGetResourceMetric"),
                None => return Err(unsupported("FailedGetResourceMetric", "resource")),
            },
            "ContainerResource" => match &m.container_resource {
                Some(r) => (
                    r.name.clone(),
                    Some(r.container.clone()),
                    &r.target,
                    "FailedGetContainerResourceMetric",
                ),
                None => {
                    return Err(unsupported(
                        "FailedGetContainerResourceMetric",
                        "containerResource",
                    ))
                }
            },
            "Pods" => return Err(no_custom("FailedGetPodsMetric", "custom.metrics.k8s.io")),
            "Object" => return Err(no_custom("FailedGetObjectMetric", "custom.metrics.k8s.io")),
            "External" => {
                return Err(no_custom(
                    "FailedGetExternalMetric",
                    "external.metrics.k8s.io",
                ))
            }
            other => {
                return Err(MetricError {
                    reason: "InvalidMetricSourceType",
                    message: format!("unknown metric source type {other:?}"),
                })
            }
        };
        let fail = |what: &str, message: String| MetricError {
            reason,
            message: format!("failed to get {resource} {what}: {message}"),
        };
        let target_kind = match (target.average_utilization, &target.average_value) {
            (_, Some(v)) => Target::AverageValue(
                crate::quantity::milli(&v.0).map(|m| m as i64).unwrap_or(0),
            ),
            (Some(pct), None) => Target::Utilization(pct),
            (None, None) => {
                return Err(MetricError {
                    reason,
                    message: "invalid resource metric source: neither a utilization target nor a value target was set".into(),
                })
            }
        };
        let what = if matches!(target_kind, Target::Utilization(_)) {
            "utilization"
        } else {
            "usage"
        };
        let samples = samples.as_ref().map_err(|e| {
            fail(
                what,
                format!("unable to get metrics for resource {resource}: {e}"),
            )
        })?;
        // Per pod, the sum over its containers (or the one named).
        let mut per_pod: HashMap<String, Sample> = HashMap::new();
        for (pod, containers) in samples {
            let mut total: Option<Sample> = None;
            for (key, s) in containers {
                let Some((c, res)) = key.split_once('/') else {
                    continue;
                };
                if res != resource || container.as_deref().is_some_and(|want| want != c) {
                    continue;
                }
                total = Some(match total {
                    Some(t) => Sample {
                        milli: t.milli + s.milli,
                        ..t
                    },
                    None => *s,
                });
            }
            if let Some(t) = total {
                per_pod.insert(pod.clone(), t);
            }
        }
        if per_pod.is_empty() {
            return Err(fail(what, format!("unable to get metrics for resource {resource}: no metrics returned from resource metrics API")));
        }
        let pods = pods.as_ref().map_err(|e| fail(what, e.clone()))?;
        let refs: Vec<&Pod> = pods.iter().collect();
        let requests = match target_kind {
            Target::Utilization(_) => {
                calc::requests(&refs, &resource, container.as_deref()).map_err(|e| fail(what, e))?
            }
            Target::AverageValue(_) => HashMap::new(),
        };
        let tolerance = behavior::tolerance(hpa.spec.behavior.as_ref(), true)
            .min(behavior::tolerance(hpa.spec.behavior.as_ref(), false));
        let measured = calc::Measured {
            target: target_kind,
            samples: &per_pod,
            requests: &requests,
            cpu: resource == "cpu",
            tolerance,
        };
        let p: Proposal = calc::replicas(current, &measured, &refs, Timestamp::now())
            .map_err(|e| fail(what, e))?;
        let name = match (&container, target_kind) {
            (Some(_), Target::Utilization(_)) => {
                format!("{resource} container resource utilization (percentage of request)")
            }
            (Some(_), Target::AverageValue(_)) => format!("{resource} container resource"),
            (None, Target::Utilization(_)) => {
                format!("{resource} resource utilization (percentage of request)")
            }
            (None, Target::AverageValue(_)) => format!("{resource} resource"),
        };
        Ok((
            p.replicas,
            name,
            status::metric_status(&resource, container.as_deref(), &p),
        ))
    }

    /// The pods the target selects.
    async fn pods(&self, ns: &str, selector: &str) -> Result<Vec<Pod>, String> {
        let api: Api<Pod> = Api::namespaced(self.writer.clone(), ns);
        api.list(&ListParams::default().labels(selector))
            .await
            .map(|l| l.items)
            .map_err(|e| api_message(&e))
    }

    /// Usage samples by pod, then by `container/resource`.
    async fn samples(
        &self,
        ns: &str,
        selector: &str,
    ) -> Result<HashMap<String, HashMap<String, Sample>>, String> {
        let r = ApiResource {
            group: "metrics.k8s.io".into(),
            version: "v1beta1".into(),
            api_version: "metrics.k8s.io/v1beta1".into(),
            kind: "PodMetrics".into(),
            plural: "pods".into(),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(self.writer.clone(), ns, &r);
        let list = api
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| api_message(&e))?;
        if list.items.is_empty() {
            return Err("no metrics returned from resource metrics API".into());
        }
        let mut out = HashMap::new();
        for item in list.items {
            let timestamp = item.data["timestamp"]
                .as_str()
                .and_then(|t| t.parse::<Timestamp>().ok())
                .unwrap_or_else(Timestamp::now);
            let window = item.data["window"]
                .as_str()
                .and_then(|w| w.strip_suffix('s'))
                .and_then(|w| w.parse::<f64>().ok())
                .map(Duration::from_secs_f64)
                .unwrap_or(Duration::from_secs(10));
            let mut containers = HashMap::new();
            for c in item.data["containers"].as_array().into_iter().flatten() {
                let name = c["name"].as_str().unwrap_or_default();
                for (res, q) in c["usage"].as_object().into_iter().flatten() {
                    let milli = q
                        .as_str()
                        .and_then(crate::quantity::milli)
                        .map(|m| m as i64)
                        .unwrap_or(0);
                    containers.insert(
                        format!("{name}/{res}"),
                        Sample {
                            milli,
                            timestamp,
                            window,
                        },
                    );
                }
            }
            out.insert(item.name_any(), containers);
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    async fn write_status(
        &self,
        hpa: &HorizontalPodAutoscaler,
        current: Option<i32>,
        desired: Option<i32>,
        metrics: Option<Vec<MetricStatus>>,
        last_scale: Option<Timestamp>,
        conds: Conditions,
    ) -> Result<(), kube::Error> {
        let Some(updated) = status::updated(hpa, current, desired, metrics, last_scale, conds)
        else {
            return Ok(());
        };
        let api: Api<HorizontalPodAutoscaler> =
            Api::namespaced(self.writer.clone(), &hpa.namespace().unwrap_or_default());
        api.replace_status(&hpa.name_any(), &PostParams::default(), &updated)
            .await
            .map(drop)
    }
}

fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

fn unsupported(reason: &'static str, field: &str) -> MetricError {
    MetricError {
        reason,
        message: format!("invalid metric source: {field} is not set"),
    }
}

fn no_custom(reason: &'static str, api: &str) -> MetricError {
    MetricError {
        reason,
        message: format!("unable to fetch metrics: no metrics API {api} is served by k1s"),
    }
}

/// Whether `a` holds the same value as `b` (for the status comparison).
pub(crate) fn same<T: serde::Serialize>(a: &T, b: &T) -> bool {
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}
