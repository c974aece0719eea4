#!/usr/bin/env bash
# A single-node Kubernetes cluster on this machine, built from upstream parts and
# run fully offline:
#   etcd (Debian's etcd-server), kube-apiserver, kube-controller-manager,
#   kube-scheduler, kubelet, kube-proxy (built from k8s.io/kubernetes by
#   cluster/build.sh), containerd + runc + CNI bridge (Debian's packages), and the
#   BIND and pause images built from Debian's packages (cluster/image/build.sh).
#
#   scripts/cluster.sh up      install, build (cached), start; idempotent
#   scripts/cluster.sh down    stop every process it started (by pid), remove its state
#   scripts/cluster.sh status  what runs, the node, the kubeconfig to use
#   scripts/cluster.sh env     print `export KUBECONFIG=... PATH=...` for eval
#
# Network: pods on the bridge b9t0 (10.244.0.0/24, node IP 10.244.0.1), Services in
# 10.96.0.0/16 (routed onto the bridge, so nothing of either range leaves this
# machine), and a firewall rule that drops anything forwarded from the bridge to
# any other interface.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="$ROOT/.cache/cluster/run"         # state of the running cluster
PKI="$RUN/pki"
LOGS="$RUN/logs"
PIDS="$RUN/pids"
SOCKDIR=/run/bind9-topology            # short: unix socket paths are limited
BRIDGE=b9t0
NODE_IP=10.244.0.1
POD_CIDR=10.244.0.0/24
SVC_CIDR=10.96.0.0/16
API_SVC_IP=10.96.0.1
NODE_NAME=b9t-node
ETCD_PORT=32379
KUBECONFIG_OUT="$ROOT/.cache/cluster/kubeconfig"
FW_COMMENT="bind9-topology: keep cluster traffic on this machine"
KEPT_LOGS="$ROOT/.cache/cluster/logs"   # + -<UTC time>: the logs of a cluster brought down
KEEP_LOGS=5

log() { echo "cluster: [$SECONDS s] $*" >&2; }
die() { echo "cluster: $*" >&2; exit 1; }

