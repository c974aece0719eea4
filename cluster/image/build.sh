#!/usr/bin/env bash
# Build the local cluster's images from Debian's packages, with no registry:
#   localhost/bind9-topology/bind9:9.18-deb12  the layout of internetsystemsconsortium/bind9
#       (named at /usr/sbin/named, dig, /etc/bind, /var/cache/bind, /var/lib/bind, a
#       `bind` user and group with uid/gid 101) from Debian 12's bind9 9.18 packages,
#       plus python3 and python3-dnspython for the in-pod agent (bind9_topology/pod/agent.py,
#       the sidecar that relays NOTIFY to every pod and reloads changed zones);
#   localhost/bind9-topology/bind-exporter:0.6.1-deb12  the metrics sidecar: Debian 12's
#       prometheus-bind-exporter in the same root filesystem, run as uid 101;
#   localhost/bind9-topology/pause:1           the sandbox image (cluster/pause).
# Writes docker-archive tars into .cache/cluster/images/<stamp>/; a second run with the
# same recipe is a no-op. Usage: build.sh PAUSE_BINARY. Prints the archive dir last.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PAUSE_BIN="$1"
SUITE=bookworm
MIRROR="${CLUSTER_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BIND_REF=localhost/bind9-topology/bind9:9.18-deb12
PAUSE_REF=localhost/bind9-topology/pause:1
# bind_exporter from the same Debian release (the metrics sidecar, metrics.exporterImage);
# the tag is the package's upstream version, checked below.
EXPORTER_VERSION=0.6.1
EXPORTER_REF=localhost/bind9-topology/bind-exporter:$EXPORTER_VERSION-deb12
STAMP="$(cat "$ROOT/cluster/image/"* "$ROOT/cluster/pause/"* | sha256sum | cut -c1-12)"
OUT="$ROOT/.cache/cluster/images/$STAMP"
if [[ -f "$OUT/.complete" ]]; then echo "cluster-images: up to date ($STAMP)" >&2; echo "$OUT"; exit 0; fi
mkdir -p "$ROOT/.cache/cluster/images"
exec 8>"$ROOT/.cache/cluster/images/.lock"; flock 8
if [[ -f "$OUT/.complete" ]]; then echo "$OUT"; exit 0; fi
rm -rf "$OUT"; mkdir -p "$OUT"
LOG="$OUT/build.log"
start=$SECONDS
command -v debootstrap >/dev/null || { echo "cluster-images: debootstrap missing (apt-get install debootstrap)" >&2; exit 1; }

ROOTFS="$OUT/rootfs"
echo "cluster-images: debootstrap $SUITE (minbase) into $ROOTFS; log: $LOG" >&2
if ! debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$MIRROR" >"$LOG" 2>&1; then
  tail -n 30 "$LOG" >&2; exit 1
fi
# The bind user first, with the uid/gid of the official image (101), so the package
# keeps it; then the packages, without recommends.
cat >"$ROOTFS/tmp/setup.sh" <<'SETUP'
set -eu
groupadd --system --gid 101 bind
useradd --system --uid 101 --gid 101 --home-dir /var/cache/bind --no-create-home \
  --shell /usr/sbin/nologin bind
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends bind9 bind9-dnsutils bind9-utils \
  python3-minimal python3-dnspython prometheus-bind-exporter >/dev/null
apt-get clean
rm -rf /var/lib/apt/lists/* /usr/share/doc /usr/share/man /usr/share/info /usr/share/locale
mkdir -p /var/cache/bind /var/lib/bind /run/named
chown bind:bind /var/cache/bind /var/lib/bind /run/named
rm -f /etc/resolv.conf /etc/hostname
SETUP
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
mount --bind /proc "$ROOTFS/proc"
trap 'umount "$ROOTFS/proc" 2>/dev/null || true' EXIT
if ! chroot "$ROOTFS" /bin/sh /tmp/setup.sh >>"$LOG" 2>&1; then tail -n 30 "$LOG" >&2; exit 1; fi
umount "$ROOTFS/proc"; trap - EXIT
rm -f "$ROOTFS/tmp/setup.sh"
chroot "$ROOTFS" /usr/sbin/named -V | head -n1 >"$OUT/named-version"
python3 "$ROOT/cluster/image/docker_archive.py" "$ROOTFS" "$OUT/bind9.tar" "$BIND_REF" \
  --entrypoint /usr/sbin/named --cmd=-g --cmd=-c --cmd=/etc/bind/named.conf --user 101:101
exporter="$(chroot "$ROOTFS" dpkg-query -W -f '${Version}' prometheus-bind-exporter)"
if [[ "${exporter%%[+-]*}" != "$EXPORTER_VERSION" ]]; then
  echo "cluster-images: $SUITE ships prometheus-bind-exporter $exporter, not $EXPORTER_VERSION;" \
    "set EXPORTER_VERSION in $0 and the stacks' metrics.exporterImage" >&2
  exit 1
fi
python3 "$ROOT/cluster/image/docker_archive.py" "$ROOTFS" "$OUT/bind-exporter.tar" "$EXPORTER_REF" \
  --entrypoint /usr/bin/prometheus-bind-exporter --user 101:101

PAUSE_ROOT="$OUT/pause-rootfs"
mkdir -p "$PAUSE_ROOT"
install -m 0755 "$PAUSE_BIN" "$PAUSE_ROOT/pause"
python3 "$ROOT/cluster/image/docker_archive.py" "$PAUSE_ROOT" "$OUT/pause.tar" "$PAUSE_REF" \
  --entrypoint /pause --user 65535:65535
rm -rf "$ROOTFS" "$PAUSE_ROOT"
printf '%s\n%s\n%s\n' "$BIND_REF" "$PAUSE_REF" "$EXPORTER_REF" >"$OUT/refs"
touch "$OUT/.complete"
echo "cluster-images: built in $((SECONDS - start))s: $(cat "$OUT/named-version")" >&2
echo "$OUT"
