#!/usr/bin/env python3
"""Strip a botocore service model to what Gantry checks requests against.

Keeps, per operation, its input and output shape names and its error shapes; per shape, its
type, members (name -> shape, plus jsonName/locationName), required members, enum values,
min/max/pattern constraints and whether it is sensitive (a validation error must not quote
the value). Drops documentation, examples and endpoint data (over 80 % of the
file). Usage: strip-aws-model.py SRC.json > crates/control/models/NAME.json
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


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        model = json.load(f)
    json.dump(strip(model), sys.stdout, separators=(",", ":"), sort_keys=True)
    sys.stdout.write("\n")
