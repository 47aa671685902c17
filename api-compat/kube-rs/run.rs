//! kube-rs (with k8s-openapi's v1.37 types) against a fresh k1s server: CRUD, conflicts,
//! paginated lists, a raw watch that must see every event in order, and kube-runtime's
//! watcher with both of its initial-list strategies.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Api, Client, Config};
use serde_json::json;

use common::server::Server;

const NS: &str = "kube-rs";

fn cm(name: &str, v: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"set": "kube-rs"}},
        "data": {"v": v},
    }))
    .expect("configmap")
}

async fn client(server: &Server) -> Client {
    let kc = Kubeconfig::read_from(&server.kubeconfig).expect("kubeconfig");
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    Client::try_from(cfg).expect("client")
}

#[tokio::test]
async fn kube_rs_scenario() {
    let server = Server::start();
    let client = client(&server).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).expect("ns");
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("create ns");

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let rv = cms
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("rv");
    let mut raw = cms
        .watch(&WatchParams::default().timeout(20), &rv)
        .await
        .expect("watch")
        .boxed();

    // CRUD and a conflict.
    for i in 0..5 {
        cms.create(
            &PostParams::default(),
            &cm(&format!("cm-{i}"), &i.to_string()),
        )
        .await
        .expect("create");
    }
    let mut one = cms.get("cm-1").await.expect("get");
    assert_eq!(
        one.data
            .as_ref()
            .and_then(|d| d.get("v"))
            .map(String::as_str),
        Some("1")
    );
    one.data = Some(BTreeMap::from([("v".to_string(), "one".to_string())]));
    let replaced = cms
        .replace("cm-1", &PostParams::default(), &one)
        .await
        .expect("replace");
    assert_ne!(
        replaced.metadata.resource_version,
        one.metadata.resource_version
    );
    match cms.replace("cm-1", &PostParams::default(), &one).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 409, "{e:?}"),
        other => panic!("a stale replace must be refused: {other:?}"),
    }
    cms.patch(
        "cm-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "zero"}})),
    )
    .await
    .expect("merge patch");
    cms.delete("cm-2", &DeleteParams::default())
        .await
        .expect("delete");
    match cms.get("cm-2").await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 404),
        other => panic!("a deleted object must be gone: {other:?}"),
    }

    // Pagination.
    let (mut names, mut token, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let mut lp = ListParams::default().labels("set=kube-rs").limit(2);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = cms.list(&lp).await.expect("page");
        pages += 1;
        names.extend(page.items.iter().filter_map(|c| c.metadata.name.clone()));
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
    }
    assert_eq!(names, ["cm-0", "cm-1", "cm-3", "cm-4"]);
    assert_eq!(pages, 2);

    // The raw watch saw every event, in order.
    let mut seen = Vec::new();
    while seen.len() < 8 {
        let ev = tokio::time::timeout(Duration::from_secs(10), raw.try_next())
            .await
            .expect("watch event in time")
            .expect("watch stream")
            .expect("watch still open");
        let (kind, obj) = match ev {
            WatchEvent::Added(o) => ("ADDED", o),
            WatchEvent::Modified(o) => ("MODIFIED", o),
            WatchEvent::Deleted(o) => ("DELETED", o),
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(e) => panic!("watch error: {e:?}"),
        };
        // The root CA publisher's ConfigMap may arrive while the namespace is new.
        if obj.metadata.name.as_deref() == Some("kube-root-ca.crt") {
            continue;
        }
        let v = obj
            .data
            .and_then(|d| d.get("v").cloned())
            .unwrap_or_default();
        seen.push(format!(
            "{kind} {} {v}",
            obj.metadata.name.unwrap_or_default()
        ));
    }
    assert_eq!(
        seen,
        [
            "ADDED cm-0 0",
            "ADDED cm-1 1",
            "ADDED cm-2 2",
            "ADDED cm-3 3",
            "ADDED cm-4 4",
            "MODIFIED cm-1 one",
            "MODIFIED cm-0 zero",
            "DELETED cm-2 2",
        ]
    );

    // kube-runtime's watcher, listing first and streaming the initial list (sendInitialEvents).
    for cfg in [
        watcher::Config::default(),
        watcher::Config::default().streaming_lists(),
    ] {
        let mut stream = watcher(cms.clone(), cfg.labels("set=kube-rs")).boxed();
        let mut initial = Vec::new();
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
                .await
                .expect("watcher event in time")
                .expect("watcher")
                .expect("watcher open");
            match ev {
                watcher::Event::Init => {}
                watcher::Event::InitApply(o) => initial.push(o.metadata.name.unwrap_or_default()),
                watcher::Event::InitDone => break,
                other => panic!("unexpected before InitDone: {other:?}"),
            }
        }
        initial.sort();
        assert_eq!(initial, ["cm-0", "cm-1", "cm-3", "cm-4"]);
        cms.patch(
            "cm-3",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"annotations": {"touched": "yes"}}})),
        )
        .await
        .expect("strategic patch");
        let ev = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .expect("change in time")
            .expect("watcher")
            .expect("watcher open");
        match ev {
            watcher::Event::Apply(o) => assert_eq!(o.metadata.name.as_deref(), Some("cm-3")),
            other => panic!("expected the patched object: {other:?}"),
        }
        cms.patch(
            "cm-3",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"touched": null}}})),
        )
        .await
        .expect("merge patch");
    }

    // Server-side apply, kube-rs's usual way to write: creates, owns, conflicts, forces.
    let ssa = |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"v": v}});
    let pp = PatchParams::apply("kube-rs-test");
    let made = cms
        .patch("ssa", &pp, &Patch::Apply(ssa("1")))
        .await
        .expect("apply creates");
    let managers: Vec<String> = made
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, ["kube-rs-test"]);
    cms.patch(
        "ssa",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .expect("someone else changes v");
    match cms.patch("ssa", &pp, &Patch::Apply(ssa("1"))).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 409, "{e:?}");
            assert!(e.message.contains(".data.v"), "{}", e.message);
        }
        other => panic!("an apply over another manager's value must conflict: {other:?}"),
    }
    let forced = cms
        .patch("ssa", &pp.clone().force(), &Patch::Apply(ssa("1")))
        .await
        .expect("forced apply");
    assert_eq!(
        forced.data.and_then(|d| d.get("v").cloned()).as_deref(),
        Some("1")
    );

    // A typed Deployment with its defaults, and its scale subresource.
    let deps: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}},
        },
    }))
    .expect("deployment");
    let created = deps
        .create(&PostParams::default(), &d)
        .await
        .expect("create deployment");
    let spec = created.spec;
    assert_eq!(spec.revision_history_limit, Some(10));
    assert_eq!(
        spec.strategy.and_then(|s| s.type_).as_deref(),
        Some("RollingUpdate")
    );
    let scale = deps.get_scale("web").await.expect("scale");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(2));
    deps.patch_scale(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 3}})),
    )
    .await
    .expect("patch scale");
    assert_eq!(deps.get("web").await.expect("get").spec.replicas, Some(3));
}

