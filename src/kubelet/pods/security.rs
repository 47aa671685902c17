//! Security contexts to CRI, as the kubelet's `determineEffectiveSecurityContext`: the pod's
//! settings under the container's; users and groups (with the pod's `fsGroup` and
//! `supplementalGroups` as extra groups), capabilities, privileged, read-only root,
//! `allowPrivilegeEscalation`, seccomp profiles (`RuntimeDefault`, `Unconfined`, `Localhost`
//! under `DATA_DIR/agent/seccomp`), the sandbox's sysctls, and `runAsNonRoot`, checked
//! against the image's user before a container is created.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSecurityContext, SeccompProfile};
use kube::ResourceExt;

use super::spec::{namespace_options, Env};
use crate::kubelet::cri::api;

fn pod_context(pod: &Pod) -> PodSecurityContext {
    pod.spec
        .as_ref()
        .and_then(|s| s.security_context.clone())
        .unwrap_or_default()
}

/// A seccomp profile in CRI's terms; None: unset (the runtime runs the container unconfined,
/// as upstream's kubelet without `seccompDefault`).
fn seccomp(p: Option<&SeccompProfile>, env: &Env) -> Option<api::SecurityProfile> {
    use api::security_profile::ProfileType;
    let p = p?;
    Some(match p.type_.as_str() {
        "RuntimeDefault" => api::SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        },
        "Localhost" => api::SecurityProfile {
            profile_type: ProfileType::Localhost as i32,
            localhost_ref: env
                .seccomp_dir()
                .join(p.localhost_profile.clone().unwrap_or_default())
                .to_string_lossy()
                .into_owned(),
        },
        _ => api::SecurityProfile {
            profile_type: ProfileType::Unconfined as i32,
            localhost_ref: String::new(),
        },
    })
}

/// The groups a pod's processes get besides their own: supplementalGroups, then fsGroup.
fn groups(psc: &PodSecurityContext) -> Vec<i64> {
    let mut g = psc.supplemental_groups.clone().unwrap_or_default();
    if let Some(fs) = psc.fs_group {
        if !g.contains(&fs) {
            g.push(fs);
        }
    }
    g
}

/// The container's security context.
pub fn container(pod: &Pod, c: &Container, env: &Env) -> api::LinuxContainerSecurityContext {
    let psc = pod_context(pod);
    let sc = c.security_context.clone().unwrap_or_default();
    let caps = sc.capabilities.clone().unwrap_or_default();
    api::LinuxContainerSecurityContext {
        capabilities: Some(api::Capability {
            add_capabilities: caps.add.unwrap_or_default(),
            drop_capabilities: caps.drop.unwrap_or_default(),
            ..Default::default()
        }),
        privileged: sc.privileged.unwrap_or(false),
        namespace_options: Some(namespace_options(pod)),
        run_as_user: sc
            .run_as_user
            .or(psc.run_as_user)
            .map(|value| api::Int64Value { value }),
        run_as_group: sc
            .run_as_group
            .or(psc.run_as_group)
            .map(|value| api::Int64Value { value }),
        readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
        supplemental_groups: groups(&psc),
        no_new_privs: !sc.allow_privilege_escalation.unwrap_or(true),
        seccomp: seccomp(
            sc.seccomp_profile.as_ref().or(psc.seccomp_profile.as_ref()),
            env,
        ),
        ..Default::default()
    }
}

/// The sandbox's (pause container's) security context.
pub fn sandbox(pod: &Pod, namespaces: api::NamespaceOption) -> api::LinuxSandboxSecurityContext {
    let psc = pod_context(pod);
    api::LinuxSandboxSecurityContext {
        namespace_options: Some(namespaces),
        run_as_user: psc.run_as_user.map(|value| api::Int64Value { value }),
        run_as_group: psc.run_as_group.map(|value| api::Int64Value { value }),
        supplemental_groups: groups(&psc),
        ..Default::default()
    }
}

/// The pod's sysctls, set in its sandbox.
pub fn sysctls(pod: &Pod) -> HashMap<String, String> {
    pod_context(pod)
        .sysctls
        .unwrap_or_default()
        .into_iter()
        .map(|s| (s.name, s.value))
        .collect()
}

