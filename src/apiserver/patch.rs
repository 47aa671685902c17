//! Strategic merge patch, pure: upstream's merge rules driven by the OpenAPI extensions
//! `x-kubernetes-patch-strategy` and `x-kubernetes-patch-merge-key`, with the directives
//! `$patch` (replace, delete, merge), `$retainKeys`, `$setElementOrder/FIELD` and
//! `$deleteFromPrimitiveList/FIELD`.
//!
//! Lists whose field has strategy `merge` and a merge key are merged item by item on that key;
//! `merge` without a key (e.g. finalizers) makes a union; every other list is replaced. Maps are
//! merged recursively and `null` deletes a key, as in a JSON merge patch.

use serde_json::{Map, Value};

/// Why a patch could not be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatchError {
    #[error("invalid strategic merge patch: {0}")]
    Invalid(String),
}

/// Resolves schema references against the OpenAPI definitions.
pub struct Schemas<'a> {
    pub definitions: &'a Map<String, Value>,
}

impl<'a> Schemas<'a> {
    pub(crate) fn resolve(&self, schema: Option<&'a Value>) -> Option<&'a Value> {
        let s = schema?;
        match s["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("#/definitions/"))
        {
            Some(name) => self.definitions.get(name),
            None => Some(s),
        }
    }

    /// The schema of property `key` of an object schema (or of a map's values).
    pub(crate) fn property(&self, schema: Option<&'a Value>, key: &str) -> Option<&'a Value> {
        let s = self.resolve(schema)?;
        s.get("properties")
            .and_then(|p| p.get(key))
            .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
    }

    /// The schema of the items of an array schema.
    pub(crate) fn items(&self, schema: Option<&'a Value>) -> Option<&'a Value> {
        self.resolve(schema)?.get("items")
    }
}

/// The patch strategy of a field: (merge?, merge key, retainKeys?).
fn strategy(field: Option<&Value>) -> (bool, Option<&str>, bool) {
    let Some(f) = field else {
        return (false, None, false);
    };
    let strat = f["x-kubernetes-patch-strategy"]
        .as_str()
        .unwrap_or_default();
    let parts: Vec<&str> = strat.split(',').collect();
    (
        parts.contains(&"merge"),
        f["x-kubernetes-patch-merge-key"].as_str(),
        parts.contains(&"retainKeys"),
    )
}

/// Applies `patch` to `original` (an object of the kind whose schema is `schema`).
pub fn apply(
    schemas: &Schemas<'_>,
    schema: Option<&Value>,
    original: &Value,
    patch: &Value,
) -> Result<Value, PatchError> {
    merge_value(schemas, schema, None, original, patch)
}

fn merge_value(
    schemas: &Schemas<'_>,
    schema: Option<&Value>,
    field: Option<&Value>,
    original: &Value,
    patch: &Value,
) -> Result<Value, PatchError> {
    match (original, patch) {
        (Value::Object(o), Value::Object(p)) => {
            let (_, _, retain) = strategy(field);
            merge_map(schemas, schema, o, p, retain).map(Value::Object)
        }
        (_, Value::Object(p)) => {
            // Nothing to merge into: the patch minus its directives.
            merge_map(schemas, schema, &Map::new(), p, false).map(Value::Object)
        }
        (_, other) => Ok(other.clone()),
    }
}

fn merge_map(
    schemas: &Schemas<'_>,
    schema: Option<&Value>,
    original: &Map<String, Value>,
    patch: &Map<String, Value>,
    retain_allowed: bool,
) -> Result<Map<String, Value>, PatchError> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut out = patch.clone();
            out.remove("$patch");
            return Ok(strip_directives(out));
        }
        Some("delete") => return Ok(Map::new()),
        Some("merge") | None => {}
        Some(other) => return Err(PatchError::Invalid(format!("unknown patch type {other:?}"))),
    }
    let mut out = original.clone();
    // Directives about lists first, then plain keys.
    for (k, v) in patch {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let remove: Vec<&Value> = v.as_array().map(|a| a.iter().collect()).unwrap_or_default();
            if let Some(Value::Array(list)) = out.get_mut(field) {
                list.retain(|x| !remove.contains(&x));
            }
        }
    }
    for (k, v) in patch {
        if k.starts_with('$') {
            continue;
        }
        let field = schemas.property(schema, k);
        if v.is_null() {
            out.remove(k);
            continue;
        }
        let merged = match (out.get(k), v) {
            (Some(Value::Array(o)), Value::Array(p)) => {
                let order = patch
                    .get(&format!("$setElementOrder/{k}"))
                    .and_then(Value::as_array);
                Value::Array(merge_list(schemas, field, o, p, order)?)
            }
            (_, Value::Array(p)) => {
                let order = patch
                    .get(&format!("$setElementOrder/{k}"))
                    .and_then(Value::as_array);
                Value::Array(merge_list(schemas, field, &[], p, order)?)
            }
            (Some(o), _) => merge_value(schemas, field, field, o, v)?,
            (None, _) => merge_value(schemas, field, field, &Value::Null, v)?,
        };
        out.insert(k.clone(), merged);
    }
    if let Some(keep) = patch.get("$retainKeys").and_then(Value::as_array) {
        if retain_allowed || !keep.is_empty() {
            let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
            out.retain(|k, _| keep.contains(&k.as_str()));
        }
    }
    Ok(out)
}

