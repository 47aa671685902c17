//! One pod's worker, as the kubelet's `syncPod`: state is read back from the runtime on every
//! pass (by the pod's uid label), so a restarted kubelet adopts running pods as they are. A pass
//! makes sure of the sandbox (a new one, with the next attempt number, when it died), pulls
//! images as `imagePullPolicy` says, starts containers that never ran, restarts exited ones as
//! `restartPolicy` says with CrashLoopBackOff (10 s doubling to 5 min, reset after 10 min of
//! running), and posts the status when it changed. Deletion stops the containers within the
//! grace period, removes the sandbox, and deletes the pod for good (grace 0, uid precondition).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::Value;

use super::probes;
use super::setup;
use super::spec::{self, Env};
use super::status::{self, Observed, Runs};
use crate::events::Type;
use crate::kubelet::cri::{api, Runtime, RuntimeError};
use crate::kubelet::volumes;

const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A container that ran this long starts its backoff afresh.
const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// How often a pod's volumes are written again (ConfigMap and Secret updates, token renewal).
const VOLUME_REFRESH: Duration = Duration::from_secs(10);

/// What every worker shares.
pub struct Shared {
    pub client: Client,
    pub runtime: Arc<dyn Runtime>,
    pub env: Env,
    pub mounter: Box<dyn volumes::mount::Mounter>,
    /// Pods the eviction manager chose, by uid, with their status message.
    pub evictions: crate::kubelet::eviction::Evictions,
    /// The cluster's Services, for pods' service variables.
    pub services: kube::runtime::reflector::Store<k8s_openapi::api::core::v1::Service>,
    /// Events about pods, from `kubelet` on this node.
    pub events: crate::events::Recorder,
    /// The pods' cgroups (`--cgroups-per-qos`); none: the runtime's default parent.
    pub cgroups: Option<Arc<crate::kubelet::cgroups::Manager>>,
    /// What each pod's containers were given, for in-place resizes.
    pub allocations: super::resize::Allocations,
    /// The node's pressure conditions, for admission.
    pub pressure: Arc<std::sync::RwLock<crate::kubelet::eviction::Pressure>>,
    /// The sysctls pods may set here.
    pub sysctls: super::admit::Sysctls,
    /// This node's Node object, for admission (labels, taints, allocatable).
    pub node: kube::runtime::reflector::Store<k8s_openapi::api::core::v1::Node>,
}

/// A restart delay and when it was last used.
#[derive(Debug, Clone, Copy)]
pub(super) struct Backoff {
    pub(super) delay: Duration,
    pub(super) last: Instant,
}

/// Where a pass runs containers: the sandbox, its IP, the pod's containers as listed.
struct Place<'a> {
    sandbox_id: &'a str,
    ip: &'a str,
    all: &'a [api::Container],
}

/// Where a container stands after a pass.
#[derive(Debug, PartialEq)]
enum Run {
    Running,
    Succeeded,
    Failed,
    /// Starting, restarting, or blocked (image, config, backoff).
    Waiting,
}

/// What a worker remembers between passes.
#[derive(Default)]
pub struct State {
    /// Events recorded lately, by container, reason and message, for [`Shared::event_once`].
    pub(super) recent_events: HashMap<String, Instant>,
    pub(super) backoff: HashMap<String, Backoff>,
    pub(super) waiting: HashMap<String, (String, String)>,
    /// Exited containers' statuses never change: kept by container id.
    pub(super) exited: HashMap<String, api::ContainerStatus>,
    pub(super) ips: HashMap<String, String>,
    pub(super) posted: Option<Value>,
    volumes: volumes::State,
    hosts: Option<HashMap<String, volumes::HostVolume>>,
    /// Probe tallies by container id.
    pub(super) probes: HashMap<String, probes::ContainerProbes>,
    /// Container ids and names of the running containers, for the prober.
    pub(super) running: Vec<(String, String, i64)>,
    pub(super) resize: super::resize::ResizeState,
    /// The newest dead sandbox whose containers were stopped, so that is done once.
    pub(super) dead_sandbox: Option<String>,
    /// The ready sandbox the containers ran in at the last pass.
    pub(super) sandbox_id: Option<String>,
    /// When old sandboxes with no containers left were last removed.
    pub(super) sandbox_gc: Option<Instant>,
    /// When this kubelet first saw the pod, while it was Pending; taken once it runs, for
    /// `kubelet_pod_start_duration_seconds`.
    pub(super) first_seen: Option<Instant>,
    pub(super) seen: bool,
}

