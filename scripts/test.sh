#!/usr/bin/env bash
# The whole gtmd test suite, as CI runs it (.ci/run calls exactly this).
# On a fresh Debian machine with Rust it installs the external programs the end-to-end tests
# drive (dig from bind9-dnsutils; prometheus and promtool; unbound; systemd-analyze), then
# runs formatting, lints and every test, including the ones ignored by a plain
# `cargo test` because they need those programs, and checks the deployment artefacts
# (hadolint and kubernetes-validate come from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v dig >/dev/null 2>&1 || need_pkgs+=(bind9-dnsutils)
command -v promtool >/dev/null 2>&1 || need_pkgs+=(prometheus)
command -v unbound >/dev/null 2>&1 || need_pkgs+=(unbound)
command -v systemd-analyze >/dev/null 2>&1 || need_pkgs+=(systemd)
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
