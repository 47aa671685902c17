//! The kubectl scenario suite: every `*.txt` file here is a session with a stock kubectl 1.37
//! against a fresh k1s server, with the output upstream prints. See README.md for the format.
//!
//! `K1S_SCENARIO=NAME` runs one scenario; `K1S_TEST_DATASTORE=etcd` uses the etcd backend.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::server::{kubectl, Server};

/// What a command's exit status must be.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Success,
    Failure,
    Any,
}

#[derive(Debug)]
struct Step {
    line: usize,
    expect: Expect,
    command: String,
    output: Vec<String>,
}

fn parse(text: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((n, line)) = lines.next() {
        let expect = match line.get(..2) {
            Some("$ ") => Expect::Success,
            Some("! ") => Expect::Failure,
            Some("? ") => Expect::Any,
            _ => {
                // An output line of the step before, unless it is a comment.
                if !line.starts_with('#') {
                    if let Some(step) = steps.last_mut() {
                        step.output.push(line.to_string());
                    }
                }
                continue;
            }
        };
        let mut command = line[2..].to_string();
        // A here-document: its lines belong to the command.
        if let Some(pos) = command.find("<<") {
            let tag = command[pos + 2..]
                .trim()
                .trim_matches(|c| c == '\'' || c == '"')
                .to_string();
            for (_, l) in lines.by_ref() {
                command.push('\n');
                command.push_str(l);
                if l == tag {
                    break;
                }
            }
        }
        steps.push(Step {
            line: n + 1,
            expect,
            command,
            output: Vec::new(),
        });
    }
    for s in &mut steps {
        while s.output.last().is_some_and(|l| l.trim().is_empty()) {
            s.output.pop();
        }
    }
    steps
}

fn squash(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `*` in a pattern matches any run of characters within the line.
fn line_matches(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == line;
    }
    let mut rest = line;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(p) => rest = &rest[p + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// Whether `actual` matches `expected`, where a line `...` stands for any number of lines.
fn matches(expected: &[String], actual: &[String]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first.trim() == "..." => {
            (0..=actual.len()).any(|skip| matches(rest, &actual[skip..]))
        }
        Some((first, rest)) => match actual.split_first() {
            Some((a, arest)) => line_matches(&squash(first), &squash(a)) && matches(rest, arest),
            None => false,
        },
    }
}

fn scenarios() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("api-compat/kubectl");
    let only = std::env::var("K1S_SCENARIO").ok();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read api-compat/kubectl")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .filter(|p| {
            only.as_deref()
                .is_none_or(|o| p.file_stem().is_some_and(|s| s == o))
        })
        .collect();
    files.sort();
    files
}

