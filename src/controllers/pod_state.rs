//! What controllers read off a pod's state: whether it still counts (not terminating, not
//! finished), when it became Ready, whether it has been Ready for `minReadySeconds`.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

/// Whether a pod still counts towards its owner (neither terminating nor finished).
pub fn active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// The pod's Ready condition: whether it is True, and when it last changed.
pub fn ready_condition(pod: &Pod) -> Option<(bool, Option<Timestamp>)> {
    let c = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    Some((
        c.status == "True",
        c.last_transition_time.as_ref().map(|t| t.0),
    ))
}

/// When the pod became Ready, if it is.
pub fn ready_since(pod: &Pod) -> Option<Timestamp> {
    match ready_condition(pod)? {
        (true, since) => Some(since.unwrap_or(Timestamp::UNIX_EPOCH)),
        (false, _) => None,
    }
}

/// Whether the pod is Running (phase) and Ready.
pub fn running_and_ready(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        && ready_since(pod).is_some()
}

/// Whether the pod has been Ready for `min_ready` seconds at `now`; if Ready but not yet for
/// long enough, how long until it is.
pub fn available(pod: &Pod, min_ready: i64, now: Timestamp) -> (bool, Option<Duration>) {
    let Some(since) = ready_since(pod) else {
        return (false, None);
    };
    let age = now.duration_since(since).as_secs();
    if age >= min_ready {
        (true, None)
    } else {
        (
            false,
            Some(Duration::from_secs((min_ready - age) as u64 + 1)),
        )
    }
}

/// Whether the pod is being deleted.
pub fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// The pod's phase, empty when unset.
pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}
