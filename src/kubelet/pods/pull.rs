//! Images for a pod's containers, as `imagePullPolicy` says: present ones are used, missing
//! ones (or every one under `Always`) are pulled through CRI with the pod's sandbox config;
//! failed pulls wait out a backoff (ErrImagePull, then ImagePullBackOff), as upstream's.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};

use super::spec;
use super::worker::{Backoff, Shared, State};
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
        let sandbox = spec::sandbox(&self.env, pod, 0);
        match self.runtime.pull_image(image, None, Some(sandbox)).await {
            Ok(_) => {
                st.backoff.remove(&key);
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
}
