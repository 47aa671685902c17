//! Round trips, rotation and the stored format of each provider.

use super::*;

fn config(providers: &str) -> EncryptionConfig {
    let text = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets, \"*.apps\"]\n  providers:\n{providers}"
    );
    EncryptionConfig::parse(&text, "test").expect("config")
}

const K1: &str = "c2VjcmV0IGlzIHNlY3VyZSwgb3IgaXMgaXQ/IDMyYnk="; // 32 bytes
const K2: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes

#[test]
fn every_provider_round_trips_with_upstreams_prefix() {
    for (kind, prefix) in [
        ("aescbc", "k8s:enc:aescbc:v1:k1:"),
        ("aesgcm", "k8s:enc:aesgcm:v1:k1:"),
        ("secretbox", "k8s:enc:secretbox:v1:k1:"),
    ] {
        let c = config(&format!(
            "  - {kind}: {{keys: [{{name: k1, secret: \"{K1}\"}}]}}\n  - identity: {{}}\n"
        ));
        let key = "/registry/secrets/default/s";
        let t = c.for_key(key).expect("secrets are configured");
        let plain = br#"{"data":{"password":"czNjcmV0"}}"#;
        let stored = t.encrypt(key, plain).expect("encrypt");
        assert!(stored.starts_with(prefix.as_bytes()), "{kind}");
        assert!(
            !stored.windows(8).any(|w| w == b"czNjcmV0"),
            "{kind}: plaintext stored"
        );
        assert_eq!(t.decrypt(key, &stored).expect("decrypt"), plain);
        assert!(!t.stale(&stored));
        // Values from before encryption read as they are, and are stale.
        assert_eq!(t.decrypt(key, plain).expect("plaintext"), plain);
        assert!(t.stale(plain));
    }
    let gcm = config(&format!(
        "  - aesgcm: {{keys: [{{name: k1, secret: \"{K1}\"}}]}}\n"
    ));
    let t = gcm.for_key("/registry/secrets/a/b").expect("t");
    let stored = t.encrypt("/registry/secrets/a/b", b"{}").expect("encrypt");
    assert!(
        t.decrypt("/registry/secrets/a/OTHER", &stored).is_err(),
        "GCM binds the key"
    );
}

#[test]
fn rotation_reads_old_keys_and_writes_the_first() {
    let old = config(&format!(
        "  - aescbc: {{keys: [{{name: k1, secret: \"{K1}\"}}]}}\n"
    ));
    let key = "/registry/deployments/ns/d";
    let stored = old
        .for_key(key)
        .expect("apps")
        .encrypt(key, b"{}")
        .expect("enc");
    let rotated = config(&format!(
        "  - aescbc: {{keys: [{{name: k2, secret: \"{K2}\"}}, {{name: k1, secret: \"{K1}\"}}]}}\n"
    ));
    let t = rotated.for_key(key).expect("apps");
    assert_eq!(t.decrypt(key, &stored).expect("old key still reads"), b"{}");
    assert!(t.stale(&stored));
    assert!(t
        .encrypt(key, b"{}")
        .expect("enc")
        .starts_with(b"k8s:enc:aescbc:v1:k2:"));
    assert!(rotated.for_key("/registry/configmaps/ns/c").is_none());
}

#[test]
fn bad_configurations_are_refused_with_the_reason() {
    let bad = |providers: &str| {
        let text = format!("kind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n{providers}");
        EncryptionConfig::parse(&text, "f.yaml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert!(
        bad("  - aescbc: {keys: [{name: k, secret: \"c2hvcnQ=\"}]}\n").contains("a key of 5 bytes")
    );
    assert!(bad("  - kms: {name: x}\n").contains("kms providers are not supported"));
    assert!(bad("  - {}\n").contains("exactly one provider type"));
    assert!(EncryptionConfig::parse("kind: Nope\n", "f").is_err());
}

#[test]
fn aescbc_reads_what_openssl_writes() {
    // `openssl enc -aes-256-cbc` of {"a":"hello"} with KEY1 and IV 00..0f: the layout
    // upstream's aescbc provider stores (IV, then PKCS#7-padded CBC ciphertext).
    let c = config(&format!(
        "  - aescbc: {{keys: [{{name: k1, secret: \"{K1}\"}}]}}\n"
    ));
    let mut stored = b"k8s:enc:aescbc:v1:k1:".to_vec();
    stored.extend((0u8..16).collect::<Vec<_>>());
    stored.extend([
        0xc6, 0x54, 0xd8, 0xf7, 0x90, 0x0a, 0x78, 0x19, 0xd7, 0xe9, 0x2b, 0x78, 0x76, 0x36, 0x9a,
        0x35,
    ]);
    let key = "/registry/secrets/ns/s";
    let t = c.for_key(key).expect("secrets");
    assert_eq!(
        t.decrypt(key, &stored).expect("decrypt"),
        br#"{"a":"hello"}"#
    );
}
