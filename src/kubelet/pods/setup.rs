//! What a container needs besides its image, as the kubelet's `generateContainerConfig`
//! prepares it: environment values from ConfigMaps, Secrets and resources (`env.valueFrom`,
//! `envFrom`), the mounts of its `volumeMounts` (with `subPath` and `subPathExpr`), the
//! kubelet-managed `/etc/hosts`, and the termination-message file, read back when it exits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;

use super::spec::{self, Env, Resolved};
use crate::kubelet::cri::api;
use crate::kubelet::volumes::{self, HostVolume, Sources, VolumeError};

/// Most of a termination message the kubelet keeps (upstream: 4 KiB per container).
const MAX_MESSAGE: usize = 4096;

/// Resolves `envFrom` and `env.valueFrom` (other than fieldRef) for a container.
pub async fn resolve_env(
    sources: &mut Sources<'_>,
    pod: &Pod,
    c: &Container,
    env: &Env,
) -> Result<Resolved, VolumeError> {
    let ns = pod.namespace().unwrap_or_default();
    let mut out = Resolved::default();
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let entries = if let Some(cm) = &from.config_map_ref {
            match sources.config_map(&cm.name).await? {
                Some(e) => e,
                None if cm.optional.unwrap_or(false) => continue,
                None => {
                    return Err(VolumeError::Missing(format!(
                        "configmap \"{}\" not found",
                        cm.name
                    )))
                }
            }
        } else if let Some(s) = &from.secret_ref {
            match sources.secret(&s.name).await? {
                Some(e) => e,
                None if s.optional.unwrap_or(false) => continue,
                None => {
                    return Err(VolumeError::Missing(format!(
                        "secret \"{}\" not found",
                        s.name
                    )))
                }
            }
        } else {
            continue;
        };
        for (k, v) in entries {
            out.env_from.push((
                format!("{prefix}{k}"),
                String::from_utf8_lossy(&v).into_owned(),
            ));
        }
    }
    for e in c.env.iter().flatten() {
        let Some(src) = &e.value_from else { continue };
        if let Some(r) = &src.config_map_key_ref {
            match sources.config_map(&r.name).await? {
                Some(m) => match m.get(&r.key) {
                    Some(v) => {
                        out.values
                            .insert(e.name.clone(), String::from_utf8_lossy(v).into_owned());
                    }
                    None if r.optional.unwrap_or(false) => {}
                    None => {
                        return Err(VolumeError::Missing(format!(
                            "couldn't find key {} in ConfigMap {ns}/{}",
                            r.key, r.name
                        )))
                    }
                },
                None if r.optional.unwrap_or(false) => {}
                None => {
                    return Err(VolumeError::Missing(format!(
                        "configmap \"{}\" not found",
                        r.name
                    )))
                }
            }
        } else if let Some(r) = &src.secret_key_ref {
            match sources.secret(&r.name).await? {
                Some(m) => match m.get(&r.key) {
                    Some(v) => {
                        out.values
                            .insert(e.name.clone(), String::from_utf8_lossy(v).into_owned());
                    }
                    None if r.optional.unwrap_or(false) => {}
                    None => {
                        return Err(VolumeError::Missing(format!(
                            "couldn't find key {} in Secret {ns}/{}",
                            r.key, r.name
                        )))
                    }
                },
                None if r.optional.unwrap_or(false) => {}
                None => {
                    return Err(VolumeError::Missing(format!(
                        "secret \"{}\" not found",
                        r.name
                    )))
                }
            }
        } else if let Some(r) = &src.resource_field_ref {
            let container = r
                .container_name
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| c.name.clone());
            let v = volumes::resource_value(
                pod,
                &container,
                &r.resource,
                r.divisor.as_ref().map(|d| d.0.as_str()),
                env.allocatable,
            );
            out.values.insert(e.name.clone(), v);
        }
    }
    Ok(out)
}

/// The file a container's termination message is written to, for its `attempt`-th run.
pub fn termination_file(env: &Env, pod: &Pod, container: &str, attempt: u32) -> PathBuf {
    volumes::pod_dir(&env.pods_dir, &pod.uid().unwrap_or_default())
        .join("containers")
        .join(container)
        .join(attempt.to_string())
}

