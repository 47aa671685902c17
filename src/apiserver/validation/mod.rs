//! Validation as upstream's: field errors with their paths, gathered into one 422 Invalid.
//!
//! Each kind's rules sit in a small function chosen by a table ([`validate`]); the errors are
//! worded as `k8s.io/apimachinery/pkg/util/validation/field` words them, because kubectl and
//! client libraries print them as they come.

mod kinds;
mod meta;
mod pod;
mod resize;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::catalog::ResourceDef;

/// The kinds of field error upstream has, with their Status cause reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Required,
    Invalid,
    Forbidden,
    NotSupported,
    Duplicate,
    NotFound,
    TooLong,
}

impl Kind {
    fn reason(self) -> &'static str {
        match self {
            Kind::Required => "FieldValueRequired",
            Kind::Invalid => "FieldValueInvalid",
            Kind::Forbidden => "FieldValueForbidden",
            Kind::NotSupported => "FieldValueNotSupported",
            Kind::Duplicate => "FieldValueDuplicate",
            Kind::NotFound => "FieldValueNotFound",
            Kind::TooLong => "FieldValueTooLong",
        }
    }
}

/// One problem with one field.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub kind: Kind,
    pub field: String,
    /// The offending value, already written as upstream writes it (`"text"`, `3`).
    pub value: Option<String>,
    pub detail: String,
}

impl FieldError {
    /// The message without the field, as upstream's `ErrorBody`.
    pub fn body(&self) -> String {
        let head = match self.kind {
            Kind::Required => "Required value".to_string(),
            Kind::Invalid => format!("Invalid value: {}", self.value.as_deref().unwrap_or("null")),
            Kind::Forbidden => "Forbidden".to_string(),
            Kind::NotSupported => {
                format!(
                    "Unsupported value: {}",
                    self.value.as_deref().unwrap_or("null")
                )
            }
            Kind::Duplicate => {
                format!(
                    "Duplicate value: {}",
                    self.value.as_deref().unwrap_or("null")
                )
            }
            Kind::NotFound => format!("Not found: {}", self.value.as_deref().unwrap_or("null")),
            Kind::TooLong => "Too long".to_string(),
        };
        if self.detail.is_empty() {
            head
        } else {
            format!("{head}: {}", self.detail)
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// Builds field errors against paths below one root.
#[derive(Default)]
pub struct Errors(pub Vec<FieldError>);

impl Errors {
    fn push(&mut self, kind: Kind, field: &str, value: Option<String>, detail: &str) {
        self.0.push(FieldError {
            kind,
            field: field.to_string(),
            value,
            detail: detail.to_string(),
        });
    }
    pub fn required(&mut self, field: &str, detail: &str) {
        self.push(Kind::Required, field, None, detail);
    }
    pub fn invalid(&mut self, field: &str, value: &Value, detail: &str) {
        self.push(Kind::Invalid, field, Some(go_value(value)), detail);
    }
    pub fn invalid_raw(&mut self, field: &str, value: &str, detail: &str) {
        self.push(Kind::Invalid, field, Some(value.to_string()), detail);
    }
    pub fn forbidden(&mut self, field: &str, detail: &str) {
        self.push(Kind::Forbidden, field, None, detail);
    }
    pub fn duplicate(&mut self, field: &str, value: &Value) {
        self.push(Kind::Duplicate, field, Some(go_value(value)), "");
    }
    pub fn not_found(&mut self, field: &str, value: &Value) {
        self.push(Kind::NotFound, field, Some(go_value(value)), "");
    }
    pub fn too_long(&mut self, field: &str, detail: &str) {
        self.push(Kind::TooLong, field, None, detail);
    }
    /// `Unsupported value: "x": supported values: "a", "b"` when `value` is not one of `allowed`.
    pub fn one_of(&mut self, field: &str, value: &Value, allowed: &[&str]) {
        if value.is_null() || value.as_str().is_some_and(|v| allowed.contains(&v)) {
            return;
        }
        let list = allowed
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        self.push(
            Kind::NotSupported,
            field,
            Some(go_value(value)),
            &format!("supported values: {list}"),
        );
    }
}

/// A value as upstream's field errors print it: strings quoted, numbers and booleans bare.
pub fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".into(),
        Value::Object(m) if m.values().all(Value::is_string) => {
            // map[string]string, as Go's %#v prints it (keys sorted).
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let inner = keys
                .iter()
                .map(|k| format!("{k:?}:{:?}", m[*k].as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(", ");
            format!("map[string]string{{{inner}}}")
        }
        other => other.to_string(),
    }
}

/// The 422 Invalid for `errs` on the named object, as upstream's `NewInvalid` builds it.
pub fn response(def: &ResourceDef, name: &str, errs: &[FieldError]) -> Response {
    let qualified = if def.group.is_empty() {
        def.kind.to_string()
    } else {
        format!("{}.{}", def.kind, def.group)
    };
    let joined = match errs {
        [one] => one.to_string(),
        many => format!(
            "[{}]",
            many.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let causes: Vec<Value> = errs
        .iter()
        .map(|e| json!({"reason": e.kind.reason(), "message": e.body(), "field": e.field}))
        .collect();
    let mut details = json!({"name": name, "kind": def.kind, "causes": causes});
    if !def.group.is_empty() {
        details["group"] = json!(def.group);
    }
    super::status::failure_with_details(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        &format!("{qualified} {name:?} is invalid: {joined}"),
        details,
    )
}

/// Checks a new object (after defaulting).
pub fn validate_create(def: &ResourceDef, obj: &Value) -> Vec<FieldError> {
    let mut errs = Errors::default();
    meta::object_meta(def, obj, &mut errs);
    kinds::validate(def, obj, None, &mut errs);
    errs.0
}

/// Checks an update of `old` to `new` (after defaulting).
pub fn validate_update(def: &ResourceDef, old: &Value, new: &Value) -> Vec<FieldError> {
    let mut errs = Errors::default();
    meta::object_meta(def, new, &mut errs);
    kinds::validate(def, new, Some(old), &mut errs);
    errs.0
}

/// Checks a write through `pods/NAME/ephemeralcontainers` (after defaulting).
pub fn validate_ephemeral(old: &Value, new: &Value) -> Vec<FieldError> {
    let mut errs = Errors::default();
    pod::ephemeral_update(old, new, &mut errs);
    errs.0
}

/// The stored pod with only what `pods/NAME/resize` may change taken from the request.
pub fn resize_merge(old: &Value, new: &Value) -> Value {
    resize::merge(old, new)
}

/// Checks a write through `pods/NAME/resize` (after defaulting).
pub fn validate_resize(old: &Value, new: &Value) -> Vec<FieldError> {
    let mut errs = Errors::default();
    resize::update(old, new, &mut errs);
    errs.0
}

#[cfg(test)]
mod tests;
