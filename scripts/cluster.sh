#!/usr/bin/env bash
# One single-node Kubernetes cluster per region on this machine, built from upstream
# parts and run fully offline (ADR 15):
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy
#   (k8s.io/kubernetes), MetalLB's controller and speaker (LoadBalancer addresses, L2)
#   and kube-router's firewall (NetworkPolicy), all built by cluster/build.sh;
#   containerd + runc + CNI bridge (Debian's packages) and the BIND and pause images
#   built from Debian's packages (cluster/image/build.sh); one etcd (Debian's
#   etcd-server) shared by the clusters, each under its own key prefix.
#
#   scripts/cluster.sh up [region...]  install, build (cached), start; idempotent
#   scripts/cluster.sh down            stop every process it started (by pid), remove its state
#   scripts/cluster.sh status          what runs, the nodes, the kubeconfig to use
#   scripts/cluster.sh env             print `export KUBECONFIG=... PATH=...` for eval
#   scripts/cluster.sh regions         the regions, one per line: name index node-ip lb-pool
#
# Network (everything stays on this machine):
#   b9t0           the host bridge, the network between regions: 10.250.0.0/24,
#                  the host at 10.250.0.1 (etcd listens there)
#   b9t-<region>   a network namespace per cluster, every process of that cluster in it,
#                  joined to b9t0 by a veth (host side b9tv<i>, eth0 inside):
#                    node address  10.250.0.<64i+1>   (API server :6443, kubelet)
#                    LoadBalancers 10.250.0.<64i+16>-<64i+31>  (MetalLB L2 answers ARP)
#                    pods          10.244.<i>.0/24 on the bridge b9tpod (host route to it)
#                    Services      10.96.0.0/16 (each cluster its own, never routed out)
#                  Pods leave their cluster masqueraded to its node address (source NAT,
#                  as a cloud NAT gateway does), so a transfer between regions arrives
#                  from 10.250.0.<64i+1>.
#   Latency between regions: each cluster holds what it receives from another region
#   for half the round trip of B9T_LATENCY (cluster/netdelay: NFQUEUE, as this kernel
#   has no netem); B9T_LATENCY=off turns it off.
#   A firewall rule drops anything forwarded from b9t0 to any other interface.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache/cluster"
RUNS="$CACHE/run"                      # one dir per cluster, plus shared/
SHARED="$RUNS/shared"
SOCKROOT=/run/b9t                      # short: unix socket paths are limited
BRIDGE=b9t0
HOST_IP=10.250.0.1
INTER_CIDR=10.250.0.0/24
SVC_CIDR=10.96.0.0/16
API_SVC_IP=10.96.0.1
ETCD_PORT=32379
KUBECONFIG_OUT="$CACHE/kubeconfig"
FW_COMMENT="bind9-topology: keep cluster traffic on this machine"
KEPT_LOGS="$CACHE/logs"                # + -<UTC time>: the logs of clusters brought down
KEEP_LOGS=5
# The regions of the cluster* stacks, in this order (index 1, 2, 3).
REGIONS=(us-east-1 us-west-2 eu-west-1)
# Round trips between regions, in ms: "<region>/<region>=<ms> ...".
LATENCY="${B9T_LATENCY:-us-east-1/us-west-2=30 us-east-1/eu-west-1=80 us-west-2/eu-west-1=80}"
NETDELAY_QUEUE=7

log() { echo "cluster: [$SECONDS s] $*" >&2; }
die() { echo "cluster: $*" >&2; exit 1; }

# Per-cluster names and addresses: region_vars <region> sets them as globals.
region_vars() {
  local r=$1 i
  IDX=""
  for i in "${!REGIONS[@]}"; do [[ "${REGIONS[$i]}" == "$r" ]] && IDX=$((i + 1)); done
  [[ -n "${IDX:-}" ]] || die "unknown region $r (regions: ${REGIONS[*]})"
  REGION=$r
  NETNS="b9t-$r"
  VETH="b9tv$IDX"
  NODE_IP="10.250.0.$((64 * IDX + 1))"
  LB_POOL="10.250.0.$((64 * IDX + 16))-10.250.0.$((64 * IDX + 31))"
  NET_BLOCK="10.250.0.$((64 * IDX))/26"
  POD_CIDR="10.244.$IDX.0/24"
  POD_GW="10.244.$IDX.1"
  POD_BRIDGE=b9tpod
  NODE_NAME="b9t-$r"
  RUN="$RUNS/$r"
  PKI="$RUN/pki"; LOGS="$RUN/logs"; PIDS="$RUN/pids"
  SOCKDIR="$SOCKROOT/$r"
  KUBELET_ROOT="/var/lib/kubelet-b9t-$r"
  POD_LOGS="/var/log/pods-b9t-$r"
  CGROUP_ROOT="/b9t-$r"
  CONTEXT="b9t-$r"
}

