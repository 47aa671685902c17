//! Protobuf wire format to JSON, driven by the field table.
//!
//! Decodes a message as upstream's Go types would and then writes it as their JSON does: zero
//! values of plain fields are left out (`omitempty`), embedded structs are inlined, and the
//! apimachinery types with their own JSON form (Time, MicroTime, Duration, Quantity, IntOrString,
//! RawExtension, FieldsV1, the apiextensions JSON unions) are written in that form.

use serde_json::{Map, Number, Value};

use super::schema::{Field, Label, Message, Scalar, SCHEMA};
use super::Error;

/// Reads protobuf wire data.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
}

/// One value as it appears on the wire.
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn varint(&mut self) -> Result<u64, Error> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first().ok_or(Error::Truncated)?;
            self.buf = rest;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Error::BadVarint)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.buf.len() < n {
            return Err(Error::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next field: its number and value, or `None` at the end.
    fn next(&mut self) -> Result<Option<(u32, Wire<'a>)>, Error> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3).map_err(|_| Error::BadTag)?;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Wire::Fixed64(u64::from_le_bytes(a))
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| Error::Truncated)?;
                Wire::Bytes(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed32
            }
            t => return Err(Error::WireType(t as u8)),
        };
        Ok(Some((tag, wire)))
    }

    /// The next length-delimited field, skipping the others.
    pub(super) fn next_bytes(&mut self) -> Result<Option<(u32, &'a [u8])>, Error> {
        while let Some((tag, w)) = self.next()? {
            if let Wire::Bytes(b) = w {
                return Ok(Some((tag, b)));
            }
        }
        Ok(None)
    }

    /// Reads every field of a message into (tag, value) pairs.
    fn fields(mut self) -> Result<Vec<(u32, Wire<'a>)>, Error> {
        let mut out = Vec::new();
        while let Some(f) = self.next()? {
            out.push(f);
        }
        Ok(out)
    }
}

fn bytes_of<'a>(w: &Wire<'a>) -> Option<&'a [u8]> {
    match w {
        Wire::Bytes(b) => Some(b),
        _ => None,
    }
}

