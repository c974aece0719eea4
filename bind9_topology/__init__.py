"""The pure core of bind9-topology: no Pulumi import anywhere below this package.

Layers, each importing only those listed before it (tests/test_layers.py holds this):

  spec/    what a user writes: the pydantic model, stack files, zone records, bindy
           documents, catalog zones, the config schema
  render/  what the core produces from a spec: BIND files (named.conf, zone files,
           templates as package data) and Kubernetes object bodies
  dns/     talking DNS to real servers: checks (SOA, AXFR/IXFR with TSIG, digests),
           the gate's polling loop, serial arithmetic, DNSSEC, statistics
  kube/    reaching pods through the Kubernetes API (pod selection, port-forwards)
  local/   the local runner: the same topology in local `named` processes

The Pulumi layer (`components/`) maps the core's results to resources; the CLI
(`python -m components`) sits on top of both.
"""