/// Writes the pod's `/etc/hosts` (localhost, the pod's IP and names, hostAliases); a pod on
/// the host's network gets the node's file with its hostAliases after it.
fn etc_hosts(env: &Env, pod: &Pod, ip: &str, host_network: bool) -> Result<PathBuf, String> {
    let spec = pod.spec.clone().unwrap_or_default();
    let (hostname, domain) = super::spec::hostname_and_domain(env, pod);
    let mut text = if host_network {
        let node = std::fs::read_to_string("/etc/hosts")
            .map_err(|e| format!("reading the node's /etc/hosts: {e}"))?;
        format!("# Kubernetes-managed hosts file (host network).\n{node}")
    } else {
        String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
        )
    };
    if !ip.is_empty() && !host_network {
        match domain {
            Some(d) => text.push_str(&format!("{ip}\t{hostname}.{d}\t{hostname}\n")),
            None => text.push_str(&format!("{ip}\t{hostname}\n")),
        }
    }
    if let Some(aliases) = &spec.host_aliases {
        text.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            text.push_str(&format!(
                "{}\t{}\n",
                a.ip,
                a.hostnames.clone().unwrap_or_default().join("\t")
            ));
        }
    }
    let path = volumes::pod_dir(&env.pods_dir, &pod.uid().unwrap_or_default()).join("etc-hosts");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(path)
}

fn mount(container_path: &str, host: &Path, readonly: bool) -> api::Mount {
    api::Mount {
        container_path: container_path.to_string(),
        host_path: host.to_string_lossy().into_owned(),
        readonly,
        ..Default::default()
    }
}

/// The container's mounts: its volumeMounts (subPaths bound safely, [`volumes::subpath`]),
/// `/etc/hosts`, the termination-message file.
#[allow(clippy::too_many_arguments)]
pub fn mounts(
    env: &Env,
    mounter: &dyn volumes::mount::Mounter,
    pod: &Pod,
    c: &Container,
    hosts: &HashMap<String, HostVolume>,
    vars: &HashMap<String, String>,
    ip: &str,
    attempt: u32,
) -> Result<Vec<api::Mount>, String> {
    let mut out = Vec::new();
    for (index, vm) in c.volume_mounts.iter().flatten().enumerate() {
        let Some(h) = hosts.get(&vm.name) else {
            return Err(format!(
                "unable to find volume {:?} for container {:?}",
                vm.name, c.name
            ));
        };
        let sub = match (&vm.sub_path, &vm.sub_path_expr) {
            (Some(p), _) if !p.is_empty() => Some(p.clone()),
            (_, Some(e)) if !e.is_empty() => Some(spec::expand(e, vars)),
            _ => None,
        };
        let host_path = match sub {
            Some(s) => {
                if !volumes::files::safe_path(&s) {
                    return Err(format!(
                        "invalid subPath {s:?}: must be a relative path without '..'"
                    ));
                }
                let uid = pod.metadata.uid.as_deref().unwrap_or_default();
                let target = volumes::subpath::target(
                    &volumes::pod_dir(&env.pods_dir, uid),
                    &vm.name,
                    &c.name,
                    index,
                );
                volumes::subpath::prepare(mounter, &h.path, &s, &target).map_err(|e| {
                    tracing::warn!(pod = %pod.metadata.name.as_deref().unwrap_or_default(), container = %c.name, "subPath {s:?}: {e}");
                    format!(
                        "failed to prepare subPath for volumeMount {:?} of container {:?}",
                        vm.name, c.name
                    )
                })?;
                target
            }
            None => h.path.clone(),
        };
        out.push(mount(
            &vm.mount_path,
            &host_path,
            vm.read_only.unwrap_or(false) || h.read_only,
        ));
    }
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    if !out.iter().any(|m| m.container_path == "/etc/hosts") {
        let hosts = etc_hosts(env, pod, ip, host_network)?;
        out.push(mount("/etc/hosts", &hosts, false));
    }
    let tm_path = c
        .termination_message_path
        .clone()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/dev/termination-log".into());
    let file = termination_file(env, pod, &c.name, attempt);
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    std::fs::write(&file, b"").map_err(|e| format!("creating {}: {e}", file.display()))?;
    // Writable by whichever user the container runs as, as upstream makes it.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666))
            .map_err(|e| format!("making {} writable: {e}", file.display()))?;
    }
    out.push(mount(&tm_path, &file, false));
    Ok(out)
}

/// The message of an exited container: its termination file, or with
/// `FallbackToLogsOnError` after a failure, the end of its log.
pub fn termination_message(
    env: &Env,
    pod: &Pod,
    c: &Container,
    attempt: u32,
    exit_code: i32,
    log_path: &str,
) -> String {
    let file = termination_file(env, pod, &c.name, attempt);
    let mut msg = std::fs::read(&file).unwrap_or_default();
    msg.truncate(MAX_MESSAGE);
    let msg = String::from_utf8_lossy(&msg).into_owned();
    if !msg.is_empty() {
        return msg;
    }
    if exit_code != 0 && c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError") {
        let text = std::fs::read_to_string(log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(80);
        let rendered = crate::kubelet::api::logs::render_all(
            &lines[start..].join("\n"),
            &Default::default(),
            None,
        );
        let bytes = rendered.as_bytes();
        let keep = bytes.len().min(2048);
        return String::from_utf8_lossy(&bytes[bytes.len() - keep..]).into_owned();
    }
    String::new()
}
