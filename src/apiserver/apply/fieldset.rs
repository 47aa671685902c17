//! Field sets: which fields of an object a manager owns, as structured-merge-diff models them.
//!
//! A path is a list of elements as `FieldsV1` writes them: `f:NAME` for a field of a struct or
//! a key of a map, `k:{"name":"web"}` for an item of an associative list (its key fields,
//! keys sorted), `v:"value"` for an item of a set. A set holds leaves (scalars, atomic lists
//! and structs, empty objects) and the membership of map fields and list items (`.` in
//! FieldsV1). Which lists are associative, sets or atomic comes from the OpenAPI extensions
//! `x-kubernetes-list-type`, `x-kubernetes-list-map-keys` and `x-kubernetes-map-type`.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::apiserver::patch::Schemas;

pub type Path = Vec<String>;
pub type FieldSet = BTreeSet<Path>;

/// How a list field merges.
pub enum ListType<'a> {
    Atomic,
    Set,
    Map(Vec<&'a str>),
}

/// The list type of a field, from its (unresolved) property schema.
pub fn list_type(field: Option<&Value>) -> ListType<'_> {
    let Some(f) = field else {
        return ListType::Atomic;
    };
    match f["x-kubernetes-list-type"].as_str() {
        Some("set") => ListType::Set,
        Some("map") => ListType::Map(
            f["x-kubernetes-list-map-keys"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect(),
        ),
        Some(_) => ListType::Atomic,
        // Older fields carry only the patch merge key.
        None => match f["x-kubernetes-patch-merge-key"].as_str() {
            Some(k) => ListType::Map(vec![k]),
            None => ListType::Atomic,
        },
    }
}

/// Whether an object-valued field is owned as a whole.
fn atomic_object(schemas: &Schemas<'_>, field: Option<&Value>) -> bool {
    let own = field.is_some_and(|f| f["x-kubernetes-map-type"] == "atomic");
    own || schemas
        .resolve(field)
        .is_some_and(|s| s["x-kubernetes-map-type"] == "atomic")
}

/// Whether an object-valued field is a map (string keys to values) rather than a struct.
fn is_map(schemas: &Schemas<'_>, field: Option<&Value>) -> bool {
    schemas
        .resolve(field)
        .is_some_and(|s| s.get("properties").is_none() && s["additionalProperties"].is_object())
}

/// The `k:` element of a list-map item.
pub fn item_key(item: &Value, keys: &[&str]) -> String {
    let mut k = Map::new();
    for key in keys {
        if let Some(v) = item.get(*key) {
            k.insert((*key).to_string(), v.clone());
        }
    }
    format!("k:{}", Value::Object(k))
}

