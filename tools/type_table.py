#!/usr/bin/env python3
"""Which entity types the model knows, measured before they are used (issue 28).

Reads one labelling directory that holds an estimate-mode run and a greedy run of the same
entities with the same templates (`knowlens label --mode estimate --out DIR`, then
`knowlens label --mode greedy --out DIR`; the second reuses DIR/templates.json), and writes a
markdown table per type:

* known / unknown / dropped under the paper's two-attribute rule (estimate mode) among the 100
  most popular entities of the type and among the rest (the sampled tail), and known in test;
* per counting attribute: the share reliably correct (estimate, head and tail), the share of
  greedy answers judged correct, and the greedy answers' chance rates (shuffled over entities,
  best constant answer) from DIR/greedy/chance.json;
* the templates tried per attribute with the number of the 48 most popular entities each made
  reliably correct (the choice rule of estimate mode).

    python3 tools/type_table.py DIR [--types person,company,city] > table.md

Standard library only; reads `labels.jsonl` or `labels.jsonl.gz`.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
from pathlib import Path

HEAD = 100


def read_labels(d: Path) -> list[dict]:
    p = d / "labels.jsonl"
    if p.exists():
        return [json.loads(line) for line in p.open(encoding="utf-8")]
    with gzip.open(d / "labels.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_ids(d: Path) -> set[str]:
    s = json.loads((d / "splits.json").read_text(encoding="utf-8"))
    return {i for ids in s["test"].values() for i in ids}


def pct(a: int, b: int) -> str:
    return f"{100 * a / b:.1f}" if b else "–"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--types", default="")
    args = ap.parse_args()
    est = read_labels(args.dir / "estimate")
    test = test_ids(args.dir / "estimate")
    greedy_dir = args.dir / "greedy"
    greedy = {r["id"]: r for r in read_labels(greedy_dir)} if (greedy_dir / "splits.json").exists() else {}
    chance = {c["attribute"]: c for c in json.loads((greedy_dir / "chance.json").read_text())} \
        if (greedy_dir / "chance.json").exists() else {}
    templates = json.loads((args.dir / "templates.json").read_text(encoding="utf-8"))
    types = [t for t in args.types.split(",") if t] or sorted({r["type"] for r in est})

    print("## Classes under the two-attribute rule (estimate mode)\n")
    print(f"Head: the {HEAD} most popular entities of the type; tail: the others (the sampled tail).\n")
    print("| type | head known / unknown / dropped | tail known / unknown / dropped | known in test | unknown in test |")
    print("|---|---|---|---|---|")
    for t in types:
        rows = sorted((r for r in est if r["type"] == t), key=lambda r: r["popularity_rank"] or 0)
        parts = []
        for part in (rows[:HEAD], rows[HEAD:]):
            c = collections.Counter(r["class"] for r in part)
            parts.append(f"{c['known']} / {c['unknown']} / {c['dropped']}")
        kt = sum(1 for r in rows if r["class"] == "known" and r["id"] in test)
        ut = sum(1 for r in rows if r["class"] == "unknown" and r["id"] in test)
        print(f"| {t} | {parts[0]} | {parts[1]} | {kt} | {ut} |")

    print("\n## Counting attributes: the model against chance\n")
    print("Reliably correct: estimated P(one answer at T = 1 is right) ≥ 0.2586. Greedy: the share of "
          "greedy answers judged correct, beside its chance rates (the model's answers shuffled over "
          "the type's entities; the best constant answer), all in %.\n")
    print("| attribute | asked | reliably correct, head | reliably correct, tail | greedy | shuffled | constant (answer) | beats chance |")
    print("|---|---|---|---|---|---|---|---|")
    for t in types:
        rows = sorted((r for r in est if r["type"] == t), key=lambda r: r["popularity_rank"] or 0)
        head_ids = {r["id"] for r in rows[:HEAD]}
        attrs = sorted({q["attribute"] for r in rows for q in r["records"]})
        for a in attrs:
            n = {True: [0, 0], False: [0, 0]}
            for r in rows:
                for q in r["records"]:
                    if q["attribute"] == a:
                        n[r["id"] in head_ids][0] += bool(q.get("correct"))
                        n[r["id"] in head_ids][1] += 1
            c = chance.get(f"{t}.{a}")
            g = (f"{c['model']:.1f} | {c['shuffled']:.1f} | {c['constant']:.1f} ({c['best_constant'][:30]!r}) | "
                 f"{'yes' if c['beats_chance'] else 'no'}") if c else "– | – | – | –"
            print(f"| {t}.{a} | {n[True][1] + n[False][1]} | {pct(*n[True])} | {pct(*n[False])} | {g} |")

    print("\n## Templates tried\n")
    print("Per attribute, each base template with the number of the type's most popular entities "
          "(with a usable gold value) it made reliably correct; the chosen one in bold.\n")
    for t in types:
        for key, s in sorted(templates.items()):
            if not key.startswith(t + "."):
                continue
            print(f"* `{key}` (of {s['asked']}):")
            for i, tpl in enumerate(s["templates"]):
                n = s["correct"][i] if i < len(s["correct"]) else "–"
                mark = "**" if i == s["chosen"] else ""
                print(f"  * {mark}{n}{mark}: `{tpl}`")


if __name__ == "__main__":
    main()