/// Runs one scenario in its own namespace and working directory; returns its failures.
fn run(server: &Server, path: &Path) -> Vec<String> {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("scenario")
        .replace('_', "-");
    let ns = format!("kc-{name}");
    let work = tempfile::tempdir().expect("tmp");
    let kubeconfig = work.path().join("kubeconfig");
    std::fs::copy(&server.kubeconfig, &kubeconfig).expect("copy kubeconfig");
    let bin_dir = kubectl()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let k1s_dir = Path::new(env!("CARGO_BIN_EXE_k1s"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let path_env = format!(
        "{}:{}:{}",
        bin_dir.display(),
        k1s_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let sh = |cmd: &str| {
        Command::new("bash")
            .args(["-c", cmd])
            .current_dir(work.path())
            .env("KUBECONFIG", &kubeconfig)
            .env("PATH", &path_env)
            .env("NS", &ns)
            .env("KUBECTL_COMMAND_HEADERS", "false")
            .output()
            .expect("run bash")
    };
    let setup = format!(
        "kubectl create namespace {ns} && kubectl config set-context --current --namespace={ns}"
    );
    let o = sh(&setup);
    assert!(o.status.success(), "set up {ns}: {o:?}");

    let text = std::fs::read_to_string(path).expect("read scenario");
    let mut failures = Vec::new();
    for step in parse(&text) {
        let o = sh(&step.command);
        let mut out = String::from_utf8_lossy(&o.stdout).into_owned();
        out.push_str(&String::from_utf8_lossy(&o.stderr));
        let mut actual: Vec<String> = out.lines().map(str::to_string).collect();
        while actual.last().is_some_and(|l| l.trim().is_empty()) {
            actual.pop();
        }
        let status_ok = match step.expect {
            Expect::Success => o.status.success(),
            Expect::Failure => !o.status.success(),
            Expect::Any => true,
        };
        if !status_ok || !matches(&step.output, &actual) {
            failures.push(format!(
                "{}:{}: {}\n  exit: {} (wanted {:?})\n  expected:\n{}\n  got:\n{}",
                path.display(),
                step.line,
                step.command,
                o.status,
                step.expect,
                indent(&step.output),
                indent(&actual),
            ));
        }
    }
    failures
}

fn indent(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs a scenario against `k1s server` as the README starts it (embedded store, its kubelet
/// on the containerd it supervises), on a bridge, ranges and data dir of its own, with the
/// busybox image `k1s.local/busybox:1` in `DATA_DIR/agent/images/`.
fn with_kubelet(f: &Path) -> Vec<String> {
    use common::node::{network, node_dir};
    let dir = tempfile::tempdir().expect("tmp");
    let (bridge, pods_cidr) = network(7);
    let (_, service_cidr) = network(27);
    let cleanup = node_dir(dir.path(), &bridge, &service_cidr);
    let logs = dir.path().join("pod-logs");
    let logs = logs.to_str().expect("utf8").to_string();
    let cgroup_root = cleanup.cgroup_root();
    let flags = [
        "--cgroup-root",
        &cgroup_root,
        "--cluster-cidr",
        &pods_cidr,
        "--service-cidr",
        &service_cidr,
        "--pod-bridge",
        &bridge,
        "--pod-log-dir",
        &logs,
        "--kubelet-port",
        "0",
    ];
    let server = Server::with_kubelet_in(dir, &flags);
    let mut out = run(&server, f);
    if !out.is_empty() {
        out.push(server.diagnose());
    }
    drop(server);
    drop(cleanup);
    out
}

/// The server's `--token-auth-file` (upstream's CSV).
const STATIC_TOKENS: &str = "kc-static-token-tina,tina,1001,\"token-users,readers\"\n";

#[test]
fn kubectl_scenarios() {
    // A static token file for the token scenarios.
    let tokens = tempfile::tempdir().expect("tmp");
    let token_file = tokens.path().join("tokens.csv");
    std::fs::write(&token_file, STATIC_TOKENS).expect("write token file");
    let common = ["--token-auth-file", token_file.to_str().expect("utf8")];
    let mut shared: Option<Server> = None;
    let mut failures = Vec::new();
    let files = scenarios();
    assert!(!files.is_empty(), "no scenarios found");
    for f in &files {
        // `#! server FLAGS` on the first line: the scenario gets a server of its own;
        // `#! kubelet`: one whose kubelet runs pods on the containerd it supervises.
        let text = std::fs::read_to_string(f).expect("read scenario");
        let first = text.lines().next().unwrap_or_default();
        if first.starts_with("#! kubelet") {
            failures.extend(with_kubelet(f));
            continue;
        }
        match first.strip_prefix("#! server") {
            Some(flags) => {
                let mut args: Vec<&str> = common.to_vec();
                args.extend(flags.split_whitespace());
                let own = Server::start_with(&args);
                failures.extend(run(&own, f));
            }
            None => {
                let server = shared.get_or_insert_with(|| Server::start_with(&common));
                failures.extend(run(server, f));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} step(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn the_matcher_knows_wildcards_and_ellipses() {
    let lines = |s: &str| s.lines().map(str::to_string).collect::<Vec<_>>();
    assert!(matches(
        &lines("NAME   READY\nweb  *"),
        &lines("NAME READY\nweb 0/1")
    ));
    assert!(matches(&lines("a\n...\nz"), &lines("a\nb\nc\nz")));
    assert!(matches(&lines("..."), &[]));
    assert!(!matches(&lines("a"), &lines("a\nb")));
    assert!(line_matches("pod/* created", "pod/x-1 created"));
    assert!(!line_matches("pod/* created", "pod/x-1 configured"));
    let steps = parse("# c\n$ cat <<EOF\nhi\nEOF\nhi\n\n! false\n");
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].command, "cat <<EOF\nhi\nEOF");
    assert_eq!(steps[0].output, vec!["hi"]);
    assert_eq!(steps[1].expect, Expect::Failure);
}