pub(super) fn grace_seconds(pod: &Pod) -> i64 {
    pod.metadata
        .deletion_grace_period_seconds
        .or(pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(30)
        .max(0)
}

pub(super) fn restart_policy(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Always".into())
}

fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

pub(super) fn is(state: i32, s: api::ContainerState) -> bool {
    state == s as i32
}

fn attempt(c: &api::Container) -> u32 {
    c.metadata.as_ref().map_or(0, |m| m.attempt)
}

pub(super) fn name_of(c: &api::Container) -> &str {
    c.metadata.as_ref().map_or("", |m| m.name.as_str())
}

impl Backoff {
    /// Whether a restart must still wait; if not, the backoff moves on to the next delay.
    pub(super) fn wait(entry: &mut Option<Backoff>, ran_for: Duration) -> Option<Duration> {
        let now = Instant::now();
        match entry {
            Some(b) if ran_for < BACKOFF_RESET => {
                let due = b.last + b.delay;
                if now < due {
                    return Some(b.delay);
                }
                b.delay = (b.delay * 2).min(BACKOFF_MAX);
                b.last = now;
                None
            }
            _ => {
                *entry = Some(Backoff {
                    delay: BACKOFF_START,
                    last: now,
                });
                None
            }
        }
    }
}

impl Shared {
    /// One pass over a live pod; how long until the next.
    pub async fn sync(&self, pod: &Pod, st: &mut State) -> Duration {
        let uid = pod.uid().unwrap_or_default();
        if terminal(pod) {
            // Finished pods keep their containers (for logs) but not their sandbox.
            if let Ok(sandboxes) = self.runtime.list_pod_sandboxes(Some(&uid)).await {
                for s in sandboxes
                    .iter()
                    .filter(|s| s.state == api::PodSandboxState::SandboxReady as i32)
                {
                    let _ = self.runtime.stop_pod_sandbox(&s.id).await;
                }
            }
            self.remove_cgroup(&uid);
            self.allocations.remove(&uid);
            return Duration::from_secs(30);
        }
        let evicted = self
            .evictions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&uid)
            .cloned();
        if let Some(eviction) = evicted {
            return self.evict(pod, st, &eviction).await;
        }
        if super::evict::past_deadline(pod) {
            return self.deadline_exceeded(pod, st).await;
        }
        if !std::mem::replace(&mut st.seen, true)
            && matches!(
                pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                None | Some("Pending")
            )
        {
            st.first_seen = Some(Instant::now());
        }
        let before = st.waiting.clone();
        // The containers run with what was allocated, which a pending resize leaves as it was.
        let spec_pod = pod;
        let Some(allocated) = self.allocate(spec_pod, st).await else {
            return Duration::from_secs(1);
        };
        let pod: &Pod = &allocated;
        match self.converge(pod, st).await {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(pod = %pod.name_any(), namespace = ?pod.namespace(), "syncing the pod: {e}")
            }
        }
        self.actuate(pod, st).await;
        self.waiting_events(pod, &before, &st.waiting).await;
        self.probe(pod, &ip_of(st), st).await;
        let obs = match self.observe(pod, st).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(pod = %pod.name_any(), "reading the pod's containers: {e}");
                return Duration::from_secs(2);
            }
        };
        let mut body = status::pod_status(pod, &obs);
        if body["status"]["phase"] == "Running" {
            if let Some(seen) = st.first_seen.take() {
                crate::kubelet::metrics::kubelet().observe(
                    &crate::kubelet::metrics::POD_START,
                    &[],
                    seen.elapsed().as_secs_f64(),
                );
            }
        }
        self.resize_status(spec_pod, st, &mut body).await;
        self.post_status(pod, st, body).await;
        Duration::from_secs(1)
    }

    /// Posts `body` as the pod's status unless it is what was posted last.
    pub(super) async fn post_status(&self, pod: &Pod, st: &mut State, body: Value) {
        if st.posted.as_ref() == Some(&body) {
            return;
        }
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        match api
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(&body),
            )
            .await
        {
            Ok(_) => st.posted = Some(body),
            Err(e) => tracing::warn!(pod = %pod.name_any(), "posting the pod's status: {e}"),
        }
    }

    /// Brings the runtime towards the pod's spec.
    async fn converge(&self, pod: &Pod, st: &mut State) -> Result<(), RuntimeError> {
        let spec = pod.spec.clone().unwrap_or_default();
        let (sandbox_id, ip) = match self.sandbox(pod, st).await {
            Ok(Some(s)) => {
                st.sandbox_id = Some(s.0.clone());
                s
            }
            Ok(None) => {
                st.sandbox_id = None;
                // A pod that does not restart lost its sandbox: it ends as its containers did.
                st.running.clear();
                for c in &spec.containers {
                    st.waiting.remove(&c.name);
                }
                return Ok(());
            }
            Err(e) => {
                for c in &spec.containers {
                    st.waiting
                        .insert(c.name.clone(), ("ContainerCreating".into(), String::new()));
                }
                return Err(e);
            }
        };
        let stale = st
            .volumes
            .last_refresh
            .is_none_or(|t| t.elapsed() > VOLUME_REFRESH);
        if st.hosts.is_none() || stale {
            let ctx = volumes::Ctx {
                client: &self.client,
                pods_dir: &self.env.pods_dir,
                pod_ip: &ip,
                env: &self.env,
                mounter: self.mounter.as_ref(),
            };
            match volumes::prepare(&ctx, pod, &mut st.volumes).await {
                Ok(h) => st.hosts = Some(h),
                Err(e) if st.hosts.is_none() => {
                    tracing::warn!(pod = %pod.name_any(), "setting up volumes: {e}");
                    let msg = e.to_string();
                    self.event_once(st, pod, None, Type::Warning, "FailedMount", &msg)
                        .await;
                    for c in &spec.containers {
                        st.waiting
                            .insert(c.name.clone(), ("ContainerCreating".into(), e.to_string()));
                    }
                    return Ok(());
                }
                Err(e) => tracing::warn!(pod = %pod.name_any(), "refreshing volumes: {e}"),
            }
        }
        let uid = pod.uid().unwrap_or_default();
        let all = self.runtime.list_containers(Some(&uid)).await?;
        let policy = restart_policy(pod);
        st.running.clear();
        let at = Place {
            sandbox_id: &sandbox_id,
            ip: &ip,
            all: &all,
        };
        // Init containers one at a time; sidecars (restartPolicy Always) keep running.
        let init_policy = if policy == "Never" {
            "Never"
        } else {
            "OnFailure"
        };
        // Once a regular container ran in this sandbox the pod stays initialized: sidecars
        // that die are restarted beside it, init containers do not run again (upstream).
        let regular_started = all.iter().any(|c| {
            c.pod_sandbox_id == sandbox_id
                && c.metadata
                    .as_ref()
                    .is_some_and(|m| spec.containers.iter().any(|x| x.name == m.name))
        });
        let mut initialized = true;
        for ic in spec.init_containers.iter().flatten() {
            let sidecar = ic.restart_policy.as_deref() == Some("Always");
            if regular_started {
                if sidecar {
                    self.ensure(pod, ic, "Always", &at, st).await?;
                }
                continue;
            }
            let p = if sidecar { "Always" } else { init_policy };
            match self.ensure(pod, ic, p, &at, st).await? {
                Run::Running if sidecar => {
                    let started = st
                        .running
                        .iter()
                        .find(|(_, n, _)| *n == ic.name)
                        .and_then(|(id, _, _)| st.probes.get(id))
                        .is_none_or(|t| t.started(ic));
                    if !started {
                        initialized = false;
                        break;
                    }
                }
                Run::Succeeded if !sidecar => {}
                _ => {
                    initialized = false;
                    break;
                }
            }
        }
        if !initialized {
            for c in &spec.containers {
                st.waiting
                    .insert(c.name.clone(), ("PodInitializing".into(), String::new()));
            }
            return Ok(());
        }
        for c in &spec.containers {
            self.ensure(pod, c, &policy, &at, st).await?;
        }
        // Ephemeral containers run once, never restarted.
        for c in super::ephemeral::containers(pod) {
            self.ensure(pod, &c, "Never", &at, st).await?;
        }
        Ok(())
    }

    /// Brings one container towards running (or finished) as `policy` says; where it stands.
    async fn ensure(
        &self,
        pod: &Pod,
        c: &Container,
        policy: &str,
        at: &Place<'_>,
        st: &mut State,
    ) -> Result<Run, RuntimeError> {
        let uid = pod.uid().unwrap_or_default();
        let (sandbox_id, ip) = (at.sandbox_id, at.ip);
        let mut runs: Vec<&api::Container> =
            at.all.iter().filter(|x| name_of(x) == c.name).collect();
        runs.sort_by_key(|x| std::cmp::Reverse((attempt(x), x.created_at)));
        let in_sandbox = runs
            .iter()
            .find(|x| x.pod_sandbox_id == sandbox_id)
            .copied();
        let next_attempt = runs.first().map_or(0, |x| attempt(x) + 1);
        // Dead runs beyond the last two are removed, as the kubelet's container GC does.
        for old in runs.iter().skip(2) {
            if is(old.state, api::ContainerState::ContainerExited) {
                let _ = self.runtime.remove_container(&old.id).await;
                st.exited.remove(&old.id);
            }
        }
        match in_sandbox {
            None => {
                // A container of a dead sandbox restarts only as its restart policy says;
                // in a new sandbox the init containers all run again, as upstream's.
                let init = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.init_containers.as_ref())
                    .is_some_and(|i| {
                        i.iter().any(|i| {
                            i.name == c.name && i.restart_policy.as_deref() != Some("Always")
                        })
                    });
                if let Some(prev) = runs.first().filter(|_| !init) {
                    let s = self.exited_status(&prev.id, st).await?;
                    if !restarts(policy, s.exit_code) {
                        return Ok(if s.exit_code == 0 {
                            Run::Succeeded
                        } else {
                            Run::Failed
                        });
                    }
                }
                self.start_new(pod, c, sandbox_id, ip, next_attempt, st)
                    .await;
                Ok(Run::Waiting)
            }
            Some(x) if is(x.state, api::ContainerState::ContainerCreated) => {
                if let Err(e) = self.runtime.start_container(&x.id).await {
                    st.waiting
                        .insert(c.name.clone(), ("RunContainerError".into(), e.to_string()));
                }
                Ok(Run::Waiting)
            }
            Some(x) if is(x.state, api::ContainerState::ContainerRunning) => {
                st.waiting.remove(&c.name);
                st.running
                    .push((x.id.clone(), c.name.clone(), x.created_at));
                Ok(Run::Running)
            }
            Some(x) if is(x.state, api::ContainerState::ContainerExited) => {
                let s = self.exited_status(&x.id, st).await?;
                if !restarts(policy, s.exit_code) {
                    st.waiting.remove(&c.name);
                    return Ok(if s.exit_code == 0 {
                        Run::Succeeded
                    } else {
                        Run::Failed
                    });
                }
                let ran = Duration::from_nanos(
                    u64::try_from(s.finished_at.saturating_sub(s.started_at)).unwrap_or(0),
                );
                let mut entry = st.backoff.get(&c.name).copied();
                let wait = Backoff::wait(&mut entry, ran);
                if let Some(b) = entry {
                    st.backoff.insert(c.name.clone(), b);
                }
                if let Some(delay) = wait {
                    let msg = format!(
                        "back-off {}s restarting failed container={} pod={}_{}({})",
                        delay.as_secs(),
                        c.name,
                        pod.name_any(),
                        pod.namespace().unwrap_or_default(),
                        uid
                    );
                    st.waiting
                        .insert(c.name.clone(), ("CrashLoopBackOff".into(), msg));
                    return Ok(Run::Waiting);
                }
                self.start_new(pod, c, sandbox_id, ip, next_attempt, st)
                    .await;
                Ok(Run::Waiting)
            }
            Some(_) => Ok(Run::Waiting),
        }
    }

    async fn exited_status(
        &self,
        id: &str,
        st: &mut State,
    ) -> Result<api::ContainerStatus, RuntimeError> {
        if let Some(s) = st.exited.get(id) {
            return Ok(s.clone());
        }
        let s = self.runtime.container_status(id).await?;
        if is(s.state, api::ContainerState::ContainerExited) {
            st.exited.insert(id.to_string(), s.clone());
        }
        Ok(s)
    }

    /// Makes sure of the image, then creates and starts the container's `attempt`-th run.
    async fn start_new(
        &self,
        pod: &Pod,
        c: &Container,
        sandbox_id: &str,
        ip: &str,
        attempt: u32,
        st: &mut State,
    ) {
        let image = c.image.clone().unwrap_or_default();
        if let Err((reason, message)) = self.ensure_image(pod, c, &image, st).await {
            st.waiting.insert(c.name.clone(), (reason, message));
            return;
        }
        if let Err(e) = super::security::verify_non_root(
            pod,
            c,
            self.runtime
                .image_status(&image)
                .await
                .ok()
                .flatten()
                .as_ref(),
        ) {
            st.waiting
                .insert(c.name.clone(), ("CreateContainerConfigError".into(), e));
            return;
        }
        let _ = std::fs::create_dir_all(spec::log_dir(&self.env, pod).join(&c.name));
        let mut sources = volumes::Sources::new(&self.client, &pod.namespace().unwrap_or_default());
        let resolved = match setup::resolve_env(&mut sources, pod, c, &self.env).await {
            Ok(mut r) => {
                let services = self.services.state();
                r.services = super::services::env_vars(pod, services.iter().map(|s| s.as_ref()));
                r
            }
            Err(e) => {
                st.waiting.insert(
                    c.name.clone(),
                    ("CreateContainerConfigError".into(), e.to_string()),
                );
                return;
            }
        };
        let vars: HashMap<String, String> = spec::environment(pod, c, &self.env, ip, &resolved)
            .into_iter()
            .collect();
        let hosts = st.hosts.clone().unwrap_or_default();
        let mounts = match setup::mounts(
            &self.env,
            self.mounter.as_ref(),
            pod,
            c,
            &hosts,
            &vars,
            ip,
            attempt,
        ) {
            Ok(m) => m,
            Err(e) => {
                st.waiting
                    .insert(c.name.clone(), ("CreateContainerConfigError".into(), e));
                return;
            }
        };
        let mut config = spec::container(pod, c, &self.env, attempt, ip, &resolved, mounts);
        super::ephemeral::target(pod, c, &st.running, &mut config);
        let sandbox_config = spec::sandbox(&self.env, pod, 0, &self.cgroup_parent(pod));
        let id = match self
            .runtime
            .create_container(sandbox_id, config, sandbox_config)
            .await
        {
            Ok(id) => {
                self.event(
                    pod,
                    Some(c.name.as_str()),
                    Type::Normal,
                    "Created",
                    "Container created",
                )
                .await;
                // Created with its allocation: nothing to resize.
                st.resize
                    .actuated
                    .insert(id.clone(), super::resize::cpu_memory(c.resources.as_ref()));
                id
            }
            Err(e) => {
                st.waiting.insert(
                    c.name.clone(),
                    ("CreateContainerError".into(), e.to_string()),
                );
                return;
            }
        };
        let started = self.runtime.start_container(&id).await;
        crate::kubelet::metrics::container_started(pod, &c.name, started.as_ref().err());
        match started {
            Ok(()) => {
                self.event(
                    pod,
                    Some(c.name.as_str()),
                    Type::Normal,
                    "Started",
                    "Container started",
                )
                .await;
                st.waiting.remove(&c.name);
                if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.post_start.clone()) {
                    let limit = Duration::from_secs(grace_seconds(pod).max(30) as u64);
                    if let Err(e) =
                        super::hooks::run(self.runtime.as_ref(), &id, ip, c, &h, limit).await
                    {
                        tracing::warn!(pod = %pod.name_any(), container = %c.name, "PostStart hook failed: {e}");
                        let _ = self.runtime.stop_container(&id, grace_seconds(pod)).await;
                        st.waiting.insert(
                            c.name.clone(),
                            (
                                "PostStartHookError".into(),
                                format!("PostStartHookError: {e}"),
                            ),
                        );
                    }
                }
            }
            Err(e) => {
                st.waiting
                    .insert(c.name.clone(), ("RunContainerError".into(), e.to_string()));
            }
        }
    }

    /// What the runtime shows of the pod now.
    pub(super) async fn observe(
        &self,
        pod: &Pod,
        st: &mut State,
    ) -> Result<Observed, RuntimeError> {
        let uid = pod.uid().unwrap_or_default();
        let mut sandboxes = self.runtime.list_pod_sandboxes(Some(&uid)).await?;
        sandboxes.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        let ready = sandboxes
            .iter()
            .find(|s| s.state == api::PodSandboxState::SandboxReady as i32);
        let all = self.runtime.list_containers(Some(&uid)).await?;
        let mut runs: HashMap<String, Runs> = HashMap::new();
        let spec = pod.spec.clone().unwrap_or_default();
        let ephemeral = super::ephemeral::containers(pod);
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .chain(ephemeral.iter())
        {
            let mut mine: Vec<&api::Container> =
                all.iter().filter(|x| name_of(x) == c.name).collect();
            mine.sort_by_key(|x| std::cmp::Reverse((attempt(x), x.created_at)));
            let mut r = Runs::default();
            if let Some(x) = mine.first() {
                r.latest = Some(self.with_message(pod, c, self.exited_status(&x.id, st).await?));
            }
            if let Some(x) = mine.get(1) {
                r.previous = Some(self.with_message(pod, c, self.exited_status(&x.id, st).await?));
            }
            runs.insert(c.name.clone(), r);
        }
        Ok(Observed {
            sandbox_ready: ready.is_some(),
            pod_ip: ready.and_then(|s| st.ips.get(&s.id).cloned()),
            host_ip: self.env.host_ip.clone(),
            probed: spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .filter_map(|c| {
                    let (id, _, _) = st.running.iter().find(|(_, n, _)| *n == c.name)?;
                    let t = st.probes.get(id).cloned().unwrap_or_default();
                    Some((c.name.clone(), (t.started(c), t.ready(c))))
                })
                .collect(),
            runs,
            waiting: st.waiting.clone(),
        })
    }
}