install_packages() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  [[ -x /usr/sbin/runc ]] || command -v runc >/dev/null || missing+=(runc)
  [[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
  command -v etcd >/dev/null || missing+=(etcd-server)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v conntrack >/dev/null || missing+=(conntrack)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v socat >/dev/null || missing+=(socat)
  command -v ip >/dev/null || missing+=(iproute2)
  if ((${#missing[@]})); then
    log "installing ${missing[*]} from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

bin_dir() { bash "$ROOT/cluster/build.sh" | tail -n1; }

# ------------------------------------------------------------------ processes
pid_alive() { [[ -f "$PIDS/$1" ]] && kill -0 "$(cat "$PIDS/$1")" 2>/dev/null; }

start() { # name, command...
  local name=$1; shift
  if pid_alive "$name"; then return 0; fi
  setsid "$@" >"$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! >"$PIDS/$name"
}

stop() { # name: TERM, then KILL after 15 s
  local name=$1 pid i
  [[ -f "$PIDS/$name" ]] || return 0
  pid="$(cat "$PIDS/$name")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDS/$name"
}

wait_for() { # description, seconds, command...
  local what=$1 limit=$2 i; shift 2
  for ((i = 0; i < limit * 2; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  die "timed out after ${limit}s waiting for $what (logs: $LOGS; \`scripts/cluster.sh down\` moves them to $KEPT_LOGS-<UTC time>, keeping the last $KEEP_LOGS)"
}

# down removes $RUN: its logs move to $KEPT_LOGS-<UTC time> first (the last $KEEP_LOGS kept),
# so what a failed `up` logged survives the next `down`.
keep_logs() {
  local kept old
  [[ -d "$LOGS" ]] && [[ -n "$(ls -A "$LOGS" 2>/dev/null)" ]] || return 0
  kept="$KEPT_LOGS-$(date -u +%Y%m%dT%H%M%SZ)"
  [[ -e "$kept" ]] && kept="$kept-$$"
  mv "$LOGS" "$kept"
  log "logs kept in $kept"
  while read -r old; do rm -rf "$old"; done < <(
    find "$(dirname "$KEPT_LOGS")" -maxdepth 1 -type d -name "$(basename "$KEPT_LOGS")-*" |
      sort | head -n "-$KEEP_LOGS")
}

# ------------------------------------------------------------------ PKI
cert() { # name, subject, ext-file-content (may be empty); signs with the cluster CA
  local name=$1 subj=$2 ext=$3
  [[ -f "$PKI/$name.crt" ]] && return 0
  openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  printf '%s\n' "$ext" >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -CAcreateserial -days 365 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr"
}

kubeconfig() { # name (cert), user, server
  cat >"$PKI/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: bind9-topology
  cluster: {certificate-authority: $PKI/ca.crt, server: "https://$NODE_IP:6443"}
users:
- name: $2
  user: {client-certificate: $PKI/$1.crt, client-key: $PKI/$1.key}
contexts:
- name: bind9-topology
  context: {cluster: bind9-topology, user: $2}
current-context: bind9-topology
EOF
}

make_pki() {
  mkdir -p "$PKI"; chmod 700 "$PKI"
  if [[ ! -f "$PKI/ca.crt" ]]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=bind9-topology-ca" \
      -keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null
  fi
  local client="extendedKeyUsage=clientAuth"
  cert apiserver "/CN=kube-apiserver" "extendedKeyUsage=serverAuth
subjectAltName=IP:$NODE_IP,IP:$API_SVC_IP,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert kubelet "/CN=$NODE_NAME" "extendedKeyUsage=serverAuth
subjectAltName=IP:$NODE_IP,DNS:$NODE_NAME"
  # Each component with the identity the built-in RBAC roles expect (no admin certs).
  cert admin "/O=system:masters/CN=bind9-topology-admin" "$client"
  cert apiserver-kubelet-client "/O=kubeadm:cluster-admins/CN=kube-apiserver-kubelet-client" "$client"
  cert controller-manager "/CN=system:kube-controller-manager" "$client"
  cert scheduler "/CN=system:kube-scheduler" "$client"
  cert kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME" "$client"
  cert kube-proxy "/CN=system:kube-proxy" "$client"
  [[ -f "$PKI/sa.key" ]] || openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  kubeconfig admin bind9-topology-admin
  kubeconfig controller-manager system:kube-controller-manager
  kubeconfig scheduler system:kube-scheduler
  kubeconfig kubelet-client "system:node:$NODE_NAME"
  kubeconfig kube-proxy system:kube-proxy
  cp "$PKI/admin.kubeconfig" "$KUBECONFIG_OUT"
  chmod 600 "$PKI"/*.key "$KUBECONFIG_OUT"
}

render_config() { # template -> file
  sed -e "s|@RUN@|$RUN|g" -e "s|@SOCKDIR@|$SOCKDIR|g" -e "s|@PKI@|$PKI|g" \
    -e "s|@NODE_IP@|$NODE_IP|g" -e "s|@POD_CIDR@|$POD_CIDR|g" -e "s|@BRIDGE@|$BRIDGE|g" \
    -e "s|@NODE_NAME@|$NODE_NAME|g" -e "s|@SVC_CIDR@|$SVC_CIDR|g" -e "s|@PAUSE_REF@|$PAUSE_REF|g" "$1" >"$2.new"
  # Rewrite only a changed file: kube-proxy exits when its config file is touched.
  if cmp -s "$2.new" "$2"; then rm -f "$2.new"; else mv "$2.new" "$2"; fi
}

# ------------------------------------------------------------------ network
network_up() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
  fi
  ip addr replace "$NODE_IP/24" dev "$BRIDGE"
  # A fixed MAC: a bridge otherwise takes the lowest MAC of its ports, so a pod's veth
  # joining or leaving can change it, and every pod's ARP entry for the gateway goes stale
  # (packets to and from Services are dropped until it is resolved again).
  ip link set "$BRIDGE" address 02:b9:70:00:00:01
  ip link set "$BRIDGE" up
  # Service addresses go onto the bridge, never to the default route (kube-proxy's
  # DNAT turns them into pod addresses; anything it does not know stays local).
  ip route replace "$SVC_CIDR" dev "$BRIDGE"
  sysctl -qw net.ipv4.ip_forward=1
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
  if ! iptables -C FORWARD -i "$BRIDGE" ! -o "$BRIDGE" -m comment --comment "$FW_COMMENT" -j DROP 2>/dev/null; then
    iptables -I FORWARD 1 -i "$BRIDGE" ! -o "$BRIDGE" -m comment --comment "$FW_COMMENT" -j DROP
  fi
  if ! iptables -C FORWARD -o "$BRIDGE" ! -i "$BRIDGE" -m comment --comment "$FW_COMMENT" -j DROP 2>/dev/null; then
    iptables -I FORWARD 1 -o "$BRIDGE" ! -i "$BRIDGE" -m comment --comment "$FW_COMMENT" -j DROP
  fi
}

network_down() {
  while iptables -D FORWARD -i "$BRIDGE" ! -o "$BRIDGE" -m comment --comment "$FW_COMMENT" -j DROP 2>/dev/null; do :; done
  while iptables -D FORWARD -o "$BRIDGE" ! -i "$BRIDGE" -m comment --comment "$FW_COMMENT" -j DROP 2>/dev/null; do :; done
  ip route del "$SVC_CIDR" dev "$BRIDGE" 2>/dev/null || true
  ip link del "$BRIDGE" 2>/dev/null || true
  # Chains and rules the CNI plugins left behind.
  local chain
  for chain in $(iptables -t nat -S 2>/dev/null | sed -n 's/^-N \(CNI-[^ ]*\)/\1/p'); do
    iptables -t nat -F "$chain" 2>/dev/null || true
  done
  local rule
  while read -r rule; do
    [[ "$rule" == "-A POSTROUTING "*"-j CNI-"* ]] || continue
    eval "iptables -t nat ${rule/#-A/-D}" 2>/dev/null || true
  done < <(iptables -t nat -S POSTROUTING 2>/dev/null)
  for chain in $(iptables -t nat -S 2>/dev/null | sed -n 's/^-N \(CNI-[^ ]*\)/\1/p'); do
    iptables -t nat -X "$chain" 2>/dev/null || true
  done
  # kubelet's own chains (kube-proxy --cleanup leaves them).
  local table
  for table in filter nat mangle; do
    while read -r rule; do
      [[ "$rule" == "-A "*"-j KUBE-"* ]] || continue
      eval "iptables -t $table ${rule/#-A/-D}" 2>/dev/null || true
    done < <(iptables -t "$table" -S 2>/dev/null)
    for chain in $(iptables -t "$table" -S 2>/dev/null | sed -n 's/^-N \(KUBE-[^ ]*\)/\1/p'); do
      iptables -t "$table" -F "$chain" 2>/dev/null || true
      iptables -t "$table" -X "$chain" 2>/dev/null || true
    done
  done
  for chain in CNI-FORWARD CNI-ADMIN; do
    iptables -D FORWARD -m comment --comment "CNI firewall plugin rules" -j "$chain" 2>/dev/null || true
    iptables -F "$chain" 2>/dev/null || true; iptables -X "$chain" 2>/dev/null || true
  done
}

# ------------------------------------------------------------------ up / down
up() {
  [[ "$(id -u)" == 0 ]] || die "run as root (it starts containerd, kubelet and sets up a bridge)"
  # Kubelet, runc and the CNI plugins write machine-wide paths: one cluster per machine.
  # A cluster whose processes were killed (a machine handed on, a stopped session)
  # leaves them behind: clean them before starting.
  if [[ -f "$SOCKDIR/owner" ]]; then
    local other; other="$(cat "$SOCKDIR/owner")"
    if [[ -f "$other/pids/containerd" ]] && kill -0 "$(cat "$other/pids/containerd")" 2>/dev/null; then
      [[ "$other" == "$RUN" ]] ||
        die "the cluster of another checkout runs on this machine ($other); stop it with its scripts/cluster.sh down"
    else
      log "cleaning up what a stopped cluster left ($other)"
      cleanup_leftovers "$other"
      rm -rf "$SOCKDIR"
    fi
  fi
  install_packages
  local bin images
  bin="$(bin_dir)"
  images="$(bash "$ROOT/cluster/image/build.sh" "$bin/pause" | tail -n1)"
  BIND_REF="$(sed -n 1p "$images/refs")"; PAUSE_REF="$(sed -n 2p "$images/refs")"
  mkdir -p "$RUN" "$LOGS" "$PIDS" "$SOCKDIR" "$RUN/cni"
  echo "$RUN" >"$SOCKDIR/owner"
  echo "$bin" >"$RUN/bin"
  make_pki
  network_up

  render_config "$ROOT/cluster/config/containerd.toml" "$RUN/containerd.toml"
  render_config "$ROOT/cluster/config/cni.conflist" "$RUN/cni/10-bind9-topology.conflist"
  render_config "$ROOT/cluster/config/kubelet.yaml" "$RUN/kubelet.yaml"
  render_config "$ROOT/cluster/config/kube-proxy.yaml" "$RUN/kube-proxy.yaml"

  log "containerd"
  start containerd containerd --config "$RUN/containerd.toml"
  wait_for containerd 30 ctr --address "$SOCKDIR/containerd.sock" version
  local ref tar
  for tar in "$images"/*.tar; do
    ref="$(tar -xOf "$tar" manifest.json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["RepoTags"][0])')"
    if ! ctr --address "$SOCKDIR/containerd.sock" -n k8s.io images ls -q | grep -qx "$ref"; then
      log "importing $ref"
      ctr --address "$SOCKDIR/containerd.sock" -n k8s.io images import "$tar" >/dev/null
    fi
  done

  log "etcd"
  start etcd etcd --name b9t --data-dir "$RUN/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls http://127.0.0.1:32380 --initial-advertise-peer-urls http://127.0.0.1:32380 \
    --initial-cluster b9t=http://127.0.0.1:32380 --listen-metrics-urls http://127.0.0.1:32381
  wait_for etcd 30 curl -fsS "http://127.0.0.1:32381/health"

  log "kube-apiserver"
  start kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address="$NODE_IP" --advertise-address="$NODE_IP" --secure-port=6443 \
    --service-cluster-ip-range="$SVC_CIDR" \
    --client-ca-file="$PKI/ca.crt" --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" --kubelet-preferred-address-types=InternalIP \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --anonymous-auth=false --profiling=false --v=1
  wait_for kube-apiserver 120 "$bin/kubectl" --kubeconfig "$KUBECONFIG_OUT" get --raw /readyz
  # The apiserver client cert's group gets the kubelet API (logs, exec, port-forward).
  "$bin/kubectl" --kubeconfig "$KUBECONFIG_OUT" create clusterrolebinding kube-apiserver-kubelet-client \
    --clusterrole=system:kubelet-api-admin --user=kube-apiserver-kubelet-client \
    --dry-run=client -o yaml | "$bin/kubectl" --kubeconfig "$KUBECONFIG_OUT" apply -f - >/dev/null

  log "kube-controller-manager, kube-scheduler"
  start kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig="$PKI/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$PKI/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$PKI/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --controllers='*,-nodeipam,-cloud-node-lifecycle' --v=1
  start kube-scheduler "$bin/kube-scheduler" \
    --kubeconfig="$PKI/scheduler.kubeconfig" \
    --authentication-kubeconfig="$PKI/scheduler.kubeconfig" \
    --authorization-kubeconfig="$PKI/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --v=1

  log "kubelet, kube-proxy"
  start kubelet "$bin/kubelet" --config="$RUN/kubelet.yaml" \
    --kubeconfig="$PKI/kubelet-client.kubeconfig" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=1
  start kube-proxy "$bin/kube-proxy" --config="$RUN/kube-proxy.yaml" --v=1

  local k=("$bin/kubectl" --kubeconfig "$KUBECONFIG_OUT")
  wait_for "node $NODE_NAME Ready" 180 bash -c \
    "'${k[0]}' --kubeconfig '$KUBECONFIG_OUT' get node $NODE_NAME -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
  wait_for "the default ServiceAccount" 120 "${k[@]}" -n default get serviceaccount default
  wait_for "kube-proxy's rules" 60 bash -c "iptables -t nat -S KUBE-SERVICES | grep -q 'default/kubernetes:https'"
  log "ready: node $NODE_NAME, images $BIND_REF and $PAUSE_REF"
  echo "export KUBECONFIG=$KUBECONFIG_OUT PATH=$bin:\$PATH"
}

# What a cluster leaves in machine-wide places once its processes are gone: pod
# shims, mounts, netns, the bridge and chains, kubepods cgroups, kubelet's dirs.
cleanup_leftovers() { # state dir of that cluster (its mounts are released too)
  local run=$1 bin="" pid m c
  [[ -f "$run/bin" ]] && bin="$(cat "$run/bin")"
  # Shims that containerd started for the pods (their socket paths name SOCKDIR).
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $SOCKDIR/containerd.sock" || true); do
    kill -9 "$pid" 2>/dev/null || true
  done
  [[ -n "$bin" && -x "$bin/kube-proxy" ]] && "$bin/kube-proxy" --cleanup >/dev/null 2>&1 || true
  # Mounts under the fixed paths kubelet and containerd use, deepest first.
  for m in $(awk '{print $2}' /proc/mounts | grep -E "^(/var/lib/kubelet|$run|$SOCKDIR|/run/containerd|/run/netns/cni-)" | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  for m in /run/netns/cni-*; do [[ -e "$m" ]] && ip netns del "$(basename "$m")" 2>/dev/null || true; done
  network_down
  for c in /sys/fs/cgroup/*/kubepods; do # deepest first
    [[ -d "$c" ]] || continue
    find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  rm -rf /var/lib/kubelet /var/log/pods /var/log/containers /var/lib/cni
}

down() {
  [[ "$(id -u)" == 0 ]] || die "run as root"
  if [[ -f "$SOCKDIR/owner" && "$(cat "$SOCKDIR/owner")" != "$RUN" ]]; then
    die "the cluster on this machine belongs to another checkout ($(cat "$SOCKDIR/owner")); run its scripts/cluster.sh down"
  fi
  mkdir -p "$PIDS"
  local bin=""; [[ -f "$RUN/bin" ]] && bin="$(cat "$RUN/bin")"
  # kubelet first, so it restarts nothing; then every pod container and sandbox.
  stop kubelet
  if pid_alive containerd; then
    local ctr=(ctr --address "$SOCKDIR/containerd.sock" -n k8s.io) id
    for id in $("${ctr[@]}" tasks ls -q 2>/dev/null); do
      "${ctr[@]}" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    sleep 1
    for id in $("${ctr[@]}" tasks ls -q 2>/dev/null); do "${ctr[@]}" tasks rm -f "$id" >/dev/null 2>&1 || true; done
    for id in $("${ctr[@]}" containers ls -q 2>/dev/null); do "${ctr[@]}" containers rm "$id" >/dev/null 2>&1 || true; done
  fi
  stop kube-proxy
  stop kube-scheduler
  stop kube-controller-manager
  stop kube-apiserver
  stop etcd
  stop containerd
  cleanup_leftovers "$RUN"
  keep_logs
  rm -rf "$RUN" "$SOCKDIR" "$KUBECONFIG_OUT"
  log "down: every process stopped, state removed"
}

status() {
  local name any=0
  for name in containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
    if pid_alive "$name"; then echo "$name: running (pid $(cat "$PIDS/$name"))"; any=1
    else echo "$name: stopped"; fi
  done
  if ((any)) && [[ -f "$RUN/bin" ]]; then
    "$(cat "$RUN/bin")/kubectl" --kubeconfig "$KUBECONFIG_OUT" get nodes -o wide 2>&1 || true
    echo "export KUBECONFIG=$KUBECONFIG_OUT PATH=$(cat "$RUN/bin"):\$PATH"
  fi
}

env_() {
  [[ -f "$RUN/bin" ]] || die "no cluster is up: run scripts/cluster.sh up"
  echo "export KUBECONFIG=$KUBECONFIG_OUT PATH=$(cat "$RUN/bin"):\$PATH"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) env_ ;;
  build) install_packages; b="$(bin_dir)"; bash "$ROOT/cluster/image/build.sh" "$b/pause" ;;
  *) echo "usage: $0 up|down|status|env|build" >&2; exit 2 ;;
esac
