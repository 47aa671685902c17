//! The official Python client against a fresh k1s server: `scenario.py`, run with the
//! interpreter of the virtualenv that `make deps` prepares (`.cache/python`).

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;

use common::server::Server;

#[test]
fn python_client_scenario() {
    let server = Server::start();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var_os("K1S_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join(".cache/python/bin/python"));
    let o = Command::new(&python)
        .arg(root.join("api-compat/python/scenario.py"))
        .env("KUBECONFIG", &server.kubeconfig)
        .output()
        .expect("run the Python client (make deps installs it)");
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{out}");
    assert!(out.contains("python client scenario passed"), "{out}");
}
