#!/usr/bin/env python3
"""Strip a botocore service model to what Gantry checks requests against.

Keeps, per operation, its input and output shape names and its error shapes; per shape, its
type, members (name -> shape, plus jsonName/locationName), required members, enum values,
min/max/pattern constraints and whether it is sensitive (a validation error must not quote
the value). Drops documentation, examples and endpoint data (over 80 % of the
file). Usage: strip-aws-model.py [--inputs-only] SRC.json > crates/control/models/NAME.json

--inputs-only keeps only the shapes some operation's input reaches (what the request validator
reads), for a large model of which Gantry serves a few operations (SSM: 1360 shapes, 700 kept).
"""
import json
import sys

KEEP_SHAPE = (
    "type", "required", "enum", "min", "max", "pattern", "member", "key", "value", "sensitive",
)


def strip(model):
    ops = {}
    for name, op in model["operations"].items():
        ops[name] = {
            "input": op.get("input", {}).get("shape"),
            "output": op.get("output", {}).get("shape"),
            "errors": [e["shape"] for e in op.get("errors", [])],
        }
    shapes = {}
    for name, shape in model["shapes"].items():
        out = {k: shape[k] for k in KEEP_SHAPE if k in shape}
        for k in ("member", "key", "value"):
            if k in out:
                out[k] = {"shape": out[k]["shape"]}
        if "members" in shape:
            out["members"] = {m: {"shape": v["shape"]} for m, v in shape["members"].items()}
        if shape.get("exception"):
            out["exception"] = True
        shapes[name] = out
    meta = model["metadata"]
    return {
        "metadata": {
            "protocol": meta.get("protocol"),
            "targetPrefix": meta.get("targetPrefix"),
            "apiVersion": meta.get("apiVersion"),
            "source": "botocore (Apache License 2.0), documentation stripped",
        },
        "operations": ops,
        "shapes": shapes,
    }


def inputs_only(stripped):
    """The shapes reachable from the operations' inputs; the others are dropped."""
    keep = set()
    pending = [op["input"] for op in stripped["operations"].values() if op["input"]]
    while pending:
        name = pending.pop()
        if name in keep:
            continue
        keep.add(name)
        shape = stripped["shapes"][name]
        for k in ("member", "key", "value"):
            if k in shape:
                pending.append(shape[k]["shape"])
        pending.extend(m["shape"] for m in shape.get("members", {}).values())
    stripped["shapes"] = {n: s for n, s in stripped["shapes"].items() if n in keep}
    return stripped


if __name__ == "__main__":
    args = sys.argv[1:]
    only_inputs = "--inputs-only" in args
    args = [a for a in args if a != "--inputs-only"]
    with open(args[0]) as f:
        model = json.load(f)
    stripped = strip(model)
    if only_inputs:
        stripped = inputs_only(stripped)
    json.dump(stripped, sys.stdout, separators=(",", ":"), sort_keys=True)
    sys.stdout.write("\n")
