//! Object lifecycles through the controllers, on simulated nodes with stock kubectl: a namespace
//! holding 2,000 objects is emptied and goes; a foreground deletion removes the dependents
//! before their owner; a rolling update never has fewer available pods than
//! `replicas - maxUnavailable`.

mod common;

use std::fmt::Write as _;

use common::server::{eventually, ok, text, within, write, Server};

#[test]
fn a_namespace_with_two_thousand_objects_is_deleted_completely() {
    let s = Server::start_with(&["--simulated-nodes", "2", "--disable-kubelet"]);
    let dir = tempfile::tempdir().expect("tmp");
    ok(&s, &["create", "namespace", "big"]);
    let mut items = String::new();
    for i in 0..1200 {
        let _ = write!(
            items,
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"cm-{i}"}},"data":{{"k":"v{i}"}}}},"#
        );
    }
    for i in 0..400 {
        let _ = write!(
            items,
            r#"{{"apiVersion":"v1","kind":"Secret","metadata":{{"name":"s-{i}"}},"stringData":{{"k":"v"}}}},"#
        );
    }
    for i in 0..200 {
        let _ = write!(
            items,
            r#"{{"apiVersion":"v1","kind":"ServiceAccount","metadata":{{"name":"sa-{i}"}}}},"#
        );
    }
    let list = format!(
        r#"{{"apiVersion":"v1","kind":"List","items":[{}]}}"#,
        items.trim_end_matches(',')
    );
    let file = write(dir.path(), "objects.json", &list);
    ok(&s, &["create", "-n", "big", "-f", &file, "-o", "name"]);
    ok(
        &s,
        &[
            "create",
            "deployment",
            "web",
            "-n",
            "big",
            "--image=nginx:1.27",
            "--replicas=200",
        ],
    );
    eventually(
        &s,
        &[
            "get",
            "deployment",
            "web",
            "-n",
            "big",
            "-o",
            "jsonpath={.status.availableReplicas}",
        ],
        |o| o == "200",
    );
    let count = |kind: &str| {
        text(&s.kubectl(&[
            "get",
            kind,
            "-n",
            "big",
            "--no-headers",
            "--ignore-not-found",
        ]))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
    };
    // 1,200 + 1 (kube-root-ca.crt) config maps, 400 secrets, 201 accounts (with `default`),
    // 200 pods, a ReplicaSet and a Deployment.
    assert_eq!(count("configmaps"), 1201);
    assert_eq!(count("pods"), 200);
    ok(&s, &["delete", "namespace", "big", "--wait=false"]);
    within(180, "the namespace going away", || {
        !s.kubectl(&["get", "namespace", "big"]).status.success()
    });
    for kind in [
        "configmaps",
        "secrets",
        "serviceaccounts",
        "pods",
        "replicasets",
        "deployments",
    ] {
        assert_eq!(count(kind), 0, "{kind} left behind");
    }
}

#[test]
fn foreground_deletion_removes_dependents_before_the_owner() {
    let s = Server::start_with(&["--simulated-nodes", "2", "--disable-kubelet"]);
    ok(
        &s,
        &[
            "create",
            "deployment",
            "fg",
            "--image=nginx:1.27",
            "--replicas=3",
        ],
    );
    eventually(
        &s,
        &[
            "get",
            "deployment",
            "fg",
            "-o",
            "jsonpath={.status.availableReplicas}",
        ],
        |o| o == "3",
    );
    ok(
        &s,
        &[
            "delete",
            "deployment",
            "fg",
            "--cascade=foreground",
            "--wait=false",
        ],
    );
    // While dependents remain, the owner is still there, marked for foreground deletion.
    let finalizers = ok(
        &s,
        &[
            "get",
            "deployment",
            "fg",
            "--ignore-not-found",
            "-o",
            "jsonpath={.metadata.finalizers}",
        ],
    );
    assert!(
        finalizers.is_empty() || finalizers.contains("foregroundDeletion"),
        "{finalizers}"
    );
    within(60, "the owner going away", || {
        let gone = !s.kubectl(&["get", "deployment", "fg"]).status.success();
        if gone {
            // Once the owner is gone, nothing it owned is left.
            let left = ok(&s, &["get", "rs,pods", "-l", "app=fg", "-o", "name"]);
            assert!(left.trim().is_empty(), "left after the owner: {left}");
        }
        gone
    });
}

#[test]
fn a_rolling_update_keeps_replicas_minus_max_unavailable_available() {
    let s = Server::start_with(&["--simulated-nodes", "3", "--disable-kubelet"]);
    let dir = tempfile::tempdir().expect("tmp");
    let deploy = write(
        dir.path(),
        "d.yaml",
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: roll}
spec:
  replicas: 6
  minReadySeconds: 1
  strategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 1, maxSurge: 1}}
  selector: {matchLabels: {app: roll}}
  template:
    metadata: {labels: {app: roll}}
    spec: {containers: [{name: c, image: nginx:1.27}]}
"#,
    );
    ok(&s, &["create", "-f", &deploy]);
    eventually(
        &s,
        &[
            "get",
            "deployment",
            "roll",
            "-o",
            "jsonpath={.status.availableReplicas}",
        ],
        |o| o == "6",
    );
    ok(&s, &["set", "image", "deployment/roll", "c=nginx:1.28"]);
    let mut lowest = 6;
    let mut highest_total = 0;
    within(120, "the rollout", || {
        let o = ok(
            &s,
            &["get", "pods", "-l", "app=roll", "-o",
              "jsonpath={range .items[*]}{.metadata.deletionTimestamp}/{.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}"],
        );
        // Ready pods not being deleted: an upper bound of the available ones.
        let ready = o.lines().filter(|l| *l == "/True").count();
        let live = o.lines().filter(|l| l.starts_with('/')).count();
        lowest = lowest.min(ready);
        highest_total = highest_total.max(live);
        let status = ok(
            &s,
            &[
                "get",
                "deployment",
                "roll",
                "-o",
                "jsonpath={.status.updatedReplicas} {.status.availableReplicas} {.status.replicas}",
            ],
        );
        status == "6 6 6"
    });
    assert!(
        lowest >= 5,
        "only {lowest} ready pods at one point (maxUnavailable 1)"
    );
    assert!(
        highest_total <= 7,
        "{highest_total} pods at once (maxSurge 1)"
    );
}
