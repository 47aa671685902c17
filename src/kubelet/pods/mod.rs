//! The kubelet's pods: a watch of the pods bound to this node (`spec.nodeName`, as the node
//! authorizer allows) feeding one worker per pod ([`worker`]), which converges the runtime
//! towards the pod's spec ([`spec`]) and posts its status ([`status`]). Sandboxes of pods the
//! API no longer has (deleted while the kubelet was down) are removed after the first list; a
//! stopping kubelet leaves running pods alone, for the next one to adopt.

pub mod admit;
pub mod credentials;
pub mod dns;
pub mod ephemeral;
pub mod events;
mod evict;
pub mod hooks;
mod prober;
pub mod probes;
mod pull;
pub mod resize;
mod sandbox;
pub mod security;
pub mod services;
pub mod setup;
pub mod spec;
pub mod status;
mod terminate;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use tokio::sync::watch;

pub use worker::Shared;

/// How often sandboxes of pods the API no longer has are looked for.
const ORPHANS_EVERY: Duration = Duration::from_secs(30);

struct Handle {
    pod: watch::Sender<Option<Arc<Pod>>>,
    task: tokio::task::JoinHandle<()>,
}

/// Runs the pod workers until `stop` turns true.
pub async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", shared.env.node_name));
    let mut events = watcher(api, cfg).default_backoff().boxed();
    let mut workers: HashMap<String, Handle> = HashMap::new();
    let mut listed: HashSet<String> = HashSet::new();
    let mut synced = false;
    let mut orphans = tokio::time::interval(ORPHANS_EVERY);
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(watcher::Event::Init)) => listed.clear(),
                Some(Ok(watcher::Event::InitApply(p))) => {
                    listed.insert(p.uid().unwrap_or_default());
                    dispatch(&shared, &mut workers, Some(p), &stop);
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    // Pods deleted while the watch was down.
                    for (uid, h) in &workers {
                        if !listed.contains(uid) {
                            h.pod.send_replace(None);
                        }
                    }
                    if !synced {
                        synced = true;
                        remove_orphans(&shared, &workers).await;
                    }
                }
                Some(Ok(watcher::Event::Apply(p))) => dispatch(&shared, &mut workers, Some(p), &stop),
                Some(Ok(watcher::Event::Delete(p))) => {
                    if let Some(h) = workers.get(&p.uid().unwrap_or_default()) {
                        h.pod.send_replace(None);
                    }
                }
                Some(Err(e)) => tracing::warn!("watching this node's pods: {e}"),
                None => return,
            },
            _ = orphans.tick() => {
                workers.retain(|_, h| !h.task.is_finished());
                if synced {
                    remove_orphans(&shared, &workers).await;
                }
            }
            _ = stop.changed() => {
                for h in workers.values() {
                    h.task.abort();
                }
                return;
            }
        }
    }
}

fn dispatch(
    shared: &Arc<Shared>,
    workers: &mut HashMap<String, Handle>,
    pod: Option<Pod>,
    stop: &watch::Receiver<bool>,
) {
    let Some(pod) = pod else { return };
    let uid = pod.uid().unwrap_or_default();
    if let Some(h) = workers.get(&uid) {
        if !h.task.is_finished() {
            h.pod.send_replace(Some(Arc::new(pod)));
            return;
        }
    }
    let (tx, rx) = watch::channel(Some(Arc::new(pod)));
    let task = tokio::spawn(work(shared.clone(), rx, stop.clone()));
    workers.insert(uid, Handle { pod: tx, task });
}

/// One pod's worker: passes on every change and every tick until the pod is gone.
async fn work(
    shared: Arc<Shared>,
    mut rx: watch::Receiver<Option<Arc<Pod>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut state = worker::State::default();
    let first = rx.borrow_and_update().clone();
    let Some(mut pod) = first else {
        return;
    };
    loop {
        let wait = if pod.metadata.deletion_timestamp.is_some() {
            if shared.terminate(&pod).await {
                return;
            }
            Duration::from_secs(2)
        } else {
            shared.sync(&pod, &mut state).await
        };
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        let next = rx.borrow_and_update().clone();
        match next {
            Some(p) => pod = p,
            None => {
                // Gone from the API without a graceful deletion reaching us.
                let uid = pod.uid().unwrap_or_default();
                if let Err(e) = shared.kill_pod(&uid, 2).await {
                    tracing::warn!(pod = %pod.name_any(), "removing a deleted pod: {e}");
                }
                shared.forget_pod(&uid);
                return;
            }
        }
    }
}

/// Removes sandboxes (and their containers) of pods this kubelet has no worker for.
async fn remove_orphans(shared: &Shared, workers: &HashMap<String, Handle>) {
    let sandboxes = match shared.runtime.list_pod_sandboxes(None).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("listing sandboxes: {e}");
            return;
        }
    };
    let orphans: HashSet<String> = sandboxes
        .iter()
        .filter_map(|s| s.metadata.as_ref().map(|m| m.uid.clone()))
        .filter(|uid| !workers.contains_key(uid))
        .collect();
    // Files of pods that are gone (deleted while the kubelet was down).
    if let Ok(entries) = std::fs::read_dir(&shared.env.pods_dir) {
        for e in entries.filter_map(Result::ok) {
            let uid = e.file_name().to_string_lossy().into_owned();
            if !workers.contains_key(&uid) && !orphans.contains(&uid) {
                shared.forget_pod(&uid);
            }
        }
    }
    for uid in orphans {
        tracing::info!(uid, "removing the sandbox of a pod that no longer exists");
        if let Err(e) = shared.kill_pod(&uid, 2).await {
            tracing::warn!(uid, "removing an orphaned sandbox: {e}");
        }
        shared.forget_pod(&uid);
    }
    shared
        .allocations
        .retain(&workers.keys().cloned().collect());
    // Cgroups of pods that are gone (or whose removal found processes still there).
    if let Some(cgroups) = &shared.cgroups {
        cgroups.sweep(&workers.keys().cloned().collect());
    }
}