/// With `runAsNonRoot`, the container must not run as uid 0: its `runAsUser`, else the
/// image's user (numeric; none is root). The error is upstream's wording.
pub fn verify_non_root(pod: &Pod, c: &Container, image: Option<&api::Image>) -> Result<(), String> {
    let psc = pod_context(pod);
    let sc = c.security_context.clone().unwrap_or_default();
    if !sc.run_as_non_root.or(psc.run_as_non_root).unwrap_or(false) {
        return Ok(());
    }
    let who = format!(
        "{}_{}({})",
        pod.name_any(),
        pod.namespace().unwrap_or_default(),
        pod.uid().unwrap_or_default()
    );
    if let Some(u) = sc.run_as_user.or(psc.run_as_user) {
        if u == 0 {
            return Err(format!(
                "container's runAsUser breaks non-root policy (pod: {who:?}, container: {})",
                c.name
            ));
        }
        return Ok(());
    }
    let uid = image.and_then(|i| i.uid.as_ref()).map(|u| u.value);
    let username = image.map(|i| i.username.clone()).unwrap_or_default();
    match (uid, username.is_empty()) {
        (Some(0), _) | (None, true) => Err(format!(
            "container has runAsNonRoot and image will run as root (pod: {who:?}, container: {})",
            c.name
        )),
        (None, false) => Err(format!(
            "container has runAsNonRoot and image has non-numeric user ({username}), cannot verify user is non-root (pod: {who:?}, container: {})",
            c.name
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(psc: serde_json::Value, sc: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {"securityContext": psc,
                "containers": [{"name": "c", "image": "i", "securityContext": sc}]},
        }))
        .expect("pod")
    }

    use super::super::spec::tests::env;

    #[test]
    fn pod_settings_apply_under_the_containers() {
        let p = pod(
            serde_json::json!({"runAsUser": 1000, "fsGroup": 2000, "supplementalGroups": [3000],
                "seccompProfile": {"type": "RuntimeDefault"}, "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]}),
            serde_json::json!({"runAsUser": 1001, "allowPrivilegeEscalation": false,
                "seccompProfile": {"type": "Localhost", "localhostProfile": "audit.json"}}),
        );
        let c = p.spec.as_ref().expect("spec").containers[0].clone();
        let sc = container(&p, &c, &env());
        assert_eq!(sc.run_as_user.map(|u| u.value), Some(1001));
        assert_eq!(sc.supplemental_groups, [3000, 2000]);
        assert!(sc.no_new_privs);
        let seccomp = sc.seccomp.expect("seccomp");
        assert_eq!(
            seccomp.localhost_ref,
            "/var/lib/k1s/agent/seccomp/audit.json"
        );
        let sb = sandbox(&p, Default::default());
        assert_eq!(sb.run_as_user.map(|u| u.value), Some(1000));
        assert_eq!(sysctls(&p)["net.ipv4.ip_unprivileged_port_start"], "0");
        let plain = pod(serde_json::json!({}), serde_json::json!({}));
        let c = plain.spec.as_ref().expect("spec").containers[0].clone();
        assert!(
            container(&plain, &c, &env()).seccomp.is_none(),
            "unset: unconfined"
        );
    }

    #[test]
    fn run_as_non_root_checks_the_image_user() {
        let image = |uid: Option<i64>, name: &str| api::Image {
            uid: uid.map(|value| api::Int64Value { value }),
            username: name.into(),
            ..Default::default()
        };
        let p = pod(
            serde_json::json!({"runAsNonRoot": true}),
            serde_json::json!({}),
        );
        let c = p.spec.as_ref().expect("spec").containers[0].clone();
        let e = verify_non_root(&p, &c, Some(&image(None, ""))).expect_err("root");
        assert_eq!(e, "container has runAsNonRoot and image will run as root (pod: \"p_ns(u1)\", container: c)");
        assert!(verify_non_root(&p, &c, Some(&image(Some(1000), ""))).is_ok());
        assert!(verify_non_root(&p, &c, Some(&image(None, "app")))
            .expect_err("named")
            .contains("non-numeric user (app)"));
        let zero = pod(
            serde_json::json!({"runAsNonRoot": true}),
            serde_json::json!({"runAsUser": 0}),
        );
        let c = zero.spec.as_ref().expect("spec").containers[0].clone();
        assert!(verify_non_root(&zero, &c, None)
            .expect_err("uid 0")
            .starts_with("container's runAsUser breaks non-root policy"));
    }
}
