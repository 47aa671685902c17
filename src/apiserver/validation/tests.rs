//! Upstream's wording for the common mistakes.

use serde_json::json;

use super::*;
use crate::apiserver::catalog::find;
use crate::apiserver::strategy::apply_defaults;

fn create(group: &str, plural: &str, mut obj: Value) -> Vec<String> {
    let def = find(group, "v1", plural).expect("kind");
    apply_defaults(def, &mut obj);
    validate_create(def, &obj)
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn pods_need_containers_with_names_and_images() {
    assert_eq!(
        create("", "pods", json!({"metadata": {"name": "p"}, "spec": {}})),
        vec!["spec.containers: Required value"]
    );
    let errs = create(
        "",
        "pods",
        json!({"metadata": {"name": "p"}, "spec": {"restartPolicy": "Sometimes", "containers": [
            {"name": "a", "image": "x", "ports": [{"containerPort": 70000}]},
            {"name": "a"},
            {"name": "B_", "image": "x", "volumeMounts": [{"name": "data", "mountPath": "/d"}]},
        ]}}),
    );
    assert!(errs.contains(&"spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive".to_string()), "{errs:?}");
    assert!(errs.contains(&"spec.containers[1].name: Duplicate value: \"a\"".to_string()));
    assert!(errs.contains(&"spec.containers[1].image: Required value".to_string()));
    assert!(errs.iter().any(|e| e.starts_with(
        "spec.containers[2].name: Invalid value: \"B_\": a lowercase RFC 1123 label"
    )));
    assert!(
        errs.contains(&"spec.containers[2].volumeMounts[0].name: Not found: \"data\"".to_string())
    );
    assert!(errs.contains(&"spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"".to_string()));
}

#[test]
fn deployments_selectors_and_templates() {
    let dep = |sel: Value, labels: Value| {
        json!({"metadata": {"name": "d"}, "spec": {"selector": sel, "template": {
            "metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}})
    };
    assert_eq!(
        create("apps", "deployments", dep(json!({"matchLabels": {"app": "a"}}), json!({"app": "b"}))),
        vec!["spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"b\"}: `selector` does not match template `labels`"]
    );
    assert_eq!(
        create("apps", "deployments", dep(json!({}), json!({"app": "b"}))),
        vec!["spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment"]
    );
    let def = find("apps", "v1", "deployments").expect("deployments");
    let mut old = dep(json!({"matchLabels": {"app": "a"}}), json!({"app": "a"}));
    apply_defaults(def, &mut old);
    let mut new = dep(
        json!({"matchLabels": {"app": "other"}}),
        json!({"app": "other"}),
    );
    apply_defaults(def, &mut new);
    let errs: Vec<String> = validate_update(def, &old, &new)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(errs, vec!["spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"other\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"]);
}

#[test]
fn jobs_may_not_restart_always_and_services_need_ports() {
    let errs = create(
        "batch",
        "jobs",
        json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}}),
    );
    assert_eq!(errs, vec!["spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""]);
    let errs = create(
        "",
        "services",
        json!({"metadata": {"name": "s"}, "spec": {}}),
    );
    assert_eq!(errs, vec!["spec.ports: Required value"]);
    let errs = create(
        "",
        "services",
        json!({"metadata": {"name": "9s"}, "spec": {"ports": [{"port": 80}, {"port": 81}]}}),
    );
    assert!(
        errs[0].starts_with("metadata.name: Invalid value: \"9s\": a DNS-1035 label"),
        "{errs:?}"
    );
    assert_eq!(
        &errs[1..],
        [
            "spec.ports[0].name: Required value",
            "spec.ports[1].name: Required value"
        ]
    );
}

#[test]
fn metadata_and_data_keys() {
    let errs = create(
        "",
        "configmaps",
        json!({"metadata": {"name": "c", "labels": {"bad key": "v", "ok": "bad value!"}}, "data": {"a b": "1"}}),
    );
    assert!(
        errs.iter().any(|e| e
            .starts_with("metadata.labels: Invalid value: \"bad key\": name part must consist")),
        "{errs:?}"
    );
    assert!(errs
        .iter()
        .any(|e| e
            .starts_with("metadata.labels: Invalid value: \"bad value!\": a valid label must be")));
    assert!(errs
        .iter()
        .any(|e| e.starts_with("data[a b]: Invalid value: \"a b\": a valid config key")));
    let errs = create(
        "",
        "secrets",
        json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}}),
    );
    assert_eq!(errs, vec!["data[tls.key]: Required value"]);
}

#[test]
fn one_controller_reference_at_most() {
    let owner = |name: &str, controller: bool| json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name, "uid": format!("u-{name}"), "controller": controller});
    let pod = |refs: Value| {
        json!({"metadata": {"name": "p", "ownerReferences": refs},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    };
    let errs = create(
        "",
        "pods",
        pod(json!([owner("a", true), owner("b", false)])),
    );
    assert!(errs.is_empty(), "{errs:?}");
    let errs = create("", "pods", pod(json!([owner("a", true), owner("b", true)])));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("metadata.ownerReferences: Invalid value: ")
            && errs[0].ends_with("Only one reference can have Controller set to true. Found \"true\" in references for ReplicaSet/a and ReplicaSet/b"),
        "{errs:?}"
    );
}

#[test]
fn one_error_or_a_list_in_the_status() {
    let def = find("", "v1", "pods").expect("pods");
    let e = FieldError {
        kind: Kind::Required,
        field: "spec.containers".into(),
        value: None,
        detail: String::new(),
    };
    let resp = response(def, "p", &[e.clone(), e]);
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[test]
fn ephemeral_containers_are_only_added_and_restricted() {
    let pod =
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app", "image": "x"}]}});
    let mut with = pod.clone();
    with["spec"]["ephemeralContainers"] =
        json!([{"name": "dbg", "image": "x", "targetContainerName": "app"}]);
    assert_eq!(
        create("", "pods", with.clone()),
        vec!["spec.ephemeralContainers: Forbidden: cannot be set on create"]
    );
    let strings =
        |errs: Vec<FieldError>| -> Vec<String> { errs.iter().map(ToString::to_string).collect() };
    assert!(validate_ephemeral(&pod, &with).is_empty());
    let errs = strings(validate_ephemeral(&with, &pod));
    assert_eq!(
        errs,
        vec!["spec.ephemeralContainers: Forbidden: existing ephemeral containers \"dbg\" may not be removed\n"]
    );
    let mut changed = with.clone();
    changed["spec"]["ephemeralContainers"][0]["image"] = json!("y");
    let errs = strings(validate_ephemeral(&with, &changed));
    assert!(errs[0].starts_with("spec.ephemeralContainers[0]: Forbidden: existing ephemeral containers \"dbg\" may not be changed"), "{errs:?}");
    let mut bad = pod.clone();
    bad["spec"]["ephemeralContainers"] = json!([
        {"name": "app", "image": "x"},
        {"name": "d2", "image": "x", "ports": [{"containerPort": 80}], "targetContainerName": "nope"},
    ]);
    let errs = strings(validate_ephemeral(&pod, &bad));
    assert!(
        errs.contains(&"spec.ephemeralContainers[0].name: Duplicate value: \"app\"".to_string()),
        "{errs:?}"
    );
    assert!(errs.contains(&"spec.ephemeralContainers[1].ports: Forbidden: cannot be set for an Ephemeral Container".to_string()), "{errs:?}");
    assert!(
        errs.contains(
            &"spec.ephemeralContainers[1].targetContainerName: Not found: \"nope\"".to_string()
        ),
        "{errs:?}"
    );
}

#[test]
fn resources_and_resize_policies_as_upstream() {
    let pod = |c: Value, spec_extra: Value| {
        let mut spec = json!({"containers": [c]});
        for (k, v) in spec_extra.as_object().into_iter().flatten() {
            spec[k] = v.clone();
        }
        create("", "pods", json!({"metadata": {"name": "p"}, "spec": spec}))
    };
    let errs = pod(
        json!({"name": "a", "image": "x", "resources": {
            "requests": {"cpu": "2", "memory": "-1"}, "limits": {"cpu": "1"}}}),
        json!({}),
    );
    assert!(errs.contains(&"spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1".to_string()), "{errs:?}");
    assert!(errs.contains(&"spec.containers[0].resources.requests[memory]: Invalid value: \"-1\": must be greater than or equal to 0".to_string()), "{errs:?}");
    // Extended resources and hugepages are not overcommitted; names are upstream's.
    let errs = pod(
        json!({"name": "a", "image": "x", "resources": {
            "requests": {"example.com/dongle": "1", "example.com/key": "1", "hugepages-2Mi": "3Mi", "gpu": "1"},
            "limits": {"example.com/dongle": "2", "example.com/half": "500m", "hugepages-2Mi": "3Mi"}}}),
        json!({}),
    );
    for want in [
        "spec.containers[0].resources.requests: Invalid value: \"1\": must be equal to example.com/dongle limit of 2",
        "spec.containers[0].resources.limits: Required value: Limit must be set for non overcommitable resources",
        "spec.containers[0].resources.limits[example.com/half]: Invalid value: \"500m\": must be an integer",
        "spec.containers[0].resources.limits[hugepages-2Mi]: Invalid value: \"3Mi\": 3Mi is not positive integer multiple of hugepages-2Mi",
        "spec.containers[0].resources: Forbidden: HugePages require cpu or memory",
        "spec.containers[0].resources.requests[gpu]: Invalid value: \"gpu\": must be a standard resource type or fully qualified",
        "spec.containers[0].resources.requests[gpu]: Invalid value: \"gpu\": must be a standard resource for containers",
    ] {
        assert!(errs.contains(&want.to_string()), "{want}: {errs:?}");
    }
    let errs = pod(
        json!({"name": "a", "image": "x", "resources": {
            "requests": {"example.com/dongle": "1", "hugepages-2Mi": "4Mi", "memory": "8Mi"},
            "limits": {"example.com/dongle": "1", "hugepages-2Mi": "4Mi", "memory": "8Mi"}}}),
        json!({}),
    );
    assert!(errs.is_empty(), "{errs:?}");
    let errs = pod(
        json!({"name": "a", "image": "x", "resizePolicy": [
            {"resourceName": "cpu", "restartPolicy": "RestartContainer"},
            {"resourceName": "disk", "restartPolicy": "NotRequired"}]}),
        json!({"restartPolicy": "Never"}),
    );
    assert!(errs.contains(&"spec.containers[0].resizePolicy: Invalid value: \"RestartContainer\": must be 'NotRequired' when `restartPolicy` is 'Never'".to_string()), "{errs:?}");
    assert!(errs.contains(&"spec.containers[0].resizePolicy: Unsupported value: \"disk\": supported values: \"cpu\", \"memory\"".to_string()), "{errs:?}");
}

#[test]
fn pod_level_resources_as_upstream() {
    let pod = |resources: Value, c: Value| {
        create(
            "",
            "pods",
            json!({"metadata": {"name": "p"}, "spec": {"resources": resources, "containers": [c]}}),
        )
    };
    let c = json!({"name": "a", "image": "x", "resources": {"requests": {"cpu": "500m"}, "limits": {"memory": "128Mi"}}});
    let errs = pod(
        json!({"requests": {"cpu": "200m", "ephemeral-storage": "1Gi"}, "limits": {"cpu": "1", "memory": "64Mi"}}),
        c.clone(),
    );
    assert!(errs.contains(&"spec.resources.requests[ephemeral-storage]: Unsupported value: \"ephemeral-storage\": supported values: \"cpu\", \"hugepages-\", \"memory\"".to_string()), "{errs:?}");
    assert!(errs.contains(&"spec.resources.requests[cpu]: Invalid value: \"200m\": must be greater than or equal to aggregate container requests of 500m".to_string()), "{errs:?}");
    assert!(errs.contains(&"spec.resources.containers[0][memory].limits: Invalid value: \"128Mi\": must be less than or equal to pod limits of 64Mi".to_string()), "{errs:?}");
    // Limits alone: the requests default from the containers', then from the limits.
    let def = find("", "v1", "pods").expect("pods");
    let mut obj = json!({"metadata": {"name": "p"}, "spec": {
        "resources": {"limits": {"cpu": "1", "memory": "64Mi"}},
        "containers": [{"name": "a", "image": "x", "resources": {"requests": {"cpu": "500m"}}}]}});
    apply_defaults(def, &mut obj);
    assert_eq!(
        obj["spec"]["resources"]["requests"],
        json!({"cpu": "500m", "memory": "64Mi"})
    );
    assert!(validate_create(def, &obj).is_empty());
    assert_eq!(
        crate::apiserver::strategy::qos_class(&obj["spec"]),
        "Burstable"
    );
    obj["spec"]["resources"]["requests"]["cpu"] = json!("1");
    assert_eq!(
        crate::apiserver::strategy::qos_class(&obj["spec"]),
        "Guaranteed"
    );
}
