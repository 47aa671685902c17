//! A pod's volumes on this node, under `DATA_DIR/agent/pods/UID/volumes/`: emptyDir (a
//! directory, or tmpfs for `medium: Memory` with its sizeLimit), configMap, secret,
//! downwardAPI and projected volumes (files written atomically, [`files`]; the bound
//! ServiceAccount token requested through TokenRequest and renewed at 80 % of its life), hostPath
//! (with its `type` checks), persistentVolumeClaim and generic ephemeral volumes ([`claims`]:
//! the bound PV's hostPath or local path, as the local-path provisioner makes them). Content volumes are written again on every
//! refresh, so ConfigMap and Secret updates reach the mounted files.

mod claims;
pub mod files;
pub mod local_path;
pub mod mount;
mod nofollow;
pub mod subpath;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, KeyToPath, Pod, Secret, Volume};
use kube::api::Api;
use kube::{Client, ResourceExt};

use files::Payload;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    /// A source the pod needs is missing (`configmap "x" not found`).
    #[error("{0}")]
    Missing(String),
    #[error("{0}")]
    Api(#[from] kube::Error),
    /// One volume could not be set up; upstream's FailedMount words.
    #[error("MountVolume.SetUp failed for volume \"{name}\" : {source}")]
    SetUp {
        name: String,
        source: Box<VolumeError>,
    },
}

/// Where a volume is on the host, and whether containers get it read-only.
#[derive(Debug, Clone)]
pub struct HostVolume {
    pub path: PathBuf,
    pub read_only: bool,
}

/// A pod's volume state kept between passes: tokens and when they need renewing.
#[derive(Default)]
pub struct State {
    tokens: HashMap<String, (String, Instant)>,
    pub last_refresh: Option<Instant>,
}

/// The directory of a pod's files on this node.
pub fn pod_dir(pods_dir: &Path, uid: &str) -> PathBuf {
    pods_dir.join(uid)
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> VolumeError {
    move |source| VolumeError::Io { context, source }
}

/// Reads the ConfigMaps and Secrets a pod refers to, once per pass.
pub struct Sources<'a> {
    pub client: &'a Client,
    pub namespace: String,
    config_maps: HashMap<String, Option<ConfigMap>>,
    secrets: HashMap<String, Option<Secret>>,
}

impl<'a> Sources<'a> {
    pub fn new(client: &'a Client, namespace: &str) -> Self {
        Sources {
            client,
            namespace: namespace.to_string(),
            config_maps: HashMap::new(),
            secrets: HashMap::new(),
        }
    }

