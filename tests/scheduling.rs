//! The scheduler, the node lifecycle controller and the simulated nodes, with a real server and
//! stock kubectl: pods are placed and run, refusals carry upstream's FailedScheduling message,
//! taints and selectors are honoured, and a node that stops sending heartbeats is tainted and
//! its pods evicted after their tolerationSeconds.

mod common;

use std::time::Duration;

use common::server::{eventually, ok, write, Server};

#[test]
fn pods_are_spread_placed_and_run_on_simulated_nodes() {
    let s = Server::start_with(&[
        "--simulated-nodes",
        "3",
        "--simulated-node-capacity",
        "cpu=1,memory=2Gi",
        "--simulated-node-labels",
        "topology.kubernetes.io/zone=lab",
        "--disable-kubelet",
    ]);
    eventually(&s, &["get", "nodes", "--no-headers"], |o| {
        o.lines().filter(|l| l.contains(" Ready ")).count() == 3
    });
    for i in 0..6 {
        ok(&s, &["run", &format!("p{i}"), "--image=nginx:1.27"]);
    }
    let out = eventually(
        &s,
        &[
            "get",
            "pods",
            "-o",
            "jsonpath={range .items[*]}{.status.phase} {.spec.nodeName}{\"\\n\"}{end}",
        ],
        |o| o.lines().filter(|l| l.starts_with("Running ")).count() == 6,
    );
    // LeastAllocated spreads equal pods evenly on these small nodes: two per node.
    for n in ["sim-0000", "sim-0001", "sim-0002"] {
        assert_eq!(out.lines().filter(|l| l.ends_with(n)).count(), 2, "{out}");
    }
    let events = ok(
        &s,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=p0,reason=Scheduled",
            "-o",
            "jsonpath={.items[0].message}",
        ],
    );
    assert!(
        events.starts_with("Successfully assigned default/p0 to sim-000"),
        "{events}"
    );
    let node = ok(&s, &["get", "node", "sim-0001", "-o", "jsonpath={.status.allocatable.cpu} {.status.allocatable.pods} {.metadata.labels.topology\\.kubernetes\\.io/zone}"]);
    assert_eq!(node, "1 110 lab");
    let ip = ok(
        &s,
        &[
            "get",
            "pod",
            "p0",
            "-o",
            "jsonpath={.status.podIP} {.status.conditions[?(@.type==\"Ready\")].status}",
        ],
    );
    assert!(ip.starts_with("100.64.") && ip.ends_with(" True"), "{ip}");

    // A pod that asks to finish does; one for another scheduler is left alone.
    ok(
        &s,
        &[
            "run",
            "job-like",
            "--image=busybox:1.36",
            "--restart=Never",
            "--annotations=simulated.k1s.io/run-for=1s",
        ],
    );
    eventually(
        &s,
        &["get", "pod", "job-like", "-o", "jsonpath={.status.phase}"],
        |o| o == "Succeeded",
    );
    let dir = tempfile::tempdir().expect("tmp");
    let other = write(dir.path(), "other.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: elsewhere}\nspec:\n  schedulerName: my-scheduler\n  containers: [{name: c, image: nginx:1.27}]\n");
    ok(&s, &["create", "-f", &other]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        ok(
            &s,
            &["get", "pod", "elsewhere", "-o", "jsonpath={.spec.nodeName}"]
        ),
        ""
    );

    // Deleting a pod on a simulated node removes it at once.
    ok(&s, &["delete", "pod", "p0", "--timeout=20s"]);

    // The scheduler and the controllers hold their leases, as upstream's components do.
    let holders = ok(
        &s,
        &[
            "get",
            "lease",
            "-n",
            "kube-system",
            "kube-scheduler",
            "kube-controller-manager",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.spec.holderIdentity}{\"\\n\"}{end}",
        ],
    );
    let lines: Vec<&str> = holders.lines().collect();
    assert_eq!(lines.len(), 2, "{holders}");
    assert!(
        lines
            .iter()
            .all(|l| l.split_once('=').is_some_and(|(_, h)| h.contains('_'))),
        "{holders}"
    );
}

