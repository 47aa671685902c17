//! Images for a pod's containers, as `imagePullPolicy` says: present ones are used, missing
//! ones (or every one under `Always`) are pulled through CRI with the pod's sandbox config;
//! failed pulls wait out a backoff (ErrImagePull, then ImagePullBackOff), as upstream's.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;

use super::spec;
use super::worker::{Backoff, Shared, State};
use crate::events::Type;
use crate::kubelet::cri::RuntimeError;

impl Shared {
    /// The image is there, or pulled as the policy says; else the waiting reason and message.
    pub(super) async fn ensure_image(
        &self,
        pod: &Pod,
        c: &Container,
        image: &str,
        st: &mut State,
    ) -> Result<(), (String, String)> {
        let policy = c.image_pull_policy.clone().unwrap_or_else(|| {
            if image.contains('@')
                || image
                    .rsplit('/')
                    .next()
                    .is_some_and(|l| l.contains(':') && !l.ends_with(":latest"))
            {
                "IfNotPresent".into()
            } else {
                "Always".into()
            }
        });
        let present = matches!(self.runtime.image_status(image).await, Ok(Some(_)));
        if present && policy != "Always" {
            let msg = format!("Container image \"{image}\" already present on machine");
            self.event_once(st, pod, Some(c.name.as_str()), Type::Normal, "Pulled", &msg)
                .await;
            return Ok(());
        }
        if policy == "Never" {
            return Err((
                "ErrImageNeverPull".into(),
                format!("Container image \"{image}\" is not present with pull policy of Never"),
            ));
        }
        let key = format!("pull/{}", c.name);
        let mut entry = st.backoff.get(&key).copied();
        if st
            .waiting
            .get(&c.name)
            .is_some_and(|(r, _)| r == "ErrImagePull" || r == "ImagePullBackOff")
        {
            if let Some(b) = entry {
                if Instant::now() < b.last + b.delay {
                    return Err((
                        "ImagePullBackOff".into(),
                        format!("Back-off pulling image \"{image}\""),
                    ));
                }
            }
        }
        let sandbox = spec::sandbox(&self.env, pod, 0, &self.cgroup_parent(pod));
        let msg = format!("Pulling image \"{image}\"");
        self.event(pod, Some(c.name.as_str()), Type::Normal, "Pulling", &msg)
            .await;
        let started = Instant::now();
        match self.pull(pod, image, sandbox).await {
            Ok(_) => {
                st.backoff.remove(&key);
                let took = super::events::go_duration(started.elapsed());
                let size = match self.runtime.image_status(image).await {
                    Ok(Some(i)) => i.size,
                    _ => 0,
                };
                let msg = format!(
                    "Successfully pulled image \"{image}\" in {took} ({took} including waiting). Image size: {size} bytes."
                );
                self.event(pod, Some(c.name.as_str()), Type::Normal, "Pulled", &msg)
                    .await;
                Ok(())
            }
            Err(e) => {
                let _ = Backoff::wait(&mut entry, Duration::ZERO);
                if let Some(b) = entry {
                    st.backoff.insert(key, b);
                }
                let msg = match &e {
                    RuntimeError::Status { message, .. } => message.clone(),
                    other => other.to_string(),
                };
                Err((
                    "ErrImagePull".into(),
                    format!("Failed to pull image \"{image}\": {msg}"),
                ))
            }
        }
    }

    /// Pulls with each matching credential of the pod's imagePullSecrets, most specific
    /// first, then without any when none matches; the last error when all fail.
    async fn pull(
        &self,
        pod: &Pod,
        image: &str,
        sandbox: crate::kubelet::cri::api::PodSandboxConfig,
    ) -> Result<String, RuntimeError> {
        let mut creds = Vec::new();
        let mut sources = crate::kubelet::volumes::Sources::new(
            &self.client,
            &pod.namespace().unwrap_or_default(),
        );
        for r in pod
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.clone())
            .unwrap_or_default()
        {
            match sources.secret(&r.name).await {
                Ok(Some(entries)) => creds.extend(super::credentials::from_secret(&entries)),
                Ok(None) => tracing::warn!(pod = %pod.name_any(), secret = %r.name,
                    "unable to retrieve an image pull secret; attempting to pull without it"),
                Err(e) => tracing::warn!(pod = %pod.name_any(), secret = %r.name,
                    "reading an image pull secret: {e}"),
            }
        }
        let auths = super::credentials::for_image(&creds, image);
        if auths.is_empty() {
            return self.runtime.pull_image(image, None, Some(sandbox)).await;
        }
        let mut last = None;
        for auth in auths {
            match self
                .runtime
                .pull_image(image, Some(auth), Some(sandbox.clone()))
                .await
            {
                Ok(r) => return Ok(r),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(RuntimeError::Incomplete {
            op: "PullImage",
            what: "an attempt",
        }))
    }
}
