//! managedFields and server-side apply.
//!
//! Every write records which manager set which fields ([`record_update`], operation `Update`):
//! the fields a write changed move to its manager, fields it removed leave every manager.
//! Server-side apply ([`apply`], `application/apply-patch+yaml`) merges the applied
//! configuration into the live object, refuses to change fields another manager set to other
//! values unless forced (409 with the conflicts), and removes the fields the applier set last
//! time and no longer applies, as upstream's structured-merge-diff does.

pub mod fieldset;

use serde_json::{json, Value};

use fieldset::{collect, FieldSet, ListType, Path};

use crate::apiserver::patch::Schemas;

/// Metadata fields no manager owns: identity and what the server sets.
const STRIPPED_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The fields of `obj` a manager can own (status only for the status subresource).
pub fn field_set(
    schemas: &Schemas<'_>,
    schema: Option<&Value>,
    obj: &Value,
    status: bool,
) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(m) = obj.as_object() else {
        return out;
    };
    for (k, v) in m {
        if matches!(k.as_str(), "apiVersion" | "kind") || (k == "status") != status {
            continue;
        }
        let mut value = v.clone();
        if k == "metadata" {
            if let Some(meta) = value.as_object_mut() {
                for f in STRIPPED_META {
                    meta.remove(*f);
                }
                if meta.is_empty() {
                    continue;
                }
            }
        }
        let mut prefix: Path = vec![format!("f:{k}")];
        collect(
            schemas,
            schemas.property(schema, k),
            &value,
            &mut prefix,
            &mut out,
        );
    }
    out
}

/// One managedFields entry, parsed.
#[derive(Debug, Clone)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub subresource: Option<String>,
    pub time: String,
    pub fields: FieldSet,
}

impl Entry {
    fn new(w: &Writer<'_>, operation: &str, fields: FieldSet) -> Entry {
        Entry {
            manager: w.manager.to_string(),
            operation: operation.into(),
            api_version: w.api_version.to_string(),
            subresource: w.subresource.map(str::to_string),
            time: w.now.to_string(),
            fields,
        }
    }
    fn same_owner(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }
    fn to_json(&self) -> Value {
        let mut e = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": fieldset::to_fields_v1(&self.fields),
        });
        if let Some(s) = &self.subresource {
            e["subresource"] = json!(s);
        }
        e
    }
}

/// The managedFields of `obj`.
pub fn entries(obj: &Value) -> Vec<Entry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| Entry {
            manager: e["manager"].as_str().unwrap_or_default().to_string(),
            operation: e["operation"].as_str().unwrap_or("Update").to_string(),
            api_version: e["apiVersion"].as_str().unwrap_or_default().to_string(),
            subresource: e["subresource"].as_str().map(str::to_string),
            time: e["time"].as_str().unwrap_or_default().to_string(),
            fields: fieldset::from_fields_v1(&e["fieldsV1"]),
        })
        .collect()
}

fn store(obj: &mut Value, list: &[Entry]) {
    let list: Vec<Value> = list
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(Entry::to_json)
        .collect();
    if let Some(meta) = obj["metadata"].as_object_mut() {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// Who is writing: the manager name, the API version written, the subresource, the time.
pub struct Writer<'a> {
    pub manager: &'a str,
    pub api_version: &'a str,
    pub subresource: Option<&'a str>,
    pub now: &'a str,
}

/// Records an `Update` of `old` (None for a create) to `new` in `new`'s managedFields.
pub fn record_update(
    schemas: &Schemas<'_>,
    schema: Option<&Value>,
    old: Option<&Value>,
    new: &mut Value,
    w: &Writer<'_>,
) {
    let status = w.subresource == Some("status");
    let mut list = old.map(entries).unwrap_or_default();
    let new_set = field_set(schemas, schema, new, status);
    let (changed, removed): (FieldSet, FieldSet) = match old {
        None => (new_set.clone(), FieldSet::new()),
        Some(old) => {
            let old_set = field_set(schemas, schema, old, status);
            let changed = new_set
                .iter()
                .filter(|p| {
                    !old_set.contains(*p)
                        || (!fieldset::has_children(&new_set, p)
                            && fieldset::get(old, p) != fieldset::get(new, p))
                })
                .cloned()
                .collect();
            (changed, old_set.difference(&new_set).cloned().collect())
        }
    };
    if changed.is_empty() && removed.is_empty() {
        store(new, &list);
        return;
    }
    for e in &mut list {
        e.fields
            .retain(|p| !removed.contains(p) && !changed.contains(p));
    }
    match list
        .iter_mut()
        .find(|e| e.same_owner(w.manager, "Update", w.subresource))
    {
        Some(e) => {
            e.fields.extend(changed);
            e.time = w.now.to_string();
            e.api_version = w.api_version.to_string();
        }
        None => list.push(Entry::new(w, "Update", changed)),
    }
    store(new, &list);
}

/// Fields an apply would change that other managers set: (manager, path).
#[derive(Debug)]
pub struct Conflicts(pub Vec<(String, String, Path)>);

impl Conflicts {
    /// Upstream's message: `Apply failed with 1 conflict: conflict with "m" using v1: .data.a`.
    pub fn message(&self) -> String {
        let n = self.0.len();
        let items: Vec<String> = self
            .0
            .iter()
            .map(|(m, v, p)| format!("conflict with {m:?} using {v}: {}", fieldset::display(p)))
            .collect();
        if n == 1 {
            format!("Apply failed with 1 conflict: {}", items[0])
        } else {
            format!("Apply failed with {n} conflicts: {}", items.join("\n"))
        }
    }
    pub fn causes(&self) -> Value {
        json!(self
            .0
            .iter()
            .map(|(m, v, p)| json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with {m:?} using {v}"),
                "field": fieldset::display(p),
            }))
            .collect::<Vec<_>>())
    }
}

