#!/bin/sh
# Readiness: every zone this pod must serve answers NOERROR with the AA bit (one dig
# for all of them), so a pod never takes traffic while it would answer REFUSED or
# SERVFAIL (for a secondary: until the zone has been transferred). A pod being stopped
# is not ready at once (its preStop hook makes the draining file): the Service moves its
# queries, and kube-proxy drops its UDP flows, while named still answers.
set -u
[ -e /run/named/draining ] && exit 1
out=$(dig +norec +tries=1 +time=1 -p 53 @127.0.0.1 example.com SOA example.net SOA example.org SOA) || exit 1
[ "$(echo "$out" | grep -c 'status: NOERROR')" -eq 3 ] || exit 1
[ "$(echo "$out" | grep -Ec 'flags:[^;]* aa[ ;]')" -eq 3 ] || exit 1
exit 0
