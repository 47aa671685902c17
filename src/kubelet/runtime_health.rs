//! The container runtime's health, as upstream's kubelet tracks it for the node's Ready
//! condition: every 5 s CRI `Status` is asked for; its `RuntimeReady` and `NetworkReady`
//! conditions, or no answer for 30 s ("container runtime is down"), turn the node NotReady
//! with reason `KubeletNotReady` and upstream's messages until the runtime is well again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::cri::{api, Runtime};

/// How often the runtime is asked (upstream's runtime up-check period).
const EVERY: Duration = Duration::from_secs(5);
/// How long without an answer makes the runtime down.
const DOWN_AFTER: Duration = Duration::from_secs(30);

/// What the kubelet last learnt of the runtime.
#[derive(Debug, Default)]
pub struct Health {
    last_ok: Option<Instant>,
    runtime: Option<String>,
    network: Option<String>,
}

/// A runtime condition as upstream prints it (`NetworkReady=false reason:R message:M`).
fn shown(c: Option<&api::RuntimeCondition>) -> String {
    match c {
        Some(c) => format!(
            "{}={} reason:{} message:{}",
            c.r#type, c.status, c.reason, c.message
        ),
        None => "<nil>".into(),
    }
}

impl Health {
    /// Takes in one answer of CRI `Status` (None: no answer).
    pub fn observe(&mut self, status: Option<&api::StatusResponse>, now: Instant) {
        let Some(s) = status else {
            return;
        };
        let conditions = s.status.as_ref().map(|s| &s.conditions[..]).unwrap_or(&[]);
        let find = |ty: &str| conditions.iter().find(|c| c.r#type == ty);
        let network = find("NetworkReady");
        self.network = (!network.is_some_and(|c| c.status))
            .then(|| format!("container runtime network not ready: {}", shown(network)));
        let runtime = find("RuntimeReady");
        if runtime.is_some_and(|c| c.status) {
            self.runtime = None;
            self.last_ok = Some(now);
        } else {
            self.runtime = Some(format!("container runtime not ready: {}", shown(runtime)));
        }
    }

    /// Why the node is not ready (upstream's aggregate of the errors), or None.
    pub fn problem(&self, now: Instant) -> Option<String> {
        let mut errs = Vec::new();
        match self.last_ok {
            None if self.runtime.is_none() => {
                errs.push("container runtime status check may not have completed yet".to_string())
            }
            Some(t) if now.duration_since(t) > DOWN_AFTER => {
                errs.push("container runtime is down".to_string())
            }
            _ => {}
        }
        errs.extend(self.runtime.clone());
        errs.extend(self.network.clone());
        match errs.len() {
            0 => None,
            1 => errs.pop(),
            _ => Some(format!("[{}]", errs.join(", "))),
        }
    }
}

/// Shared between the checker and the node status.
pub type Shared = Arc<Mutex<Health>>;

/// Asks the runtime every 5 s until `stop`; sends the node's readiness problem whenever it
/// changes.
pub async fn watch_runtime(
    runtime: Arc<dyn Runtime>,
    health: Shared,
    changed: watch::Sender<Option<String>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let status = match runtime.status().await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("container runtime status check failed: {e}");
                None
            }
        };
        let now = Instant::now();
        let problem = {
            let mut h = health.lock().unwrap_or_else(|p| p.into_inner());
            h.observe(status.as_ref(), now);
            h.problem(now)
        };
        changed.send_if_modified(|old| {
            if *old == problem {
                return false;
            }
            match &problem {
                Some(p) => tracing::warn!("node not ready: {p}"),
                None => tracing::info!("container runtime ready"),
            }
            *old = problem;
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(runtime: bool, network: bool) -> api::StatusResponse {
        let c = |ty: &str, ok: bool, reason: &str, message: &str| api::RuntimeCondition {
            r#type: ty.into(),
            status: ok,
            reason: reason.into(),
            message: message.into(),
        };
        api::StatusResponse {
            status: Some(api::RuntimeStatus {
                conditions: vec![
                    c("RuntimeReady", runtime, "", ""),
                    c(
                        "NetworkReady",
                        network,
                        "NetworkPluginNotReady",
                        "Network plugin returns error: cni plugin not initialized",
                    ),
                ],
            }),
            ..Default::default()
        }
    }

    #[test]
    fn readiness_follows_the_runtime_conditions_as_upstream_words_them() {
        let t0 = Instant::now();
        let mut h = Health::default();
        assert_eq!(
            h.problem(t0).as_deref(),
            Some("container runtime status check may not have completed yet")
        );
        h.observe(Some(&status(true, false)), t0);
        assert_eq!(
            h.problem(t0).as_deref(),
            Some("container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized")
        );
        h.observe(Some(&status(true, true)), t0);
        assert_eq!(h.problem(t0), None);
        // No answer: still ready for 30 s, then down.
        h.observe(None, t0 + Duration::from_secs(10));
        assert_eq!(h.problem(t0 + Duration::from_secs(10)), None);
        assert_eq!(
            h.problem(t0 + Duration::from_secs(31)).as_deref(),
            Some("container runtime is down")
        );
        h.observe(Some(&status(false, false)), t0 + Duration::from_secs(40));
        let p = h.problem(t0 + Duration::from_secs(40)).expect("not ready");
        assert!(
            p.starts_with(
                "[container runtime is down, container runtime not ready: RuntimeReady=false"
            ),
            "{p}"
        );
    }
}
