//! The generic registry with a stock kubectl 1.37: create, apply, patch, lists and watches,
//! Tables, defaults, service addresses and ports, scale and binding.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::server::{kubectl, text, Server};

#[test]
fn kubectl_create_get_label_patch_apply_delete_through_the_generic_registry() {
    let s = Server::start();
    let dir = tempfile::tempdir().expect("tmp");
    let manifest = dir.path().join("cm.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: demo\n  labels: {app: web}\ndata:\n  a: \"1\"\n",
    )
    .expect("write");
    let m = manifest.to_str().expect("utf8");
    let ok = |args: &[&str]| {
        let o = s.kubectl(args);
        assert!(o.status.success(), "kubectl {args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // The system namespaces exist from the start.
    let ns = ok(&["get", "ns", "-o", "name"]);
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(&format!("namespace/{n}")), "{ns}");
    }
    assert!(ok(&["create", "-f", m]).contains("configmap/demo created"));
    let o = s.kubectl(&["create", "-f", m]);
    assert!(text(&o).contains("AlreadyExists"), "{}", text(&o));
    let got: serde_json::Value =
        serde_json::from_str(&ok(&["get", "cm", "demo", "-o", "json"])).expect("json");
    assert_eq!(got["data"]["a"], "1");
    assert!(got["metadata"]["uid"].is_string());
    assert!(got["metadata"]["creationTimestamp"].is_string());
    let rv: i64 = got["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .parse()
        .expect("number");

    ok(&["label", "cm", "demo", "tier=front"]);
    ok(&["annotate", "cm", "demo", "note=hi"]);
    assert!(ok(&["get", "cm", "-l", "tier=front", "-o", "name"]).contains("configmap/demo"));
    // Only the root CA every namespace gets lacks the label.
    assert_eq!(
        ok(&["get", "cm", "-l", "tier!=front", "-o", "name"]).trim(),
        "configmap/kube-root-ca.crt"
    );
    ok(&[
        "patch",
        "cm",
        "demo",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"b":"2"}}"#,
    ]);
    ok(&[
        "patch",
        "cm",
        "demo",
        "--type",
        "json",
        "-p",
        r#"[{"op":"add","path":"/data/c","value":"3"}]"#,
    ]);
    let data = ok(&["get", "cm", "demo", "-o", "jsonpath={.data}"]);
    assert_eq!(data, r#"{"a":"1","b":"2","c":"3"}"#);
    let got: serde_json::Value =
        serde_json::from_str(&ok(&["get", "cm", "demo", "-o", "json"])).expect("json");
    let rv2: i64 = got["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .parse()
        .expect("number");
    assert!(rv2 > rv, "writes move the resourceVersion");
    assert!(ok(&["apply", "-f", m]).contains("configured"));
    assert!(
        ok(&["apply", "-f", m]).contains("unchanged"),
        "repeated applies converge"
    );

    // A stale resourceVersion conflicts.
    let mut stale = got.clone();
    stale["metadata"]["resourceVersion"] = serde_json::json!(rv.to_string());
    let stale_file = dir.path().join("stale.json");
    std::fs::write(&stale_file, stale.to_string()).expect("write");
    let o = s.kubectl(&[
        "replace",
        "-f",
        stale_file.to_str().expect("utf8"),
        "--validate=false",
    ]);
    assert!(
        text(&o).contains("Conflict") || text(&o).contains("the object has been modified"),
        "{}",
        text(&o)
    );

    // Namespaces: objects need one that exists.
    let o = s.kubectl(&["-n", "nowhere", "create", "-f", m]);
    assert!(
        text(&o).contains("namespaces \"nowhere\" not found"),
        "{}",
        text(&o)
    );
    // Names are checked.
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n",
    )
    .expect("write");
    let o = s.kubectl(&["create", "-f", m, "--validate=false"]);
    assert!(
        text(&o).contains("is invalid") && text(&o).contains("RFC 1123"),
        "{}",
        text(&o)
    );

    assert!(ok(&["delete", "cm", "demo"]).contains("deleted"));
    let o = s.kubectl(&["get", "cm", "demo"]);
    assert!(text(&o).contains("NotFound"), "{}", text(&o));
}

