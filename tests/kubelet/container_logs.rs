//! Container logs on the node, as upstream's log manager keeps them: a log past
//! `--container-log-max-size` (64Ki in this test) is rotated through CRI ReopenContainerLog
//! while the container keeps writing to a new file, a link under `containers/` (beside
//! `--pod-log-dir`) names each container's log, and a deleted pod's logs and links go.

use std::path::Path;

use super::common::server::{eventually, ok, within, write, Server};

const CHATTY: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: chatty}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: k1s.local/busybox:1
    command: [sh, -c, 'head -c 100000 /dev/zero | tr "\0" x | fold -w 99; sleep 25; echo after-rotation; sleep 3600']
"#;

fn files(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

pub fn container_logs(s: &Server, tmp: &Path, pod_logs: &Path) {
    ok(s, &["apply", "-f", &write(tmp, "chatty.yaml", CHATTY)]);
    eventually(
        s,
        &["get", "pod", "chatty", "-o", "jsonpath={.status.phase}"],
        |o| o == "Running",
    );
    let uid = ok(
        s,
        &["get", "pod", "chatty", "-o", "jsonpath={.metadata.uid}"],
    );
    let dir = pod_logs.join(format!("default_chatty_{uid}")).join("c");
    within(40, "the log rotated", || {
        files(&dir).iter().any(|f| f.starts_with("0.log.20"))
    });
    let rotated: Vec<String> = files(&dir).into_iter().filter(|f| f != "0.log").collect();
    assert_eq!(rotated.len(), 1, "{rotated:?}");
    let size = std::fs::metadata(dir.join(&rotated[0]))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(size >= 100_000, "{size}");
    // The container writes on, into the new file, which `kubectl logs` reads.
    eventually(s, &["logs", "chatty"], |o| o.trim() == "after-rotation");

    let links = pod_logs.with_file_name("containers");
    let id = ok(
        s,
        &[
            "get",
            "pod",
            "chatty",
            "-o",
            "jsonpath={.status.containerStatuses[0].containerID}",
        ],
    );
    let id = id.trim_start_matches("containerd://");
    let link = links.join(format!("chatty_default_c-{id}.log"));
    assert_eq!(
        std::fs::read_link(&link).ok(),
        Some(dir.join("0.log")),
        "{link:?}"
    );

    ok(s, &["delete", "pod", "chatty", "--wait=true"]);
    within(30, "the pod's logs removed", || {
        !dir.exists() && std::fs::symlink_metadata(&link).is_err()
    });
}

const STAMPED: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: stamped}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: k1s.local/busybox:1, command: [sh, -c, "echo early; sleep 2; echo late; exec sleep 3600"]}
"#;

/// `kubectl logs` options the kubelet applies: --since-time, --since, --limit-bytes, --tail.
pub fn log_options(s: &Server, tmp: &Path) {
    ok(s, &["apply", "-f", &write(tmp, "stamped.yaml", STAMPED)]);
    let stamped = eventually(s, &["logs", "stamped", "--timestamps"], |o| {
        o.contains(" late")
    });
    let late = stamped
        .lines()
        .find_map(|l| l.strip_suffix(" late"))
        .unwrap_or_else(|| panic!("a stamp in {stamped:?}"));
    // kubectl sends whole seconds; "early" came two seconds before.
    assert_eq!(
        ok(s, &["logs", "stamped", &format!("--since-time={late}")]),
        "late\n"
    );
    assert_eq!(ok(s, &["logs", "stamped", "--since=1h"]), "early\nlate\n");
    assert_eq!(ok(s, &["logs", "stamped", "--limit-bytes=3"]), "ear");
    assert_eq!(ok(s, &["logs", "stamped", "--tail=1"]), "late\n");
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(ok(s, &["logs", "stamped", "--since=1s"]), "");
    ok(s, &["delete", "pod", "stamped", "--wait=false"]);
}
