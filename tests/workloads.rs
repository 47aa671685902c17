//! StatefulSets and DaemonSets on simulated nodes, driven with stock kubectl: an ordered set
//! starts pod N+1 only once pod N is Ready and scales down from the top, its claims follow the
//! retention policy; a DaemonSet follows the nodes its selector picks and rolls out a new
//! template everywhere.

mod common;

use std::time::Duration;

use common::server::{eventually, ok, write, Server};

/// Sets the readiness gate condition of pod `name` to True.
fn open_gate(s: &Server, name: &str) {
    ok(
        s,
        &[
            "patch",
            "pod",
            name,
            "--subresource=status",
            "--type=json",
            "-p",
            r#"[{"op":"add","path":"/status/conditions/-","value":{"type":"k1s.io/gate","status":"True"}}]"#,
        ],
    );
}

fn names(s: &Server, what: &[&str]) -> String {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", "jsonpath={range .items[*]}{.metadata.name} {end}"]);
    ok(s, &args).trim().to_string()
}

#[test]
fn ordered_statefulset_waits_for_each_pod_and_scales_down_from_the_top() {
    let s = Server::start_with(&["--simulated-nodes", "2", "--disable-kubelet"]);
    let dir = tempfile::tempdir().expect("tmp");
    let sts = write(
        dir.path(),
        "sts.yaml",
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 3
  selector: {matchLabels: {app: db}}
  persistentVolumeClaimRetentionPolicy: {whenScaled: Delete, whenDeleted: Retain}
  template:
    metadata: {labels: {app: db}}
    spec:
      readinessGates: [{conditionType: k1s.io/gate}]
      containers: [{name: db, image: postgres:17}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
"#,
    );
    ok(&s, &["create", "-f", &sts]);
    for (i, pod) in ["db-0", "db-1", "db-2"].iter().enumerate() {
        eventually(
            &s,
            &["get", "pod", pod, "-o", "jsonpath={.status.phase}"],
            |o| o == "Running",
        );
        // The next pod waits while this one is not Ready.
        std::thread::sleep(Duration::from_millis(1500));
        let want: Vec<String> = (0..=i).map(|k| format!("db-{k}")).collect();
        assert_eq!(names(&s, &["pods", "-l", "app=db"]), want.join(" "));
        open_gate(&s, pod);
    }
    let pod = ok(
        &s,
        &["get", "pod", "db-1", "-o", "jsonpath={.spec.hostname}.{.spec.subdomain} {.metadata.labels.apps\\.kubernetes\\.io/pod-index} {.spec.volumes[?(@.name==\"data\")].persistentVolumeClaim.claimName}"],
    );
    assert_eq!(pod, "db-1.db 1 data-db-1");
    eventually(
        &s,
        &[
            "get",
            "sts",
            "db",
            "-o",
            "jsonpath={.status.readyReplicas}/{.status.replicas}",
        ],
        |o| o == "3/3",
    );
    assert_eq!(names(&s, &["pvc"]), "data-db-0 data-db-1 data-db-2");

    // Scaling down removes db-2 first; whenScaled: Delete takes its claim along.
    ok(&s, &["scale", "sts", "db", "--replicas=1"]);
    eventually(&s, &["get", "pods", "-l", "app=db", "-o", "name"], |o| {
        o.trim() == "pod/db-0"
    });
    eventually(&s, &["get", "pvc", "-o", "name"], |o| {
        o.trim() == "persistentvolumeclaim/data-db-0"
    });
    let events = ok(
        &s,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=db,reason=SuccessfulDelete",
            "-o",
            "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
        ],
    );
    let order: Vec<&str> = events.lines().collect();
    assert_eq!(
        order,
        [
            "delete Pod db-2 in StatefulSet db successful",
            "delete Pod db-1 in StatefulSet db successful"
        ],
        "{events}"
    );

    // A Parallel set starts every pod at once, Ready or not.
    let par = std::fs::read_to_string(&sts)
        .expect("read")
        .replace("name: db}", "name: par}")
        .replace("app: db", "app: par")
        .replace(
            "serviceName: db",
            "serviceName: par\n  podManagementPolicy: Parallel",
        );
    let par = write(dir.path(), "par.yaml", &par);
    ok(&s, &["create", "-f", &par]);
    eventually(&s, &["get", "pods", "-l", "app=par", "-o", "name"], |o| {
        o.lines().count() == 3
    });
}

