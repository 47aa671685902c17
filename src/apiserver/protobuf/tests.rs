//! Decoding bodies built the way Go's generated marshallers write them: every non-pointer field
//! present, zero or not.

use serde_json::json;

use super::*;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn bytes(out: &mut Vec<u8>, tag: u32, b: &[u8]) {
    varint(out, u64::from(tag) << 3 | 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn int(out: &mut Vec<u8>, tag: u32, v: i64) {
    varint(out, u64::from(tag) << 3);
    varint(out, v as u64);
}

/// One field writer of a message under construction.
type Part<'a> = &'a dyn Fn(&mut Vec<u8>);

fn msg(parts: &[Part<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        p(&mut out);
    }
    out
}

fn entry(k: &str, v: &str) -> Vec<u8> {
    msg(&[&|o| bytes(o, 1, k.as_bytes()), &|o| {
        bytes(o, 2, v.as_bytes())
    }])
}

fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let tm = msg(&[&|o| bytes(o, 1, api_version.as_bytes()), &|o| {
        bytes(o, 2, kind.as_bytes())
    }]);
    let mut out = MAGIC.to_vec();
    bytes(&mut out, 1, &tm);
    bytes(&mut out, 2, raw);
    bytes(&mut out, 3, b"");
    bytes(&mut out, 4, b"");
    out
}

/// ObjectMeta as Go writes it: name, and every plain string empty, generation 0, zero time.
fn meta(name: &str, labels: &[(&str, &str)]) -> Vec<u8> {
    let mut m = Vec::new();
    bytes(&mut m, 1, name.as_bytes());
    for t in [2, 3, 4, 5, 6] {
        bytes(&mut m, t, b"");
    }
    int(&mut m, 7, 0);
    bytes(&mut m, 8, b"");
    for (k, v) in labels {
        bytes(&mut m, 11, &entry(k, v));
    }
    m
}

#[test]
fn deployment_as_kubectl_create_deployment_sends_it() {
    let container = msg(&[
        &|o| bytes(o, 1, b"nginx"),
        &|o| bytes(o, 2, b"nginx:1.27"),
        &|o| bytes(o, 5, b""),
        &|o| bytes(o, 8, b""), // resources: {}
        &|o| bytes(o, 13, b""),
        &|o| bytes(o, 14, b""),
        &|o| int(o, 16, 0),
        &|o| int(o, 18, 0),
    ]);
    let pod_spec = msg(
        &[&|o| bytes(o, 2, &container), &|o| bytes(o, 3, b""), &|o| {
            int(o, 11, 0)
        }],
    );
    let template = msg(&[&|o| bytes(o, 1, &meta("", &[("app", "web")])), &|o| {
        bytes(o, 2, &pod_spec)
    }]);
    let selector = msg(&[&|o| bytes(o, 1, &entry("app", "web"))]);
    let spec = msg(&[
        &|o| int(o, 1, 0), // replicas: 0, a pointer, so kept
        &|o| bytes(o, 2, &selector),
        &|o| bytes(o, 3, &template),
        &|o| bytes(o, 4, b""), // strategy: {}
        &|o| int(o, 5, 0),     // minReadySeconds: 0, plain, so dropped
        &|o| int(o, 7, 0),     // paused: false
    ]);
    let raw = msg(&[
        &|o| bytes(o, 1, &meta("web", &[("app", "web")])),
        &|o| bytes(o, 2, &spec),
        &|o| bytes(o, 3, b""),
    ]);
    let got = to_json(&envelope("apps/v1", "Deployment", &raw), None).expect("decodes");
    assert_eq!(
        got,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27", "resources": {}}]},
                },
                "strategy": {},
            },
            "status": {},
        })
    );
}

