//! Image garbage collection, as the upstream kubelet's image GC manager: every five minutes,
//! when the image filesystem is at least `--image-gc-high-threshold` percent used, unused
//! images are removed, least recently used first, until it is back to
//! `--image-gc-low-threshold`. An image is never removed while any container (running or not)
//! uses it, before `--minimum-image-gc-age` after it was first seen, or when it is pinned:
//! the pause image and the air-gapped images k1s imports from `DATA_DIR/agent/images/` (a site
//! without a registry could not get them back). Under disk pressure the eviction manager asks
//! for every unused image to go before it evicts pods, as upstream's node-level reclaim does.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::kubelet::cri::{api, Runtime, RuntimeError};

/// How often the collector looks (upstream's ImageGCPeriod).
pub const PERIOD: Duration = Duration::from_secs(300);

/// Why a collection fell short.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("image garbage collection: {0}")]
    Runtime(#[from] RuntimeError),
    #[error("Failed to garbage collect required amount of images. Attempted to free {wanted} bytes, but only found {freed} bytes eligible to free.")]
    Short { wanted: u64, freed: u64 },
}

/// The thresholds, as the kubelet's flags give them.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Percent of the image filesystem used at which collection starts (100: never).
    pub high: u8,
    /// Percent it collects down to.
    pub low: u8,
    /// How long an image is left alone after it is first seen.
    pub min_age: Duration,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            high: 85,
            low: 80,
            min_age: Duration::from_secs(120),
        }
    }
}

/// What the collector remembers of an image.
#[derive(Clone, Copy, Debug)]
struct Record {
    first_seen: Instant,
    last_used: Instant,
}

/// An image that may be removed, with what removing it frees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub size: u64,
}

/// Removes unused images.
pub struct Collector {
    pub runtime: Arc<dyn Runtime>,
    pub policy: Policy,
    /// The image filesystem (containerd's root).
    pub imagefs: PathBuf,
    /// Image names never removed.
    pub pinned: HashSet<String>,
    records: Mutex<HashMap<String, Record>>,
}

fn names(i: &api::Image) -> impl Iterator<Item = &String> {
    std::iter::once(&i.id)
        .chain(i.repo_tags.iter())
        .chain(i.repo_digests.iter())
}

/// The unused, unpinned images old enough to go, least recently used first.
fn candidates(
    images: &[api::Image],
    records: &HashMap<String, Record>,
    in_use: &HashSet<String>,
    pinned: &HashSet<String>,
    now: Instant,
    min_age: Duration,
) -> Vec<Candidate> {
    let mut out: Vec<(Record, Candidate)> = images
        .iter()
        .filter(|i| !i.pinned && !names(i).any(|n| in_use.contains(n) || pinned.contains(n)))
        .filter_map(|i| {
            let r = *records.get(&i.id)?;
            (now.duration_since(r.first_seen) >= min_age).then(|| {
                (
                    r,
                    Candidate {
                        id: i.id.clone(),
                        size: i.size,
                    },
                )
            })
        })
        .collect();
    out.sort_by_key(|(r, c)| (r.last_used, r.first_seen, c.id.clone()));
    out.into_iter().map(|(_, c)| c).collect()
}

/// Bytes to free so that `used` of `capacity` is down to `low` percent (upstream's
/// amountToFree), when usage is at or above `high` percent.
fn to_free(capacity: u64, available: u64, high: u8, low: u8) -> Option<u64> {
    if capacity == 0 || high >= 100 {
        return None;
    }
    let used_pct = 100 - available.saturating_mul(100) / capacity;
    if used_pct < u64::from(high) {
        return None;
    }
    let wanted = capacity / 100 * u64::from(100 - low.min(100));
    Some(wanted.saturating_sub(available))
}

/// The image filesystem's size and what is free on it, in bytes.
fn fs_usage(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return None;
        }
        Some((st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize))
    }
}

impl Collector {
    pub fn new(
        runtime: Arc<dyn Runtime>,
        policy: Policy,
        imagefs: PathBuf,
        pinned: HashSet<String>,
    ) -> Collector {
        Collector {
            runtime,
            policy,
            imagefs,
            pinned,
            records: Mutex::new(HashMap::new()),
        }
    }

    /// Lists the images and what the containers use, updating when each was first seen and
    /// last used.
    async fn detect(&self, now: Instant) -> Result<(Vec<api::Image>, HashSet<String>), GcError> {
        let images = self.runtime.list_images().await?;
        let mut in_use = HashSet::new();
        for c in self.runtime.list_containers(None).await? {
            if !c.image_ref.is_empty() {
                in_use.insert(c.image_ref.clone());
            }
            if let Some(spec) = c.image {
                in_use.insert(spec.image);
            }
        }
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        records.retain(|id, _| images.iter().any(|i| &i.id == id));
        for i in &images {
            let r = records.entry(i.id.clone()).or_insert(Record {
                first_seen: now,
                last_used: now,
            });
            if names(i).any(|n| in_use.contains(n)) {
                r.last_used = now;
            }
        }
        Ok((images, in_use))
    }

