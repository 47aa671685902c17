//! Ownership, conflicts and removal, on the real OpenAPI schemas.

use serde_json::json;

use super::*;

fn with<T>(
    group: &str,
    version: &str,
    kind: &str,
    f: impl FnOnce(&Schemas<'_>, Option<&Value>) -> T,
) -> T {
    let doc = crate::apiserver::openapi::get().expect("openapi");
    let schemas = doc.schemas();
    let schema = doc.kind_schema(group, version, kind);
    f(&schemas, schema.as_ref())
}

fn w(manager: &str) -> Writer<'_> {
    Writer {
        manager,
        api_version: "apps/v1",
        subresource: None,
        now: "2026-01-01T00:00:00Z",
    }
}

fn deployment(image: &str, extra_env: bool) -> Value {
    let mut c = json!({"name": "web", "image": image});
    if extra_env {
        c["env"] = json!([{"name": "MODE", "value": "x"}]);
    }
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": {"app": "web"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [c]}}}})
}

#[test]
fn fields_v1_looks_like_upstreams() {
    with("apps", "v1", "Deployment", |s, schema| {
        let set = field_set(s, schema, &deployment("nginx", false), false);
        let v1 = fieldset::to_fields_v1(&set);
        assert_eq!(v1["f:metadata"]["f:labels"], json!({".": {}, "f:app": {}}));
        assert_eq!(
            v1["f:spec"]["f:selector"],
            json!({}),
            "selectors are atomic"
        );
        assert_eq!(
            v1["f:spec"]["f:template"]["f:spec"]["f:containers"],
            json!({"k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}})
        );
        assert_eq!(fieldset::from_fields_v1(&v1), set);
    });
}

#[test]
fn apply_conflicts_force_and_removal() {
    with("apps", "v1", "Deployment", |s, schema| {
        // A creates by apply, with an env list; B updates the image.
        let a1 = apply(
            s,
            schema,
            None,
            &deployment("nginx:1", true),
            false,
            &w("a"),
        )
        .expect("create");
        let mut b = a1.clone();
        b["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
        record_update(s, schema, Some(&a1), &mut b, &w("b"));
        let owners = entries(&b);
        assert_eq!(owners.len(), 2);
        // A applying its old image again conflicts with B.
        let err = apply(
            s,
            schema,
            Some(&b),
            &deployment("nginx:1", true),
            false,
            &w("a"),
        )
        .expect_err("conflict");
        assert_eq!(
            err.message(),
            "Apply failed with 1 conflict: conflict with \"b\" using apps/v1: .spec.template.spec.containers[name=\"web\"].image"
        );
        // Applying B's value is no conflict; dropping env removes it (only A had it).
        let a2 = apply(
            s,
            schema,
            Some(&b),
            &deployment("nginx:2", false),
            false,
            &w("a"),
        )
        .expect("agree");
        let c = &a2["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "nginx:2");
        assert!(c.get("env").is_none(), "{c}");
        // Forcing takes the field over.
        let a3 = apply(
            s,
            schema,
            Some(&a2),
            &deployment("nginx:3", false),
            true,
            &w("a"),
        )
        .expect("force");
        assert_eq!(
            a3["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx:3"
        );
        let b_fields = entries(&a3)
            .into_iter()
            .find(|e| e.manager == "b")
            .map(|e| e.fields)
            .unwrap_or_default();
        assert!(b_fields.is_empty(), "{b_fields:?}");
    });
}

#[test]
fn updates_move_changed_fields_to_their_manager() {
    with("", "v1", "ConfigMap", |s, schema| {
        let mut created = json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
        record_update(s, schema, None, &mut created, &w("create"));
        let mut edited = created.clone();
        edited["data"]["a"] = json!("9");
        edited["data"].as_object_mut().expect("data").remove("b");
        record_update(s, schema, Some(&created), &mut edited, &w("edit"));
        let list = entries(&edited);
        let by = |m: &str| {
            list.iter()
                .find(|e| e.manager == m)
                .map(|e| fieldset::to_fields_v1(&e.fields))
        };
        assert_eq!(
            by("create"),
            Some(json!({"f:data": {}})),
            "keeps the map membership"
        );
        assert_eq!(by("edit"), Some(json!({"f:data": {"f:a": {}}})));
    });
}
