//! The audit log with a real server: the policy picks each request's level, events are JSON
//! lines with upstream's fields, refused and impersonated requests are recorded too.

mod common;

use common::server::{text, Server};
use serde_json::Value;

const POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  nonResourceURLs: ["/healthz*", "/readyz*", "/livez*", "/version", "/openapi*", "/api*"]
- level: Metadata
  resources: [{group: "", resources: [secrets]}]
- level: RequestResponse
  resources: [{group: "", resources: [configmaps]}]
- level: Metadata
"#;

fn events(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn requests_are_audited_at_the_policys_level() {
    let dir = tempfile::tempdir().expect("tmp");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).expect("policy");
    let log = dir.path().join("audit/audit.log");
    let s = Server::start_with(&[
        "--audit-policy-file",
        policy.to_str().expect("utf8"),
        "--audit-log-path",
        log.to_str().expect("utf8"),
    ]);
    let o = s.kubectl(&["create", "configmap", "audited", "--from-literal=k=v"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = s.kubectl(&[
        "create",
        "secret",
        "generic",
        "hidden",
        "--from-literal=k=topsecret",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = s.kubectl(&["get", "secrets", "--as=bob"]);
    assert!(!o.status.success());

    let evs = events(&log);
    assert!(!evs.is_empty(), "no audit events in {}", log.display());
    assert!(evs
        .iter()
        .all(|e| e["kind"] == "Event" && e["apiVersion"] == "audit.k8s.io/v1"));
    assert!(
        evs.iter().all(|e| e["stage"] != "RequestReceived"),
        "omitted stage"
    );
    assert!(
        evs.iter().all(|e| e["requestURI"] != "/version"),
        "level None"
    );

    let cm = evs
        .iter()
        .find(|e| e["verb"] == "create" && e["objectRef"]["name"] == "audited")
        .expect("configmap create");
    assert_eq!(cm["level"], "RequestResponse");
    assert_eq!(cm["stage"], "ResponseComplete");
    assert_eq!(cm["user"]["username"], "system:admin");
    assert_eq!(cm["objectRef"]["namespace"], "default");
    assert_eq!(cm["objectRef"]["apiVersion"], "v1");
    assert_eq!(cm["responseStatus"]["code"], 201);
    assert_eq!(cm["requestObject"]["data"]["k"], "v");
    assert_eq!(cm["responseObject"]["metadata"]["name"], "audited");
    assert!(cm["auditID"].as_str().is_some_and(|id| id.len() == 36));

    let secret = evs
        .iter()
        .find(|e| e["verb"] == "create" && e["objectRef"]["name"] == "hidden")
        .expect("secret create");
    assert_eq!(secret["level"], "Metadata");
    assert!(
        secret.get("requestObject").is_none(),
        "no secret data at Metadata"
    );
    assert!(!std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("dG9wc2VjcmV0"));

    let refused = evs
        .iter()
        .find(|e| e["impersonatedUser"]["username"] == "bob")
        .expect("impersonated request");
    assert_eq!(refused["user"]["username"], "system:admin");
    assert_eq!(refused["responseStatus"]["code"], 403);
}