    /// Removes unused images, oldest use first, until `bytes` are freed (`u64::MAX`: every
    /// one that may go); what was freed.
    pub async fn free(&self, bytes: u64) -> Result<u64, GcError> {
        let now = Instant::now();
        let (images, in_use) = self.detect(now).await?;
        let chosen = {
            let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
            candidates(
                &images,
                &records,
                &in_use,
                &self.pinned,
                now,
                self.policy.min_age,
            )
        };
        let mut freed = 0u64;
        for c in chosen {
            if freed >= bytes {
                break;
            }
            match self.runtime.remove_image(&c.id).await {
                Ok(()) => {
                    tracing::info!(image = %c.id, size = c.size, "removed an unused image");
                    freed = freed.saturating_add(c.size);
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => tracing::warn!(image = %c.id, "removing an unused image: {e}"),
            }
        }
        Ok(freed)
    }

    /// One pass: collects when the image filesystem is over the high threshold.
    pub async fn collect(&self) -> Result<u64, GcError> {
        let Some((capacity, available)) = fs_usage(&self.imagefs) else {
            self.detect(Instant::now()).await?;
            return Ok(0);
        };
        let Some(wanted) = to_free(capacity, available, self.policy.high, self.policy.low) else {
            self.detect(Instant::now()).await?;
            return Ok(0);
        };
        let freed = self.free(wanted).await?;
        if freed < wanted {
            return Err(GcError::Short { wanted, freed });
        }
        Ok(freed)
    }

    /// Collects every [`PERIOD`] (the first time at once) until `stop`; a collection that
    /// fell short is reported through `failed` (the node's FreeDiskSpaceFailed event).
    pub async fn run(
        self: Arc<Self>,
        failed: impl Fn(&GcError) + Send,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(PERIOD);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            match self.collect().await {
                Ok(_) => {}
                Err(e @ GcError::Short { .. }) => {
                    tracing::warn!("{e}");
                    failed(&e);
                }
                Err(e) => tracing::warn!("{e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, tag: &str, size: u64) -> api::Image {
        api::Image {
            id: id.into(),
            repo_tags: vec![tag.into()],
            size,
            ..Default::default()
        }
    }

    #[test]
    fn unused_unpinned_old_images_go_least_recently_used_first() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let images = vec![
            image("sha256:a", "k1s.local/busybox:1", 10),
            image("sha256:b", "registry.example/app:1", 20),
            image("sha256:c", "registry.example/app:2", 30),
            image("sha256:d", "registry.example/new:1", 40),
            image("sha256:e", "registry.example/used:1", 50),
        ];
        let rec = |first: u64, used: u64| Record {
            first_seen: at(first),
            last_used: at(used),
        };
        let records: HashMap<String, Record> = [
            ("sha256:a", rec(0, 0)),
            ("sha256:b", rec(0, 200)),
            ("sha256:c", rec(0, 100)),
            ("sha256:d", rec(290, 290)),
            ("sha256:e", rec(0, 300)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let in_use: HashSet<String> = ["sha256:e".to_string()].into();
        let pinned: HashSet<String> = ["k1s.local/busybox:1".to_string()].into();
        let got = candidates(
            &images,
            &records,
            &in_use,
            &pinned,
            at(300),
            Duration::from_secs(120),
        );
        let ids: Vec<&str> = got.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            ["sha256:c", "sha256:b"],
            "d is too new, e in use, a pinned"
        );
        // An image the runtime pins itself stays too.
        let mut pinned_by_runtime = images.clone();
        pinned_by_runtime[2].pinned = true;
        let got = candidates(
            &pinned_by_runtime,
            &records,
            &in_use,
            &pinned,
            at(300),
            Duration::from_secs(120),
        );
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn collection_starts_at_high_and_frees_down_to_low() {
        // 100 GiB, 10 GiB free: 90 % used, over 85: free to 80 % used (20 GiB free).
        let g = 1u64 << 30;
        assert_eq!(
            to_free(100 * g, 10 * g, 85, 80),
            Some(100 * g / 100 * 20 - 10 * g)
        );
        assert_eq!(to_free(100 * g, 20 * g, 85, 80), None, "80 % used");
        assert_eq!(to_free(100 * g, 0, 100, 80), None, "100 turns it off");
        assert_eq!(to_free(0, 0, 85, 80), None);
    }
}
