//! Reading a few fields of a stored object without building all of it.
//!
//! A watch or list with a selector must test every object against it, yet a selector reads
//! only labels and a field or two. Parsing a stored pod (kilobytes of JSON) into a `Value` for
//! that, and printing it back, was most of the cost of a filtered watch during a burst of pod
//! writes. [`Paths::pick`] scans the stored bytes once and builds only the listed paths (each
//! whole from where its dotted path ends), skipping everything else without allocating.

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::fmt;

/// What to keep of a JSON value.
#[derive(Debug, Clone, PartialEq)]
enum Need {
    /// The whole value.
    All,
    /// Only these keys of an object, each with what to keep of it.
    Keys(Vec<(String, Need)>),
}

/// A set of dotted paths (`metadata.labels`, `spec.nodeName`) to read from stored objects.
#[derive(Debug, Clone, PartialEq)]
pub struct Paths(Need);

impl Paths {
    /// The paths; a path that lies inside another (`metadata.labels` in `metadata`) adds nothing.
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a str>) -> Paths {
        let mut root = Need::Keys(Vec::new());
        for path in paths {
            let mut cur = &mut root;
            for part in path.split('.') {
                let Need::Keys(keys) = cur else { break };
                let at = match keys.iter().position(|(k, _)| k == part) {
                    Some(i) => i,
                    None => {
                        keys.push((part.to_string(), Need::Keys(Vec::new())));
                        keys.len() - 1
                    }
                };
                cur = &mut keys[at].1;
            }
            *cur = Need::All;
        }
        Paths(root)
    }

    /// The object `raw` holds, with only these paths; `None` if `raw` is not JSON.
    pub fn pick(&self, raw: &[u8]) -> Option<Value> {
        let mut de = serde_json::Deserializer::from_slice(raw);
        let v = Seed(&self.0).deserialize(&mut de).ok()?;
        de.end().ok()?;
        Some(v)
    }
}

struct Seed<'a>(&'a Need);

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        match self.0 {
            Need::All => serde::Deserialize::deserialize(d),
            Need::Keys(keys) => d.deserialize_any(Pick(keys)),
        }
    }
}

/// Builds an object of the wanted keys; a value that is not an object is kept as it is.
struct Pick<'a>(&'a [(String, Need)]);

impl<'de> Visitor<'de> for Pick<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(found) = map.next_key_seed(Key(self.0))? {
            match found {
                Some(i) => {
                    let (name, need) = &self.0[i];
                    out.insert(name.clone(), map.next_value_seed(Seed(need))?);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element::<Value>()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

/// Which wanted key an object key is, if any (compared in place, not copied).
struct Key<'a>(&'a [(String, Need)]);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|(k, _)| k == v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pick(paths: &[&str], obj: &Value) -> Value {
        Paths::new(paths.iter().copied())
            .pick(obj.to_string().as_bytes())
            .expect("json")
    }

    #[test]
    fn keeps_only_the_listed_paths() {
        let pod = json!({
            "metadata": {"name": "a", "labels": {"app": "x"}, "annotations": {"n": "1"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
            "status": {"phase": "Running"},
        });
        assert_eq!(
            pick(&["metadata.labels", "spec.nodeName"], &pod),
            json!({"metadata": {"labels": {"app": "x"}}, "spec": {"nodeName": "n1"}})
        );
        assert_eq!(
            pick(&["metadata.labels", "metadata"], &pod),
            json!({"metadata": pod["metadata"].clone()})
        );
        assert_eq!(
            pick(&["metadata", "metadata.labels"], &pod),
            json!({"metadata": pod["metadata"].clone()})
        );
    }

    #[test]
    fn missing_and_odd_values_stay_as_they_are() {
        let obj = json!({"spec": null, "status": "x", "metadata": {"labels": [1, 2]}});
        assert_eq!(
            pick(
                &[
                    "spec.nodeName",
                    "status.phase",
                    "metadata.labels",
                    "none.here"
                ],
                &obj
            ),
            obj
        );
        let escaped = br#"{"met\u0061data":{"name":"a\"b"},"x":[{"y":1e3}]}"#;
        assert_eq!(
            Paths::new(["metadata.name"]).pick(escaped),
            Some(json!({"metadata": {"name": "a\"b"}}))
        );
    }

    #[test]
    fn bad_json_is_none() {
        let p = Paths::new(["metadata"]);
        assert_eq!(p.pick(b"{\"metadata\":"), None);
        assert_eq!(p.pick(b"{} x"), None);
    }
}
