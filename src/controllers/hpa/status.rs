//! An autoscaler's status as upstream writes it: current and desired replicas, each metric's
//! current value, lastScaleTime, and the conditions, whose lastTransitionTime moves only when
//! their status does. Written only when something changed.

use k8s_openapi::api::autoscaling::v2::{
    ContainerResourceMetricStatus, HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition,
    HorizontalPodAutoscalerStatus, MetricStatus, MetricValueStatus, ResourceMetricStatus,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::calc::{format_milli, Proposal};

/// The conditions as this sync leaves them, starting from the stored ones.
pub struct Conditions(Vec<HorizontalPodAutoscalerCondition>);

impl From<&HorizontalPodAutoscaler> for Conditions {
    fn from(hpa: &HorizontalPodAutoscaler) -> Self {
        Conditions(
            hpa.status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default(),
        )
    }
}

impl Conditions {
    /// Sets one condition; its lastTransitionTime changes only with its status.
    pub fn set(&mut self, ty: &str, ok: bool, reason: &str, message: &str) {
        let status = if ok { "True" } else { "False" };
        match self.0.iter_mut().find(|c| c.type_ == ty) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = Some(Time(Timestamp::now()));
                }
                c.status = status.into();
                c.reason = Some(reason.into());
                c.message = Some(message.into());
            }
            None => self.0.push(HorizontalPodAutoscalerCondition {
                type_: ty.into(),
                status: status.into(),
                reason: Some(reason.into()),
                message: Some(message.into()),
                last_transition_time: Some(Time(Timestamp::now())),
                observed_generation: None,
            }),
        }
    }
}

/// One Resource or ContainerResource metric's current value.
pub fn metric_status(resource: &str, container: Option<&str>, p: &Proposal) -> MetricStatus {
    let current = MetricValueStatus {
        average_utilization: p.utilization,
        average_value: Some(Quantity(format_milli(p.average_milli))),
        value: None,
    };
    match container {
        Some(c) => MetricStatus {
            type_: "ContainerResource".into(),
            container_resource: Some(ContainerResourceMetricStatus {
                name: resource.into(),
                container: c.into(),
                current,
            }),
            ..Default::default()
        },
        None => MetricStatus {
            type_: "Resource".into(),
            resource: Some(ResourceMetricStatus {
                name: resource.into(),
                current,
            }),
            ..Default::default()
        },
    }
}

/// The autoscaler with its new status, or None when the status would not change. Values left
/// `None` keep what the status held.
pub fn updated(
    hpa: &HorizontalPodAutoscaler,
    current: Option<i32>,
    desired: Option<i32>,
    metrics: Option<Vec<MetricStatus>>,
    last_scale: Option<Timestamp>,
    conds: Conditions,
) -> Option<HorizontalPodAutoscaler> {
    let old = hpa.status.clone().unwrap_or_default();
    let new = HorizontalPodAutoscalerStatus {
        current_replicas: current.or(old.current_replicas),
        desired_replicas: desired.unwrap_or(old.desired_replicas),
        current_metrics: match metrics {
            Some(m) if m.is_empty() => None,
            Some(m) => Some(m),
            None => old.current_metrics.clone(),
        },
        last_scale_time: last_scale.map(Time).or(old.last_scale_time.clone()),
        conditions: Some(conds.0),
        observed_generation: hpa.metadata.generation,
    };
    if super::same(&new, &old) {
        return None;
    }
    let mut out = hpa.clone();
    out.status = Some(new);
    Some(out)
}
