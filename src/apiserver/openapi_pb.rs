//! `/openapi/v2` as protobuf (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`),
//! the gnostic `openapi.v2.Document` encoding kubectl asks for when it falls back from v3
//! (for kinds without a PATCH operation, such as the review kinds).
//!
//! Only what the Kubernetes document uses is encoded: info, paths with their operations and
//! parameters (body, query, path, references), responses, definitions, top-level parameters,
//! security, and vendor extensions (`x-...`), whose values travel as YAML text (JSON is YAML).

use serde_json::{Map, Value};

/// A protobuf message under construction.
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn varint(&mut self, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(b);
                return;
            }
            self.0.push(b | 0x80);
        }
    }
    fn key(&mut self, tag: u32, wire: u8) {
        self.varint(u64::from(tag) << 3 | u64::from(wire));
    }
    fn bytes(&mut self, tag: u32, b: &[u8]) {
        self.key(tag, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn msg(&mut self, tag: u32, m: Msg) {
        self.bytes(tag, &m.0);
    }
    fn str(&mut self, tag: u32, v: &Value) {
        if let Some(s) = v.as_str().filter(|s| !s.is_empty()) {
            self.bytes(tag, s.as_bytes());
        }
    }
    fn strs(&mut self, tag: u32, v: &Value) {
        for s in v.as_array().into_iter().flatten().filter_map(Value::as_str) {
            self.bytes(tag, s.as_bytes());
        }
    }
    fn bool(&mut self, tag: u32, v: &Value) {
        if v == true {
            self.key(tag, 0);
            self.varint(1);
        }
    }
    fn int(&mut self, tag: u32, v: &Value) {
        if let Some(n) = v.as_i64().filter(|n| *n != 0) {
            self.key(tag, 0);
            self.varint(n as u64);
        }
    }
    /// `Any{yaml}` for a JSON value.
    fn any(&mut self, tag: u32, v: &Value) {
        if v.is_null() {
            return;
        }
        let mut a = Msg::default();
        a.bytes(2, v.to_string().as_bytes());
        self.msg(tag, a);
    }
    /// Vendor extensions (`x-...` keys) as repeated `NamedAny`.
    fn extensions(&mut self, tag: u32, obj: &Map<String, Value>) {
        for (k, v) in obj.iter().filter(|(k, _)| k.starts_with("x-")) {
            let mut named = Msg::default();
            named.bytes(1, k.as_bytes());
            named.any(2, v);
            self.msg(tag, named);
        }
    }
}

fn obj(v: &Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn schema(v: &Value) -> Msg {
    let o = obj(v);
    let mut m = Msg::default();
    m.str(1, &v["$ref"]);
    m.str(2, &v["format"]);
    m.str(3, &v["title"]);
    m.str(4, &v["description"]);
    m.any(5, &v["default"]);
    m.int(11, &v["maxLength"]);
    m.int(12, &v["minLength"]);
    m.str(13, &v["pattern"]);
    m.bool(16, &v["uniqueItems"]);
    m.strs(19, &v["required"]);
    for e in v["enum"].as_array().into_iter().flatten() {
        m.any(20, e);
    }
    match &v["additionalProperties"] {
        Value::Object(_) => {
            let mut a = Msg::default();
            a.msg(1, schema(&v["additionalProperties"]));
            m.msg(21, a);
        }
        Value::Bool(b) => {
            let mut a = Msg::default();
            a.key(2, 0);
            a.varint(u64::from(*b));
            m.msg(21, a);
        }
        _ => {}
    }
    if !v["type"].is_null() {
        let mut t = Msg::default();
        match &v["type"] {
            Value::Array(_) => t.strs(1, &v["type"]),
            other => t.str(1, other),
        }
        m.msg(22, t);
    }
    if v["items"].is_object() {
        let mut items = Msg::default();
        items.msg(1, schema(&v["items"]));
        m.msg(23, items);
    }
    for s in v["allOf"].as_array().into_iter().flatten() {
        m.msg(24, schema(s));
    }
    if let Some(props) = v["properties"].as_object() {
        let mut p = Msg::default();
        for (name, s) in props {
            let mut named = Msg::default();
            named.bytes(1, name.as_bytes());
            named.msg(2, schema(s));
            p.msg(1, named);
        }
        m.msg(25, p);
    }
    m.bool(27, &v["readOnly"]);
    m.any(30, &v["example"]);
    m.extensions(31, &o);
    m
}

/// A `Parameter` (body or non-body) for a parameter object.
fn parameter(v: &Value) -> Msg {
    let o = obj(v);
    let mut p = Msg::default();
    if v["in"] == "body" {
        let mut b = Msg::default();
        b.str(1, &v["description"]);
        b.str(2, &v["name"]);
        b.str(3, &v["in"]);
        b.bool(4, &v["required"]);
        if v["schema"].is_object() {
            b.msg(5, schema(&v["schema"]));
        }
        b.extensions(6, &o);
        p.msg(1, b);
        return p;
    }
    // Query and path parameters share the first fields; their later numbers differ by one.
    let query = v["in"] != "path";
    let mut s = Msg::default();
    s.bool(1, &v["required"]);
    s.str(2, &v["in"]);
    s.str(3, &v["description"]);
    s.str(4, &v["name"]);
    let off = u32::from(query);
    if query {
        s.bool(5, &v["allowEmptyValue"]);
    }
    s.str(5 + off, &v["type"]);
    s.str(6 + off, &v["format"]);
    s.bool(19 + off, &v["uniqueItems"]);
    s.extensions(22 + off, &o);
    let mut nb = Msg::default();
    nb.msg(if query { 3 } else { 4 }, s);
    p.msg(2, nb);
    p
}

/// A `ParametersItem`: a parameter or a reference to one.
fn parameters_item(v: &Value) -> Msg {
    let mut item = Msg::default();
    if let Some(r) = v["$ref"].as_str() {
        let mut jr = Msg::default();
        jr.bytes(1, r.as_bytes());
        item.msg(2, jr);
    } else {
        item.msg(1, parameter(v));
    }
    item
}

fn operation(v: &Value) -> Msg {
    let o = obj(v);
    let mut m = Msg::default();
    m.strs(1, &v["tags"]);
    m.str(2, &v["summary"]);
    m.str(3, &v["description"]);
    m.str(5, &v["operationId"]);
    m.strs(6, &v["produces"]);
    m.strs(7, &v["consumes"]);
    for p in v["parameters"].as_array().into_iter().flatten() {
        m.msg(8, parameters_item(p));
    }
    if let Some(responses) = v["responses"].as_object() {
        let mut rs = Msg::default();
        for (code, r) in responses {
            let mut resp = Msg::default();
            resp.str(1, &r["description"]);
            if r["schema"].is_object() {
                let mut si = Msg::default();
                si.msg(1, schema(&r["schema"]));
                resp.msg(2, si);
            }
            let mut rv = Msg::default();
            rv.msg(1, resp);
            let mut named = Msg::default();
            named.bytes(1, code.as_bytes());
            named.msg(2, rv);
            rs.msg(1, named);
        }
        m.msg(9, rs);
    }
    m.strs(10, &v["schemes"]);
    m.bool(11, &v["deprecated"]);
    m.extensions(13, &o);
    m
}

/// The gnostic `openapi.v2.Document` of a Swagger 2.0 document.
pub fn document(doc: &Value) -> Vec<u8> {
    let mut d = Msg::default();
    d.str(1, &doc["swagger"]);
    let mut info = Msg::default();
    info.str(1, &doc["info"]["title"]);
    info.str(2, &doc["info"]["version"]);
    d.msg(2, info);
    if let Some(paths) = doc["paths"].as_object() {
        let mut ps = Msg::default();
        for (path, item) in paths {
            let mut pi = Msg::default();
            for (tag, verb) in [
                (2, "get"),
                (3, "put"),
                (4, "post"),
                (5, "delete"),
                (6, "options"),
                (7, "head"),
                (8, "patch"),
            ] {
                if item[verb].is_object() {
                    pi.msg(tag, operation(&item[verb]));
                }
            }
            for p in item["parameters"].as_array().into_iter().flatten() {
                pi.msg(9, parameters_item(p));
            }
            pi.extensions(10, &obj(item));
            let mut named = Msg::default();
            named.bytes(1, path.as_bytes());
            named.msg(2, pi);
            ps.msg(2, named);
        }
        d.msg(8, ps);
    }
    if let Some(defs) = doc["definitions"].as_object() {
        let mut ds = Msg::default();
        for (name, s) in defs {
            let mut named = Msg::default();
            named.bytes(1, name.as_bytes());
            named.msg(2, schema(s));
            ds.msg(1, named);
        }
        d.msg(9, ds);
    }
    if let Some(params) = doc["parameters"].as_object() {
        let mut ps = Msg::default();
        for (name, p) in params {
            let mut named = Msg::default();
            named.bytes(1, name.as_bytes());
            named.msg(2, parameter(p));
            ps.msg(1, named);
        }
        d.msg(10, ps);
    }
    for req in doc["security"].as_array().into_iter().flatten() {
        let mut sr = Msg::default();
        for (name, scopes) in obj(req) {
            let mut arr = Msg::default();
            arr.strs(1, &scopes);
            let mut named = Msg::default();
            named.bytes(1, name.as_bytes());
            named.msg(2, arr);
            sr.msg(1, named);
        }
        d.msg(12, sr);
    }
    if let Some(defs) = doc["securityDefinitions"].as_object() {
        let mut sd = Msg::default();
        for (name, def) in defs {
            if def["type"] != "apiKey" {
                continue;
            }
            let mut key = Msg::default();
            key.str(1, &def["type"]);
            key.str(2, &def["name"]);
            key.str(3, &def["in"]);
            key.str(4, &def["description"]);
            let mut item = Msg::default();
            item.msg(2, key);
            let mut named = Msg::default();
            named.bytes(1, name.as_bytes());
            named.msg(2, item);
            sd.msg(1, named);
        }
        d.msg(13, sd);
    }
    d.extensions(16, &obj(doc));
    d.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_start_with_the_version_and_nest_definitions() {
        let doc = json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": "v1.37.1"},
            "definitions": {"a.B": {"type": "object", "properties": {"x": {"type": "string"}},
                                    "x-kubernetes-group-version-kind": [{"group": "", "kind": "B", "version": "v1"}]}},
        });
        let pb = document(&doc);
        // Field 1 (swagger), length 3, "2.0".
        assert_eq!(&pb[..5], b"\x0a\x032.0");
        let text = String::from_utf8_lossy(&pb);
        assert!(text.contains("a.B") && text.contains("x-kubernetes-group-version-kind"));
        assert!(text.contains(r#"[{"group":"","kind":"B","version":"v1"}]"#));
    }
}
