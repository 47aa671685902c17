//! Debugging a running pod with stock kubectl: `exec -it` through a pty, `cp` both ways,
//! `attach` to a container's stdin, and `debug` with ephemeral containers that join a
//! container's process namespace.

use std::io::Write;
use std::process::{Command, Stdio};

use super::common::server::{eventually, kubectl, ok, text, write, Server};
use super::jsonpath;

const ECHOER: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: echoer}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: k1s.local/busybox:1
    stdin: true
    stdinOnce: true
    command: [sh, -c, 'while read l; do echo "got $l"; done; echo bye']
"#;

/// kubectl, ended after a minute should a stream hang.
fn kubectl_cmd(s: &Server) -> Command {
    let mut c = Command::new("timeout");
    c.arg("60")
        .arg(kubectl())
        .arg("--kubeconfig")
        .arg(&s.kubeconfig);
    c
}

/// Runs kubectl under a pseudo-terminal (util-linux `script`), as a user's shell would.
fn in_pty(s: &Server, args: &str) -> String {
    let line = format!(
        "{} --kubeconfig {} {args}",
        kubectl().display(),
        s.kubeconfig.display()
    );
    let out = Command::new("timeout")
        .args(["60", "script", "-qec", &line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script");
    String::from_utf8_lossy(&out.stdout).replace('\r', "")
}

pub fn debugging(s: &Server, tmp: &std::path::Path, web: &str) {
    // exec -it: the container gets a terminal of the pty's size.
    let out = in_pty(
        s,
        &format!("exec -it {web} -- sh -c 'tty; stty size; echo done-in-tty'"),
    );
    assert!(out.contains("/dev/pts/"), "a tty: {out}");
    assert!(out.contains("done-in-tty"), "{out}");

    // cp: a file into the pod and back out, through exec and tar.
    let local = tmp.join("to-pod.txt");
    std::fs::write(&local, "copied through kubectl cp\n").expect("write");
    ok(
        s,
        &[
            "cp",
            local.to_str().expect("utf8"),
            &format!("{web}:/tmp/in-pod.txt"),
        ],
    );
    assert_eq!(
        ok(s, &["exec", web, "--", "cat", "/tmp/in-pod.txt"]),
        "copied through kubectl cp\n"
    );
    let back = tmp.join("from-pod.txt");
    ok(
        s,
        &[
            "cp",
            &format!("{web}:/tmp/in-pod.txt"),
            back.to_str().expect("utf8"),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(&back).expect("copied back"),
        "copied through kubectl cp\n"
    );

    // attach: stdin reaches the container, its output comes back; stdinOnce closes it after.
    ok(s, &["apply", "-f", &write(tmp, "echoer.yaml", ECHOER)]);
    ok(
        s,
        &[
            "wait",
            "--for=condition=Ready",
            "pod/echoer",
            "--timeout=60s",
        ],
    );
    let mut child = kubectl_cmd(s)
        .args(["attach", "-i", "echoer"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl attach");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"hello\n")
        .expect("write");
    let out = child.wait_with_output().expect("attach output");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("got hello"),
        "{said} / {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(
        s,
        &["get", "pod", "echoer", "-o", "jsonpath={.status.phase}"],
        |o| o == "Succeeded",
    );
    assert_eq!(ok(s, &["logs", "echoer"]), "got hello\nbye\n");

    // debug: an ephemeral container in the target's process namespace sees its processes.
    ok(
        s,
        &[
            "debug",
            web,
            "--image=k1s.local/busybox:1",
            "--target=httpd",
            "-c",
            "dbg",
            "--",
            "sh",
            "-c",
            "ps",
        ],
    );
    eventually(
        s,
        &[
            "get",
            "pod",
            web,
            "-o",
            "jsonpath={.status.ephemeralContainerStatuses[0].state.terminated.reason}",
        ],
        |o| o == "Completed",
    );
    let ps = ok(s, &["logs", web, "-c", "dbg"]);
    assert!(
        ps.contains("httpd -f -p 8080"),
        "the target's processes: {ps}"
    );
    // Interactively, through stdin.
    let mut child = kubectl_cmd(s)
        .args([
            "debug",
            "-i",
            web,
            "--image=k1s.local/busybox:1",
            "-c",
            "dbg2",
            "--",
            "sh",
            "-c",
            "read l; echo \"debug got $l\"",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl debug -i");
    // Stdin stays open until the answer is back: closing a (non-stdinOnce) attach's stdin
    // detaches its output, in containerd as upstream.
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"ping\n").expect("write");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut said = String::new();
    while !said.contains("debug got ping") {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut stdout, &mut line).unwrap_or(0) == 0 {
            break;
        }
        said.push_str(&line);
    }
    drop(stdin);
    let out = child.wait_with_output().expect("debug output");
    assert!(
        said.contains("debug got ping"),
        "{said} / {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = jsonpath(
        s,
        &format!("pod/{web}"),
        "{.spec.ephemeralContainers[*].name}",
    );
    assert_eq!(names, "dbg dbg2");
    // Ephemeral containers are added, never changed or removed; the pod stays Ready.
    let o = s.kubectl(&[
        "patch",
        "pod",
        web,
        "--subresource=ephemeralcontainers",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/ephemeralContainers/0"}]"#,
    ]);
    assert!(!o.status.success());
    let err = text(&o);
    assert!(
        err.contains("existing ephemeral containers \"dbg\" may not be removed"),
        "{err}"
    );
    let ready = jsonpath(
        s,
        &format!("pod/{web}"),
        "{.status.conditions[?(@.type==\"Ready\")].status}",
    );
    assert_eq!(ready, "True");
    ok(s, &["delete", "pod", "echoer", "--wait=false"]);
}