#[test]
fn daemonset_follows_its_nodes_and_rolls_out() {
    let s = Server::start_with(&["--simulated-nodes", "3", "--disable-kubelet"]);
    eventually(&s, &["get", "nodes", "--no-headers"], |o| {
        o.lines().filter(|l| l.contains(" Ready ")).count() == 3
    });
    let dir = tempfile::tempdir().expect("tmp");
    let ds = write(
        dir.path(),
        "ds.yaml",
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      nodeSelector: {role: edge}
      containers: [{name: agent, image: busybox:1.36}]
"#,
    );
    ok(&s, &["create", "-f", &ds]);
    let on_nodes = |s: &Server, want: &str| {
        eventually(
            s,
            &[
                "get",
                "pods",
                "-l",
                "app=agent",
                "--field-selector",
                "status.phase=Running",
                "-o",
                "jsonpath={range .items[*]}{.spec.nodeName}{\"\\n\"}{end}",
            ],
            |o| {
                let mut v: Vec<&str> = o.lines().collect();
                v.sort();
                v.join(" ") == want
            },
        )
    };
    ok(&s, &["label", "node", "sim-0000", "sim-0002", "role=edge"]);
    on_nodes(&s, "sim-0000 sim-0002");
    ok(&s, &["label", "node", "sim-0000", "role-"]);
    on_nodes(&s, "sim-0002");
    ok(&s, &["label", "node", "--all", "role=edge", "--overwrite"]);
    on_nodes(&s, "sim-0000 sim-0001 sim-0002");
    // A cordoned node keeps its daemon: daemon pods tolerate unschedulable nodes.
    ok(&s, &["cordon", "sim-0001"]);
    ok(&s, &["set", "image", "ds/agent", "agent=busybox:1.37"]);
    let st = eventually(
        &s,
        &["get", "ds", "agent", "-o", "jsonpath={.status.desiredNumberScheduled} {.status.updatedNumberScheduled} {.status.numberAvailable}"],
        |o| o == "3 3 3",
    );
    assert_eq!(st, "3 3 3");
    eventually(
        &s,
        &[
            "get",
            "pods",
            "-l",
            "app=agent",
            "-o",
            "jsonpath={range .items[*]}{.spec.containers[0].image} {end}",
        ],
        |o| o.trim() == "busybox:1.37 busybox:1.37 busybox:1.37",
    );
    let revs = ok(
        &s,
        &[
            "get",
            "controllerrevisions",
            "-l",
            "app=agent",
            "-o",
            "jsonpath={range .items[*]}{.revision} {end}",
        ],
    );
    let mut revs: Vec<&str> = revs.split_whitespace().collect();
    revs.sort();
    assert_eq!(revs, ["1", "2"]);
}