#[test]
fn paged_lists_and_watches() {
    let s = Server::start();
    let dir = tempfile::tempdir().expect("tmp");
    for i in 0..7 {
        let f = dir.path().join(format!("cm{i}.json"));
        std::fs::write(
            &f,
            format!(
                r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"cm-{i}","labels":{{"odd":"{}"}}}}}}"#,
                i % 2 == 1
            ),
        )
        .expect("write");
        let o = s.kubectl(&[
            "create",
            "-f",
            f.to_str().expect("utf8"),
            "--validate=false",
        ]);
        assert!(o.status.success(), "{}", text(&o));
    }
    // The root CA publisher adds its ConfigMap shortly after start.
    for _ in 0..50 {
        if s.kubectl(&["get", "cm", "kube-root-ca.crt"])
            .status
            .success()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // kubectl pages with --chunk-size and stitches the pages together.
    let o = s.kubectl(&["get", "cm", "--chunk-size=2", "-o", "name"]);
    let names: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    // Seven of ours and the namespace's root CA.
    assert_eq!(names.len(), 8, "{names:?}");
    let o = s.kubectl(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?limit=3",
    ]);
    let page: serde_json::Value = serde_json::from_slice(&o.stdout).expect("list");
    assert_eq!(page["kind"], "ConfigMapList");
    assert_eq!(page["items"].as_array().expect("items").len(), 3);
    assert_eq!(page["metadata"]["remainingItemCount"], 5);
    assert!(page["metadata"]["continue"].is_string());
    // With a selector, each page holds `limit` matches; what is left is not counted (upstream).
    let o = s.kubectl(&[
        "get",
        "cm",
        "-l",
        "odd=true",
        "--chunk-size=1",
        "-o",
        "name",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .collect::<Vec<_>>(),
        ["configmap/cm-1", "configmap/cm-3", "configmap/cm-5"]
    );
    let o = s.kubectl(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?limit=2&labelSelector=odd%3Dfalse",
    ]);
    let odd: serde_json::Value = serde_json::from_slice(&o.stdout).expect("list");
    assert_eq!(odd["items"].as_array().expect("items").len(), 2);
    assert!(odd["metadata"]["continue"].is_string());
    assert!(odd["metadata"].get("remainingItemCount").is_none(), "{odd}");

    // A watch from the list's resourceVersion sees the next change.
    let rv = page["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    let watch = Command::new(kubectl())
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .args(["get", "--raw"])
        .arg(format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=5"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("watch");
    std::thread::sleep(Duration::from_millis(500));
    let o = s.kubectl(&["delete", "cm", "cm-3"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = watch.wait_with_output().expect("watch output");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "DELETED");
    assert_eq!(events[0]["object"]["metadata"]["name"], "cm-3");
}

#[test]
fn kubectl_apply_patch_and_set_image_merge_lists_by_key() {
    let s = Server::start();
    let dir = tempfile::tempdir().expect("tmp");
    let manifest = dir.path().join("d.yaml");
    let deployment = |image: &str, value: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n      - name: web\n        image: {image}\n        env: [{{name: A, value: \"{value}\"}}]\n      - name: side\n        image: busybox:1\n"
        )
    };
    let m = manifest.to_str().expect("utf8");
    let ok = |args: &[&str]| {
        let o = s.kubectl(args);
        assert!(o.status.success(), "kubectl {args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    std::fs::write(&manifest, deployment("busybox:1", "1")).expect("write");
    assert!(ok(&["apply", "-f", m]).contains("created"));
    assert!(ok(&["apply", "-f", m]).contains("unchanged"));
    std::fs::write(&manifest, deployment("busybox:2", "2")).expect("write");
    assert!(ok(&["apply", "-f", m]).contains("configured"));
    let got: serde_json::Value =
        serde_json::from_str(&ok(&["get", "deploy", "web", "-o", "json"])).expect("json");
    let containers = &got["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers[0]["image"], "busybox:2");
    assert_eq!(
        containers[0]["env"],
        serde_json::json!([{"name": "A", "value": "2"}])
    );
    assert_eq!(
        containers[1]["name"], "side",
        "the untouched container stays"
    );
    assert_eq!(
        got["metadata"]["generation"], 2,
        "a spec change bumps the generation"
    );

    // kubectl patch defaults to a strategic merge patch: one container by name.
    ok(&[
        "patch",
        "deploy",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"side","image":"busybox:3"}]}}}}"#,
    ]);
    ok(&["set", "image", "deploy/web", "web=busybox:9"]);
    let images = ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[*].image}",
    ]);
    assert_eq!(images, "busybox:9 busybox:3");
    // Status is not changed through the main resource.
    ok(&[
        "patch",
        "deploy",
        "web",
        "--type",
        "merge",
        "-p",
        r#"{"status":{"replicas":7}}"#,
    ]);
    let got: serde_json::Value =
        serde_json::from_str(&ok(&["get", "deploy", "web", "-o", "json"])).expect("json");
    // (The deployment controller writes the real count.)
    assert_ne!(got["status"]["replicas"], 7, "{}", got["status"]);
}