/// Adds the paths of `value` (the value of a field with schema `field`) under `prefix`.
pub fn collect(
    schemas: &Schemas<'_>,
    field: Option<&Value>,
    value: &Value,
    prefix: &mut Path,
    out: &mut FieldSet,
) {
    match value {
        Value::Object(m) => {
            if m.is_empty() || atomic_object(schemas, field) {
                out.insert(prefix.clone());
                return;
            }
            if is_map(schemas, field) && !prefix.is_empty() {
                out.insert(prefix.clone());
            }
            for (k, v) in m {
                let sub = schemas.property(field, k);
                prefix.push(format!("f:{k}"));
                collect(schemas, sub, v, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => match list_type(field) {
            ListType::Atomic => {
                out.insert(prefix.clone());
            }
            ListType::Set => {
                for item in items {
                    let mut p = prefix.clone();
                    p.push(format!("v:{item}"));
                    out.insert(p);
                }
            }
            ListType::Map(keys) => {
                let item_schema = schemas.items(field);
                for item in items {
                    prefix.push(item_key(item, &keys));
                    out.insert(prefix.clone());
                    if let Value::Object(m) = item {
                        for (k, v) in m {
                            let sub = schemas.property(item_schema, k);
                            prefix.push(format!("f:{k}"));
                            collect(schemas, sub, v, prefix, out);
                            prefix.pop();
                        }
                    }
                    prefix.pop();
                }
            }
        },
        _ => {
            out.insert(prefix.clone());
        }
    }
}

/// Whether `path` is a membership (a map or list item with fields of its own in `set`) rather
/// than a leaf; memberships are compared by presence, leaves by value.
pub fn has_children(set: &FieldSet, path: &Path) -> bool {
    use std::ops::Bound::{Excluded, Unbounded};
    set.range::<Path, _>((Excluded(path), Unbounded))
        .next()
        .is_some_and(|q| q.starts_with(path))
}

/// The value at `path`, if any.
pub fn get<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for el in path {
        cur = step(cur, el)?;
    }
    Some(cur)
}

fn step<'a>(cur: &'a Value, el: &str) -> Option<&'a Value> {
    if let Some(f) = el.strip_prefix("f:") {
        return cur.get(f);
    }
    let list = cur.as_array()?;
    if let Some(k) = el.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(k).ok()?;
        return list
            .iter()
            .find(|item| key.iter().all(|(kk, kv)| item.get(kk) == Some(kv)));
    }
    if let Some(v) = el.strip_prefix("v:") {
        let want: Value = serde_json::from_str(v).ok()?;
        return list.iter().find(|item| **item == want);
    }
    None
}

/// Removes the field or item at `path` from `obj`.
pub fn remove(obj: &mut Value, path: &[String]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for el in parent_path {
        let next = match el.strip_prefix("f:") {
            Some(f) => cur.get_mut(f),
            None => {
                let idx = index_of(cur, el);
                match (cur.as_array_mut(), idx) {
                    (Some(list), Some(i)) => list.get_mut(i),
                    _ => None,
                }
            }
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(i) = index_of(cur, last) {
        if let Some(list) = cur.as_array_mut() {
            list.remove(i);
        }
    }
}

fn index_of(list: &Value, el: &str) -> Option<usize> {
    let target = step(list, el)?;
    list.as_array()?
        .iter()
        .position(|x| std::ptr::eq(x, target))
}

/// A set as the `fieldsV1` JSON of a managedFields entry.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    fn insert(node: &mut Map<String, Value>, path: &[String]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        let entry = node
            .entry(first.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = entry {
            insert(m, rest);
        }
    }
    // A member that also has children is marked with ".".
    fn mark(node: &mut Map<String, Value>, set: &FieldSet, prefix: &mut Path) {
        for (k, v) in node.iter_mut() {
            prefix.push(k.clone());
            if let Value::Object(children) = v {
                if !children.is_empty() {
                    mark(children, set, prefix);
                    if set.contains(prefix) {
                        children.insert(".".into(), Value::Object(Map::new()));
                    }
                }
            }
            prefix.pop();
        }
    }
    let mut root = Map::new();
    for path in set {
        insert(&mut root, path);
    }
    mark(&mut root, set, &mut Vec::new());
    Value::Object(root)
}

/// The set a `fieldsV1` JSON describes.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    fn walk(node: &Map<String, Value>, prefix: &mut Path, out: &mut FieldSet) {
        for (k, v) in node {
            if k == "." {
                out.insert(prefix.clone());
                continue;
            }
            prefix.push(k.clone());
            match v.as_object() {
                Some(children) if !children.is_empty() => walk(children, prefix, out),
                _ => {
                    out.insert(prefix.clone());
                }
            }
            prefix.pop();
        }
    }
    let mut out = FieldSet::new();
    if let Some(m) = v.as_object() {
        walk(m, &mut Vec::new(), &mut out);
    }
    out
}

/// A path as upstream prints it in conflict messages: `.spec.containers[name="web"].image`.
pub fn display(path: &[String]) -> String {
    let mut s = String::new();
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = el.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        }
    }
    s
}