    /// A ConfigMap's entries (binaryData decoded), or None when it does not exist.
    pub async fn config_map(
        &mut self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, VolumeError> {
        if !self.config_maps.contains_key(name) {
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
            let got = api.get_opt(name).await?;
            self.config_maps.insert(name.to_string(), got);
        }
        Ok(self.config_maps.get(name).cloned().flatten().map(|cm| {
            let mut out: BTreeMap<String, Vec<u8>> = cm
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            for (k, v) in cm.binary_data.unwrap_or_default() {
                out.insert(k, v.0);
            }
            out
        }))
    }

    /// A Secret's entries, or None when it does not exist.
    pub async fn secret(
        &mut self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, VolumeError> {
        if !self.secrets.contains_key(name) {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
            let got = api.get_opt(name).await?;
            self.secrets.insert(name.to_string(), got);
        }
        Ok(self.secrets.get(name).cloned().flatten().map(|s| {
            let mut out: BTreeMap<String, Vec<u8>> = s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            for (k, v) in s.string_data.unwrap_or_default() {
                out.insert(k, v.into_bytes());
            }
            out
        }))
    }
}

/// The files of a configMap or secret source: all keys, or the listed items.
fn key_files(
    entries: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: u32,
    (what, optional): (&str, bool),
) -> Result<BTreeMap<String, Payload>, VolumeError> {
    let mut out = BTreeMap::new();
    match items {
        Some(items) if !items.is_empty() => {
            for i in items {
                let Some(data) = entries.get(&i.key) else {
                    // An optional source's missing key is left out, as upstream's.
                    if optional {
                        continue;
                    }
                    return Err(VolumeError::Missing(format!(
                        "configmap references non-existent config key: {}",
                        i.key
                    ))
                    .with_what(what));
                };
                out.insert(
                    i.path.clone(),
                    Payload {
                        data: data.clone(),
                        mode: i.mode.map_or(default_mode, |m| m as u32),
                    },
                );
            }
        }
        _ => {
            for (k, v) in entries {
                out.insert(
                    k.clone(),
                    Payload {
                        data: v.clone(),
                        mode: default_mode,
                    },
                );
            }
        }
    }
    Ok(out)
}

impl VolumeError {
    fn with_what(self, what: &str) -> Self {
        match self {
            VolumeError::Missing(m) if what == "secret" => VolumeError::Missing(
                m.replace("configmap references", "secret references")
                    .replace("config key", "secret key"),
            ),
            other => other,
        }
    }
}

/// A container resource (`limits.memory`, `requests.cpu`, ...) as the downward API reports it,
/// in units of `divisor`; a missing limit is the pod's, else the node's allocatable.
pub fn resource_value(
    pod: &Pod,
    container: &str,
    resource: &str,
    divisor: Option<&str>,
    node: crate::kubelet::pods::spec::Allocatable,
) -> String {
    let c = pod.spec.as_ref().and_then(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .find(|c| c.name == container)
    });
    let (kind, name) = resource.split_once('.').unwrap_or(("limits", resource));
    let res = c.and_then(|c| c.resources.clone()).unwrap_or_default();
    let map = if kind == "requests" {
        res.requests
    } else {
        res.limits
    };
    // Without a limit of its own, a container is held to the pod's, else the node's.
    let pod_limit = (kind == "limits")
        .then(|| crate::kubelet::pods::spec::pod_limit(pod, name))
        .flatten();
    let milli = map
        .and_then(|m| m.get(name).cloned())
        .and_then(|q| crate::quantity::milli(&q.0))
        .or(pod_limit)
        .unwrap_or(match (kind, name) {
            ("limits", "cpu") => i128::from(node.cpu_milli),
            ("limits", "memory") => i128::from(node.memory_bytes) * 1000,
            _ => 0,
        });
    let div = divisor
        .and_then(crate::quantity::milli)
        .filter(|d| *d > 0)
        .unwrap_or(1000);
    // Rounded up, as upstream's ConvertResourceCPUToString and friends do.
    ((milli + div - 1) / div).to_string()
}

/// Gets (or renews) a bound token for the pod's service account.
async fn token(
    client: &Client,
    pod: &Pod,
    audience: Option<&str>,
    expiration: i64,
    st: &mut State,
    key: &str,
) -> Result<String, VolumeError> {
    if let Some((t, renew_at)) = st.tokens.get(key) {
        if Instant::now() < *renew_at {
            return Ok(t.clone());
        }
    }
    let ns = pod.namespace().unwrap_or_default();
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let body = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": audience.map(|a| vec![a.to_string()]).unwrap_or_default(),
            "expirationSeconds": expiration,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.name_any(), "uid": pod.uid()},
        }
    });
    let req = http::Request::post(format!(
        "/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token"
    ))
    .header("content-type", "application/json")
    .body(serde_json::to_vec(&body).unwrap_or_default())
    .map_err(|e| VolumeError::Invalid(format!("token request: {e}")))?;
    let resp: serde_json::Value = client.request(req).await?;
    let token = resp["status"]["token"]
        .as_str()
        .ok_or_else(|| VolumeError::Invalid("the token request returned no token".into()))?
        .to_string();
    let ttl = Duration::from_secs(u64::try_from(expiration).unwrap_or(3600));
    st.tokens.insert(
        key.to_string(),
        (token.clone(), Instant::now() + ttl.mul_f64(0.8)),
    );
    Ok(token)
}

/// Context for writing one pod's volumes.
pub struct Ctx<'a> {
    pub client: &'a Client,
    pub pods_dir: &'a Path,
    pub pod_ip: &'a str,
    pub env: &'a crate::kubelet::pods::spec::Env,
    pub mounter: &'a dyn mount::Mounter,
}

/// The pod's `securityContext.fsGroup`: the group that owns its volumes.
pub fn fs_group(pod: &Pod) -> Option<u32> {
    pod.spec
        .as_ref()?
        .security_context
        .as_ref()?
        .fs_group
        .and_then(|g| u32::try_from(g).ok())
}

fn mode(m: Option<i32>, default: u32) -> u32 {
    m.map_or(default, |m| m as u32)
}

