//! Object metadata: names by kind, labels, annotations, owner references, finalizers.

use serde_json::Value;

use super::Errors;
use crate::apiserver::catalog::ResourceDef;
use crate::apiserver::registry::object::name_problem;

const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const NAME_PART_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const QUALIFIED_MSG: &str = "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')";
const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
/// Upstream's limit on all annotations of one object together.
const ANNOTATIONS_MAX: usize = 256 * 1024;

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, the shape of label values and name parts.
fn label_like(s: &str) -> bool {
    let b = s.as_bytes();
    let edge = |c: &u8| c.is_ascii_alphanumeric();
    !b.is_empty()
        && b.first().is_some_and(edge)
        && b.last().is_some_and(edge)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Problems with a qualified name (`prefix/name` or `name`), as upstream's IsQualifiedName.
pub fn qualified_name_problems(key: &str) -> Vec<String> {
    let mut out = Vec::new();
    if key.matches('/').count() > 1 {
        return vec![QUALIFIED_MSG.to_string()];
    }
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            out.push("prefix part must be non-empty".to_string());
        } else if let Some(problem) = name_problem(p, false) {
            out.push(format!("prefix part {problem}"));
        }
    }
    if name.is_empty() {
        out.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        out.push("name part must be no more than 63 bytes".to_string());
    } else if !label_like(name) {
        out.push(NAME_PART_MSG.to_string());
    }
    out
}

/// The name rule upstream applies to the kind.
fn name_errors(def: &ResourceDef, name: &str) -> Option<String> {
    match (def.group, def.plural) {
        ("", "namespaces") => name_problem(name, true),
        ("", "services") => {
            let b = name.as_bytes();
            let ok = !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_lowercase()
                && b.last()
                    .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
            match (ok, b.len() > 63) {
                (true, _) => None,
                (false, true) => Some("must be no more than 63 characters".into()),
                (false, false) => Some(DNS1035_MSG.into()),
            }
        }
        ("rbac.authorization.k8s.io", _) => {
            if name == "." || name == ".." {
                Some(format!("may not be '{name}'"))
            } else if name.contains('/') {
                Some("may not contain '/'".into())
            } else if name.contains('%') {
                Some("may not contain '%'".into())
            } else {
                None
            }
        }
        _ => name_problem(name, false),
    }
}

/// Validates `metadata` of an object of the kind.
pub fn object_meta(def: &ResourceDef, obj: &Value, errs: &mut Errors) {
    let meta = &obj["metadata"];
    if let Some(name) = meta["name"].as_str() {
        if let Some(problem) = name_errors(def, name) {
            errs.invalid("metadata.name", &meta["name"], &problem);
        }
    }
    labels(&meta["labels"], "metadata.labels", errs);
    if let Some(annotations) = meta["annotations"].as_object() {
        let mut total = 0;
        for (k, v) in annotations {
            for p in qualified_name_problems(k) {
                errs.invalid_raw("metadata.annotations", &format!("{k:?}"), &p);
            }
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > ANNOTATIONS_MAX {
            errs.too_long(
                "metadata.annotations",
                &format!("must have at most {ANNOTATIONS_MAX} bytes"),
            );
        }
    }
    // One controller at most, as upstream's ValidateOwnerReferences: two controllers that
    // adopt the same pod at once cannot both succeed.
    let mut controller: Option<String> = None;
    for (i, r) in meta["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if r["controller"] == true {
            let this = format!(
                "{}/{}",
                r["kind"].as_str().unwrap_or_default(),
                r["name"].as_str().unwrap_or_default()
            );
            match &controller {
                Some(first) => errs.invalid(
                    "metadata.ownerReferences",
                    &meta["ownerReferences"],
                    &format!("Only one reference can have Controller set to true. Found \"true\" in references for {first} and {this}"),
                ),
                None => controller = Some(this),
            }
        }
        let path = format!("metadata.ownerReferences[{i}]");
        for f in ["apiVersion", "kind", "name", "uid"] {
            if r[f].as_str().is_none_or(str::is_empty) {
                let detail = match f {
                    "apiVersion" => "version must not be empty",
                    "kind" => "kind must not be empty",
                    "name" => "name must not be empty",
                    _ => "uid must not be empty",
                };
                errs.invalid(&format!("{path}.{f}"), &r[f], detail);
            }
        }
    }
    for (i, f) in meta["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let text = f.as_str().unwrap_or_default();
        for p in qualified_name_problems(text) {
            errs.invalid(&format!("metadata.finalizers[{i}]"), f, &p);
        }
    }
}

/// Validates a label map (keys are qualified names, values label values) at `path`.
pub fn labels(labels: &Value, path: &str, errs: &mut Errors) {
    let Some(map) = labels.as_object() else {
        return;
    };
    for (k, v) in map {
        for p in qualified_name_problems(k) {
            errs.invalid_raw(path, &format!("{k:?}"), &p);
        }
        let value = v.as_str().unwrap_or_default();
        if value.len() > 63 {
            errs.invalid(path, v, "must be no more than 63 characters");
        } else if !value.is_empty() && !label_like(value) {
            errs.invalid(path, v, LABEL_VALUE_MSG);
        }
    }
}
