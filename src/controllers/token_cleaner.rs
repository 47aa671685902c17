//! The token cleaner: bootstrap tokens (`bootstrap.kubernetes.io/token` Secrets in kube-system)
//! are deleted once their `expiration` has passed, as upstream's tokencleaner does.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

/// When a bootstrap token Secret expires (Unix seconds), if it says.
fn expires(s: &Secret) -> Option<i64> {
    let raw = s.data.as_ref()?.get("expiration")?;
    let text = std::str::from_utf8(&raw.0).ok()?;
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Runs until `stop` turns true; `shared` reads, `writer` deletes as the token-cleaner account.
pub async fn run(shared: Client, writer: Client, mut stop: watch::Receiver<bool>) {
    let (secrets, w) = reflector::store::<Secret>();
    let cfg = watcher::Config::default().fields("type=bootstrap.kubernetes.io/token");
    let mut events = reflector(
        w,
        watcher(Api::<Secret>::namespaced(shared, "kube-system"), cfg).default_backoff(),
    )
    .boxed();
    let api: Api<Secret> = Api::namespaced(writer, "kube-system");
    let mut next_check = Duration::from_secs(3600);
    loop {
        tokio::select! {
            ev = events.next() => if ev.is_none() { return },
            _ = tokio::time::sleep(next_check) => {}
            _ = stop.changed() => return,
        }
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(20), events.next()).await
        {
        }
        if !super::ready(&secrets) {
            continue;
        }
        let t = now();
        let mut soonest: Option<i64> = None;
        for s in secrets.state() {
            let Some(exp) = expires(&s) else { continue };
            if exp > t {
                soonest = Some(soonest.map_or(exp, |x| x.min(exp)));
                continue;
            }
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: s.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&s.name_any(), &dp).await {
                Ok(_) => {
                    tracing::info!(token = %s.name_any(), "deleted an expired bootstrap token")
                }
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => {
                    tracing::warn!(token = %s.name_any(), error = %e, "deleting an expired bootstrap token")
                }
            }
        }
        next_check = match soonest {
            Some(exp) => Duration::from_secs((exp - t).clamp(1, 3600) as u64),
            None => Duration::from_secs(3600),
        };
    }
}