fn ip_of(st: &State) -> String {
    st.ips.values().next().cloned().unwrap_or_default()
}

impl Shared {
    /// An exited container's status with its termination message, as the kubelet reads it.
    fn with_message(
        &self,
        pod: &Pod,
        c: &Container,
        mut s: api::ContainerStatus,
    ) -> api::ContainerStatus {
        if is(s.state, api::ContainerState::ContainerExited) && s.message.is_empty() {
            let attempt = s.metadata.as_ref().map_or(0, |m| m.attempt);
            s.message =
                setup::termination_message(&self.env, pod, c, attempt, s.exit_code, &s.log_path);
        }
        s
    }
}

fn restarts(policy: &str, exit_code: i32) -> bool {
    policy == "Always" || (policy == "OnFailure" && exit_code != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_loop_backoff_doubles_and_resets() {
        let mut entry = None;
        assert_eq!(
            Backoff::wait(&mut entry, Duration::ZERO),
            None,
            "the first restart is at once"
        );
        assert_eq!(
            Backoff::wait(&mut entry, Duration::ZERO),
            Some(BACKOFF_START)
        );
        if let Some(b) = entry.as_mut() {
            b.last -= BACKOFF_START;
        }
        assert_eq!(Backoff::wait(&mut entry, Duration::ZERO), None);
        assert_eq!(entry.map(|b| b.delay), Some(BACKOFF_START * 2));
        assert_eq!(
            Backoff::wait(&mut entry, BACKOFF_RESET),
            None,
            "a long run starts afresh"
        );
        assert_eq!(entry.map(|b| b.delay), Some(BACKOFF_START));
        assert!(restarts("Always", 0));
        assert!(!restarts("OnFailure", 0));
        assert!(restarts("OnFailure", 1));
        assert!(!restarts("Never", 1));
    }
}