/// Sets up every volume of the pod; where each is on the host, by volume name.
pub async fn prepare(
    ctx: &Ctx<'_>,
    pod: &Pod,
    st: &mut State,
) -> Result<HashMap<String, HostVolume>, VolumeError> {
    let uid = pod.uid().unwrap_or_default();
    let base = pod_dir(ctx.pods_dir, &uid).join("volumes");
    let mut sources = Sources::new(ctx.client, &pod.namespace().unwrap_or_default());
    let mut out = HashMap::new();
    let volumes: Vec<Volume> = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    for v in &volumes {
        let hv = volume(ctx, pod, v, &base, &mut sources, st)
            .await
            .map_err(|e| VolumeError::SetUp {
                name: v.name.clone(),
                source: Box::new(e),
            })?;
        out.insert(v.name.clone(), hv);
    }
    st.last_refresh = Some(Instant::now());
    Ok(out)
}

async fn volume(
    ctx: &Ctx<'_>,
    pod: &Pod,
    v: &Volume,
    base: &Path,
    sources: &mut Sources<'_>,
    st: &mut State,
) -> Result<HostVolume, VolumeError> {
    let rw = |path: PathBuf| HostVolume {
        path,
        read_only: false,
    };
    let ro = |path: PathBuf| HostVolume {
        path,
        read_only: true,
    };
    if let Some(e) = &v.empty_dir {
        let dir = base.join("kubernetes.io~empty-dir").join(&v.name);
        // Open to every user of the pod, as upstream's (a tmpfs root is 1777 of itself).
        make_dir(&dir, 0o777)?;
        if e.medium.as_deref() == Some("Memory") {
            let size = e
                .size_limit
                .as_ref()
                .and_then(|q| crate::quantity::milli(&q.0))
                .map(|m| (m / 1000) as u64);
            ctx.mounter.tmpfs(&dir, size)?;
        }
        if let Some(gid) = fs_group(pod) {
            files::set_ownership(&dir, gid, false)?;
        }
        return Ok(rw(dir));
    }
    if let Some(h) = &v.host_path {
        let path = PathBuf::from(&h.path);
        check_host_path(&path, h.type_.as_deref().unwrap_or(""))?;
        return Ok(rw(path));
    }
    if let Some(c) = &v.persistent_volume_claim {
        return Ok(HostVolume {
            path: claims::claim_path(
                ctx.client,
                claims::claim(ctx.client, &sources.namespace, &c.claim_name).await?,
                &local_path::notes_dir(ctx.pods_dir),
            )
            .await?,
            read_only: c.read_only.unwrap_or(false),
        });
    }
    if v.ephemeral.is_some() {
        let claim = claims::ephemeral_claim(ctx.client, pod, &v.name).await?;
        return Ok(rw(claims::claim_path(
            ctx.client,
            claim,
            &local_path::notes_dir(ctx.pods_dir),
        )
        .await?));
    }
    let dir = |plugin: &str| base.join(plugin).join(&v.name);
    let (target, files) = if let Some(cm) = &v.config_map {
        let entries = match sources.config_map(&cm.name).await? {
            Some(e) => e,
            None if cm.optional.unwrap_or(false) => BTreeMap::new(),
            None => {
                return Err(VolumeError::Missing(format!(
                    "configmap \"{}\" not found",
                    cm.name
                )))
            }
        };
        let files = key_files(
            &entries,
            cm.items.as_ref(),
            mode(cm.default_mode, 0o644),
            ("configmap", cm.optional.unwrap_or(false)),
        )?;
        (dir("kubernetes.io~configmap"), files)
    } else if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let entries = match sources.secret(&name).await? {
            Some(e) => e,
            None if s.optional.unwrap_or(false) => BTreeMap::new(),
            None => return Err(VolumeError::Missing(format!("secret \"{name}\" not found"))),
        };
        let files = key_files(
            &entries,
            s.items.as_ref(),
            mode(s.default_mode, 0o644),
            ("secret", s.optional.unwrap_or(false)),
        )?;
        (dir("kubernetes.io~secret"), files)
    } else if let Some(d) = &v.downward_api {
        let mut files = BTreeMap::new();
        for item in d.items.iter().flatten() {
            let data = downward_item(ctx, pod, item)?;
            files.insert(
                item.path.clone(),
                Payload {
                    data,
                    mode: mode(item.mode, mode(d.default_mode, 0o644)),
                },
            );
        }
        (dir("kubernetes.io~downward-api"), files)
    } else if let Some(p) = &v.projected {
        let default = mode(p.default_mode, 0o644);
        let mut files = BTreeMap::new();
        for (i, src) in p.sources.iter().flatten().enumerate() {
            if let Some(cm) = &src.config_map {
                match sources.config_map(&cm.name).await? {
                    Some(e) => files.extend(key_files(
                        &e,
                        cm.items.as_ref(),
                        default,
                        ("configmap", cm.optional.unwrap_or(false)),
                    )?),
                    None if cm.optional.unwrap_or(false) => {}
                    None => {
                        return Err(VolumeError::Missing(format!(
                            "configmap \"{}\" not found",
                            cm.name
                        )))
                    }
                }
            }
            if let Some(s) = &src.secret {
                match sources.secret(&s.name).await? {
                    Some(e) => files.extend(key_files(
                        &e,
                        s.items.as_ref(),
                        default,
                        ("secret", s.optional.unwrap_or(false)),
                    )?),
                    None if s.optional.unwrap_or(false) => {}
                    None => {
                        return Err(VolumeError::Missing(format!(
                            "secret \"{}\" not found",
                            s.name
                        )))
                    }
                }
            }
            if let Some(d) = &src.downward_api {
                for item in d.items.iter().flatten() {
                    let data = downward_item(ctx, pod, item)?;
                    files.insert(
                        item.path.clone(),
                        Payload {
                            data,
                            mode: mode(item.mode, default),
                        },
                    );
                }
            }
            if let Some(t) = &src.service_account_token {
                let key = format!("{}/{i}", v.name);
                let tok = token(
                    ctx.client,
                    pod,
                    t.audience.as_deref(),
                    t.expiration_seconds.unwrap_or(3600),
                    st,
                    &key,
                )
                .await?;
                files.insert(
                    t.path.clone(),
                    Payload {
                        data: tok.into_bytes(),
                        mode: default,
                    },
                );
            }
        }
        (dir("kubernetes.io~projected"), files)
    } else {
        // Volume types this kubelet does not set up (CSI, NFS, image...):
        // the pod waits with FailedMount rather than run on a directory that is not its
        // volume.
        let kind = serde_json::to_value(v)
            .ok()
            .and_then(|j| {
                j.as_object()?
                    .keys()
                    .find(|k| k.as_str() != "name")
                    .cloned()
            })
            .unwrap_or_else(|| "unknown".into());
        return Err(VolumeError::Invalid(format!(
            "volume \"{}\": {kind} volumes are not supported by this kubelet (emptyDir, hostPath, persistentVolumeClaim, ephemeral, configMap, secret, downwardAPI and projected are)",
            v.name
        )));
    };
    files::write_atomic(&target, &files, fs_group(pod))?;
    Ok(ro(target))
}

