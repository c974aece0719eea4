#!/usr/bin/env bash
# The iptables rules that hand packets to netdelay, in the network namespace this
# runs in (run it with `nsenter --net=/run/netns/NAME`):
#
#   rules.sh add <queue> <cidr>...   packets arriving from <cidr> go to NFQUEUE <queue>
#   rules.sh del <queue>             remove them again (no error if absent)
#
# The rules live in their own chain NETDELAY-<queue> of the mangle table, jumped to
# from PREROUTING, so `del` removes exactly them. On ingress, not egress: a packet
# held on its sender's egress still counts against its socket's TCP small-queue
# budget, which throttled a local TCP stream to 0.4 MB/s at 15 ms (63 MB/s when
# held on ingress; README.md). Mangle PREROUTING comes before DNAT, so the
# destination is still the address the sender used. The queue is bypassed while no
# netdelay listens on it (--queue-bypass): traffic flows, undelayed, without it.
set -euo pipefail
usage() { echo "usage: $0 add <queue> <cidr>... | del <queue>" >&2; exit 2; }
(($# >= 2)) || usage
op=$1 queue=$2; shift 2
[[ $queue =~ ^[0-9]+$ ]] || usage
chain="NETDELAY-$queue"
ipt() { iptables -w 5 -t mangle "$@"; }

case $op in
  add)
    (($# >= 1)) || usage
    ipt -N "$chain" 2>/dev/null || ipt -F "$chain"
    for cidr in "$@"; do
      ipt -A "$chain" -s "$cidr" -j NFQUEUE --queue-num "$queue" --queue-bypass
    done
    ipt -C PREROUTING -j "$chain" 2>/dev/null || ipt -A PREROUTING -j "$chain"
    ;;
  del)
    (($# == 0)) || usage
    for _ in 1 2 3 4 5; do ipt -D PREROUTING -j "$chain" 2>/dev/null || break; done
    if ipt -S "$chain" >/dev/null 2>&1; then ipt -F "$chain"; ipt -X "$chain"; fi
    ;;
  *) usage ;;
esac
