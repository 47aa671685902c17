//! The admission configuration file (`--admission-control-config-file`) with a real server:
//! PodSecurity's defaults apply to namespaces without labels, and its exemptions (namespaces,
//! users, runtime classes) let through what the defaults would refuse.

mod common;

use common::server::{text, Server};

const CONFIG: &str = "apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: PodSecurity
  configuration:
    apiVersion: pod-security.admission.config.k8s.io/v1
    kind: PodSecurityConfiguration
    defaults:
      enforce: baseline
      enforce-version: latest
    exemptions:
      usernames: [ci-bot]
      namespaces: [legacy]
      runtimeClasses: [kata]
";

const HOSTNET: &str = r#"{"spec":{"hostNetwork":true}}"#;

#[test]
fn pod_security_defaults_and_exemptions_come_from_the_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("admission.yaml");
    std::fs::write(&path, CONFIG).expect("write config");
    let s = Server::start_with(&[
        "--admission-control-config-file",
        path.to_str().expect("utf8"),
    ]);
    for ns in ["plain", "legacy"] {
        let o = s.kubectl(&["create", "namespace", ns]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let run = |ns: &str, name: &str, extra: &[&str]| {
        let over = format!("--overrides={HOSTNET}");
        let mut args = vec!["-n", ns, "run", name, "--image=nginx:1.27", over.as_str()];
        args.extend_from_slice(extra);
        s.kubectl(&args)
    };

    // The default `enforce: baseline` holds in a namespace without labels.
    let o = run("plain", "host", &[]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains(
            "pods \"host\" is forbidden: violates PodSecurity \"baseline:latest\": host namespaces (hostNetwork=true)"
        ),
        "{}",
        text(&o)
    );

    // An exempt user, an exempt runtime class and an exempt namespace pass.
    let o = run(
        "plain",
        "by-bot",
        &["--as=ci-bot", "--as-group=system:masters"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let rc = dir.path().join("kata.yaml");
    std::fs::write(
        &rc,
        "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: kata}\nhandler: kata\n",
    )
    .expect("write runtime class");
    let o = s.kubectl(&["apply", "-f", rc.to_str().expect("utf8")]);
    assert!(o.status.success(), "{}", text(&o));
    let over = r#"--overrides={"spec":{"hostNetwork":true,"runtimeClassName":"kata"}}"#;
    let o = s.kubectl(&["-n", "plain", "run", "vm", "--image=nginx:1.27", over]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run("legacy", "host", &[]);
    assert!(o.status.success(), "{}", text(&o));

    // Labelling an exempt namespace says the policy will not apply.
    let o = s.kubectl(&[
        "label",
        "namespace",
        "legacy",
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("Warning: namespace \"legacy\" is exempt from Pod Security, and the policy (enforce=restricted:latest) will be ignored"),
        "{}",
        text(&o)
    );

    // A namespace's own label still overrides the default.
    let o = s.kubectl(&[
        "label",
        "namespace",
        "plain",
        "pod-security.kubernetes.io/enforce=privileged",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run("plain", "host", &[]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn a_bad_admission_configuration_stops_the_server_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("admission.yaml");
    std::fs::write(
        &path,
        CONFIG.replace("enforce: baseline", "enforce: strict"),
    )
    .expect("write config");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_k1s"))
        .args(["server", "--disable-kubelet", "--https-listen-port", "0"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--admission-control-config-file")
        .arg(&path)
        .output()
        .expect("run k1s");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("plugin PodSecurity: defaults.enforce: \"strict\": must be one of privileged, baseline, restricted"),
        "{err}"
    );
}
