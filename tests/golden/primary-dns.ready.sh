#!/bin/sh
# Readiness: every zone this pod must serve answers NOERROR with the AA bit,
# so a pod never takes traffic while it would answer REFUSED or SERVFAIL
# (for a secondary: until the zone has been transferred).
set -u
for zone in example.com example.net example.org ; do
    out=$(dig +norec +tries=1 +time=1 -p 53 @127.0.0.1 "$zone" SOA) || exit 1
    echo "$out" | grep -q 'status: NOERROR' || exit 1
    echo "$out" | grep -Eq 'flags:[^;]* aa[ ;]' || exit 1
done
exit 0