fn downward_item(
    ctx: &Ctx<'_>,
    pod: &Pod,
    item: &k8s_openapi::api::core::v1::DownwardAPIVolumeFile,
) -> Result<Vec<u8>, VolumeError> {
    if let Some(f) = &item.field_ref {
        let value = match f.field_path.as_str() {
            // The volume form of labels and annotations: every entry, `key="value"` per line.
            "metadata.labels" | "metadata.annotations" => {
                let map = if f.field_path == "metadata.labels" {
                    pod.labels()
                } else {
                    pod.annotations()
                };
                map.iter().map(|(k, v)| format!("{k}={v:?}\n")).collect()
            }
            p => crate::kubelet::pods::spec::field(pod, ctx.env, ctx.pod_ip, p)
                .ok_or_else(|| VolumeError::Invalid(format!("unsupported fieldPath {p:?}")))?,
        };
        return Ok(value.into_bytes());
    }
    if let Some(r) = &item.resource_field_ref {
        let container = r.container_name.clone().unwrap_or_default();
        return Ok(resource_value(
            pod,
            &container,
            &r.resource,
            r.divisor.as_ref().map(|d| d.0.as_str()),
            ctx.env.allocatable,
        )
        .into_bytes());
    }
    Err(VolumeError::Invalid(format!(
        "downwardAPI item {:?} has no source",
        item.path
    )))
}

