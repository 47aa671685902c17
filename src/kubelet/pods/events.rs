//! The kubelet's events about pods and their containers, with upstream's reasons and messages,
//! which `kubectl describe pod` and `kubectl get events` show: Pulling, Pulled, Created,
//! Started, Killing, BackOff, Failed, ErrImageNeverPull, Unhealthy, FailedPostStartHook,
//! FailedPreStopHook, FailedCreatePodSandBox, SandboxChanged, FailedMount and Evicted.
//! Container events name the container in the reference's `fieldPath`
//! (`spec.containers{NAME}`), as upstream's do. Repeats are counted and spam is filtered by
//! [`crate::events`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::ResourceExt;

use super::worker::{Shared, State};
use crate::events::{self, Type};

/// The reference of `pod`, or of one of its containers.
pub fn reference(pod: &Pod, container: Option<&str>) -> ObjectReference {
    let mut r = events::reference(pod);
    if let Some(name) = container {
        let spec = pod.spec.as_ref();
        let has = |list: Option<&Vec<k8s_openapi::api::core::v1::Container>>| {
            list.is_some_and(|l| l.iter().any(|c| c.name == name))
        };
        let list = if has(spec.map(|s| &s.containers)) {
            "containers"
        } else if has(spec.and_then(|s| s.init_containers.as_ref())) {
            "initContainers"
        } else {
            "ephemeralContainers"
        };
        r.field_path = Some(format!("spec.{list}{{{name}}}"));
    }
    r
}

/// The events of a container that now waits for `reason` (with `message`), as upstream's
/// kubelet writes them when a container cannot start.
pub fn for_waiting(
    pod: &Pod,
    container: &str,
    reason: &str,
    message: &str,
) -> Vec<(Type, &'static str, String)> {
    let failed = |r: &str| (Type::Warning, "Failed", format!("Error: {r}"));
    match reason {
        "ErrImagePull" => vec![
            (Type::Warning, "Failed", message.to_string()),
            failed("ErrImagePull"),
        ],
        "ImagePullBackOff" => vec![
            (Type::Normal, "BackOff", message.to_string()),
            failed("ImagePullBackOff"),
        ],
        "ErrImageNeverPull" => vec![
            (Type::Warning, "ErrImageNeverPull", message.to_string()),
            failed("ErrImageNeverPull"),
        ],
        "CreateContainerConfigError" | "CreateContainerError" | "RunContainerError" => {
            vec![failed(message)]
        }
        "CrashLoopBackOff" => vec![(
            Type::Warning,
            "BackOff",
            format!(
                "Back-off restarting failed container {container} in pod {}_{}({})",
                pod.name_any(),
                pod.namespace().unwrap_or_default(),
                pod.uid().unwrap_or_default()
            ),
        )],
        // Only that it failed: a hook's output may hold secrets (upstream's words and reason).
        "PostStartHookError" => vec![(
            Type::Warning,
            "FailedPostStartHook",
            "PostStartHook failed".to_string(),
        )],
        _ => Vec::new(),
    }
}

/// A duration as Go prints one (`512ms`, `1.234s`, `2m3.5s`), to the millisecond.
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    let secs = format!("{:.3}", (ms % 60_000) as f64 / 1000.0);
    match ms / 60_000 {
        0 => format!("{}s", trim(secs)),
        m => format!("{m}m{}s", trim(secs)),
    }
}

/// How long a worker keeps from repeating an event of its retries (upstream's pod workers
/// retry a failed sync about this often, not every pass).
const REPEAT_AFTER: Duration = Duration::from_secs(10);

impl Shared {
    /// Records an event of something a pass retries (a failed mount, sandbox or container
    /// start), at most once per [`REPEAT_AFTER`] for the same container, reason and message.
    pub(super) async fn event_once(
        &self,
        st: &mut State,
        pod: &Pod,
        container: Option<&str>,
        ty: Type,
        reason: &str,
        message: &str,
    ) {
        let now = Instant::now();
        st.recent_events
            .retain(|_, at| now.duration_since(*at) < REPEAT_AFTER);
        let key = format!("{}\n{reason}\n{message}", container.unwrap_or_default());
        if st.recent_events.contains_key(&key) {
            return;
        }
        st.recent_events.insert(key, now);
        self.event(pod, container, ty, reason, message).await;
    }

    /// Records an event about `pod` (or one of its containers).
    pub(super) async fn event(
        &self,
        pod: &Pod,
        container: Option<&str>,
        ty: Type,
        reason: &str,
        message: &str,
    ) {
        self.events
            .record(&reference(pod, container), ty, reason, message)
            .await;
    }

    /// Records the events of the waiting reasons in `now` that were not there `before`.
    pub(super) async fn waiting_events(
        &self,
        pod: &Pod,
        before: &HashMap<String, (String, String)>,
        now: &HashMap<String, (String, String)>,
    ) {
        for (container, (reason, message)) in now {
            if before.get(container).map(|(r, _)| r) == Some(reason) {
                continue;
            }
            for (ty, r, m) in for_waiting(pod, container, reason, message) {
                self.event(pod, Some(container.as_str()), ty, r, &m).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1"},
            "spec": {
                "initContainers": [{"name": "setup"}],
                "containers": [{"name": "httpd"}]
            }
        }))
        .expect("pod")
    }

    #[test]
    fn container_events_carry_the_field_path() {
        let p = pod();
        assert_eq!(
            reference(&p, Some("httpd")).field_path.as_deref(),
            Some("spec.containers{httpd}")
        );
        assert_eq!(
            reference(&p, Some("setup")).field_path.as_deref(),
            Some("spec.initContainers{setup}")
        );
        assert_eq!(
            reference(&p, Some("debugger")).field_path.as_deref(),
            Some("spec.ephemeralContainers{debugger}")
        );
        assert_eq!(reference(&p, None).field_path, None);
        assert_eq!(reference(&p, None).kind.as_deref(), Some("Pod"));
    }

    #[test]
    fn waiting_reasons_give_upstreams_events() {
        let p = pod();
        let e = for_waiting(&p, "httpd", "CrashLoopBackOff", "back-off 10s ...");
        assert_eq!(
            e,
            vec![(
                Type::Warning,
                "BackOff",
                "Back-off restarting failed container httpd in pod web_shop(u-1)".to_string()
            )]
        );
        let e = for_waiting(
            &p,
            "httpd",
            "ImagePullBackOff",
            "Back-off pulling image \"x\"",
        );
        assert_eq!(
            e[0],
            (
                Type::Normal,
                "BackOff",
                "Back-off pulling image \"x\"".into()
            )
        );
        assert_eq!(
            e[1],
            (Type::Warning, "Failed", "Error: ImagePullBackOff".into())
        );
        let e = for_waiting(
            &p,
            "httpd",
            "CreateContainerConfigError",
            "secret \"s\" not found",
        );
        assert_eq!(
            e,
            vec![(
                Type::Warning,
                "Failed",
                "Error: secret \"s\" not found".into()
            )]
        );
        assert!(for_waiting(&p, "httpd", "PodInitializing", "").is_empty());
    }

    #[test]
    fn durations_print_as_go_does() {
        assert_eq!(go_duration(Duration::from_millis(512)), "512ms");
        assert_eq!(go_duration(Duration::from_millis(1234)), "1.234s");
        assert_eq!(go_duration(Duration::from_secs(3)), "3s");
        assert_eq!(go_duration(Duration::from_millis(123_500)), "2m3.5s");
    }
}
