#!/bin/sh
# Readiness: every zone this pod must serve answers NOERROR with the AA bit (one dig
# for all of them), so a pod never takes traffic while it would answer REFUSED or
# SERVFAIL (for a secondary: until the zone has been transferred). Once that held, a
# loaded zone stays loaded: later runs (every second) ask the first zone only. A pod
# being stopped is not ready at once (its preStop hook makes the draining file): the
# Service moves its queries, and kube-proxy drops its UDP flows, while named answers.
set -u
[ -e /run/named/draining ] && exit 1
marker=/run/named/zones-ready
if [ -e "$marker" ]; then
    set -- example.com SOA
else
    set -- example.com SOA example.net SOA example.org SOA
fi
n=$(($# / 2))
out=$(dig +norec +tries=1 +time=1 -p 53 @127.0.0.1 "$@") || exit 1
[ "$(echo "$out" | grep -c 'status: NOERROR')" -eq "$n" ] || exit 1
[ "$(echo "$out" | grep -Ec 'flags:[^;]* aa[ ;]')" -eq "$n" ] || exit 1
touch "$marker"
exit 0