/// Merges `config` into `live` by the schema: maps and structs key by key, associative lists
/// item by item, sets as unions, everything else replaced.
fn merge(schemas: &Schemas<'_>, field: Option<&Value>, live: &Value, config: &Value) -> Value {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) => {
            let mut out = l.clone();
            for (k, v) in c {
                let sub = schemas.property(field, k);
                let merged = match l.get(k) {
                    Some(lv) => merge(schemas, sub, lv, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(c)) => match fieldset::list_type(field) {
            ListType::Atomic => config.clone(),
            ListType::Set => {
                let mut out = l.clone();
                for item in c {
                    if !out.contains(item) {
                        out.push(item.clone());
                    }
                }
                Value::Array(out)
            }
            ListType::Map(keys) => {
                let item_schema = schemas.items(field);
                let mut out = l.clone();
                for item in c {
                    let key = fieldset::item_key(item, &keys);
                    match out.iter_mut().find(|x| fieldset::item_key(x, &keys) == key) {
                        Some(existing) => *existing = merge(schemas, item_schema, existing, item),
                        None => out.push(item.clone()),
                    }
                }
                Value::Array(out)
            }
        },
        _ => config.clone(),
    }
}

/// Server-side apply of `config` by `w.manager` onto `live` (None: the object is created).
/// Returns the merged object with its managedFields, or the conflicts.
pub fn apply(
    schemas: &Schemas<'_>,
    schema: Option<&Value>,
    live: Option<&Value>,
    config: &Value,
    force: bool,
    w: &Writer<'_>,
) -> Result<Value, Conflicts> {
    let status = w.subresource == Some("status");
    let applied = field_set(schemas, schema, config, status);
    let mut list = live.map(entries).unwrap_or_default();
    let Some(live) = live else {
        let mut obj = config.clone();
        list.push(Entry::new(w, "Apply", applied));
        store(&mut obj, &list);
        return Ok(obj);
    };
    let mut conflicts = Vec::new();
    for e in &list {
        if e.same_owner(w.manager, "Apply", w.subresource) {
            continue;
        }
        for p in e.fields.intersection(&applied) {
            if !fieldset::has_children(&applied, p)
                && fieldset::get(live, p) != fieldset::get(config, p)
            {
                conflicts.push((e.manager.clone(), e.api_version.clone(), p.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(Conflicts(conflicts));
    }
    let previous: FieldSet = list
        .iter()
        .find(|e| e.same_owner(w.manager, "Apply", w.subresource))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let mut merged = merge(schemas, schema, live, config);
    // What this manager applied before and no longer does goes, unless someone else has it.
    let mut dropped: Vec<&Path> = previous
        .difference(&applied)
        .filter(|p| {
            !list
                .iter()
                .any(|e| !e.same_owner(w.manager, "Apply", w.subresource) && e.fields.contains(*p))
        })
        .collect();
    // Shallowest first: a dropped item goes whole (its fields would otherwise change its key).
    dropped.sort_by_key(|p| p.len());
    for p in dropped {
        fieldset::remove(&mut merged, p);
        // A list left empty by the removal goes too.
        if p.len() > 1 && !p[p.len() - 1].starts_with("f:") {
            let list = &p[..p.len() - 1];
            if fieldset::get(&merged, list).is_some_and(|l| l.as_array().is_some_and(Vec::is_empty))
            {
                fieldset::remove(&mut merged, list);
            }
        }
    }
    let taken: FieldSet = conflicts.into_iter().map(|(_, _, p)| p).collect();
    // Nothing changes: the live object as it is (no new time, so no write).
    let bare = |v: &Value| {
        let mut v = v.clone();
        strip(&mut v);
        v
    };
    if taken.is_empty() && previous == applied && bare(&merged) == bare(live) {
        return Ok(live.clone());
    }
    for e in &mut list {
        if !e.same_owner(w.manager, "Apply", w.subresource) {
            e.fields.retain(|p| !taken.contains(p));
        }
    }
    match list
        .iter_mut()
        .find(|e| e.same_owner(w.manager, "Apply", w.subresource))
    {
        Some(e) => {
            e.fields = applied;
            e.time = w.now.to_string();
            e.api_version = w.api_version.to_string();
        }
        None => list.push(Entry::new(w, "Apply", applied)),
    }
    store(&mut merged, &list);
    Ok(merged)
}

/// Drops `metadata.managedFields` (for requests that must not set them directly).
pub fn strip(obj: &mut Value) {
    if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("managedFields");
    }
}

/// Keeps the managedFields a client sent only if they parse; upstream resets broken ones.
pub fn sanitize(obj: &mut Value) {
    let ok = obj["metadata"]["managedFields"]
        .as_array()
        .is_some_and(|l| {
            l.iter()
                .all(|e| e["manager"].is_string() && e["fieldsV1"].is_object())
        });
    if !ok {
        strip(obj);
    }
}

#[cfg(test)]
mod tests;
