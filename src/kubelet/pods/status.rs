//! A pod's status from what the runtime shows, as the kubelet's `generateAPIPodStatus`: each
//! container's state (running, terminated with exit code and reason, or waiting with the reason
//! the worker recorded: ContainerCreating, ErrImagePull, ImagePullBackOff, CrashLoopBackOff,
//! CreateContainerError), its last state, restart count and readiness; the pod's phase, IPs,
//! start time and conditions (PodReadyToStartContainers, Initialized, ContainersReady, Ready).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use crate::kubelet::cri::api;

/// The latest and the previous run of one container.
#[derive(Debug, Clone, Default)]
pub struct Runs {
    pub latest: Option<api::ContainerStatus>,
    pub previous: Option<api::ContainerStatus>,
}

/// What the worker saw of a pod.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub sandbox_ready: bool,
    pub pod_ip: Option<String>,
    pub host_ip: String,
    /// By container name.
    pub runs: HashMap<String, Runs>,
    /// Why a container is not running, by name: (reason, message).
    pub waiting: HashMap<String, (String, String)>,
    /// What the probes say of a running container, by name: (started, ready); absent: both.
    pub probed: HashMap<String, (bool, bool)>,
}

fn time(nanos: i64) -> Option<Time> {
    (nanos > 0)
        .then(|| Timestamp::from_nanosecond(i128::from(nanos)).ok())
        .flatten()
        .map(Time)
}

pub fn container_id(id: &str) -> String {
    format!("containerd://{id}")
}

fn terminated(s: &api::ContainerStatus) -> ContainerStateTerminated {
    ContainerStateTerminated {
        container_id: Some(container_id(&s.id)),
        exit_code: s.exit_code,
        reason: Some(if s.reason.is_empty() {
            if s.exit_code == 0 {
                "Completed"
            } else {
                "Error"
            }
            .to_string()
        } else {
            s.reason.clone()
        }),
        message: (!s.message.is_empty()).then(|| s.message.clone()),
        started_at: time(s.started_at),
        finished_at: time(s.finished_at),
        signal: None,
    }
}

fn is(s: &api::ContainerStatus, state: api::ContainerState) -> bool {
    s.state == state as i32
}

/// One container's status.
pub fn container_status(
    name: &str,
    image: &str,
    runs: &Runs,
    waiting: Option<&(String, String)>,
    probed: (bool, bool),
) -> ContainerStatus {
    let latest = runs.latest.as_ref();
    let running = latest.is_some_and(|s| is(s, api::ContainerState::ContainerRunning));
    let exited = latest.filter(|s| is(s, api::ContainerState::ContainerExited));
    let state = if let (Some(s), true) = (latest, running) {
        ContainerState {
            running: Some(ContainerStateRunning {
                started_at: time(s.started_at),
            }),
            ..Default::default()
        }
    } else if let (Some(s), None) = (exited, waiting) {
        ContainerState {
            terminated: Some(terminated(s)),
            ..Default::default()
        }
    } else {
        let (reason, message) = waiting
            .cloned()
            .unwrap_or_else(|| ("ContainerCreating".into(), String::new()));
        ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason),
                message: (!message.is_empty()).then_some(message),
            }),
            ..Default::default()
        }
    };
    // While waiting to restart, the run that ended is the last state.
    let last = if state.waiting.is_some() && exited.is_some() {
        exited
    } else {
        runs.previous.as_ref()
    };
    ContainerStatus {
        name: name.to_string(),
        image: latest.and_then(|s| s.image.as_ref()).map_or_else(
            || image.to_string(),
            |i| {
                if i.image.is_empty() {
                    image.to_string()
                } else {
                    i.image.clone()
                }
            },
        ),
        image_id: latest.map(|s| s.image_ref.clone()).unwrap_or_default(),
        container_id: latest.map(|s| container_id(&s.id)),
        ready: running && probed.1,
        started: Some(running && probed.0),
        restart_count: latest.map_or(0, |s| s.metadata.as_ref().map_or(0, |m| m.attempt as i32)),
        state: Some(state),
        last_state: Some(match last {
            Some(s) if is(s, api::ContainerState::ContainerExited) => ContainerState {
                terminated: Some(terminated(s)),
                ..Default::default()
            },
            _ => ContainerState::default(),
        }),
        ..Default::default()
    }
}

