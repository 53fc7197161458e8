"""Shared by the fixture scripts: JSON with one case per line, so fixture diffs stay readable."""
import json


def dump_one_case_per_line(obj, key, fh):
    """JSON with each element of obj[key] on its own line (diff-friendly)."""
    fh.write("{\n")
    for k, v in obj.items():
        if k != key:
            fh.write(f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)},\n")
    fh.write(f" {json.dumps(key)}: [\n")
    items = obj[key]
    for i, c in enumerate(items):
        fh.write("  " + json.dumps(c, ensure_ascii=False) + ("," if i + 1 < len(items) else "") + "\n")
    fh.write(" ]\n}\n")
