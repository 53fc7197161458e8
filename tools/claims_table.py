#!/usr/bin/env python3
"""Prints the README's table of a reproduce run's claims from its claims.json, so the table in
README.md is the file's content and nothing else.

    python3 tools/claims_table.py data/reproduce/quick/claims.json
"""
import json
import sys

VERDICT = {
    "reproduced": "reproduced",
    "not_reproduced": "not reproduced",
    "inconclusive": "inconclusive",
    "not_testable": "not testable here",
}


def main(path):
    with open(path) as f:
        d = json.load(f)
    claims = d["claims"] if isinstance(d, dict) else d
    print("| claim | verdict | figure | null rate | positive control |")
    print("|---|---|---|---|---|")
    for c in claims:
        null = c.get("null")
        null_text = f"{null['passed']}/{null['draws']}" if null and null.get("draws") else "–"
        pc = c.get("positive_control")
        pc_text = ("passed" if pc["passed"] else "failed") if pc else "–"
        print(f"| {c['id']} | {VERDICT[c['verdict']]} | {c.get('figure') or '–'} | {null_text} | {pc_text} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "data/reproduce/quick/claims.json")
