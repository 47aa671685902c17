//! Pulls from a private registry on loopback (docker-registry with htpasswd): a pod whose
//! `imagePullSecrets` hold the registry's credentials runs; one without them gets ErrImagePull,
//! then ImagePullBackOff, with the registry's refusal in the event.

use super::common::registry;
use super::common::server::{eventually, ok, write, Server};
use super::jsonpath;

/// Runs the pull scenarios on `s`, with the registry's files under `tmp`.
pub fn image_pull_secrets(s: &Server, tmp: &std::path::Path) {
    let dir = tmp.join("registry");
    let reg = registry::start(&dir, "private/busybox", "1", "puller", "s3cret");
    let image = format!("{}/private/busybox:1", reg.host);
    ok(
        s,
        &[
            "create",
            "secret",
            "docker-registry",
            "regcred",
            &format!("--docker-server={}", reg.host),
            "--docker-username=puller",
            "--docker-password=s3cret",
        ],
    );
    let pods = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: with-secret}}
spec:
  terminationGracePeriodSeconds: 1
  imagePullSecrets: [{{name: regcred}}]
  containers:
  - {{name: c, image: "{image}", imagePullPolicy: Always, command: [sleep, "3600"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: without-secret}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: c, image: "{image}", imagePullPolicy: Always, command: [sleep, "3600"]}}
"#
    );
    ok(s, &["apply", "-f", &write(tmp, "pull.yaml", &pods)]);
    let ready = s.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "pod/with-secret",
        "--timeout=60s",
    ]);
    if !ready.status.success() {
        let described =
            super::common::server::text(&s.kubectl(&["describe", "pod", "with-secret"]));
        panic!("the pod with the secret never ran:\n{described}");
    }
    let pulled = ok(
        s,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=with-secret,reason=Pulled",
            "-o",
            "jsonpath={.items[*].message}",
        ],
    );
    assert!(
        pulled.starts_with(&format!("Successfully pulled image \"{image}\" in ")),
        "{pulled}"
    );
    eventually(
        s,
        &[
            "get",
            "pod",
            "without-secret",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.waiting.reason}",
        ],
        |o| o == "ErrImagePull" || o == "ImagePullBackOff",
    );
    let failed = ok(
        s,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=without-secret,reason=Failed",
            "-o",
            "jsonpath={.items[*].message}",
        ],
    );
    assert!(
        failed.contains(&format!("Failed to pull image \"{image}\": "))
            && (failed.contains("401") || failed.contains("authoriz")),
        "{failed}"
    );
    // `kubectl logs` says why there is no log yet, in upstream's words.
    let o = s.kubectl(&["logs", "without-secret"]);
    let said = super::common::server::text(&o);
    assert!(!o.status.success(), "{said}");
    assert!(
        said.contains("in pod \"without-secret\" is waiting to start: image can't be pulled")
            || said.contains(
                "in pod \"without-secret\" is waiting to start: trying and failing to pull image"
            ),
        "{said}"
    );
    let reason = jsonpath(
        s,
        "pod/with-secret",
        "{.status.containerStatuses[0].imageID}",
    );
    assert!(reason.contains("sha256:"), "{reason}");
    ok(
        s,
        &[
            "delete",
            "pod",
            "with-secret",
            "without-secret",
            "--wait=false",
        ],
    );
    drop(reg);
}
