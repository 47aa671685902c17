//! A private image registry on loopback for the kubelet's pull tests: Debian's docker-registry
//! (distribution 2.8) with htpasswd authentication, its filesystem storage filled with the
//! busybox image directly (no push tool needed), stopped by PID when dropped.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k1s::kubelet::images::oci;

pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub host: String,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write(path: &Path, data: &[u8]) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("registry dir");
    }
    std::fs::write(path, data).expect("registry file");
}

/// Lays `repo:tag` (busybox, its command `sh`) out as distribution's filesystem driver keeps it.
fn store_image(root: &Path, repo: &str, tag: &str) {
    let layer = super::node::busybox_layer();
    let run = oci::RunConfig {
        cmd: vec!["sh".into()],
        ..Default::default()
    };
    let (config, manifest) = oci::image_parts(&run, &layer).expect("image");
    let v2 = root.join("docker/registry/v2");
    let hex = |d: &str| d.trim_start_matches("sha256:").to_string();
    let link = |path: &Path, digest: &str| write(path, digest.as_bytes());
    let repo_dir = v2.join("repositories").join(repo);
    for blob in [&config[..], &manifest[..], &layer[..]] {
        let d = oci::digest(blob);
        let h = hex(&d);
        write(&v2.join(format!("blobs/sha256/{}/{h}/data", &h[..2])), blob);
        if blob.as_ptr() != manifest.as_ptr() {
            link(&repo_dir.join(format!("_layers/sha256/{h}/link")), &d);
        }
    }
    let m = oci::digest(&manifest);
    let h = hex(&m);
    link(
        &repo_dir.join(format!("_manifests/revisions/sha256/{h}/link")),
        &m,
    );
    link(
        &repo_dir.join(format!("_manifests/tags/{tag}/current/link")),
        &m,
    );
    link(
        &repo_dir.join(format!("_manifests/tags/{tag}/index/sha256/{h}/link")),
        &m,
    );
}

/// Starts a registry under `dir` that holds `repo:tag` and lets in `user` with `password`.
pub fn start(dir: &Path, repo: &str, tag: &str, user: &str, password: &str) -> Registry {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let storage = dir.join("storage");
    store_image(&storage, repo, tag);
    let htpasswd = Command::new("htpasswd")
        .args(["-Bbn", user, password])
        .output()
        .expect("htpasswd (apache2-utils; packaging/test-deps.sh)");
    assert!(htpasswd.status.success(), "{htpasswd:?}");
    write(&dir.join("htpasswd"), &htpasswd.stdout);
    let config = format!(
        "version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n\
         http:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd: {{realm: k1s-test, path: {}}}\n",
        storage.display(),
        dir.join("htpasswd").display()
    );
    write(&dir.join("config.yml"), config.as_bytes());
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry (packaging/test-deps.sh)");
    let host = format!("127.0.0.1:{port}");
    let start = Instant::now();
    while std::net::TcpStream::connect(&host).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the registry did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Registry { child, host }
}
