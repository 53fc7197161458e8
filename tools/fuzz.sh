#!/usr/bin/env bash
# Fuzzes every loader of outside bytes (targets in fuzz/fuzz_targets, contract in fuzz/harness.rs)
# for a given time each, one target at a time, and writes a table of figures.
#
#   tools/fuzz.sh [SECONDS_PER_TARGET] [RESULTS.md] [TARGET ...]     (defaults: 600, fuzz/results.md, all)
#
# Steps: the seed corpora are written by `tests/fuzz_regressions.rs` (from the committed fixtures
# and data) into fuzz/corpus/<target>/; the targets are built with `cargo fuzz` (libFuzzer,
# coverage-guided; RUSTC_BOOTSTRAP=1 lets the stable toolchain take the flags it needs); each runs
# for its share of time under `nice -n 19`. A crash, timeout or out-of-memory input is copied to
# tests/fixtures/fuzz/<target>/, where `cargo test --test fuzz_regressions` replays it: it fails
# until the loader is fixed, and guards the fix afterwards.
#
# Limits per input: 10 s (-timeout; a hang is a failure), 256 MB per allocation (the targets' allocator;
# see fuzz/harness.rs), 2 GB resident (-rss_limit_mb).
# Builds take the shared lock (KNOWLENS_LOCK, default /tmp/knowlens-heavy.lock); the runs do not:
# at the lowest priority they only use idle CPU, so on a shared machine exec/s are lower.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-600}
out=${2:-fuzz/results.md}
shift $(( $# < 2 ? $# : 2 ))
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(gguf safetensors npz saelens_cfg gemma_scope_config tokenizer_json chat_template entities_jsonl labels
             corpus_index activation_store checkpoint)
fi
lock=${KNOWLENS_LOCK:-/tmp/knowlens-heavy.lock}
triple=$(rustc -vV | sed -n 's/^host: //p')
bin=fuzz/target/$triple/release

echo "== seed corpora"
rm -rf fuzz/corpus-seeds
KNOWLENS_FUZZ_SEEDS="$PWD/fuzz/corpus-seeds" flock "$lock" nice cargo test --release --test fuzz_regressions \
    seed_corpora_load -q
echo "== build"
RUSTC_BOOTSTRAP=1 flock "$lock" nice cargo fuzz build -s none --debug-assertions

{
    echo "| target | executions | time (s) | exec/s | crashes |"
    echo "|---|---:|---:|---:|---:|"
} > "$out.rows"
for t in "${targets[@]}"; do
    corpus=fuzz/corpus/$t
    artifacts=fuzz/artifacts/$t
    mkdir -p "$corpus" "$artifacts"
    cp -n fuzz/corpus-seeds/"$t"/* "$corpus"/ 2>/dev/null || true
    crashes_before=$(ls "$artifacts" | wc -l)
    execs=0
    start=$(date +%s)
    # libFuzzer stops at the first crash; start it again until the target's time is used up.
    while :; do
        left=$(( secs - ($(date +%s) - start) ))
        [ "$left" -ge 5 ] || break
        log=$(mktemp)
        nice -n 19 "$bin/$t" "$corpus" -max_total_time="$left" -timeout=10 \
            -rss_limit_mb=2048 -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1 && rc=0 || rc=$?
        n=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
        execs=$(( execs + ${n:-0} ))
        if [ "$rc" -ne 0 ]; then
            echo "-- $t: libFuzzer exited with $rc:"
            grep -E 'ERROR|panicked|SUMMARY|Test unit written' "$log" | head -20 || true
        fi
        rm -f "$log"
        [ "$rc" -eq 0 ] && break
    done
    elapsed=$(( $(date +%s) - start ))
    crashes=$(( $(ls "$artifacts" | wc -l) - crashes_before ))
    for a in "$artifacts"/*; do
        [ -e "$a" ] || continue
        mkdir -p "tests/fixtures/fuzz/$t"
        cp -n "$a" "tests/fixtures/fuzz/$t/$(basename "$a")" 2>/dev/null || true
    done
    rate=$(( elapsed > 0 ? execs / elapsed : 0 ))
    echo "| $t | $execs | $elapsed | $rate | $crashes |" >> "$out.rows"
    echo "== $t: $execs executions in ${elapsed}s ($rate/s), $crashes new crash inputs"
done

{
    echo "Fuzzing run of $(date -u '+%Y-%m-%d %H:%M UTC'), ${secs} s per target, one target at a time under"
    echo "nice -n 19 on $(nproc) CPU cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1));"
    echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared: exec/s are lower than alone)."
    echo
    cat "$out.rows"
} > "$out"
rm -f "$out.rows"
cat "$out"
