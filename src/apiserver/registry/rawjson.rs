//! Writing stored objects into list responses without parsing them.
//!
//! A LIST of thousands of objects, or a watch event sent to every watcher, spends most of its
//! time turning stored JSON into values and back. When nothing needs the parsed object (no
//! selector, no Table), each object is copied as stored with a scan of its top level only:
//! `metadata.resourceVersion` added, and `apiVersion` and `kind` dropped from list items (they
//! carry neither, as upstream's typed lists) or put first in a watch event's object.

use std::ops::Range;

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The end (exclusive) of the string starting at `i` (which must be a quote).
fn skip_string(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The end (exclusive) of the value starting at `i`.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']') && !b[j].is_ascii_whitespace()
            {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// The members of the top-level object: (key including quotes, value).
fn members(b: &[u8]) -> Option<Vec<(Range<usize>, Range<usize>)>> {
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    let mut out = Vec::new();
    if b.get(i) == Some(&b'}') {
        return Some(out);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = skip_string(b, i)?;
        let key = i..key_end;
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let v_start = skip_ws(b, i + 1);
        let v_end = skip_value(b, v_start)?;
        out.push((key, v_start..v_end));
        i = skip_ws(b, v_end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return Some(out),
            _ => return None,
        }
    }
}

/// Appends the stored object `raw` as a list item at `rv`; false (and nothing appended) if it
/// is not a JSON object with an object `metadata`.
pub fn write_item(out: &mut Vec<u8>, raw: &[u8], rv: i64) -> bool {
    write(out, raw, rv, None)
}

/// Appends the stored object `raw` as a whole object at `rv` (a watch event's `object`): with
/// `apiVersion` and `kind` first. False (and nothing appended) as [`write_item`].
pub fn write_object(out: &mut Vec<u8>, raw: &[u8], rv: i64, api_version: &str, kind: &str) -> bool {
    let head = format!(
        "{}:{},{}:{}",
        "\"apiVersion\"",
        serde_json::Value::from(api_version),
        "\"kind\"",
        serde_json::Value::from(kind)
    );
    write(out, raw, rv, Some(head.as_bytes()))
}

fn write(out: &mut Vec<u8>, raw: &[u8], rv: i64, head: Option<&[u8]>) -> bool {
    let Some(members) = members(raw) else {
        return false;
    };
    let start = out.len();
    out.push(b'{');
    let mut first = true;
    if let Some(head) = head {
        out.extend_from_slice(head);
        first = false;
    }
    let mut had_meta = false;
    for (key, value) in members {
        let k = &raw[key.clone()];
        if k == b"\"apiVersion\"" || k == b"\"kind\"" {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(k);
        out.push(b':');
        if k == b"\"metadata\"" {
            let v = &raw[value];
            let inner = skip_ws(v, 1);
            if v.first() != Some(&b'{') || v.last() != Some(&b'}') {
                out.truncate(start);
                return false;
            }
            had_meta = true;
            out.extend_from_slice(&v[..v.len() - 1]);
            if v.get(inner) != Some(&b'}') {
                out.push(b',');
            }
            out.extend_from_slice(format!("\"resourceVersion\":\"{rv}\"}}").as_bytes());
        } else {
            out.extend_from_slice(&raw[value]);
        }
    }
    if !had_meta {
        if !first {
            out.push(b',');
        }
        out.extend_from_slice(format!("\"metadata\":{{\"resourceVersion\":\"{rv}\"}}").as_bytes());
    }
    out.push(b'}');
    true
}

/// The dotted paths of keys that appear more than once in one object of a JSON document
/// (`metadata.name`, `spec.containers[0].image`), as upstream's strict decoder reports them.
pub fn duplicate_fields(raw: &[u8]) -> Vec<String> {
    fn walk(b: &[u8], i: usize, path: &str, out: &mut Vec<String>, depth: u32) -> Option<usize> {
        if depth > 100 {
            return None;
        }
        let i = skip_ws(b, i);
        match *b.get(i)? {
            b'{' => {
                let mut seen = std::collections::HashSet::new();
                let mut j = skip_ws(b, i + 1);
                if b.get(j) == Some(&b'}') {
                    return Some(j + 1);
                }
                loop {
                    let key_end = skip_string(b, j)?;
                    let key: String = serde_json::from_slice(&b[j..key_end]).ok()?;
                    let sub = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    if !seen.insert(key) && !out.contains(&sub) {
                        out.push(sub.clone());
                    }
                    j = skip_ws(b, key_end);
                    if b.get(j) != Some(&b':') {
                        return None;
                    }
                    j = skip_ws(b, walk(b, j + 1, &sub, out, depth + 1)?);
                    match b.get(j) {
                        Some(b',') => j = skip_ws(b, j + 1),
                        Some(b'}') => return Some(j + 1),
                        _ => return None,
                    }
                }
            }
            b'[' => {
                let mut j = skip_ws(b, i + 1);
                if b.get(j) == Some(&b']') {
                    return Some(j + 1);
                }
                let mut n = 0;
                loop {
                    j = skip_ws(b, walk(b, j, &format!("{path}[{n}]"), out, depth + 1)?);
                    n += 1;
                    match b.get(j) {
                        Some(b',') => j += 1,
                        Some(b']') => return Some(j + 1),
                        _ => return None,
                    }
                }
            }
            _ => skip_value(b, i),
        }
    }
    let mut out = Vec::new();
    let _ = walk(raw, 0, "", &mut out, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn item(raw: &str, rv: i64) -> Value {
        let mut out = Vec::new();
        assert!(write_item(&mut out, raw.as_bytes(), rv), "{raw}");
        serde_json::from_slice(&out).expect("valid json")
    }

    #[test]
    fn items_lose_their_type_and_gain_the_revision() {
        assert_eq!(
            item(
                r#"{"apiVersion":"v1","data":{"k":"a\"}b{"},"kind":"ConfigMap","metadata":{"name":"x"}}"#,
                7
            ),
            json!({"data": {"k": "a\"}b{"}, "metadata": {"name": "x", "resourceVersion": "7"}})
        );
        assert_eq!(
            item(
                r#" { "kind" : "X" , "metadata" : { } , "n" : [1, {"a": null}], "t": true } "#,
                3
            ),
            json!({"metadata": {"resourceVersion": "3"}, "n": [1, {"a": null}], "t": true})
        );
        assert_eq!(
            item(r#"{"spec":{}}"#, 1),
            json!({"spec": {}, "metadata": {"resourceVersion": "1"}})
        );
    }

    #[test]
    fn whole_objects_carry_their_type_first() {
        let mut out = Vec::new();
        let raw = br#"{"kind":"Old","metadata":{"name":"x"},"spec":{}}"#;
        assert!(write_object(&mut out, raw, 9, "apps/v1", "Deployment"));
        assert_eq!(
            String::from_utf8_lossy(&out),
            r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x","resourceVersion":"9"},"spec":{}}"#
        );
        let mut out = Vec::new();
        assert!(write_object(&mut out, b"{}", 2, "v1", "Pod"));
        assert_eq!(
            String::from_utf8_lossy(&out),
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"resourceVersion":"2"}}"#
        );
        assert!(!write_object(&mut out, b"[]", 2, "v1", "Pod"));
    }

    #[test]
    fn duplicate_keys_are_found_with_their_paths() {
        let raw = br#"{"metadata":{"name":"a","name":"b"},"spec":{"containers":[{"image":"x","image":"y"}]},"kind":"Pod"}"#;
        assert_eq!(
            duplicate_fields(raw),
            ["metadata.name", "spec.containers[0].image"]
        );
        assert!(duplicate_fields(br#"{"a":{"b":1},"c":{"b":2}}"#).is_empty());
    }

    #[test]
    fn malformed_input_is_refused() {
        let mut out = b"[".to_vec();
        for bad in [
            "",
            "[]",
            "{",
            r#"{"a"}"#,
            r#"{"a":"#,
            r#"{"metadata":1}"#,
            r#"{"a":"x}"#,
        ] {
            assert!(!write_item(&mut out, bad.as_bytes(), 1), "{bad}");
        }
        assert_eq!(out, b"[");
    }
}