#[test]
fn kubectl_get_prints_upstreams_columns() {
    let s = Server::start();
    let dir = tempfile::tempdir().expect("tmp");
    let manifest = dir.path().join("all.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: busybox:1}]\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: demo, labels: {app: web}}\ndata: {a: \"1\", b: \"2\"}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p1}\nspec:\n  containers: [{name: c, image: busybox}]\n",
    )
    .expect("write");
    let o = s.kubectl(&["apply", "-f", manifest.to_str().expect("utf8")]);
    assert!(o.status.success(), "{}", text(&o));
    let header = |args: &[&str]| {
        let o = s.kubectl(args);
        assert!(o.status.success(), "{}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let first = out
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        (first, out)
    };
    assert_eq!(header(&["get", "cm", "demo"]).0, "NAME DATA AGE");
    let (h, out) = header(&["get", "cm", "demo", "--show-labels"]);
    assert_eq!(h, "NAME DATA AGE LABELS");
    assert!(out.contains("app=web"), "{out}");
    assert_eq!(header(&["get", "pods"]).0, "NAME READY STATUS RESTARTS AGE");
    let (_, pods) = header(&["get", "pods"]);
    assert!(pods.contains("0/1") && pods.contains("Pending"), "{pods}");
    assert_eq!(
        header(&["get", "pods", "-o", "wide"]).0,
        "NAME READY STATUS RESTARTS AGE IP NODE NOMINATED NODE READINESS GATES"
    );
    assert_eq!(
        header(&["get", "deploy"]).0,
        "NAME READY UP-TO-DATE AVAILABLE AGE"
    );
    assert_eq!(
        header(&["get", "deploy", "-o", "wide"]).0,
        "NAME READY UP-TO-DATE AVAILABLE AGE CONTAINERS IMAGES SELECTOR"
    );
    assert_eq!(header(&["get", "ns"]).0, "NAME STATUS AGE");
    // Upstream's defaults were applied.
    let (_, pod) = header(&["get", "pod", "p1", "-o", "json"]);
    let pod: serde_json::Value = serde_json::from_str(&pod).expect("json");
    assert_eq!(pod["spec"]["restartPolicy"], "Always");
    assert_eq!(pod["spec"]["dnsPolicy"], "ClusterFirst");
    assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
    assert_eq!(pod["status"]["phase"], "Pending");
    assert_eq!(pod["status"]["qosClass"], "BestEffort");
    // The token volume was mounted; fields the pod never had stay absent, never null.
    assert!(pod["spec"]["volumes"][0]["name"]
        .as_str()
        .is_some_and(|n| n.starts_with("kube-api-access-")));
    let spec = pod["spec"].as_object().expect("spec");
    assert!(!spec.contains_key("initContainers"), "{pod}");
    let (_, d) = header(&["get", "deploy", "web", "-o", "json"]);
    let d: serde_json::Value = serde_json::from_str(&d).expect("json");
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    // Kinds without their own columns get upstream's default ones.
    let o = s.kubectl(&[
        "get",
        "--raw",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    ]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn services_get_cluster_ips_from_the_service_range() {
    let s = Server::start();
    let dir = tempfile::tempdir().expect("tmp");
    let manifest = dir.path().join("s.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: fixed}\nspec:\n  clusterIP: 10.43.7.7\n  ports: [{port: 81}]\n",
    )
    .expect("write");
    let o = s.kubectl(&["apply", "-f", manifest.to_str().expect("utf8")]);
    assert!(o.status.success(), "{}", text(&o));
    let ip = |name: &str| {
        let o = s.kubectl(&["get", "svc", name, "-o", "jsonpath={.spec.clusterIP}"]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(
        ip("kubernetes"),
        "10.43.0.1",
        "the kubernetes service exists from the start"
    );
    assert_eq!(ip("fixed"), "10.43.7.7");
    let web: std::net::Ipv4Addr = ip("web").parse().expect("an IPv4 ClusterIP");
    assert_eq!(web.octets()[..2], [10, 43]);
    let o = s.kubectl(&[
        "get",
        "svc",
        "web",
        "-o",
        "jsonpath={.spec.ports[0].targetPort}",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "80",
        "targetPort defaults to port"
    );
    // A taken address is refused as upstream words it.
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Service\nmetadata: {name: clash}\nspec:\n  clusterIP: 10.43.7.7\n  ports: [{port: 82}]\n",
    )
    .expect("write");
    let o = s.kubectl(&["apply", "-f", manifest.to_str().expect("utf8")]);
    assert!(
        text(&o).contains(r#"The Service "clash" is invalid: spec.clusterIPs: Invalid value: []string{"10.43.7.7"}: failed to allocate IP 10.43.7.7: provided IP is already allocated"#),
        "{}",
        text(&o)
    );
    // Deleting a service frees its address.
    let o = s.kubectl(&["delete", "svc", "fixed"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = s.kubectl(&["get", "ipaddresses", "-o", "name"]);
    let ips = String::from_utf8_lossy(&o.stdout);
    assert!(!ips.contains("10.43.7.7"), "{ips}");
    assert!(ips.contains("10.43.0.1"), "{ips}");
}

#[test]
fn node_ports_are_allocated_kept_and_released() {
    let s = Server::start();
    let dir = tempfile::tempdir().expect("tmp");
    let manifest = dir.path().join("np.yaml");
    let write = |body: &str| std::fs::write(&manifest, body).expect("write");
    let m = manifest.to_str().expect("utf8");
    write("apiVersion: v1\nkind: Service\nmetadata: {name: np}\nspec:\n  type: NodePort\n  ports: [{name: a, port: 80}, {name: b, port: 81, nodePort: 30081}]\n");
    let o = s.kubectl(&["apply", "-f", m]);
    assert!(o.status.success(), "{}", text(&o));
    let ports = |name: &str| {
        let o = s.kubectl(&[
            "get",
            "svc",
            name,
            "-o",
            "jsonpath={.spec.ports[*].nodePort}",
        ]);
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .map(|p| p.parse::<i64>().expect("port"))
            .collect::<Vec<_>>()
    };
    let first = ports("np");
    assert_eq!(first.len(), 2);
    assert!((30000..=32767).contains(&first[0]), "{first:?}");
    assert_eq!(first[1], 30081);
    // A re-apply keeps the ports; the table shows them as upstream does.
    let o = s.kubectl(&["apply", "-f", m]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(ports("np"), first);
    let o = s.kubectl(&["get", "svc", "np"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("80:{}/TCP,81:30081/TCP", first[0])),
        "{}",
        text(&o)
    );
    // Taken and out-of-range ports are refused with upstream's words.
    write("apiVersion: v1\nkind: Service\nmetadata: {name: np2}\nspec:\n  type: NodePort\n  ports: [{port: 80, nodePort: 30081}]\n");
    let o = s.kubectl(&["apply", "-f", m]);
    assert!(
        text(&o).contains(
            "spec.ports[0].nodePort: Invalid value: 30081: provided port is already allocated"
        ),
        "{}",
        text(&o)
    );
    write("apiVersion: v1\nkind: Service\nmetadata: {name: np3}\nspec:\n  type: NodePort\n  ports: [{port: 80, nodePort: 80}]\n");
    let o = s.kubectl(&["apply", "-f", m]);
    assert!(
        text(&o).contains(
            "provided port is not in the valid range. The range of valid ports is 30000-32767"
        ),
        "{}",
        text(&o)
    );
    // Deleting frees the ports for others.
    let o = s.kubectl(&["delete", "svc", "np"]);
    assert!(o.status.success(), "{}", text(&o));
    write("apiVersion: v1\nkind: Service\nmetadata: {name: np2}\nspec:\n  type: NodePort\n  ports: [{port: 80, nodePort: 30081}]\n");
    let o = s.kubectl(&["apply", "-f", m]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn kubectl_scale_and_pod_binding() {
    let s = Server::start();
    let dir = tempfile::tempdir().expect("tmp");
    let manifest = dir.path().join("w.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: busybox:1}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p1}\nspec:\n  containers: [{name: c, image: busybox}]\n",
    )
    .expect("write");
    let o = s.kubectl(&["apply", "-f", manifest.to_str().expect("utf8")]);
    assert!(o.status.success(), "{}", text(&o));
    let o = s.kubectl(&["scale", "deploy", "web", "--replicas=3"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = s.kubectl(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "3");
    let o = s.kubectl(&[
        "get",
        "--raw",
        "/apis/apps/v1/namespaces/default/deployments/web/scale",
    ]);
    let scale: serde_json::Value = serde_json::from_slice(&o.stdout).expect("Scale");
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 3);
    assert_eq!(scale["status"]["selector"], "app=web");
    let o = s.kubectl(&["scale", "deploy", "web", "--replicas=-1"]);
    assert!(!o.status.success());

    // A binding assigns a pod to a node once.
    let binding = dir.path().join("b.json");
    std::fs::write(
        &binding,
        r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"p1"},"target":{"apiVersion":"v1","kind":"Node","name":"n1"}}"#,
    )
    .expect("write");
    let post = |path: &str| {
        Command::new(kubectl())
            .arg("--kubeconfig")
            .arg(&s.kubeconfig)
            .args(["create", "--raw", path, "-f"])
            .arg(&binding)
            .output()
            .expect("kubectl")
    };
    let o = post("/api/v1/namespaces/default/pods/p1/binding");
    assert!(o.status.success(), "{}", text(&o));
    let o = s.kubectl(&["get", "pod", "p1", "-o", "jsonpath={.spec.nodeName}"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "n1");
    let o = post("/api/v1/namespaces/default/pods/p1/binding");
    assert!(text(&o).contains("already assigned"), "{}", text(&o));
}

/// Watches with selectors see objects enter (ADDED) and leave (DELETED, with the object as it
/// left) their selection, as upstream's watch cache sends them, and only what matches.
#[test]
fn selector_watches_follow_objects_into_and_out_of_their_selection() {
    let s = Server::start();
    let ok = |args: &[&str]| {
        let o = s.kubectl(args);
        assert!(o.status.success(), "kubectl {args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    ok(&["create", "cm", "w"]);
    ok(&["label", "cm", "w", "tier=a"]);
    let rv = ok(&[
        "get",
        "cm",
        "w",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    let watch = |selector: &str| {
        Command::new(kubectl())
            .arg("--kubeconfig")
            .arg(&s.kubeconfig)
            .args(["get", "--raw"])
            .arg(format!(
                "/api/v1/namespaces/default/configmaps?watch=true&{selector}&resourceVersion={rv}&timeoutSeconds=8"
            ))
            .stdout(Stdio::piped())
            .spawn()
            .expect("watch")
    };
    let by_label = watch("labelSelector=tier%3Db");
    let by_name = watch("fieldSelector=metadata.name%3Dw");
    std::thread::sleep(Duration::from_millis(500));
    ok(&["label", "cm", "w", "tier=b", "--overwrite"]);
    ok(&["annotate", "cm", "w", "note=1"]);
    ok(&["label", "cm", "w", "tier=c", "--overwrite"]);
    ok(&["create", "cm", "other"]);
    ok(&["label", "cm", "other", "tier=b"]);
    ok(&["label", "cm", "w", "tier=b", "--overwrite"]);
    ok(&["delete", "cm", "w"]);
    let events = |child: std::process::Child| -> Vec<(String, String, String)> {
        let out = child.wait_with_output().expect("watch output");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|e| {
                let o = &e["object"];
                assert_eq!(o["kind"], "ConfigMap", "{e}");
                assert_eq!(o["apiVersion"], "v1", "{e}");
                assert!(o["metadata"]["resourceVersion"].is_string(), "{e}");
                let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
                (
                    s(&e["type"]),
                    s(&o["metadata"]["name"]),
                    s(&o["metadata"]["labels"]["tier"]),
                )
            })
            .collect()
    };
    let ev = |t: &str, n: &str, tier: &str| (t.to_string(), n.to_string(), tier.to_string());
    assert_eq!(
        events(by_label),
        [
            ev("ADDED", "w", "b"),
            ev("MODIFIED", "w", "b"),
            ev("DELETED", "w", "c"),
            ev("ADDED", "other", "b"),
            ev("ADDED", "w", "b"),
            ev("DELETED", "w", "b"),
        ]
    );
    assert_eq!(
        events(by_name),
        [
            ev("MODIFIED", "w", "b"),
            ev("MODIFIED", "w", "b"),
            ev("MODIFIED", "w", "c"),
            ev("MODIFIED", "w", "b"),
            ev("DELETED", "w", "b"),
        ]
    );
}
