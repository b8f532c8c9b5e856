#!/usr/bin/env bash
# Runs each gtmd fuzz target for a bounded time and prints executions and crashes.
#   scripts/fuzz.sh [seconds per target, default 60] [target ...]
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain, or
# RUSTC_BOOTSTRAP=1 with stable. Corpora grow in fuzz/corpus/ (not committed), starting
# from fuzz/seeds/; a crash lands in fuzz/artifacts/<target>/ and must be copied to
# tests/data/fuzz-crashes/<target>/ once fixed (tests/it/fuzz_regressions.rs replays it).
# Built without AddressSanitizer (-s none): the fuzzed code is safe Rust (the only unsafe
# code, the recvmmsg/sendmmsg socket layer, is not reached), so a panic is what a bug looks
# like, and the fuzzers run several times faster.
# Exits non-zero if any target crashed.
set -uo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
targets=("$@")
((${#targets[@]})) || targets=(packet config differential fleet)

toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
fi

cargo "${toolchain[@]}" fuzz build -O -s none || exit 1

failed=0
total=0
printf '%-14s %12s %8s %8s\n' target executions seconds crashes
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  dict=()
  [ -f "fuzz/dicts/$t.dict" ] && dict=("-dict=fuzz/dicts/$t.dict")
  log="fuzz/corpus/$t.log"
  cargo "${toolchain[@]}" fuzz run -O -s none "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
    "${dict[@]}" >"$log" 2>&1
  rc=$?
  execs=$(grep -oE '^stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
  took=$(grep -oE '^Done [0-9]+ runs in [0-9]+ second' "$log" | awk '{print $5}' | tail -1)
  crashes=0
  if [ "$rc" -ne 0 ]; then
    crashes=1
    failed=1
    grep -E "panicked at|ERROR: libFuzzer|SUMMARY|artifact_prefix|Test unit written" "$log" | head -5 >&2
  fi
  total=$((total + ${execs:-0}))
  printf '%-14s %12s %8s %8s\n' "$t" "${execs:-?}" "${took:-?}" "$crashes"
done
printf '%-14s %12s\n' total "$total"
exit "$failed"
