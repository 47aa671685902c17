//! What a shared informer keeps of each object: the fields its controllers and the scheduler
//! read, as upstream's informers drop managedFields (TransformStripManagedFields) and
//! kube-scheduler keeps only what its plugins use. At 30,000 pods the informer's copies are the
//! largest part of the server's memory, so a pod also loses what only the kubelet reads
//! (commands, environment, probes, mounts, volumes other than claims) and its lists are cut to
//! their length: a decoded list keeps the spare room it grew with (a pod with one container
//! status held room for four, 3 KiB), which a list read once and kept for hours should not.
//!
//! The trimmed objects are for reading only: no controller writes one back whole (they patch or
//! create), which `pod_keeps_what_controllers_read` below pins down field by field.

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::Resource;

/// Drops managedFields, which no controller reads and which is often most of an object.
pub fn managed_fields<K: Resource>(mut o: K) -> K {
    o.meta_mut().managed_fields = None;
    o
}

/// A pod as the controllers and the scheduler read it.
pub fn pod(o: Pod) -> Pod {
    let mut o = managed_fields(o);
    let meta = &mut o.metadata;
    shrink(&mut meta.owner_references);
    shrink(&mut meta.finalizers);
    if let Some(s) = o.spec.as_mut() {
        s.containers = s.containers.drain(..).map(container).collect();
        s.containers.shrink_to_fit();
        if let Some(init) = s.init_containers.take() {
            let mut init: Vec<Container> = init.into_iter().map(container).collect();
            init.shrink_to_fit();
            s.init_containers = Some(init);
        }
        // Claims (the scheduler's volume binding, claim protection) are all that is read of
        // volumes; the rest is the kubelet's business.
        if let Some(v) = s.volumes.as_mut() {
            v.retain(|v| v.persistent_volume_claim.is_some() || v.ephemeral.is_some());
            v.shrink_to_fit();
        }
        shrink(&mut s.tolerations);
        shrink(&mut s.topology_spread_constraints);
        shrink(&mut s.readiness_gates);
        shrink(&mut s.host_aliases);
    }
    if let Some(s) = o.status.as_mut() {
        shrink(&mut s.conditions);
        shrink(&mut s.container_statuses);
        shrink(&mut s.init_container_statuses);
        shrink(&mut s.ephemeral_container_statuses);
        shrink(&mut s.pod_ips);
        shrink(&mut s.host_ips);
    }
    o
}

/// A container as read by resource accounting (requests, limits, sidecar restart policy), the
/// NodePorts filter and named endpoint ports.
fn container(c: Container) -> Container {
    Container {
        name: c.name,
        image: c.image,
        ports: c.ports.map(|mut p| {
            p.shrink_to_fit();
            p
        }),
        resources: c.resources,
        restart_policy: c.restart_policy,
        ..Default::default()
    }
}

fn shrink<T>(v: &mut Option<Vec<T>>) {
    if let Some(v) = v.as_mut() {
        v.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "a"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                    "uid": "u0", "controller": true}],
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
            "spec": {
                "nodeName": "n1", "hostname": "h", "subdomain": "s", "priority": 5,
                "initContainers": [{"name": "side", "image": "busybox", "restartPolicy": "Always",
                    "resources": {"requests": {"cpu": "100m"}}}],
                "containers": [{"name": "c", "image": "nginx", "command": ["sh"], "args": ["-c"],
                    "env": [{"name": "A", "value": "1"}],
                    "volumeMounts": [{"name": "data", "mountPath": "/d"}],
                    "ports": [{"name": "http", "containerPort": 80, "hostPort": 8080}],
                    "resources": {"requests": {"cpu": "1"}, "limits": {"memory": "1Gi"}},
                    "livenessProbe": {"tcpSocket": {"port": 80}}}],
                "volumes": [
                    {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}},
                    {"name": "data", "persistentVolumeClaim": {"claimName": "c1"}},
                    {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}}],
                "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute",
                    "tolerationSeconds": 30}],
                "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "a"}}}]}},
                "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
                    "whenUnsatisfiable": "DoNotSchedule"}]
            },
            "status": {"phase": "Running", "podIP": "10.42.0.5", "podIPs": [{"ip": "10.42.0.5"}],
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "c", "image": "nginx", "imageID": "", "ready": true,
                    "restartCount": 2, "lastState": {"terminated": {"exitCode": 137}}}]}
        }))
        .expect("pod")
    }

    #[test]
    fn pod_keeps_what_controllers_read() {
        let p = pod(sample());
        assert!(p.metadata.managed_fields.is_none());
        assert_eq!(p.metadata.owner_references.as_ref().map(Vec::len), Some(1));
        assert_eq!(p.metadata.labels.as_ref().map(|l| l.len()), Some(1));
        let s = p.spec.as_ref().expect("spec");
        let c = &s.containers[0];
        assert_eq!((c.name.as_str(), c.image.as_deref()), ("c", Some("nginx")));
        assert_eq!(c.ports.as_ref().map(|p| p[0].host_port), Some(Some(8080)));
        assert!(c
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .is_some());
        assert!(c.command.is_none() && c.env.is_none() && c.volume_mounts.is_none());
        assert!(c.liveness_probe.is_none());
        let init = &s.init_containers.as_ref().expect("init")[0];
        assert_eq!(init.restart_policy.as_deref(), Some("Always"));
        assert!(init.resources.is_some());
        let names: Vec<_> = s
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(names, ["data", "scratch"]);
        assert_eq!(s.node_name.as_deref(), Some("n1"));
        assert_eq!(
            (s.hostname.as_deref(), s.subdomain.as_deref()),
            (Some("h"), Some("s"))
        );
        assert_eq!(s.priority, Some(5));
        assert!(s.affinity.is_some() && s.topology_spread_constraints.is_some());
        assert_eq!(
            s.tolerations.as_ref().map(|t| t[0].toleration_seconds),
            Some(Some(30))
        );
        let st = p.status.as_ref().expect("status");
        assert_eq!(st.pod_ip.as_deref(), Some("10.42.0.5"));
        let cs = &st.container_statuses.as_ref().expect("statuses")[0];
        assert_eq!(cs.restart_count, 2);
        assert!(cs
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .is_some());
    }

    #[test]
    fn lists_lose_their_spare_room() {
        let p = pod(sample());
        let st = p.status.as_ref().expect("status");
        let cs = st.container_statuses.as_ref().expect("statuses");
        assert_eq!(cs.capacity(), cs.len());
        let v = p
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .expect("volumes");
        assert_eq!(v.capacity(), v.len());
    }
}