fn strip_directives(mut m: Map<String, Value>) -> Map<String, Value> {
    m.retain(|k, _| !k.starts_with('$'));
    for v in m.values_mut() {
        if let Value::Object(inner) = v {
            *inner = strip_directives(std::mem::take(inner));
        }
    }
    m
}

fn merge_list(
    schemas: &Schemas<'_>,
    field: Option<&Value>,
    original: &[Value],
    patch: &[Value],
    order: Option<&Vec<Value>>,
) -> Result<Vec<Value>, PatchError> {
    let (merge, key, _) = strategy(field);
    // A `{"$patch": "replace"}` item replaces the whole list with the other items.
    if patch
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Ok(patch
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .cloned()
            .collect());
    }
    if !merge {
        return Ok(patch.to_vec());
    }
    let item_schema = schemas.items(field);
    let Some(key) = key else {
        // A set of primitives: union, keeping the original order.
        let mut out = original.to_vec();
        for p in patch {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        return Ok(out);
    };
    let mut out: Vec<Value> = original.to_vec();
    for p in patch {
        let Some(id) = p.get(key) else {
            return Err(PatchError::Invalid(format!(
                "a list item lacks its merge key {key:?}"
            )));
        };
        let pos = out.iter().position(|o| o.get(key) == Some(id));
        match (p.get("$patch").and_then(Value::as_str), pos) {
            (Some("delete"), Some(i)) => {
                out.remove(i);
            }
            (Some("delete"), None) => {}
            (_, Some(i)) => out[i] = merge_value(schemas, item_schema, None, &out[i], p)?,
            (_, None) => out.push(merge_value(schemas, item_schema, None, &Value::Null, p)?),
        }
    }
    if let Some(order) = order {
        let rank = |v: &Value| {
            order
                .iter()
                .position(|o| o.get(key).is_some() && o.get(key) == v.get(key))
        };
        // Ordered items first, in the given order; the rest keep their relative order after.
        let mut ordered: Vec<(usize, Value)> = Vec::new();
        let mut rest = Vec::new();
        for v in out {
            match rank(&v) {
                Some(r) => ordered.push((r, v)),
                None => rest.push(v),
            }
        }
        ordered.sort_by_key(|(r, _)| *r);
        out = ordered.into_iter().map(|(_, v)| v).chain(rest).collect();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defs() -> Map<String, Value> {
        json!({
            "Pod": {"properties": {
                "metadata": {"$ref": "#/definitions/Meta"},
                "spec": {"$ref": "#/definitions/PodSpec"},
            }},
            "Meta": {"properties": {
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "finalizers": {"type": "array", "items": {"type": "string"}, "x-kubernetes-patch-strategy": "merge"},
            }},
            "PodSpec": {"properties": {
                "containers": {"type": "array", "items": {"$ref": "#/definitions/Container"},
                    "x-kubernetes-patch-merge-key": "name", "x-kubernetes-patch-strategy": "merge"},
                "tolerations": {"type": "array", "items": {"type": "object"}},
            }},
            "Container": {"properties": {
                "name": {"type": "string"}, "image": {"type": "string"},
                "args": {"type": "array", "items": {"type": "string"}},
                "env": {"type": "array", "items": {"type": "object"},
                    "x-kubernetes-patch-merge-key": "name", "x-kubernetes-patch-strategy": "merge"},
            }},
        })
        .as_object()
        .cloned()
        .expect("map")
    }

    fn run(original: Value, patch: Value) -> Value {
        let d = defs();
        let s = Schemas { definitions: &d };
        let pod = json!({"$ref": "#/definitions/Pod"});
        apply(&s, Some(&pod), &original, &patch).expect("patch")
    }

    #[test]
    fn lists_merge_on_their_key_and_keep_what_the_patch_omits() {
        let original = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"},
        ]}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}]}],
        }});
        let out = run(original, patch);
        assert_eq!(
            out,
            json!({"spec": {"containers": [
                {"name": "a", "image": "a:2", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
                {"name": "b", "image": "b:1"},
            ]}})
        );
    }

    #[test]
    fn directives_delete_replace_and_order() {
        let original = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
            "spec": {"containers": [{"name": "a", "args": ["1", "2"]}, {"name": "b"}], "tolerations": [{"k": 1}]}});
        let patch = json!({
            "metadata": {"labels": {"a": null, "c": "3"}, "finalizers": ["y"], "$deleteFromPrimitiveList/finalizers": ["x"]},
            "spec": {"containers": [{"name": "b", "$patch": "delete"}, {"name": "a", "args": ["3"]}],
                     "tolerations": [{"k": 2}]},
        });
        let out = run(original, patch);
        assert_eq!(out["metadata"]["labels"], json!({"b": "2", "c": "3"}));
        assert_eq!(out["metadata"]["finalizers"], json!(["y"]));
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "a", "args": ["3"]}])
        );
        assert_eq!(
            out["spec"]["tolerations"],
            json!([{"k": 2}]),
            "lists without a strategy are replaced"
        );
        let replaced = run(
            json!({"spec": {"containers": [{"name": "a"}]}}),
            json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "z"}]}}),
        );
        assert_eq!(replaced["spec"]["containers"], json!([{"name": "z"}]));
    }

    #[test]
    fn a_list_item_without_its_merge_key_is_refused() {
        let d = defs();
        let s = Schemas { definitions: &d };
        let pod = json!({"$ref": "#/definitions/Pod"});
        let err = apply(
            &s,
            Some(&pod),
            &json!({"spec": {"containers": []}}),
            &json!({"spec": {"containers": [{"image": "x"}]}}),
        );
        assert!(err.is_err());
    }
}