fn string_field(fields: &[(u32, Wire<'_>)], tag: u32) -> Option<String> {
    fields
        .iter()
        .rev()
        .find(|(t, _)| *t == tag)
        .and_then(|(_, w)| bytes_of(w))
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

fn int_field(fields: &[(u32, Wire<'_>)], tag: u32) -> i64 {
    fields
        .iter()
        .rev()
        .find_map(|(t, w)| match (t, w) {
            (t, Wire::Varint(v)) if *t == tag => Some(*v as i64),
            _ => None,
        })
        .unwrap_or(0)
}

/// Decodes `buf` as message `msg` into a JSON object.
pub(super) fn message(msg: &Message, buf: &[u8], depth: u32) -> Result<Value, Error> {
    if depth > 64 {
        return Err(Error::TooDeep);
    }
    let fields = Reader::new(buf).fields()?;
    if let Some(v) = special(msg, &fields, depth)? {
        return Ok(v);
    }
    let mut out = Map::new();
    fill(msg, &fields, &mut out, depth)?;
    Ok(Value::Object(out))
}

/// Writes the fields of `msg` into `out` (also used for inlined embedded structs).
fn fill(
    msg: &Message,
    fields: &[(u32, Wire<'_>)],
    out: &mut Map<String, Value>,
    depth: u32,
) -> Result<(), Error> {
    for (tag, wire) in fields {
        let Some(field) = msg.field(*tag) else {
            // A field newer than the table: skipped, as an older apiserver would.
            tracing::debug!(message = msg.name, tag, "unknown protobuf field skipped");
            continue;
        };
        let Some(json) = field.json else {
            // An embedded struct: its fields belong to this object.
            if let (Scalar::Message(i), Some(b)) = (field.scalar, bytes_of(wire)) {
                let inner = &SCHEMA.messages[i];
                fill(inner, &Reader::new(b).fields()?, out, depth + 1)?;
            }
            continue;
        };
        match field.label {
            Label::Single => match value(field, wire, depth)? {
                Some(v) => {
                    out.insert(json.to_string(), v);
                }
                None => {
                    out.remove(json);
                }
            },
            Label::Repeated => {
                let items = out
                    .entry(json.to_string())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(items) = items {
                    repeated(field, wire, items, depth)?;
                }
            }
            Label::Map => {
                let Some(b) = bytes_of(wire) else {
                    return Err(Error::Mismatch(msg.name, *tag));
                };
                let entry = Reader::new(b).fields()?;
                let key = string_field(&entry, 1).unwrap_or_default();
                let val = match entry.iter().rev().find(|(t, _)| *t == 2) {
                    Some((_, w)) => value_of(field.scalar, w, depth)?,
                    None => zero(field.scalar, depth)?,
                };
                let map = out
                    .entry(json.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = map {
                    map.insert(key, val);
                }
            }
        }
    }
    Ok(())
}

/// A single field's JSON value, or `None` when a plain field holds its zero value.
fn value(field: &Field, wire: &Wire<'_>, depth: u32) -> Result<Option<Value>, Error> {
    let v = value_of(field.scalar, wire, depth)?;
    let is_zero = match &v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        // Go writes non-pointer structs as {} even when empty, except the ones with their own
        // JSON form above.
        Value::Object(_) | Value::Array(_) => false,
    };
    Ok((!is_zero || (field.pointer && !v.is_null())).then_some(v))
}

/// Appends the elements of one occurrence of a repeated field (packed or not).
fn repeated(
    field: &Field,
    wire: &Wire<'_>,
    items: &mut Vec<Value>,
    depth: u32,
) -> Result<(), Error> {
    match (field.scalar, wire) {
        (Scalar::Int32 | Scalar::Int64 | Scalar::Bool, Wire::Bytes(b)) => {
            let mut r = Reader::new(b);
            while !r.buf.is_empty() {
                items.push(value_of(field.scalar, &Wire::Varint(r.varint()?), depth)?);
            }
        }
        _ => items.push(value_of(field.scalar, wire, depth)?),
    }
    Ok(())
}

fn value_of(scalar: Scalar, wire: &Wire<'_>, depth: u32) -> Result<Value, Error> {
    Ok(match (scalar, wire) {
        (Scalar::String, Wire::Bytes(b)) => Value::String(String::from_utf8_lossy(b).into_owned()),
        (Scalar::Bytes, Wire::Bytes(b)) => Value::String(base64(b)),
        (Scalar::Int32, Wire::Varint(v)) => Value::from(*v as i64 as i32),
        (Scalar::Int64, Wire::Varint(v)) => Value::from(*v as i64),
        (Scalar::Bool, Wire::Varint(v)) => Value::Bool(*v != 0),
        (Scalar::Double, Wire::Fixed64(v)) => Number::from_f64(f64::from_bits(*v))
            .map(Value::Number)
            .unwrap_or(Value::Null),
        (Scalar::Message(i), Wire::Bytes(b)) => message(&SCHEMA.messages[i], b, depth + 1)?,
        (_, Wire::Fixed32) | (_, _) => return Err(Error::Mismatch("value", 0)),
    })
}

/// The value a map entry without a value stands for.
fn zero(scalar: Scalar, depth: u32) -> Result<Value, Error> {
    Ok(match scalar {
        Scalar::String | Scalar::Bytes => Value::String(String::new()),
        Scalar::Int32 | Scalar::Int64 | Scalar::Double => Value::from(0),
        Scalar::Bool => Value::Bool(false),
        Scalar::Message(i) => message(&SCHEMA.messages[i], &[], depth + 1)?,
    })
}

/// The apimachinery types whose JSON is not an object of their fields.
fn special(msg: &Message, fields: &[(u32, Wire<'_>)], depth: u32) -> Result<Option<Value>, Error> {
    let v = match msg.name {
        "io.k8s.apimachinery.pkg.api.resource.Quantity" => {
            Value::String(string_field(fields, 1).unwrap_or_default())
        }
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString" => match int_field(fields, 1) {
            1 => Value::String(string_field(fields, 3).unwrap_or_default()),
            _ => Value::from(int_field(fields, 2) as i32),
        },
        "io.k8s.apimachinery.pkg.apis.meta.v1.Time" => time(fields, false),
        "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime" => time(fields, true),
        "io.k8s.apimachinery.pkg.apis.meta.v1.Duration" => {
            Value::String(go_duration(int_field(fields, 1)))
        }
        "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1"
        | "io.k8s.apimachinery.pkg.runtime.RawExtension"
        | "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON"
        | "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1beta1.JSON" => {
            let raw = fields
                .iter()
                .rev()
                .find(|(t, _)| *t == 1)
                .and_then(|(_, w)| bytes_of(w))
                .unwrap_or_default();
            raw_json(raw, depth)?
        }
        n if n.ends_with(".JSONSchemaPropsOrBool") => match find_message(msg, fields, 2, depth)? {
            Some(schema) => schema,
            None => Value::Bool(int_field(fields, 1) != 0),
        },
        n if n.ends_with(".JSONSchemaPropsOrArray")
            || n.ends_with(".JSONSchemaPropsOrStringArray") =>
        {
            match find_message(msg, fields, 1, depth)? {
                Some(schema) => schema,
                None => {
                    let mut items = Vec::new();
                    if let Some(f) = msg.field(2) {
                        for (_, w) in fields.iter().filter(|(t, _)| *t == 2) {
                            repeated(f, w, &mut items, depth)?;
                        }
                    }
                    Value::Array(items)
                }
            }
        }
        // Go string-slice types with a protobuf wrapper (ExtraValue, Verbs): a JSON array.
        _ if msg.fields.len() == 1
            && msg.fields[0].json == Some("items")
            && msg.fields[0].label == Label::Repeated
            && !matches!(msg.fields[0].scalar, Scalar::Message(_)) =>
        {
            let mut items = Vec::new();
            for (_, w) in fields.iter().filter(|(t, _)| *t == msg.fields[0].tag) {
                repeated(&msg.fields[0], w, &mut items, depth)?;
            }
            Value::Array(items)
        }
        _ => return Ok(None),
    };
    Ok(Some(v))
}

fn find_message(
    msg: &Message,
    fields: &[(u32, Wire<'_>)],
    tag: u32,
    depth: u32,
) -> Result<Option<Value>, Error> {
    let (Some(f), Some((_, w))) = (msg.field(tag), fields.iter().rev().find(|(t, _)| *t == tag))
    else {
        return Ok(None);
    };
    value_of(f.scalar, w, depth).map(Some)
}

/// Embedded JSON, or an embedded protobuf object (`k8s\0` envelope) decoded in turn.
fn raw_json(raw: &[u8], depth: u32) -> Result<Value, Error> {
    if raw.is_empty() {
        return Ok(Value::Null);
    }
    if raw.starts_with(&super::MAGIC) {
        return super::decode_envelope(raw, None, depth + 1);
    }
    serde_json::from_slice(raw).map_err(|e| Error::RawJson(e.to_string()))
}

/// A Time or MicroTime; the zero time (never set) is JSON null, as upstream writes it.
fn time(fields: &[(u32, Wire<'_>)], micro: bool) -> Value {
    let secs = int_field(fields, 1);
    let nanos = int_field(fields, 2);
    if fields.is_empty() || secs == -62_135_596_800 {
        return Value::Null;
    }
    let text = crate::apiserver::registry::object::rfc3339(secs);
    if micro {
        let micros = nanos / 1000;
        Value::String(format!("{}.{micros:06}Z", text.trim_end_matches('Z')))
    } else {
        Value::String(text)
    }
}

/// A duration in nanoseconds written as Go's `time.Duration.String` does ("1h2m3.5s", "150ms").
pub(super) fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let sign = if ns < 0 { "-" } else { "" };
    let u = ns.unsigned_abs();
    let frac = |v: u64, digits: u32| -> String {
        let unit = 10u64.pow(digits);
        let (whole, rest) = (v / unit, v % unit);
        if rest == 0 {
            whole.to_string()
        } else {
            let f = format!("{rest:0width$}", width = digits as usize);
            format!("{whole}.{}", f.trim_end_matches('0'))
        }
    };
    if u < 1_000 {
        return format!("{sign}{u}ns");
    }
    if u < 1_000_000 {
        return format!("{sign}{}µs", frac(u, 3));
    }
    if u < 1_000_000_000 {
        return format!("{sign}{}ms", frac(u, 6));
    }
    let hours = u / 3_600_000_000_000;
    let minutes = u / 60_000_000_000 % 60;
    let secs = frac(u % 60_000_000_000, 9);
    match (hours, minutes) {
        (0, 0) => format!("{sign}{secs}s"),
        (0, m) => format!("{sign}{m}m{secs}s"),
        (h, m) => format!("{sign}{h}h{m}m{secs}s"),
    }
}

/// Standard base64 with padding, as Go's encoding/json writes []byte.
fn base64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}