/// A write right after another sees it: updates and patches start from the watch cache's copy,
/// which may lag the store by a moment, and whatever that copy would refuse (a JSON patch's
/// `test`, a resourceVersion just returned) is checked against the store's.
#[tokio::test]
async fn back_to_back_writes_see_each_other() {
    let server = Server::start();
    let client = client(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    cms.create(&PostParams::default(), &cm("tight", "0"))
        .await
        .expect("create");
    for i in 1..=50 {
        let merged = cms
            .patch(
                "tight",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"v": i.to_string()}})),
            )
            .await
            .expect("merge patch");
        let ops = Patch::Json::<()>(
            serde_json::from_value(json!([
                {"op": "test", "path": "/data/v", "value": i.to_string()},
                {"op": "replace", "path": "/data/v", "value": format!("{i}-json")},
            ]))
            .expect("json patch"),
        );
        let patched = cms
            .patch("tight", &PatchParams::default(), &ops)
            .await
            .unwrap_or_else(|e| panic!("json patch testing the write before it ({i}): {e}"));
        assert_ne!(
            merged.metadata.resource_version,
            patched.metadata.resource_version
        );
        // A PUT naming the resourceVersion just returned is not a conflict.
        let mut next = patched;
        next.data
            .get_or_insert_with(BTreeMap::new)
            .insert("v".into(), format!("{i}-put"));
        let put = cms
            .replace("tight", &PostParams::default(), &next)
            .await
            .unwrap_or_else(|e| panic!("update with the resourceVersion just returned ({i}): {e}"));
        assert_eq!(
            put.data.and_then(|d| d.get("v").cloned()),
            Some(format!("{i}-put"))
        );
    }
}
