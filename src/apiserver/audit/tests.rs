//! Policy matching and log rotation.

use super::writer::LogWriter;
use super::*;
use crate::apiserver::auth::rbac::rules::ResourceAttrs;

fn attrs(verb: &str, group: &str, resource: &str, sub: &str, ns: &str) -> Attributes {
    Attributes {
        verb: verb.into(),
        resource: Some(ResourceAttrs {
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            ..Default::default()
        }),
        path: String::new(),
    }
}

const POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  users: ["system:kube-proxy"]
- level: None
  resources: [{group: "", resources: ["events"]}]
- level: RequestResponse
  resources: [{group: "", resources: ["secrets", "pods/*"]}]
  namespaces: [prod]
- level: Metadata
  nonResourceURLs: ["/healthz*"]
- level: Request
  verbs: [create, update, patch, delete]
- level: Metadata
"#;

#[test]
fn the_first_matching_rule_decides() {
    let p = Policy::parse(POLICY, "p").expect("policy");
    let bob = User {
        name: "bob".into(),
        groups: vec!["system:authenticated".into()],
    };
    let proxy = User {
        name: "system:kube-proxy".into(),
        groups: vec![],
    };
    let lvl = |u: &User, a: &Attributes| p.level(Some(u), a).0;
    assert_eq!(
        lvl(&proxy, &attrs("get", "", "pods", "", "prod")),
        Level::None
    );
    assert_eq!(
        lvl(&bob, &attrs("create", "", "events", "", "x")),
        Level::None
    );
    assert_eq!(
        lvl(&bob, &attrs("get", "", "secrets", "", "prod")),
        Level::RequestResponse
    );
    assert_eq!(
        lvl(&bob, &attrs("get", "", "pods", "log", "prod")),
        Level::RequestResponse
    );
    assert_eq!(
        lvl(&bob, &attrs("get", "", "secrets", "", "dev")),
        Level::Metadata
    );
    assert_eq!(
        lvl(&bob, &attrs("create", "apps", "deployments", "", "dev")),
        Level::Request
    );
    let health = Attributes {
        verb: "get".into(),
        resource: None,
        path: "/healthz/etcd".into(),
    };
    assert_eq!(lvl(&bob, &health), Level::Metadata);
    assert_eq!(
        p.level(Some(&bob), &health).1,
        vec!["RequestReceived".to_string()]
    );
}

#[test]
fn the_log_rotates_by_size_and_keeps_its_backups() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("audit.log");
    let w = LogWriter::open(&path, 1, 2, 0).expect("open");
    let line = "x".repeat(300 * 1024);
    for _ in 0..12 {
        w.write_line(&line);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    assert!(names.contains(&"audit.log".to_string()), "{names:?}");
    let backups = names.iter().filter(|n| n.starts_with("audit-")).count();
    assert_eq!(backups, 2, "{names:?}");
    assert!(std::fs::metadata(&path).expect("log").len() <= 1024 * 1024);
}
