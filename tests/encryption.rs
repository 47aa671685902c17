//! Encryption at rest with a real server: secrets are stored encrypted (read straight from the
//! store file, no plaintext), read back through the API, and re-encrypted with a new key after a
//! rotation and a re-write.

mod common;

use common::server::{text, Server};
use k1s::store::embedded::{EmbeddedOptions, EmbeddedStore};
use k1s::store::Store;

const KEY1: &str = "c2VjcmV0IGlzIHNlY3VyZSwgb3IgaXMgaXQ/IDMyYnk=";
const KEY2: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

fn config(dir: &std::path::Path, keys: &[(&str, &str)]) -> String {
    let keys: Vec<String> = keys
        .iter()
        .map(|(n, s)| format!("{{name: {n}, secret: \"{s}\"}}"))
        .collect();
    let text = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aescbc: {{keys: [{}]}}\n  - identity: {{}}\n",
        keys.join(", ")
    );
    let path = dir.join(format!("enc-{}.yaml", keys.len()));
    std::fs::write(&path, text).expect("write config");
    path.to_str().expect("utf8").to_string()
}

/// The raw stored value of a key, read from the stopped server's store file.
fn stored(data_dir: &std::path::Path, key: &str) -> Vec<u8> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let path = data_dir.join("server/db/state.redb");
        let store = EmbeddedStore::open(EmbeddedOptions::new(path)).expect("open store");
        let kv = store.get(key, 0).await.expect("get").expect("stored");
        store.shutdown().await.expect("close");
        kv.value.to_vec()
    })
}

#[test]
fn secrets_are_encrypted_at_rest_and_rotate() {
    let cfgdir = tempfile::tempdir().expect("tmp");
    let one = config(cfgdir.path(), &[("key1", KEY1)]);
    let s = Server::start_with(&["--encryption-provider-config", &one]);
    let o = s.kubectl(&[
        "create",
        "secret",
        "generic",
        "vault",
        "--from-literal=password=hunter2-plain",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = s.kubectl(&[
        "create",
        "configmap",
        "open",
        "--from-literal=note=visible-plain",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = s.kubectl(&["get", "secret", "vault", "-o", "jsonpath={.data.password}"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "aHVudGVyMi1wbGFpbg==");
    let dir = s.stop();

    let secret = stored(dir.path(), "/registry/secrets/default/vault");
    assert!(secret.starts_with(b"k8s:enc:aescbc:v1:key1:"));
    let needle = b"aHVudGVyMi1wbGFpbg";
    assert!(
        !secret.windows(needle.len()).any(|w| w == needle),
        "plaintext at rest"
    );
    let cm = stored(dir.path(), "/registry/configmaps/default/open");
    assert!(
        cm.starts_with(b"{"),
        "configmaps are not configured, so stay plain"
    );

    // Rotation: the new key first, the old one still readable; a re-write moves to the new key.
    let two = config(cfgdir.path(), &[("key2", KEY2), ("key1", KEY1)]);
    let s = Server::start_in(dir, &["--encryption-provider-config", &two]);
    let o = s.kubectl(&["get", "secret", "vault", "-o", "jsonpath={.data.password}"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "aHVudGVyMi1wbGFpbg==",
        "{}",
        text(&o)
    );
    let all = s.kubectl(&["get", "secrets", "-o", "json"]);
    let replace = std::process::Command::new(common::server::kubectl())
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .args(["replace", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(&all.stdout)?;
            c.wait_with_output()
        })
        .expect("kubectl replace");
    assert!(replace.status.success(), "{}", text(&replace));
    let dir = s.stop();
    let secret = stored(dir.path(), "/registry/secrets/default/vault");
    assert!(
        secret.starts_with(b"k8s:enc:aescbc:v1:key2:"),
        "re-written with the new key"
    );
}