#[test]
fn refusals_say_why_and_pods_wait_for_a_node_that_fits() {
    let s = Server::start_with(&["--simulated-nodes", "3", "--disable-kubelet"]);
    eventually(&s, &["get", "nodes", "--no-headers"], |o| {
        o.lines().filter(|l| l.contains(" Ready ")).count() == 3
    });
    // The node controller lifts the not-ready taints once it sees the nodes Ready.
    eventually(
        &s,
        &["get", "nodes", "-o", "jsonpath={.items[*].spec.taints}"],
        |o| o.split_whitespace().all(|t| t == "[]"),
    );
    ok(
        &s,
        &["taint", "node", "sim-0000", "dedicated=db:NoSchedule"],
    );
    ok(&s, &["run", "big", "--image=nginx:1.27", "--overrides={\"spec\":{\"containers\":[{\"name\":\"big\",\"image\":\"nginx:1.27\",\"resources\":{\"requests\":{\"cpu\":\"40\"}}}]}}"]);
    let msg = eventually(
        &s,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=big,reason=FailedScheduling",
            "-o",
            "jsonpath={.items[0].message}",
        ],
        |o| !o.is_empty(),
    );
    assert_eq!(
        msg,
        "0/3 nodes are available: 1 node(s) had untolerated taint(s), 2 Insufficient cpu. no new claims to deallocate, preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod."
    );
    let cond = ok(
        &s,
        &[
            "get",
            "pod",
            "big",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].reason}",
        ],
    );
    assert_eq!(cond, "Unschedulable");

    // A selector no node matches, until a node is labelled.
    ok(
        &s,
        &[
            "run",
            "ssd",
            "--image=nginx:1.27",
            "--overrides={\"spec\":{\"nodeSelector\":{\"disk\":\"ssd\"}}}",
        ],
    );
    eventually(
        &s,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=ssd,reason=FailedScheduling",
            "-o",
            "jsonpath={.items[0].message}",
        ],
        |o| {
            o.starts_with("0/3 nodes are available: 1 node(s) had untolerated taint(s), 2 node(s) didn't match Pod's node affinity/selector.")
        },
    );
    ok(&s, &["label", "node", "sim-0002", "disk=ssd"]);
    eventually(
        &s,
        &["get", "pod", "ssd", "-o", "jsonpath={.spec.nodeName}"],
        |o| o == "sim-0002",
    );

    // Tolerating the taint opens the tainted node; a cordoned node takes nothing new.
    ok(&s, &["cordon", "sim-0001"]);
    ok(&s, &["cordon", "sim-0002"]);
    ok(&s, &["run", "tolerant", "--image=nginx:1.27", "--overrides={\"spec\":{\"tolerations\":[{\"key\":\"dedicated\",\"operator\":\"Equal\",\"value\":\"db\",\"effect\":\"NoSchedule\"}]}}"]);
    eventually(
        &s,
        &["get", "pod", "tolerant", "-o", "jsonpath={.spec.nodeName}"],
        |o| o == "sim-0000",
    );
    let taints = ok(
        &s,
        &[
            "get",
            "node",
            "sim-0001",
            "-o",
            "jsonpath={.spec.taints[*].key}",
        ],
    );
    assert_eq!(taints, "node.kubernetes.io/unschedulable");

    // A simulated node that finds itself not Ready posts its status again, as a kubelet does.
    ok(
        &s,
        &[
            "patch",
            "node",
            "sim-0002",
            "--subresource=status",
            "-p",
            "{\"status\":{\"conditions\":[{\"type\":\"Ready\",\"status\":\"False\",\"reason\":\"Test\"}]}}",
        ],
    );
    eventually(
        &s,
        &[
            "get",
            "node",
            "sim-0002",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}",
        ],
        |o| o == "KubeletReady",
    );
}