install_packages() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  [[ -x /usr/sbin/runc ]] || command -v runc >/dev/null || missing+=(runc)
  [[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
  command -v etcd >/dev/null || missing+=(etcd-server)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v ipset >/dev/null || missing+=(ipset)
  command -v conntrack >/dev/null || missing+=(conntrack)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v socat >/dev/null || missing+=(socat)
  command -v nsenter >/dev/null || missing+=(util-linux)
  command -v ip >/dev/null || missing+=(iproute2)
  if ((${#missing[@]})); then
    log "installing ${missing[*]} from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

bin_dir() { bash "$ROOT/cluster/build.sh" | tail -n1; }

# ------------------------------------------------------------------ processes
# $PIDS/<name> holds the pid of each process a cluster started (shared: etcd).
pid_alive() { [[ -f "$PIDS/$1" ]] && kill -0 "$(cat "$PIDS/$1")" 2>/dev/null; }

start() { # name, command...: in the cluster's network namespace when NETNS is set
  local name=$1; shift
  if pid_alive "$name"; then return 0; fi
  if [[ -n "${NETNS:-}" ]]; then
    setsid nsenter --net="/run/netns/$NETNS" -- "$@" >"$LOGS/$name.log" 2>&1 < /dev/null &
  else
    setsid "$@" >"$LOGS/$name.log" 2>&1 < /dev/null &
  fi
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
  local file="$LOGS"
  [[ -f "$LOGS/${what%%[: ]*}.log" ]] && file="$LOGS/${what%%[: ]*}.log"
  die "${REGION:+$REGION: }timed out after ${limit}s waiting for $what (log: $file; \`scripts/cluster.sh down\` moves the logs to $KEPT_LOGS-<UTC time>/${REGION:-shared}, keeping the last $KEEP_LOGS)"
}

in_ns() { nsenter --net="/run/netns/$NETNS" -- "$@"; }

# down removes $RUNS: every cluster's logs move to $KEPT_LOGS-<UTC time>/<region> first
# (the last $KEEP_LOGS kept), so what a failed `up` logged survives the next `down`.
keep_logs() {
  local kept old d any=0
  kept="$KEPT_LOGS-$(date -u +%Y%m%dT%H%M%SZ)"
  [[ -e "$kept" ]] && kept="$kept-$$"
  for d in "$RUNS"/*/logs; do
    [[ -d "$d" && -n "$(ls -A "$d" 2>/dev/null)" ]] || continue
    mkdir -p "$kept"; mv "$d" "$kept/$(basename "$(dirname "$d")")"; any=1
  done
  ((any)) || return 0
  log "logs kept in $kept"
  while read -r old; do rm -rf "$old"; done < <(
    find "$CACHE" -maxdepth 1 -type d -name "$(basename "$KEPT_LOGS")-*" | sort | head -n "-$KEEP_LOGS")
}

# ------------------------------------------------------------------ PKI
cert() { # name, subject, ext-file-content (may be empty); signs with the cluster's CA
  local name=$1 subj=$2 ext=$3
  [[ -f "$PKI/$name.crt" ]] && return 0
  openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  printf '%s\n' "$ext" >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -CAcreateserial -days 365 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr"
}

kubeconfig() { # name (cert), user
  cat >"$PKI/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $CONTEXT
  cluster: {certificate-authority: $PKI/ca.crt, server: "https://$NODE_IP:6443"}
users:
- name: $2
  user: {client-certificate: $PKI/$1.crt, client-key: $PKI/$1.key}
contexts:
- name: $CONTEXT
  context: {cluster: $CONTEXT, user: $2}
current-context: $CONTEXT
EOF
}

make_pki() { # each cluster its own CA, as separate clusters have
  mkdir -p "$PKI"; chmod 700 "$PKI"
  if [[ ! -f "$PKI/ca.crt" ]]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=b9t-$REGION-ca" \
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
  cert addons "/CN=b9t-addons" "$client"   # MetalLB and kube-router (cluster/config/addons.yaml)
  [[ -f "$PKI/sa.key" ]] || openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  kubeconfig admin "bind9-topology-admin-$REGION"
  kubeconfig controller-manager system:kube-controller-manager
  kubeconfig scheduler system:kube-scheduler
  kubeconfig kubelet-client "system:node:$NODE_NAME"
  kubeconfig kube-proxy system:kube-proxy
  kubeconfig addons b9t-addons
  chmod 600 "$PKI"/*.key
}

# One kubeconfig with a context per running cluster (b9t-<region>), the first region's
# current; also one file per cluster (kubeconfig-<region>).
merge_kubeconfigs() {
  local r files=()
  for r in "${REGIONS[@]}"; do
    [[ -f "$RUNS/$r/pki/admin.kubeconfig" ]] || continue
    files+=("$RUNS/$r/pki/admin.kubeconfig")
    cp "$RUNS/$r/pki/admin.kubeconfig" "$CACHE/kubeconfig-$r"; chmod 600 "$CACHE/kubeconfig-$r"
  done
  ((${#files[@]})) || return 0
  KUBECONFIG="$(IFS=:; echo "${files[*]}")" "$BIN/kubectl" config view --flatten >"$KUBECONFIG_OUT.new"
  chmod 600 "$KUBECONFIG_OUT.new"; mv "$KUBECONFIG_OUT.new" "$KUBECONFIG_OUT"
  "$BIN/kubectl" --kubeconfig "$KUBECONFIG_OUT" config use-context "$(sed -n 's/^current-context: //p' "${files[0]}")" >/dev/null
}

render_config() { # template -> file
  sed -e "s|@RUN@|$RUN|g" -e "s|@SOCKDIR@|$SOCKDIR|g" -e "s|@PKI@|$PKI|g" \
    -e "s|@NODE_IP@|$NODE_IP|g" -e "s|@POD_CIDR@|$POD_CIDR|g" -e "s|@POD_GW@|$POD_GW|g" \
    -e "s|@BRIDGE@|$POD_BRIDGE|g" -e "s|@NODE_NAME@|$NODE_NAME|g" -e "s|@SVC_CIDR@|$SVC_CIDR|g" \
    -e "s|@PAUSE_REF@|$PAUSE_REF|g" -e "s|@CGROUP_ROOT@|$CGROUP_ROOT|g" \
    -e "s|@POD_LOGS@|$POD_LOGS|g" -e "s|@LB_POOL@|$LB_POOL|g" -e "s|@REGION@|$REGION|g" "$1" >"$2.new"
  # Rewrite only a changed file: kube-proxy exits when its config file is touched.
  if cmp -s "$2.new" "$2"; then rm -f "$2.new"; else mv "$2.new" "$2"; fi
}

# ------------------------------------------------------------------ network
host_network_up() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then ip link add "$BRIDGE" type bridge; fi
  ip addr replace "$HOST_IP/24" dev "$BRIDGE"
  # A fixed MAC: a bridge otherwise takes the lowest MAC of its ports, so a veth joining
  # or leaving can change it under every neighbour's ARP entry.
  ip link set "$BRIDGE" address 02:b9:70:00:00:01
  ip link set "$BRIDGE" up
  sysctl -qw net.ipv4.ip_forward=1
  # Frames between the clusters pass the host's iptables (a partition is a rule there).
  sysctl -qw net.bridge.bridge-nf-call-iptables=1
  local dir
  for dir in "-i $BRIDGE ! -o $BRIDGE" "-o $BRIDGE ! -i $BRIDGE"; do
    # shellcheck disable=SC2086
    iptables -C FORWARD $dir -m comment --comment "$FW_COMMENT" -j DROP 2>/dev/null ||
      iptables -I FORWARD 1 $dir -m comment --comment "$FW_COMMENT" -j DROP
  done
}

host_network_down() {
  local dir
  for dir in "-i $BRIDGE ! -o $BRIDGE" "-o $BRIDGE ! -i $BRIDGE"; do
    # shellcheck disable=SC2086
    while iptables -D FORWARD $dir -m comment --comment "$FW_COMMENT" -j DROP 2>/dev/null; do :; done
  done
  ip link del "$BRIDGE" 2>/dev/null || true
}

cluster_network_up() { # the cluster's namespace, its uplink, NAT and the host's route to its pods
  [[ -e "/run/netns/$NETNS" ]] || ip netns add "$NETNS"
  if ! ip link show "$VETH" >/dev/null 2>&1; then
    ip link add "$VETH" type veth peer name eth0 netns "$NETNS"
  fi
  ip link set "$VETH" master "$BRIDGE" up
  in_ns ip link set lo up
  in_ns ip addr replace "$NODE_IP/24" dev eth0
  in_ns ip link set eth0 address "02:b9:70:00:00:$(printf '%02x' $((16 + IDX)))"
  in_ns ip link set eth0 up
  in_ns ip route replace default via "$HOST_IP" dev eth0
  in_ns sysctl -qw net.ipv4.ip_forward=1
  # The kernel makes these per namespace: bridged pod traffic must pass iptables, or
  # kube-proxy's replies between pods of one bridge and kube-router's policy miss it.
  in_ns sysctl -qw net.bridge.bridge-nf-call-iptables=1
  in_ns sysctl -qw net.ipv4.conf.all.route_localnet=1
  # Pods reach other regions masqueraded to the node address (a cloud NAT).
  in_ns iptables -t nat -C POSTROUTING -s "$POD_CIDR" -o eth0 -m comment --comment "b9t: pods leave by NAT" -j MASQUERADE 2>/dev/null ||
    in_ns iptables -t nat -A POSTROUTING -s "$POD_CIDR" -o eth0 -m comment --comment "b9t: pods leave by NAT" -j MASQUERADE
  ip route replace "$POD_CIDR" via "$NODE_IP" dev "$BRIDGE"
}

# netdelay in the cluster's namespace: what arrives from another region's block waits
# half the round trip (the other half waits on that region's side).
latency_up() {
  [[ "$LATENCY" == off ]] && return 0
  local pair regions ms a b other blocks=() delays=()
  for pair in $LATENCY; do
    regions=${pair%%=*} ms=${pair#*=}; a=${regions%%/*} b=${regions#*/}
    [[ "$ms" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "B9T_LATENCY: $pair: want <region>/<region>=<ms>"
    if [[ "$a" == "$REGION" ]]; then other=$b; elif [[ "$b" == "$REGION" ]]; then other=$a; else continue; fi
    local block; block="$(region_vars "$other"; echo "$NET_BLOCK")"
    blocks+=("$block")
    delays+=(--delay "$block,0.0.0.0/0=$(awk -v m="$ms" 'BEGIN { printf "%gms", m / 2 }')")
  done
  ((${#blocks[@]})) || return 0
  in_ns bash "$ROOT/cluster/netdelay/rules.sh" add "$NETDELAY_QUEUE" "${blocks[@]}"
  start netdelay "$NETDELAY" --queue "$NETDELAY_QUEUE" "${delays[@]}"
}

cluster_network_down() {
  ip route del "$POD_CIDR" 2>/dev/null || true
  ip link del "$VETH" 2>/dev/null || true
  [[ -e "/run/netns/$NETNS" ]] && ip netns del "$NETNS" 2>/dev/null || true
}

# ------------------------------------------------------------------ etcd (shared)
etcd_up() {
  local PIDS="$SHARED/pids" LOGS="$SHARED/logs" NETNS=""
  mkdir -p "$PIDS" "$LOGS"
  start etcd etcd --name b9t --data-dir "$SHARED/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT,http://$HOST_IP:$ETCD_PORT" \
    --advertise-client-urls "http://$HOST_IP:$ETCD_PORT" \
    --listen-peer-urls http://127.0.0.1:32380 --initial-advertise-peer-urls http://127.0.0.1:32380 \
    --initial-cluster b9t=http://127.0.0.1:32380 --listen-metrics-urls http://127.0.0.1:32381
  wait_for etcd 30 curl -fsS "http://127.0.0.1:32381/health"
}

# ------------------------------------------------------------------ one cluster
cluster_up() { # region: every process of its cluster, then its add-ons
  region_vars "$1"
  mkdir -p "$RUN" "$LOGS" "$PIDS" "$SOCKDIR" "$RUN/cni" "$KUBELET_ROOT" "$POD_LOGS"
  make_pki
  cluster_network_up
  latency_up
  # kubelet puts its pods under cgroupRoot, which must exist in every hierarchy.
  local c
  for c in /sys/fs/cgroup/*/; do
    [[ -d "$c" && "$(basename "$c")" != unified ]] && mkdir -p "$c$CGROUP_ROOT"
  done
  render_config "$ROOT/cluster/config/containerd.toml" "$RUN/containerd.toml"
  render_config "$ROOT/cluster/config/cni.conflist" "$RUN/cni/10-bind9-topology.conflist"
  render_config "$ROOT/cluster/config/kubelet.yaml" "$RUN/kubelet.yaml"
  render_config "$ROOT/cluster/config/kube-proxy.yaml" "$RUN/kube-proxy.yaml"
  render_config "$ROOT/cluster/config/addons.yaml" "$RUN/addons.yaml"

  log "$REGION: containerd"
  start containerd containerd --config "$RUN/containerd.toml"
  local ctr=(ctr --address "$SOCKDIR/containerd.sock" -n k8s.io) ref tar
  wait_for containerd 30 "${ctr[@]}" version
  for tar in "$IMAGES"/*.tar; do
    ref="$(tar -xOf "$tar" manifest.json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["RepoTags"][0])')"
    if ! "${ctr[@]}" images ls -q | grep -qx "$ref"; then
      "${ctr[@]}" images import "$tar" >/dev/null
    fi
  done

  log "$REGION: kube-apiserver"
  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers="http://$HOST_IP:$ETCD_PORT" --etcd-prefix="/b9t/$REGION/registry" \
    --bind-address="$NODE_IP" --advertise-address="$NODE_IP" --secure-port=6443 \
    --service-cluster-ip-range="$SVC_CIDR" \
    --client-ca-file="$PKI/ca.crt" --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" --kubelet-preferred-address-types=InternalIP \
    --service-account-issuer="https://kubernetes.default.svc.$REGION.local" \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --anonymous-auth=false --profiling=false --v=1
  local k=("$BIN/kubectl" --kubeconfig "$PKI/admin.kubeconfig")
  wait_for kube-apiserver 120 "${k[@]}" get --raw /readyz
  # The apiserver client cert's group gets the kubelet API (logs, exec, port-forward);
  # the add-ons get their roles (cluster/config/addons.yaml: RBAC, MetalLB's CRDs and pool).
  "${k[@]}" create clusterrolebinding kube-apiserver-kubelet-client \
    --clusterrole=system:kubelet-api-admin --user=kube-apiserver-kubelet-client \
    --dry-run=client -o yaml | "${k[@]}" apply -f - >/dev/null
  "${k[@]}" apply --server-side -f "$MLB_CRDS" >/dev/null
  "${k[@]}" create namespace metallb-system --dry-run=client -o yaml | "${k[@]}" apply -f - >/dev/null

  log "$REGION: controller-manager, scheduler, kubelet, kube-proxy"
  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$PKI/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$PKI/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$PKI/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --allocate-node-cidrs=true --cluster-cidr="$POD_CIDR" --node-cidr-mask-size=24 \
    --service-cluster-ip-range="$SVC_CIDR" \
    --controllers='*,-cloud-node-lifecycle' --v=1
  start kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig="$PKI/scheduler.kubeconfig" \
    --authentication-kubeconfig="$PKI/scheduler.kubeconfig" \
    --authorization-kubeconfig="$PKI/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --v=1
  start kubelet "$BIN/kubelet" --config="$RUN/kubelet.yaml" \
    --kubeconfig="$PKI/kubelet-client.kubeconfig" --root-dir="$KUBELET_ROOT" \
    --cert-dir="$PKI/kubelet-certs" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=1
  start kube-proxy "$BIN/kube-proxy" --config="$RUN/kube-proxy.yaml" --v=1

  wait_for "kube-apiserver: MetalLB's CRDs" 60 "${k[@]}" -n metallb-system get ipaddresspools.metallb.io
  wait_for "kube-controller-manager: the service account of metallb-system" 60 "${k[@]}" -n metallb-system get serviceaccount default
  "${k[@]}" apply -f "$RUN/addons.yaml" >/dev/null
  log "$REGION: kube-router firewall, MetalLB"
  start kube-router "$BIN/kube-router" --kubeconfig="$PKI/addons.kubeconfig" \
    --hostname-override="$NODE_NAME" --run-firewall=true --run-router=false \
    --run-service-proxy=false --service-cluster-ip-range="$SVC_CIDR" \
    --health-port=0 --metrics-port=0 --v=1
  start metallb-controller "$BIN/controller" --kubeconfig="$PKI/addons.kubeconfig" \
    --namespace=metallb-system --webhook-mode=disabled --disable-cert-rotation \
    --port=7472 --log-level=warn
  start metallb-speaker "$BIN/speaker" --kubeconfig="$PKI/addons.kubeconfig" \
    --namespace=metallb-system --node-name="$NODE_NAME" --pod-name=speaker-placeholder \
    --port=7473 --log-level=warn

  wait_for "kubelet: node $NODE_NAME Ready" 180 bash -c \
    "'${k[0]}' --kubeconfig '$PKI/admin.kubeconfig' get node $NODE_NAME -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
  wait_for "kube-controller-manager: the default ServiceAccount" 120 "${k[@]}" -n default get serviceaccount default
  wait_for "kube-proxy: its rules" 60 bash -c "nsenter --net=/run/netns/$NETNS -- iptables -t nat -S KUBE-SERVICES | grep -q 'default/kubernetes:https'"
  wait_for "kube-router: its policy chains" 60 bash -c "nsenter --net=/run/netns/$NETNS -- iptables -S KUBE-ROUTER-FORWARD"
  log "$REGION: ready (node $NODE_NAME at $NODE_IP, LoadBalancers $LB_POOL, pods $POD_CIDR)"
}

# What a cluster leaves in machine-wide places once its processes are gone: pod shims,
# mounts, its namespace and veth, kubepods cgroups, kubelet's dirs.
cluster_leftovers() { # region
  region_vars "$1"
  local pid m c
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $SOCKDIR/containerd.sock" || true); do
    kill -9 "$pid" 2>/dev/null || true
  done
  for m in $(awk '{print $2}' /proc/mounts | grep -E "^($KUBELET_ROOT|$RUN|$SOCKDIR)(/|$)" | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  cluster_network_down
  for c in /sys/fs/cgroup/*"$CGROUP_ROOT"; do # deepest first
    [[ -d "$c" ]] || continue
    find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  rm -rf "$KUBELET_ROOT" "$POD_LOGS" "$SOCKDIR"
}

cluster_down() { # region
  region_vars "$1"
  mkdir -p "$PIDS"
  stop kubelet # first, so it restarts nothing; then every pod container and sandbox
  if pid_alive containerd; then
    local ctr=(ctr --address "$SOCKDIR/containerd.sock" -n k8s.io) id
    for id in $("${ctr[@]}" tasks ls -q 2>/dev/null); do
      "${ctr[@]}" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    sleep 1
    for id in $("${ctr[@]}" tasks ls -q 2>/dev/null); do "${ctr[@]}" tasks rm -f "$id" >/dev/null 2>&1 || true; done
    for id in $("${ctr[@]}" containers ls -q 2>/dev/null); do "${ctr[@]}" containers rm "$id" >/dev/null 2>&1 || true; done
  fi
  local name
  for name in metallb-speaker metallb-controller kube-router kube-proxy kube-scheduler \
    kube-controller-manager kube-apiserver containerd netdelay; do
    stop "$name"
  done
  cluster_leftovers "$1"
}

# ------------------------------------------------------------------ up / down
up() {
  [[ "$(id -u)" == 0 ]] || die "run as root (it starts containerd, kubelet and sets up namespaces and a bridge)"
  local regions=("$@") r
  ((${#regions[@]})) || regions=("${REGIONS[@]}")
  # The bridge and the namespaces are machine-wide: one set of clusters per machine.
  # Clusters whose processes were killed (a machine handed on, a stopped session)
  # leave things behind: clean them before starting.
  if [[ -f "$SOCKROOT/owner" ]]; then
    local other; other="$(cat "$SOCKROOT/owner")"
    if [[ "$other" != "$RUNS" ]] && pgrep -f "containerd --config $other/" >/dev/null; then
      die "the clusters of another checkout run on this machine ($other); stop them with its scripts/cluster.sh down"
    fi
  fi
  install_packages
  BIN="$(bin_dir)"
  IMAGES="$(bash "$ROOT/cluster/image/build.sh" "$BIN/pause" | tail -n1)"
  BIND_REF="$(sed -n 1p "$IMAGES/refs")"; PAUSE_REF="$(sed -n 2p "$IMAGES/refs")"
  MLB_CRDS="$(go_module_dir go.universe.tf/metallb metallb)/config/crd/bases"
  NETDELAY="$(bash "$ROOT/cluster/netdelay/build.sh" | tail -n1)"
  mkdir -p "$RUNS" "$SOCKROOT"
  echo "$RUNS" >"$SOCKROOT/owner"
  echo "$BIN" >"$RUNS/bin"
  host_network_up
  etcd_up
  # The clusters start side by side, each logging to its own dir.
  local pids=() failed=()
  for r in "${regions[@]}"; do
    region_vars "$r"; mkdir -p "$LOGS"
    ( cluster_up "$r" ) 2>"$LOGS/up.log" &
    pids+=($!)
  done
  local i
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then failed+=("${regions[$i]}"); fi
  done
  for r in "${regions[@]}"; do region_vars "$r"; cat "$LOGS/up.log" >&2; done
  merge_kubeconfigs
  ((${#failed[@]} == 0)) || die "cluster(s) ${failed[*]} failed to start: see the lines above and $RUNS/<region>/logs"
  log "ready: ${regions[*]}; images $BIND_REF and $PAUSE_REF"
  echo "export KUBECONFIG=$KUBECONFIG_OUT PATH=$BIN:\$PATH"
}

go_module_dir() { # module path, wrapper dir under cluster/: where the module proxy put it
  (cd "$ROOT/cluster/$2" && GOFLAGS=-mod=mod GOTOOLCHAIN=auto go list -m -f '{{.Dir}}' "$1")
}

down() {
  [[ "$(id -u)" == 0 ]] || die "run as root"
  if [[ -f "$SOCKROOT/owner" && "$(cat "$SOCKROOT/owner")" != "$RUNS" ]]; then
    die "the clusters on this machine belong to another checkout ($(cat "$SOCKROOT/owner")); run its scripts/cluster.sh down"
  fi
  local r pids=()
  for r in "${REGIONS[@]}"; do ( cluster_down "$r" ) & pids+=($!); done
  for r in "${pids[@]}"; do wait "$r" || true; done
  PIDS="$SHARED/pids"; REGION=""; stop etcd
  host_network_down
  keep_logs
  rm -rf "$RUNS" "$SOCKROOT" "$KUBECONFIG_OUT" "$CACHE"/kubeconfig-*
  log "down: every process stopped, state removed"
}

status() {
  local r name any=0
  for r in "${REGIONS[@]}"; do
    region_vars "$r"
    echo "$r (namespace $NETNS, node $NODE_IP, LoadBalancers $LB_POOL):"
    for name in containerd kube-apiserver kube-controller-manager kube-scheduler kubelet \
      kube-proxy kube-router metallb-controller metallb-speaker netdelay; do
      if pid_alive "$name"; then echo "  $name: running (pid $(cat "$PIDS/$name"))"; any=1
      else echo "  $name: stopped"; fi
    done
  done
  PIDS="$SHARED/pids"
  if pid_alive etcd; then echo "etcd: running (pid $(cat "$PIDS/etcd"))"; else echo "etcd: stopped"; fi
  if ((any)) && [[ -f "$RUNS/bin" ]]; then
    for r in "${REGIONS[@]}"; do
      "$(cat "$RUNS/bin")/kubectl" --kubeconfig "$KUBECONFIG_OUT" --context "b9t-$r" get nodes -o wide 2>&1 || true
    done
    echo "export KUBECONFIG=$KUBECONFIG_OUT PATH=$(cat "$RUNS/bin"):\$PATH"
  fi
}

env_() {
  [[ -f "$RUNS/bin" ]] || die "no cluster is up: run scripts/cluster.sh up"
  echo "export KUBECONFIG=$KUBECONFIG_OUT PATH=$(cat "$RUNS/bin"):\$PATH"
}

regions() {
  local r
  for r in "${REGIONS[@]}"; do region_vars "$r"; echo "$r $IDX $NODE_IP $LB_POOL $NETNS"; done
}

cmd="${1:-}"; shift || true
case "$cmd" in
  up) up "$@" ;;
  down) down ;;
  status) status ;;
  env) env_ ;;
  regions) regions ;;
  build) install_packages; b="$(bin_dir)"; bash "$ROOT/cluster/image/build.sh" "$b/pause" ;;
  *) echo "usage: $0 up [region...]|down|status|env|regions|build" >&2; exit 2 ;;
esac
