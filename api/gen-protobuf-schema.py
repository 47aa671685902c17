#!/usr/bin/env python3
"""Writes api/protobuf-schema.txt: the protobuf field table of every built-in Kubernetes type.

Kubernetes serialises its types with protobuf (`application/vnd.kubernetes.protobuf`), and
kubectl's typed commands send request bodies that way. k1s decodes and encodes them with one
generic codec driven by this table, so it needs, per message: its field numbers, wire types and
JSON names.

Sources:
  - the prost-generated modules of the crates.io package `k8s-pb` (Apache-2.0, kube-rs), whose
    `#[prost(...)]` attributes carry each field's number and type;
  - upstream's OpenAPI document (api/swagger-v1.36.json) for the JSON names, which prost has
    turned into snake_case, and for each kind's group, version and kind.

Usage: api/gen-protobuf-schema.py PATH/TO/k8s-pb-X.Y.Z/src > api/protobuf-schema.txt

Output, one record per line:
  message NAME                       a message, named as in the OpenAPI document
  gvk APIVERSION KIND                the kinds that decode to the message above
  field TAG JSONNAME TYPE            a field of the message above; JSONNAME `-` marks an
                                     embedded struct whose fields are inlined in this object
TYPE is one of: string bytes int32 int64 bool double msg:NAME, with `[]` in front for a
repeated field and `map:` in front for a map with string keys.
"""

import json
import os
import re
import sys

SCALARS = {"string", "bytes", "int32", "int64", "bool", "double"}


def swagger_name(module):
    """['api','core','v1'] -> io.k8s.api.core.v1 (the OpenAPI spelling of a proto package)."""
    head = module[0].replace("_", "-")
    return ".".join(["io", "k8s", head] + module[1:])


def resolve(module, rust_type):
    """Resolves a Rust path relative to `module` into a message name."""
    parts = rust_type.split("::")
    base = list(module)
    while parts and parts[0] == "super":
        base.pop()
        parts.pop(0)
    if parts and parts[0] == "crate":
        base = []
        parts.pop(0)
    return swagger_name(base + parts[:-1]) + "." + parts[-1] if len(base + parts) > 1 else parts[-1]


def inner(rust_type, wrapper):
    m = re.search(wrapper + r"<(.*)>$", rust_type)
    return m.group(1) if m else None


def norm(name):
    return re.sub(r"[^a-z0-9]", "", name.lower())


def camel(snake):
    head, *rest = snake.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def main():
    root = sys.argv[1]
    with open(os.path.join(os.path.dirname(__file__), "swagger-v1.36.json")) as f:
        swagger = json.load(f)["definitions"]

    messages = {}
    for dirpath, _, files in os.walk(root):
        for fname in files:
            if fname != "mod.rs":
                continue
            rel = os.path.relpath(dirpath, root)
            if rel == ".":
                continue
            module = rel.split(os.sep)
            if module[0] == "metrics":
                continue
            text = open(os.path.join(dirpath, fname)).read()
            for sm in re.finditer(r"pub struct (\w+) \{(?:\}|\n(.*?)\n\})", text, re.S):
                name = swagger_name(module) + "." + sm.group(1)
                fields = []
                body = sm.group(2) or ""
                for fm in re.finditer(
                    r"#\[prost\((.*?)\)\]\s*pub (?:r#)?(\w+):\s*(.*?),\s*(?=///|#\[|$)", body, re.S
                ):
                    attr, fname_rs, rtype = fm.groups()
                    rtype = re.sub(r"\s+", "", rtype).rstrip(",").replace(",>", ">")
                    tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
                    kind = attr.split(",")[0].split("=")[0].strip()
                    if kind.startswith("btree_map"):
                        value = re.search(r'btree_map = "string, (\w+)"', attr).group(1)
                        if value == "message":
                            m = re.search(r"BTreeMap<::prost::alloc::string::String,(.*)>$", rtype)
                            value = "msg:" + resolve(module, m.group(1))
                        ty = "map:" + value
                    elif kind == "message":
                        t = inner(rtype, "Vec") or inner(rtype, "Option") or rtype
                        t = inner(t, "Box") or t
                        t = t.replace("::prost::alloc::boxed::", "")
                        ty = "msg:" + resolve(module, t)
                        if "repeated" in attr:
                            ty = "[]" + ty
                    else:
                        assert kind in SCALARS, (name, attr)
                        ty = ("[]" if "repeated" in attr else "") + kind
                    fields.append((tag, fname_rs, ty))
                messages[name] = fields

    # k8s-pb re-cases some names (PodIP -> PodIp); the OpenAPI spelling is the one to keep.
    lower = {n.lower(): n for n in swagger}
    rename = {n: lower.get(n.lower(), n) for n in messages}
    messages = {
        rename[n]: [
            (t, rs, re.sub(r"msg:(\S+)", lambda m: "msg:" + rename.get(m.group(1), m.group(1)), ty))
            for t, rs, ty in f
        ]
        for n, f in messages.items()
    }

    out = sys.stdout
    out.write("# Generated by api/gen-protobuf-schema.py from k8s-pb and swagger-v1.36.json.\n")
    for name in sorted(messages):
        props = (swagger.get(name) or {}).get("properties") or {}
        by_norm = {norm(p): p for p in props}
        out.write(f"message {name}\n")
        for gvk in (swagger.get(name) or {}).get("x-kubernetes-group-version-kind", []):
            api_version = gvk["version"] if not gvk["group"] else f"{gvk['group']}/{gvk['version']}"
            out.write(f"gvk {api_version} {gvk['kind']}\n")
        for tag, rs, ty in sorted(messages[name]):
            json_name = by_norm.get(norm(rs))
            if json_name is None and props and ty.startswith("msg:"):
                json_name = "-"  # a Go struct embedded inline: its fields belong to this object
            json_name = json_name or camel(rs)
            out.write(f"field {tag} {json_name} {ty}\n")


if __name__ == "__main__":
    main()