#[test]
fn a_silent_node_is_marked_unknown_tainted_and_emptied() {
    let s = Server::start_with(&[
        "--node-monitor-grace-period",
        "3s",
        "--node-startup-grace-period",
        "3s",
        "--disable-kubelet",
    ]);
    let dir = tempfile::tempdir().expect("tmp");
    let node = write(
        dir.path(),
        "node.yaml",
        "apiVersion: v1\nkind: Node\nmetadata: {name: silent}\n",
    );
    ok(&s, &["create", "-f", &node]);
    let pods = write(
        dir.path(),
        "pods.yaml",
        "apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: brief}
  spec:
    nodeName: silent
    containers: [{name: c, image: nginx:1.27}]
    tolerations: [{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}]
- apiVersion: v1
  kind: Pod
  metadata: {name: forever}
  spec:
    nodeName: silent
    containers: [{name: c, image: nginx:1.27}]
    tolerations: [{operator: Exists}]
",
    );
    ok(&s, &["create", "-f", &pods]);
    let ready = eventually(
        &s,
        &[
            "get",
            "node",
            "silent",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
        |o| o == "Unknown",
    );
    assert_eq!(ready, "Unknown");
    let taints = eventually(
        &s,
        &[
            "get",
            "node",
            "silent",
            "-o",
            "jsonpath={range .spec.taints[*]}{.key}:{.effect} {end}",
        ],
        |o| o.contains("NoExecute"),
    );
    assert!(
        taints.contains("node.kubernetes.io/unreachable:NoExecute"),
        "{taints}"
    );
    assert!(
        taints.contains("node.kubernetes.io/unreachable:NoSchedule"),
        "{taints}"
    );
    assert!(!taints.contains("not-ready"), "{taints}");
    // `brief` tolerates the taint for 2 s, `forever` always: only `brief` is evicted.
    eventually(
        &s,
        &[
            "get",
            "pod",
            "brief",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ],
        |o| !o.is_empty(),
    );
    let reason = ok(
        &s,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=brief",
            "-o",
            "jsonpath={.items[*].reason}",
        ],
    );
    assert!(reason.contains("TaintManagerEviction"), "{reason}");
    assert_eq!(
        ok(
            &s,
            &[
                "get",
                "pod",
                "forever",
                "-o",
                "jsonpath={.metadata.deletionTimestamp}"
            ]
        ),
        ""
    );
}

#[test]
fn a_higher_priority_pod_preempts_the_least_important_victim() {
    let s = Server::start_with(&[
        "--simulated-nodes",
        "1",
        "--simulated-node-capacity",
        "cpu=1,memory=4Gi",
        "--disable-kubelet",
    ]);
    eventually(&s, &["get", "nodes", "--no-headers"], |o| {
        o.contains(" Ready ")
    });
    let dir = tempfile::tempdir().expect("tmp");
    let pod = |name: &str, class: &str, cpu: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  priorityClassName: {class}\n  containers: [{{name: c, image: busybox:1.36, resources: {{requests: {{cpu: {cpu}}}}}}}]\n---\n")
    };
    let classes = "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: low}\nvalue: 100\n---\napiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: lowest}\nvalue: 10\n---\napiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: high}\nvalue: 1000\n";
    let m = write(dir.path(), "classes.yaml", classes);
    ok(&s, &["create", "-f", &m]);
    let m = write(
        dir.path(),
        "low.yaml",
        &(pod("keep", "low", "400m") + &pod("victim", "lowest", "400m")),
    );
    ok(&s, &["create", "-f", &m]);
    eventually(
        &s,
        &[
            "get",
            "pods",
            "--field-selector",
            "status.phase=Running",
            "-o",
            "name",
        ],
        |o| o.lines().count() == 2,
    );
    // 600m fits only without one of them: the lower-priority one goes.
    let m = write(dir.path(), "high.yaml", &pod("urgent", "high", "600m"));
    ok(&s, &["create", "-f", &m]);
    eventually(
        &s,
        &[
            "get",
            "pod",
            "urgent",
            "-o",
            "jsonpath={.status.phase} {.spec.nodeName}",
        ],
        |o| o == "Running sim-0000",
    );
    let left = ok(
        &s,
        &[
            "get",
            "pods",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {end}",
        ],
    );
    assert_eq!(left.trim(), "keep urgent");
    let events = ok(
        &s,
        &[
            "get",
            "events",
            "--field-selector",
            "reason=Preempted",
            "-o",
            "jsonpath={.items[0].involvedObject.name}: {.items[0].message}",
        ],
    );
    assert!(
        events.starts_with("victim: Preempted by pod ") && events.ends_with(" on node sim-0000"),
        "{events}"
    );
    let failed = ok(
        &s,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=urgent,reason=FailedScheduling",
            "-o",
            "jsonpath={.items[0].message}",
        ],
    );
    assert_eq!(failed, "0/1 nodes are available: 1 Insufficient cpu.");
}