fn check_host_path(path: &Path, ty: &str) -> Result<(), VolumeError> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(path);
    let wrong = |what: &str| {
        Err(VolumeError::Invalid(format!(
            "hostPath type check failed: {} is not a {what}",
            path.display()
        )))
    };
    match ty {
        "DirectoryOrCreate" => {
            if meta.is_err() {
                std::fs::create_dir_all(path)
                    .map_err(io(format!("creating {}", path.display())))?;
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755));
            }
            Ok(())
        }
        "FileOrCreate" => {
            if meta.is_err() {
                if let Some(parent) = path.parent() {
                    let _ = std::fs::create_dir_all(parent);
                }
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(io(format!("creating {}", path.display())))?;
            }
            Ok(())
        }
        "Directory" if !meta.as_ref().is_ok_and(|m| m.is_dir()) => wrong("directory"),
        "File" if !meta.as_ref().is_ok_and(|m| m.is_file()) => wrong("file"),
        "Socket" if !meta.as_ref().is_ok_and(|m| m.file_type().is_socket()) => wrong("socket"),
        "CharDevice" if !meta.as_ref().is_ok_and(|m| m.file_type().is_char_device()) => {
            wrong("character device")
        }
        "BlockDevice" if !meta.as_ref().is_ok_and(|m| m.file_type().is_block_device()) => {
            wrong("block device")
        }
        _ => Ok(()),
    }
}

/// Creates `dir` (and its parents) and gives it `mode`, whatever the umask.
pub(super) fn make_dir(dir: &Path, mode: u32) -> Result<(), VolumeError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(io(format!("setting the mode of {}", dir.display())))
}

/// Removes a pod's files (tmpfs volumes unmounted first).
pub fn remove_pod(pods_dir: &Path, uid: &str, mounter: &dyn mount::Mounter) {
    let dir = pod_dir(pods_dir, uid);
    // tmpfs emptyDirs and subPath binds: removing through a bind mount would empty the volume.
    if !mounter.unmount_under(&dir) {
        tracing::warn!(dir = %dir.display(), "a pod's files kept: something is still mounted under them");
        return;
    }
    // Never through a mount point, should one have been missed above.
    if dir.exists() && !mount::remove_unmounted(&dir) {
        tracing::warn!(dir = %dir.display(), "some of a pod's files could not be removed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_pick_keys_and_modes() {
        let mut entries = BTreeMap::new();
        entries.insert("a".to_string(), b"1".to_vec());
        entries.insert("b".to_string(), b"2".to_vec());
        let all = key_files(&entries, None, 0o644, ("configmap", false)).expect("all");
        assert_eq!(all.len(), 2);
        let items = vec![KeyToPath {
            key: "b".into(),
            path: "dir/b.txt".into(),
            mode: Some(0o400),
            ..Default::default()
        }];
        let some = key_files(&entries, Some(&items), 0o644, ("configmap", false)).expect("items");
        assert_eq!(
            some["dir/b.txt"],
            Payload {
                data: b"2".to_vec(),
                mode: 0o400
            }
        );
        let missing = vec![KeyToPath {
            key: "z".into(),
            path: "z".into(),
            mode: None,
            ..Default::default()
        }];
        let err =
            key_files(&entries, Some(&missing), 0o644, ("secret", false)).expect_err("missing key");
        // Optional: the missing key is left out.
        let none = key_files(&entries, Some(&missing), 0o644, ("secret", true)).expect("optional");
        assert!(none.is_empty());
        assert!(
            err.to_string()
                .contains("secret references non-existent secret key: z"),
            "{err}"
        );
    }

    #[test]
    fn resource_values_round_up_in_divisor_units() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}}}]}
        }))
        .expect("pod");
        let node = crate::kubelet::pods::spec::Allocatable {
            cpu_milli: 1500,
            memory_bytes: 1 << 30,
        };
        assert_eq!(resource_value(&pod, "c", "limits.cpu", None, node), "1");
        assert_eq!(
            resource_value(&pod, "c", "limits.cpu", Some("1m"), node),
            "250"
        );
        assert_eq!(
            resource_value(&pod, "c", "limits.memory", Some("1Mi"), node),
            "64"
        );
        assert_eq!(
            resource_value(&pod, "c", "requests.memory", None, node),
            "0"
        );
        assert_eq!(
            resource_value(&pod, "x", "limits.cpu", None, node),
            "2",
            "no limit: the node's allocatable, rounded up"
        );
        assert_eq!(
            resource_value(&pod, "x", "limits.memory", Some("1Mi"), node),
            "1024",
            "no limit: the node's allocatable memory"
        );
    }
}