/// The pod's phase from its containers' statuses, as upstream's `getPhase`.
pub fn phase(restart_policy: &str, statuses: &[ContainerStatus]) -> &'static str {
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in statuses {
        let st = s.state.clone().unwrap_or_default();
        if st.running.is_some() {
            running += 1;
        } else if let Some(t) = st.terminated {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if s
            .last_state
            .as_ref()
            .is_some_and(|l| l.terminated.is_some())
        {
            // Waiting to restart after a run: stopped, not pending.
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 || statuses.is_empty() {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    let all_succeeded = stopped == succeeded;
    match restart_policy {
        "Always" => "Running",
        "OnFailure" if all_succeeded => "Succeeded",
        "OnFailure" => "Running",
        _ if all_succeeded => "Succeeded",
        _ => "Failed",
    }
}

/// The status to post: a strategic-merge patch body for `pods/status`.
pub fn pod_status(pod: &Pod, obs: &Observed) -> Value {
    let spec = pod.spec.clone().unwrap_or_default();
    let statuses: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c| {
            container_status(
                &c.name,
                c.image.as_deref().unwrap_or_default(),
                &obs.runs.get(&c.name).cloned().unwrap_or_default(),
                obs.waiting.get(&c.name),
                obs.probed.get(&c.name).copied().unwrap_or((true, true)),
            )
        })
        .collect();
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let inits: Vec<(ContainerStatus, bool)> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| {
            let runs = obs.runs.get(&c.name).cloned().unwrap_or_default();
            let not_yet = ("PodInitializing".to_string(), String::new());
            let waiting = match obs.waiting.get(&c.name) {
                Some(w) => Some(w),
                None if runs.latest.is_none() => Some(&not_yet),
                None => None,
            };
            let mut s = container_status(
                &c.name,
                c.image.as_deref().unwrap_or_default(),
                &runs,
                waiting,
                obs.probed.get(&c.name).copied().unwrap_or((true, true)),
            );
            // A finished init container counts as ready, as upstream reports it.
            if s.state
                .as_ref()
                .and_then(|st| st.terminated.as_ref())
                .is_some_and(|t| t.exit_code == 0)
            {
                s.ready = true;
            }
            (s, c.restart_policy.as_deref() == Some("Always"))
        })
        .collect();
    let init_done = |(s, sidecar): &(ContainerStatus, bool)| {
        let st = s.state.clone().unwrap_or_default();
        if *sidecar {
            s.started == Some(true)
        } else {
            st.terminated.is_some_and(|t| t.exit_code == 0)
        }
    };
    // Once a regular container has started, the pod stays initialized (a sidecar restarting
    // does not undo it), as upstream's `HasAnyRegularContainerStarted`.
    let regular_started = statuses.iter().any(|s| {
        s.state
            .as_ref()
            .is_some_and(|st| st.running.is_some() || st.terminated.is_some())
    });
    let incomplete: Vec<&str> = inits
        .iter()
        .filter(|i| !init_done(i))
        .map(|(s, _)| s.name.as_str())
        .collect();
    let initialized = incomplete.is_empty() || regular_started;
    let init_failed = inits.iter().any(|(s, sidecar)| {
        !sidecar
            && s.state
                .as_ref()
                .and_then(|st| st.terminated.as_ref())
                .is_some_and(|t| t.exit_code != 0)
    });
    let phase = if initialized {
        phase(policy, &statuses)
    } else if init_failed && policy == "Never" {
        "Failed"
    } else {
        "Pending"
    };
    let unready: Vec<&str> = inits
        .iter()
        .filter(|(s, sidecar)| *sidecar && !s.ready)
        .map(|(s, _)| s.name.as_str())
        .chain(
            statuses
                .iter()
                .filter(|s| !s.ready)
                .map(|s| s.name.as_str()),
        )
        .collect();
    let old = pod.status.clone().unwrap_or_default();
    let old_conditions = old.conditions.clone().unwrap_or_default();
    let now = Timestamp::now();
    let cond = |ty: &str, ok: bool, reason: Option<&str>, message: Option<String>| {
        let status = if ok { "True" } else { "False" };
        let since = old_conditions
            .iter()
            .find(|c| c.type_ == ty && c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        // Absent reason and message are sent as null: the strategic merge drops old ones.
        json!({"type": ty, "status": status, "lastTransitionTime": since, "lastProbeTime": null,
            "reason": reason, "message": message})
    };
    let list = |names: &[&str]| format!("[{}]", names.join(" "));
    // ContainersReady, as upstream's GenerateContainersReadyCondition.
    let (containers_ready, reason, message) = match phase {
        "Succeeded" => (false, Some("PodCompleted"), None),
        "Failed" => (false, Some("PodFailed"), None),
        _ if !unready.is_empty() || statuses.is_empty() => (
            false,
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: {}",
                list(&unready)
            )),
        ),
        _ => (true, None, None),
    };
    // Ready: ContainersReady and every readiness gate's condition True.
    let gates: Vec<String> = spec
        .readiness_gates
        .iter()
        .flatten()
        .filter_map(|g| {
            let c = old_conditions.iter().find(|c| c.type_ == g.condition_type);
            match c {
                None => Some(format!(
                    "corresponding condition of pod readiness gate {:?} does not exist.",
                    g.condition_type
                )),
                Some(c) if c.status != "True" => Some(format!(
                    "the status of pod readiness gate {:?} is not \"True\", but {}",
                    g.condition_type, c.status
                )),
                Some(_) => None,
            }
        })
        .collect();
    let ready = if !containers_ready {
        cond("Ready", false, reason, message.clone())
    } else if !gates.is_empty() {
        cond(
            "Ready",
            false,
            Some("ReadinessGatesNotReady"),
            Some(gates.join(", ")),
        )
    } else {
        cond("Ready", true, None, None)
    };
    let initialized_cond = if phase == "Succeeded" && !inits.is_empty() {
        cond("Initialized", true, Some("PodCompleted"), None)
    } else if initialized {
        cond("Initialized", true, None, None)
    } else {
        cond(
            "Initialized",
            false,
            Some("ContainersNotInitialized"),
            Some(format!(
                "containers with incomplete status: {}",
                list(&incomplete)
            )),
        )
    };
    let mut conditions = vec![
        cond("PodReadyToStartContainers", obs.sandbox_ready, None, None),
        initialized_cond,
        cond("ContainersReady", containers_ready, reason, message),
        ready,
    ];
    // Ephemeral containers: reported, never ready, no part of the pod's readiness or phase.
    let ephemeral: Vec<ContainerStatus> = super::ephemeral::containers(pod)
        .iter()
        .map(|c| {
            container_status(
                &c.name,
                c.image.as_deref().unwrap_or_default(),
                &obs.runs.get(&c.name).cloned().unwrap_or_default(),
                obs.waiting.get(&c.name),
                (true, false),
            )
        })
        .collect();
    let ip = obs.pod_ip.clone().filter(|ip| !ip.is_empty());
    let start = old.start_time.clone().unwrap_or(Time(now));
    conditions.retain(|c| !c.is_null());
    json!({
        "status": {
            "phase": phase,
            "conditions": conditions,
            "hostIP": obs.host_ip,
            "hostIPs": [{"ip": obs.host_ip}],
            "podIP": ip,
            "podIPs": ip.as_ref().map(|ip| vec![json!({"ip": ip})]),
            "startTime": start,
            "containerStatuses": statuses,
            "initContainerStatuses": if inits.is_empty() {
                Value::Null
            } else {
                json!(inits.into_iter().map(|(s, _)| s).collect::<Vec<_>>())
            },
            "ephemeralContainerStatuses": if ephemeral.is_empty() {
                Value::Null
            } else {
                json!(ephemeral)
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(state: api::ContainerState, exit: i32, attempt: u32) -> api::ContainerStatus {
        api::ContainerStatus {
            id: format!("c{attempt}"),
            metadata: Some(api::ContainerMetadata {
                name: "c".into(),
                attempt,
            }),
            state: state as i32,
            exit_code: exit,
            started_at: 1_700_000_000_000_000_000,
            finished_at: 1_700_000_001_000_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn phases_follow_the_restart_policy() {
        let exited = |code| Runs {
            latest: Some(run(api::ContainerState::ContainerExited, code, 0)),
            previous: None,
        };
        let s = |r: &Runs| container_status("c", "img", r, None, (true, true));
        assert_eq!(phase("Never", &[s(&exited(0))]), "Succeeded");
        assert_eq!(phase("Never", &[s(&exited(1))]), "Failed");
        assert_eq!(phase("OnFailure", &[s(&exited(0))]), "Succeeded");
        assert_eq!(phase("Always", &[s(&exited(0))]), "Running");
        assert_eq!(phase("Always", &[s(&Runs::default())]), "Pending");
        let waiting = container_status(
            "c",
            "img",
            &exited(2),
            Some(&("CrashLoopBackOff".into(), "back-off 10s".into())),
            (true, true),
        );
        assert_eq!(
            waiting
                .state
                .and_then(|s| s.waiting)
                .and_then(|w| w.reason)
                .as_deref(),
            Some("CrashLoopBackOff")
        );
        let last = waiting
            .last_state
            .and_then(|s| s.terminated)
            .expect("last state");
        assert_eq!(last.exit_code, 2);
        assert_eq!(last.reason.as_deref(), Some("Error"));
        assert_eq!(
            phase(
                "Always",
                &[container_status(
                    "c",
                    "i",
                    &exited(2),
                    Some(&("CrashLoopBackOff".into(), String::new())),
                    (true, true),
                )]
            ),
            "Running"
        );
    }

    #[test]
    fn a_running_container_counts_its_restarts() {
        let r = Runs {
            latest: Some(run(api::ContainerState::ContainerRunning, 0, 3)),
            previous: Some(run(api::ContainerState::ContainerExited, 137, 2)),
        };
        let s = container_status("c", "img", &r, None, (true, true));
        assert_eq!(s.restart_count, 3);
        assert!(s.ready);
        assert_eq!(s.container_id.as_deref(), Some("containerd://c3"));
        assert_eq!(
            s.last_state.and_then(|l| l.terminated).map(|t| t.exit_code),
            Some(137)
        );
    }
}