#[test]
fn pod_anti_affinity_and_topology_spread_place_pods_apart() {
    let s = Server::start_with(&["--simulated-nodes", "3", "--disable-kubelet"]);
    eventually(&s, &["get", "nodes", "--no-headers"], |o| {
        o.lines().filter(|l| l.contains(" Ready ")).count() == 3
    });
    ok(
        &s,
        &[
            "label",
            "node",
            "sim-0000",
            "sim-0001",
            "topology.kubernetes.io/zone=a",
            "--overwrite",
        ],
    );
    ok(
        &s,
        &[
            "label",
            "node",
            "sim-0002",
            "topology.kubernetes.io/zone=b",
            "--overwrite",
        ],
    );
    let dir = tempfile::tempdir().expect("tmp");
    let m = write(
        dir.path(),
        "apart.yaml",
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: apart}
spec:
  replicas: 4
  selector: {matchLabels: {app: apart}}
  template:
    metadata: {labels: {app: apart}}
    spec:
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: apart}}}
      containers: [{name: c, image: busybox:1.36}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: spread}
spec:
  replicas: 4
  selector: {matchLabels: {app: spread}}
  template:
    metadata: {labels: {app: spread}}
    spec:
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: spread}}}
      containers: [{name: c, image: busybox:1.36}]
"#,
    );
    ok(&s, &["create", "-f", &m]);
    // One per node; the fourth has nowhere to go.
    let placed = eventually(
        &s,
        &[
            "get",
            "pods",
            "-l",
            "app=apart",
            "-o",
            "jsonpath={range .items[*]}{.spec.nodeName}{\"\\n\"}{end}",
        ],
        |o| o.lines().filter(|l| !l.is_empty()).count() == 3,
    );
    let mut nodes: Vec<&str> = placed.lines().filter(|l| !l.is_empty()).collect();
    nodes.sort();
    assert_eq!(nodes, ["sim-0000", "sim-0001", "sim-0002"]);
    eventually(
        &s,
        &[
            "get",
            "events",
            "--field-selector",
            "reason=FailedScheduling",
            "-o",
            "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
        ],
        |o| o.contains("0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules."),
    );
    // Two in each zone: zone a has two nodes, zone b one.
    let zones = eventually(
        &s,
        &[
            "get",
            "pods",
            "-l",
            "app=spread",
            "-o",
            "jsonpath={range .items[*]}{.spec.nodeName}{\"\\n\"}{end}",
        ],
        |o| o.lines().filter(|l| !l.is_empty()).count() == 4,
    );
    let in_b = zones.lines().filter(|l| *l == "sim-0002").count();
    assert_eq!(in_b, 2, "{zones}");
}
