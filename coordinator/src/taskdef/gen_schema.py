#!/usr/bin/env python3
"""Generates schema.rs: the request shapes of RegisterTaskDefinition and RunTask's
TaskOverride, transcribed from botocore's ECS model, so the coordinator type-checks
request bodies exactly against what the AWS CLI and boto3 send.

Usage: python3 gen_schema.py > schema.rs && rustfmt schema.rs
"""
import gzip
import json
import os
import re

import botocore

MODEL = os.path.join(os.path.dirname(botocore.__file__), "data/ecs/2014-11-13/service-2.json.gz")
ROOTS = ["RegisterTaskDefinitionRequest", "TaskOverride"]

model = json.load(gzip.open(MODEL))
shapes = model["shapes"]
order = []
seen = set()


def visit(name):
    if name in seen:
        return
    seen.add(name)
    s = shapes[name]
    if s["type"] == "structure":
        for m in s["members"].values():
            visit(m["shape"])
    elif s["type"] == "list":
        visit(s["member"]["shape"])
    elif s["type"] == "map":
        visit(s["key"]["shape"])
        visit(s["value"]["shape"])
    order.append(name)


for r in ROOTS:
    visit(r)


def ident(name):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


def rust_str(s):
    return json.dumps(s)


out = []
out.append("//! The request shapes of `RegisterTaskDefinition` and `RunTask`'s `TaskOverride`,")
out.append("//! generated from botocore %s's ECS model (`data/ecs/2014-11-13/service-2.json`)" % botocore.__version__)
out.append("//! by `gen_schema.py` in this directory. Do not edit by hand: regenerate.")
out.append("")
out.append("use super::shape::{Member, Shape};")
out.append("")
for name in order:
    s = shapes[name]
    t = s["type"]
    rid = ident(name)
    if t == "structure":
        req = set(s.get("required", []))
        members = ", ".join(
            "Member { name: %s, shape: &%s, required: %s }"
            % (rust_str(k), ident(v["shape"]), "true" if k in req else "false")
            for k, v in s["members"].items()
        )
        out.append("pub static %s: Shape = Shape::Structure { members: &[%s] };" % (rid, members))
    elif t == "list":
        out.append(
            "pub static %s: Shape = Shape::List { member: &%s, min: %s, max: %s };"
            % (rid, ident(s["member"]["shape"]), s.get("min", 0), s.get("max", "u32::MAX"))
        )
    elif t == "map":
        out.append("pub static %s: Shape = Shape::Map { key: &%s, value: &%s };" % (rid, ident(s["key"]["shape"]), ident(s["value"]["shape"])))
    elif t == "string":
        enum = s.get("enum", [])
        out.append(
            "pub static %s: Shape = Shape::String { enum_values: &[%s], min: %s, max: %s };"
            % (rid, ", ".join(rust_str(e) for e in enum), s.get("min", 0), s.get("max", "u32::MAX"))
        )
    elif t == "integer":
        out.append("pub static %s: Shape = Shape::Integer { min: %s, max: %s };" % (rid, s.get("min", "i32::MIN"), s.get("max", "i32::MAX")))
    elif t == "boolean":
        out.append("pub static %s: Shape = Shape::Boolean;" % rid)
    else:
        raise SystemExit("unhandled shape type %s for %s" % (t, name))
print("\n".join(out))
