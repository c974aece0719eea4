#!/usr/bin/env bash
# The main job on real Kubernetes clusters on this machine: one cluster per region
# up (scripts/cluster.sh), then `pulumi up` of the primary stack and of every region
# stack (Pulumi.cluster*.yaml), each against its own cluster (`kubernetes:context` in
# its stack file), with BIND in pods, each stack's transfer-gate verdict printed,
# then `pulumi destroy` of every stack and the clusters down.
#
#   bash scripts/run-cluster.sh          up, verdict, destroy, down
#   bash scripts/run-cluster.sh --keep   leave the stacks and the cluster running
#                                        (then: eval "$(scripts/cluster.sh env)")
#
# Stack state lives in a file backend under .cache/; the stack files of the
# repository are not modified: Pulumi runs in .cache/cluster/project, a copy of
# the program, components and configs made afresh on each run (so what is in
# this checkout is what is deployed), whose stack files also keep the TSIG
# secret, encrypted, set once through stdin (never on a command line).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
KEEP=0 DESTROY_ONLY=0
case "${1:-}" in
  --keep) KEEP=1 ;;
  --destroy) DESTROY_ONLY=1 ;;
  "") ;;
  *) echo "usage: $0 [--keep|--destroy]" >&2; exit 2 ;;
esac
STACKS=(cluster cluster-us-west-2 cluster-eu-west-1)

bash scripts/install-deps.sh requirements.txt
export PATH="$PATH:/usr/sbin"
bash scripts/cluster.sh up >/dev/null
eval "$(bash scripts/cluster.sh env)"
ENGINE_ENV_QUIET=1 source scripts/engine-env.sh

PROJECT=.cache/cluster/project
mkdir -p "$PROJECT"
cp Pulumi.yaml "$PROJECT/Pulumi.yaml"
for item in __main__.py components bind9_topology configs requirements.txt; do
  rm -rf "${PROJECT:?}/$item"
  cp -r "$item" "$PROJECT/$item"
done
SECRET_FILE=.cache/cluster/tsig-secret
if [[ ! -s "$SECRET_FILE" ]]; then
  (umask 077; python3 -m components keygen >"$SECRET_FILE")
fi

config_file() { echo "$PROJECT/Pulumi.$1.yaml"; }
p() { (cd "$PROJECT" && pulumi "$@"); }

verdict() { # stack: print each gate's verdict from the stack outputs
  local outputs
  outputs="$(p stack output --json --stack "$1" 2>/dev/null || echo '{}')"
  python3 - "$outputs" <<'PY'
import json, sys
out = json.loads(sys.argv[1])
for name, zone in sorted((out.get("zones") or {}).items()):
    verdict = {True: "ready", False: "NOT ready", None: "no gate"}[zone.get("ready")]
    print(f"  zone {zone['zoneName']} ({zone['type']}, {name}): gate {verdict}, "
          f"served serial {zone.get('servedSerial')}")
for name, inst in sorted((out.get("instances") or {}).items()):
    print(f"  instance {name}: {inst['role']} at {inst['address']}, {inst['replicas']} replica(s)")
PY
}

destroy_all() {
  local i stack rc=0
  for ((i = ${#STACKS[@]} - 1; i >= 0; i--)); do
    stack="${STACKS[$i]}"
    [[ -f "$(config_file "$stack")" ]] || continue
    p destroy --yes --non-interactive --stack "$stack" \
      >".cache/cluster/destroy-$stack.log" 2>&1 || { rc=1; echo "destroy $stack failed (.cache/cluster/destroy-$stack.log)"; }
  done
  return $rc
}

status=0
if ((DESTROY_ONLY)); then
  destroy_all || status=1
  bash scripts/cluster.sh down
  exit $status
fi
for stack in "${STACKS[@]}"; do
  cfg="$(config_file "$stack")"
  cp "Pulumi.$stack.yaml" "$cfg.new"
  if [[ -f "$cfg" ]]; then # keep the salt and the encrypted secret of an earlier run
    python3 - "$cfg" "$cfg.new" <<'PY'
import sys, yaml
old, new = (yaml.safe_load(open(p)) or {} for p in sys.argv[1:3])
key = "bind9-topology:tsigSecret"
if key in (old.get("config") or {}):
    new["config"][key] = old["config"][key]
if "encryptionsalt" in old:
    new["encryptionsalt"] = old["encryptionsalt"]
yaml.safe_dump(new, open(sys.argv[2], "w"), sort_keys=False)
PY
  fi
  mv "$cfg.new" "$cfg"
  read -r namespace context < <(python3 -c 'import sys, yaml; c = yaml.safe_load(open(sys.argv[1]))["config"]; print(c["bind9-topology:namespace"], c.get("kubernetes:context", ""))' "$cfg")
  kubectl ${context:+--context "$context"} create namespace "$namespace" --dry-run=client -o yaml |
    kubectl ${context:+--context "$context"} apply -f - >/dev/null
  p stack select --create --non-interactive "$stack" >/dev/null
  if ! grep -q 'bind9-topology:tsigSecret' "$cfg"; then
    p config set --secret --stack "$stack" bind9-topology:tsigSecret <"$SECRET_FILE"
  fi
  echo "== pulumi up --stack $stack"
  start=$SECONDS
  if p up --yes --skip-preview --non-interactive --stack "$stack" \
      >".cache/cluster/up-$stack.log" 2>&1; then
    echo "   done in $((SECONDS - start))s"
  else
    status=1
    echo "   FAILED after $((SECONDS - start))s; the engine said:"
    tail -n 40 ".cache/cluster/up-$stack.log" | sed 's/^/   | /'
  fi
  verdict "$stack"
done
echo
for context in $(kubectl config get-contexts -o name); do
  echo "-- $context"
  kubectl --context "$context" get pods,services -A -o wide -l app.kubernetes.io/name=bind9 || true
done

if ((KEEP)); then
  echo "stacks and cluster left running: eval \"\$(bash scripts/cluster.sh env)\"; destroy with"
  echo "  bash scripts/run-cluster.sh --destroy"
  exit $status
fi
destroy_all || status=1
bash scripts/cluster.sh down
if ((status)); then echo "VERDICT: NOT READY"; else echo "VERDICT: every stack up, every gate ready"; fi
exit $status
