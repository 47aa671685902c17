//! Ephemeral containers (`kubectl debug`): added to a running pod through
//! `pods/NAME/ephemeralcontainers`, run once in its sandbox and never restarted. One that names
//! a `targetContainerName` joins that container's process namespace, so it sees (and can
//! debug) the target's processes, as the upstream kubelet arranges through CRI's TARGET mode.

use k8s_openapi::api::core::v1::{Container, EphemeralContainer, Pod};

use crate::kubelet::cri::api;

/// The pod's ephemeral containers as plain containers (the fields they share).
pub fn containers(pod: &Pod) -> Vec<Container> {
    pod.spec
        .as_ref()
        .and_then(|s| s.ephemeral_containers.as_ref())
        .into_iter()
        .flatten()
        .map(as_container)
        .collect()
}

fn as_container(e: &EphemeralContainer) -> Container {
    Container {
        name: e.name.clone(),
        image: e.image.clone(),
        image_pull_policy: e.image_pull_policy.clone(),
        command: e.command.clone(),
        args: e.args.clone(),
        working_dir: e.working_dir.clone(),
        env: e.env.clone(),
        env_from: e.env_from.clone(),
        volume_mounts: e.volume_mounts.clone(),
        volume_devices: e.volume_devices.clone(),
        security_context: e.security_context.clone(),
        stdin: e.stdin,
        stdin_once: e.stdin_once,
        tty: e.tty,
        termination_message_path: e.termination_message_path.clone(),
        termination_message_policy: e.termination_message_policy.clone(),
        ..Default::default()
    }
}

/// The container an ephemeral container `c` targets, if any.
fn target_name<'a>(pod: &'a Pod, c: &Container) -> Option<&'a str> {
    pod.spec
        .as_ref()?
        .ephemeral_containers
        .as_ref()?
        .iter()
        .find(|e| e.name == c.name)?
        .target_container_name
        .as_deref()
        .filter(|t| !t.is_empty())
}

/// Points `config` at its target's process namespace when `c` is an ephemeral container with
/// a target that is running (`running`: ids and names of the pod's running containers).
pub fn target(
    pod: &Pod,
    c: &Container,
    running: &[(String, String, i64)],
    config: &mut api::ContainerConfig,
) {
    let Some(name) = target_name(pod, c) else {
        return;
    };
    let Some((id, _, _)) = running.iter().find(|(_, n, _)| n == name) else {
        tracing::warn!(pod = ?pod.metadata.name, container = %c.name, target = name,
            "the target of an ephemeral container is not running; it gets the pod's namespaces");
        return;
    };
    let ns = config
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options
        .get_or_insert_with(Default::default);
    ns.pid = api::NamespaceMode::Target as i32;
    ns.target_id = id.clone();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "containers": [{"name": "app", "image": "i"}],
                "ephemeralContainers": [
                    {"name": "dbg", "image": "d", "targetContainerName": "app", "stdin": true, "tty": true},
                    {"name": "plain", "image": "d"},
                ],
            },
        }))
        .expect("pod")
    }

    #[test]
    fn ephemeral_containers_share_their_targets_pid_namespace() {
        let p = pod();
        let cs = containers(&p);
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0].stdin, Some(true));
        let running = vec![("abc".to_string(), "app".to_string(), 0)];
        let mut config = api::ContainerConfig::default();
        target(&p, &cs[0], &running, &mut config);
        let ns = config
            .linux
            .and_then(|l| l.security_context)
            .and_then(|s| s.namespace_options)
            .expect("namespace options");
        assert_eq!(ns.pid, api::NamespaceMode::Target as i32);
        assert_eq!(ns.target_id, "abc");
        let mut plain = api::ContainerConfig::default();
        target(&p, &cs[1], &running, &mut plain);
        assert!(plain.linux.is_none(), "no target, no change");
    }
}
