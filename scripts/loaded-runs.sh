#!/usr/bin/env bash
# Runs the whole integration test binary (ignored tests included, so the external programs
# scripts/test.sh installs must be present) N times in a row (default 20) while a busy loop
# keeps one core busy, and prints each run's result and the count of failures: the check
# that no test depends on the machine's speed. Logs: target/loaded-runs/run-K.log.
#   scripts/loaded-runs.sh [N]
# Stops the busy loop (by its PID) when it ends, also on Ctrl-C.
set -uo pipefail
cd "$(dirname "$0")/.."
runs="${1:-20}"
logs=target/loaded-runs
mkdir -p "$logs"
cargo test --test it --locked --no-run >"$logs/build.log" 2>&1 || {
  echo "build failed: $logs/build.log" >&2
  exit 1
}
sh -c 'while :; do :; done' &
busy=$!
trap 'kill "$busy"' EXIT
failed=0
for i in $(seq 1 "$runs"); do
  start=$SECONDS
  if cargo test --test it --locked -- --include-ignored >"$logs/run-$i.log" 2>&1; then
    result=ok
  else
    result=FAILED
    failed=$((failed + 1))
    grep -E '^test .* FAILED$' "$logs/run-$i.log"
  fi
  echo "run $i: $result ($((SECONDS - start)) s) $(grep -E '^test result' "$logs/run-$i.log" | tail -1)"
done
echo "$runs runs with one core kept busy: $((runs - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