#[test]
fn cronjob_runs_its_schedule_and_keeps_its_history() {
    let s = Server::start_with(&["--simulated-nodes", "1", "--disable-kubelet"]);
    let dir = tempfile::tempdir().expect("tmp");
    let cj = write(
        dir.path(),
        "cj.yaml",
        r#"apiVersion: batch/v1
kind: CronJob
metadata: {name: tick}
spec:
  schedule: "* * * * *"
  timeZone: Asia/Tokyo
  concurrencyPolicy: Forbid
  successfulJobsHistoryLimit: 1
  jobTemplate:
    spec:
      template:
        metadata: {annotations: {simulated.k1s.io/run-for: 1s}}
        spec:
          restartPolicy: Never
          containers: [{name: c, image: busybox:1.36}]
"#,
    );
    ok(&s, &["create", "-f", &cj]);
    // Pretend the last run was three minutes ago: the most recent missed time runs at once.
    let past = (k8s_openapi::jiff::Timestamp::now()
        - k8s_openapi::jiff::SignedDuration::from_secs(180))
    .strftime("%Y-%m-%dT%H:%M:00Z")
    .to_string();
    ok(
        &s,
        &[
            "patch",
            "cronjob",
            "tick",
            "--subresource=status",
            "--type=merge",
            "-p",
            &format!(r#"{{"status":{{"lastScheduleTime":"{past}"}}}}"#),
        ],
    );
    eventually(&s, &["get", "jobs", "-o", "name"], |o| {
        o.lines().count() >= 1
    });
    // No more runs on the minute from here on (one more may have started already).
    ok(
        &s,
        &[
            "patch",
            "cronjob",
            "tick",
            "-p",
            r#"{"spec":{"suspend":true}}"#,
        ],
    );
    let job = ok(
        &s,
        &["get", "jobs", "-o", "jsonpath={.items[0].metadata.name} {.items[0].metadata.annotations.batch\\.kubernetes\\.io/cronjob-scheduled-timestamp}"],
    );
    let (name, stamp) = job.split_once(' ').expect("name and stamp");
    let minutes: i64 = name
        .strip_prefix("tick-")
        .expect("prefix")
        .parse()
        .expect("minutes");
    let at = k8s_openapi::jiff::Timestamp::from_second(minutes * 60).expect("time");
    let tokyo = at
        .to_zoned(k8s_openapi::jiff::tz::TimeZone::get("Asia/Tokyo").expect("tz"))
        .strftime("%Y-%m-%dT%H:%M:%S+09:00")
        .to_string();
    assert_eq!(stamp, tokyo);
    eventually(
        &s,
        &[
            "get",
            "cronjob",
            "tick",
            "-o",
            "jsonpath={.status.lastSuccessfulTime}/{.status.active}",
        ],
        |o| o.ends_with("Z/"),
    );

    // A manual run from the template; the history limit keeps one finished Job.
    let out = ok(&s, &["create", "job", "by-hand", "--from=cronjob/tick"]);
    assert_eq!(out, "job.batch/by-hand created\n");
    eventually(
        &s,
        &[
            "get",
            "job",
            "by-hand",
            "-o",
            "jsonpath={.status.succeeded}",
        ],
        |o| o == "1",
    );
    eventually(&s, &["get", "jobs", "-o", "name"], |o| {
        o.trim() == "job.batch/by-hand"
    });
    // An unknown time zone is refused with upstream's message.
    let o = s.kubectl(&[
        "patch",
        "cronjob",
        "tick",
        "-p",
        r#"{"spec":{"timeZone":"Mars/Olympus"}}"#,
    ]);
    assert!(!o.status.success());
    assert!(
        common::server::text(&o).contains(
            r#"spec.timeZone: Invalid value: "Mars/Olympus": unknown time zone Mars/Olympus"#
        ),
        "{}",
        common::server::text(&o)
    );
}

#[test]
fn local_path_claims_are_provisioned_on_the_pods_node_and_released() {
    let s = Server::start_with(&["--simulated-nodes", "2", "--disable-kubelet"]);
    let sc = ok(&s, &["get", "storageclass"]);
    assert!(
        sc.contains(
            "local-path (default)   rancher.io/local-path   Delete          WaitForFirstConsumer"
        ),
        "{sc}"
    );
    let dir = tempfile::tempdir().expect("tmp");
    let manifest = write(
        dir.path(),
        "claim.yaml",
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 2Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: user}
spec:
  containers: [{name: c, image: busybox:1.36, volumeMounts: [{name: d, mountPath: /data}]}]
  volumes: [{name: d, persistentVolumeClaim: {claimName: data}}]
"#,
    );
    ok(&s, &["create", "-f", &manifest]);
    let pod = eventually(
        &s,
        &[
            "get",
            "pod",
            "user",
            "-o",
            "jsonpath={.status.phase} {.spec.nodeName}",
        ],
        |o| o.starts_with("Running "),
    );
    let node = pod
        .split_once(' ')
        .map(|x| x.1)
        .unwrap_or_default()
        .to_string();
    let claim = ok(
        &s,
        &["get", "pvc", "data", "-o", "jsonpath={.status.phase} {.spec.storageClassName} {.status.capacity.storage} {.metadata.annotations.volume\\.kubernetes\\.io/selected-node}"],
    );
    assert_eq!(claim, format!("Bound local-path 2Gi {node}"));
    let pv = ok(
        &s,
        &["get", "pv", "-o", "jsonpath={.items[0].spec.hostPath.path} {.items[0].spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]} {.items[0].spec.claimRef.name} {.items[0].status.phase}"],
    );
    let uid = ok(
        &s,
        &["get", "pvc", "data", "-o", "jsonpath={.metadata.uid}"],
    );
    assert!(
        pv.contains(&format!(
            "/storage/pvc-{uid}_default_data {node} data Bound"
        )),
        "{pv}"
    );
    // The claim goes; its volume (reclaim policy Delete) goes too.
    ok(&s, &["delete", "pod", "user", "--wait=false"]);
    ok(&s, &["delete", "pvc", "data", "--wait=false"]);
    eventually(&s, &["get", "pv", "-o", "name"], |o| o.trim().is_empty());
    // A volume whose data a kubelet holds stays until that kubelet lets it go; one whose node
    // is gone for good is let go by the provisioner.
    let held = |name: &str, on: &str| {
        format!(
            r#"apiVersion: v1
kind: PersistentVolume
metadata:
  name: {name}
  finalizers: [k1s.io/local-path-data]
  annotations: {{pv.kubernetes.io/provisioned-by: rancher.io/local-path}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  hostPath: {{path: /tmp/{name}}}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions: [{{key: kubernetes.io/hostname, operator: In, values: [{on}]}}]
"#
        )
    };
    let volumes = format!(
        "{}---\n{}",
        held("pvc-held", &node),
        held("pvc-orphan", "gone-node")
    );
    ok(
        &s,
        &["create", "-f", &write(dir.path(), "held.yaml", &volumes)],
    );
    ok(
        &s,
        &["delete", "pv", "pvc-held", "pvc-orphan", "--wait=false"],
    );
    eventually(&s, &["get", "pv", "-o", "name"], |o| {
        o.trim() == "persistentvolume/pvc-held"
    });
    let events = eventually(
        &s,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=pvc-orphan",
            "-o",
            "jsonpath={.items[*].message}",
        ],
        |o| !o.is_empty(),
    );
    assert!(events.contains("node \"gone-node\" is gone"), "{events}");
    std::thread::sleep(Duration::from_secs(2));
    let still = ok(
        &s,
        &[
            "get",
            "pv",
            "pvc-held",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ],
    );
    assert!(!still.is_empty(), "held by its node's kubelet");
    ok(
        &s,
        &[
            "patch",
            "pv",
            "pvc-held",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
    );
    eventually(&s, &["get", "pv", "-o", "name"], |o| o.trim().is_empty());
    // A claim whose class binds at once and that nothing can serve keeps its pod pending.
    let immediate = write(
        dir.path(),
        "immediate.yaml",
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: manual}
spec:
  storageClassName: ""
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: stuck}
spec:
  containers: [{name: c, image: busybox:1.36}]
  volumes: [{name: d, persistentVolumeClaim: {claimName: manual}}]
"#,
    );
    ok(&s, &["create", "-f", &immediate]);
    eventually(
        &s,
        &[
            "get",
            "pod",
            "stuck",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}",
        ],
        |o| o.contains("pod has unbound immediate PersistentVolumeClaims"),
    );
    // A matching volume made by hand binds it, and the pod runs.
    let pv = write(
        dir.path(),
        "pv.yaml",
        r#"apiVersion: v1
kind: PersistentVolume
metadata: {name: handmade}
spec:
  capacity: {storage: 5Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  hostPath: {path: /tmp/handmade}
"#,
    );
    ok(&s, &["create", "-f", &pv]);
    eventually(
        &s,
        &[
            "get",
            "pvc",
            "manual",
            "-o",
            "jsonpath={.status.phase} {.spec.volumeName}",
        ],
        |o| o == "Bound handmade",
    );
    eventually(
        &s,
        &["get", "pod", "stuck", "-o", "jsonpath={.status.phase}"],
        |o| o == "Running",
    );
    ok(&s, &["delete", "pod", "stuck"]);
    ok(&s, &["delete", "pvc", "manual"]);
    eventually(
        &s,
        &["get", "pv", "handmade", "-o", "jsonpath={.status.phase}"],
        |o| o == "Released",
    );
}
