#!/usr/bin/env bash
# Kill `knowlens reproduce` in the middle of stages and check that rerunning it ends with the same
# report as an uninterrupted run, without redoing finished stages.
#
#   tools/reproduce_kill_test.sh REF_DIR WORK_DIR "stage:seconds stage:seconds ..."
#
# REF_DIR: a finished `reproduce --quick` output (the uninterrupted run). Its later stages, from
# the first stage named in the list, are removed from a copy in WORK_DIR and rerun; the process
# group is killed with SIGKILL `seconds` after the named stage starts, once per entry, then the
# run is completed and every stage's JSON and claims.json are compared with REF_DIR's.
# COMPARE_ONLY=1 skips the runs and only compares WORK_DIR with REF_DIR.
set -euo pipefail
ref=$1 work=$2 kills=$3
if [ "${COMPARE_ONLY:-0}" != 1 ]; then
bin=${KNOWLENS_BIN:-target/release/knowlens}
rm -rf "$work"; cp -r "$ref" "$work"
first=${kills%%:*}
# Stage order from the plan; remove the records and outputs of `first` and every later stage.
mapfile -t order < <(python3 -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["order"]))' "$ref/stages/order.json" 2>/dev/null || true)
if [ ${#order[@]} -eq 0 ]; then
  order=(fetch-base fetch-chat label-base corpus sae-cache sae-train discover-base attention patch steer-base label-chat discover-chat steer)
fi
declare -A dir=([label-base]=labels-base [sae-cache]=store [sae-train]=saes [discover-base]=discover-base
  [attention]=attention [patch]=patch [steer-base]=steer-base [label-chat]=labels-chat
  [discover-chat]=discover-chat [steer]=steer)
drop=0
for s in "${order[@]}"; do
  [ "$s" = "$first" ] && drop=1
  if [ $drop = 1 ]; then
    rm -f "$work/stages/$s.json"
    [ -n "${dir[$s]:-}" ] && rm -rf "${work:?}/${dir[$s]}"
  fi
done
rm -f "$work/report.html" "$work/claims.json"
for k in $kills; do
  stage=${k%%:*} secs=${k##*:}
  echo "== run until $secs s into $stage, then SIGKILL"
  setsid "$bin" reproduce --quick --out "$work" > "$work.log" 2>&1 &
  pid=$!
  until grep -q "\] $stage: " "$work.log" 2>/dev/null; do sleep 1; kill -0 $pid 2>/dev/null || break; done
  sleep "$secs"
  kill -KILL -- -$pid 2>/dev/null || true
  wait $pid 2>/dev/null || true
  grep -E "finished in|skipped" "$work.log" | tail -3 || true
done
echo "== final run"
"$bin" reproduce --quick --out "$work" > "$work.log" 2>&1
grep -E "finished in|skipped" "$work.log"
fi
# Compare every JSON the stages wrote (wall times and paths aside) and the claims.
python3 - "$ref" "$work" <<'PY'
import gzip, json, os, sys
ref, work = sys.argv[1:]
# Wall times, this-run counters and the output directory's own name differ between two runs by
# design; everything else must be identical.
def volatile(k):
    return k.startswith("seconds") or k.startswith("elapsed") or k.endswith("_this_run")
def clean(x):
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items() if not volatile(k)}
    if isinstance(x, list):
        return [clean(v) for v in x]
    if isinstance(x, str):
        return x.replace(work, "<OUT>").replace(ref, "<OUT>")
    return x
def load(p):
    op = gzip.open if p.endswith(".gz") else open
    with op(p, "rt") as f:
        t = f.read()
    if p.endswith(".json"):
        return clean(json.loads(t))
    if ".jsonl" in p:
        return [clean(json.loads(l)) for l in t.splitlines() if l.strip()]
    return t.replace(work, "<OUT>").replace(ref, "<OUT>")
bad, n = [], 0
for root, _, files in os.walk(ref):
    for f in files:
        if not (f.endswith(".json") or f.endswith(".jsonl") or f.endswith(".jsonl.gz") or f.endswith(".csv")):
            continue
        rel = os.path.relpath(os.path.join(root, f), ref)
        if rel.startswith("stages/") or rel.startswith("store/") or "checkpoint" in rel:
            continue
        w = os.path.join(work, rel)
        n += 1
        if not os.path.exists(w):
            bad.append(f"missing {rel}")
        elif load(os.path.join(ref, rel)) != load(w):
            bad.append(f"differs {rel}")
print(f"compared {n} files (wall times aside): {len(bad)} differ or are missing")
for b in bad:
    print("  " + b)
sys.exit(1 if bad else 0)
PY
