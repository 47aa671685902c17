//! `application/vnd.kubernetes.protobuf`: request bodies in Kubernetes' protobuf encoding.
//!
//! client-go's typed clients, and with them kubectl's generator commands (`kubectl create
//! deployment|configmap|secret|namespace ...`, `kubectl create token`, `kubectl drain`), send
//! protobuf and do not fall back to JSON. A body is the magic `k8s\0` followed by a
//! `runtime.Unknown` envelope naming the apiVersion and kind and carrying the message. The
//! registry works on JSON, so bodies are turned into the JSON upstream would have written for
//! the same Go object, with one generic decoder driven by a generated field table
//! ([`schema`]). Answers stay JSON, which every client that sends protobuf also accepts.

mod decode;
pub mod schema;

use serde_json::Value;

/// The four bytes in front of every protobuf-encoded Kubernetes object.
pub const MAGIC: [u8; 4] = [b'k', b'8', b's', 0];

/// The media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the body does not start with the protobuf magic number")]
    NoMagic,
    #[error("the protobuf body ends in the middle of a value")]
    Truncated,
    #[error("the protobuf body has a malformed varint")]
    BadVarint,
    #[error("the protobuf body has a field number out of range")]
    BadTag,
    #[error("the protobuf body uses wire type {0}, which no Kubernetes type has")]
    WireType(u8),
    #[error("field {1} of {0} does not have the wire type its schema gives")]
    Mismatch(&'static str, u32),
    #[error("the protobuf body nests objects too deeply")]
    TooDeep,
    #[error("embedded raw JSON is not valid: {0}")]
    RawJson(String),
    #[error("no kind \"{kind}\" is registered for version \"{api_version}\"")]
    UnknownKind { api_version: String, kind: String },
    #[error("the protobuf envelope names no kind")]
    NoKind,
}

/// Decodes a protobuf request body into the JSON object upstream would have written.
/// `expected` (apiVersion, kind) is used when the envelope leaves the type out.
pub fn to_json(body: &[u8], expected: Option<(&str, &str)>) -> Result<Value, Error> {
    decode_envelope(body, expected, 0)
}

fn decode_envelope(
    body: &[u8],
    expected: Option<(&str, &str)>,
    depth: u32,
) -> Result<Value, Error> {
    let rest = body.strip_prefix(&MAGIC).ok_or(Error::NoMagic)?;
    // runtime.Unknown: typeMeta (1: apiVersion 1, kind 2), raw (2), contentEncoding, contentType.
    let (mut type_meta, mut raw): (&[u8], &[u8]) = (&[], &[]);
    let mut r = decode::Reader::new(rest);
    while let Some((tag, bytes)) = r.next_bytes()? {
        match tag {
            1 => type_meta = bytes,
            2 => raw = bytes,
            _ => {}
        }
    }
    let (mut api_version, mut kind) = (String::new(), String::new());
    let mut r = decode::Reader::new(type_meta);
    while let Some((tag, bytes)) = r.next_bytes()? {
        let text = String::from_utf8_lossy(bytes).into_owned();
        match tag {
            1 => api_version = text,
            2 => kind = text,
            _ => {}
        }
    }
    if let Some((av, k)) = expected {
        if api_version.is_empty() {
            api_version = av.to_string();
        }
        if kind.is_empty() {
            kind = k.to_string();
        }
    }
    if kind.is_empty() {
        return Err(Error::NoKind);
    }
    let msg = schema::SCHEMA
        .kind(&api_version, &kind)
        .ok_or_else(|| Error::UnknownKind {
            api_version: api_version.clone(),
            kind: kind.clone(),
        })?;
    let mut obj = serde_json::Map::new();
    obj.insert("apiVersion".into(), Value::from(api_version));
    obj.insert("kind".into(), Value::from(kind));
    if let Value::Object(fields) = decode::message(msg, raw, depth + 1)? {
        obj.extend(fields);
    }
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests;