#[test]
fn special_types_take_their_json_form() {
    // Secret data is bytes: base64 in JSON. Service port targetPort is an IntOrString.
    let secret = msg(&[
        &|o| bytes(o, 1, &meta("s", &[])),
        &|o| {
            bytes(
                o,
                2,
                &msg(&[&|e| bytes(e, 1, b"k"), &|e| bytes(e, 2, b"\x00\xffv")]),
            )
        },
        &|o| bytes(o, 3, b"Opaque"),
    ]);
    let got = to_json(&envelope("v1", "Secret", &secret), None).expect("secret");
    assert_eq!(got["data"], json!({"k": "AP92"}));
    assert_eq!(got["type"], "Opaque");

    let named = msg(&[&|o| int(o, 1, 1), &|o| bytes(o, 3, b"http")]);
    let port = msg(&[
        &|o| bytes(o, 1, b"web"),
        &|o| bytes(o, 2, b"TCP"),
        &|o| int(o, 3, 80),
        &|o| bytes(o, 4, &named),
        &|o| int(o, 5, 0),
    ]);
    let svc = msg(&[&|o| bytes(o, 1, &meta("svc", &[])), &|o| {
        bytes(o, 2, &msg(&[&|s| bytes(s, 1, &port)]))
    }]);
    let got = to_json(&envelope("v1", "Service", &svc), None).expect("service");
    assert_eq!(
        got["spec"]["ports"],
        json!([{"name": "web", "protocol": "TCP", "port": 80, "targetPort": "http"}])
    );

    // Time and MicroTime.
    let lease_spec = msg(&[&|o| bytes(o, 1, b"me"), &|o| int(o, 2, 15), &|o| {
        bytes(
            o,
            3,
            &msg(&[&|t| int(t, 1, 1_700_000_000), &|t| int(t, 2, 123_456_789)]),
        )
    }]);
    let lease = msg(&[&|o| bytes(o, 1, &meta("l", &[])), &|o| {
        bytes(o, 2, &lease_spec)
    }]);
    let got = to_json(&envelope("coordination.k8s.io/v1", "Lease", &lease), None).expect("lease");
    assert_eq!(
        got["spec"],
        json!({"holderIdentity": "me", "leaseDurationSeconds": 15, "acquireTime": "2023-11-14T22:13:20.123456Z"})
    );
}

#[test]
fn inlined_structs_and_string_slices() {
    // ConfigMapKeySelector embeds LocalObjectReference: {name, key}.
    let sel = msg(&[&|o| bytes(o, 1, &msg(&[&|n| bytes(n, 1, b"cm")])), &|o| {
        bytes(o, 2, b"k")
    }]);
    let env = msg(&[&|o| bytes(o, 1, b"E"), &|o| bytes(o, 2, b""), &|o| {
        bytes(o, 3, &msg(&[&|s| bytes(s, 3, &sel)]))
    }]);
    let container = msg(&[&|o| bytes(o, 1, b"c"), &|o| bytes(o, 7, &env)]);
    let pod = msg(&[&|o| bytes(o, 1, &meta("p", &[])), &|o| {
        bytes(o, 2, &msg(&[&|s| bytes(s, 2, &container)]))
    }]);
    let got = to_json(&envelope("v1", "Pod", &pod), None).expect("pod");
    assert_eq!(
        got["spec"]["containers"][0]["env"],
        json!([{"name": "E", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}])
    );
}

#[test]
fn bad_bodies_are_errors_not_panics() {
    assert!(matches!(to_json(b"{}", None), Err(Error::NoMagic)));
    let mut truncated = envelope("v1", "Pod", &meta("p", &[]));
    truncated.truncate(truncated.len() - 3);
    assert!(to_json(&truncated, None).is_err());
    assert!(matches!(
        to_json(&envelope("v9", "Nope", b""), None),
        Err(Error::UnknownKind { .. })
    ));
    // No type in the envelope: the expected kind is used.
    let cm = msg(&[&|o| bytes(o, 1, &meta("p", &[]))]);
    let got = to_json(&envelope("", "", &cm), Some(("v1", "ConfigMap"))).expect("fallback kind");
    assert_eq!(got["kind"], "ConfigMap");
    // Arbitrary bytes never panic.
    for n in 0..200u32 {
        let mut junk = MAGIC.to_vec();
        junk.extend((0..n).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
        let _ = to_json(&junk, Some(("v1", "Pod")));
    }
}

#[test]
fn go_durations() {
    use super::decode::go_duration;
    assert_eq!(go_duration(0), "0s");
    assert_eq!(go_duration(1_500_000), "1.5ms");
    assert_eq!(go_duration(3_723_500_000_000), "1h2m3.5s");
    assert_eq!(go_duration(60_000_000_000), "1m0s");
    assert_eq!(go_duration(-2_000_000_000), "-2s");
}
