"""Region stacks follow the primary (issue 19, ADR 13), against real named on loopback.

A region stack's zones have no serial or digest of their own: its TransferGate asks the
zone's primaries in ``check`` (what `pulumi preview` and `pulumi up` run) for the serial
and content they serve now, so a zone whose primary moved differs from state and
``update`` re-verifies it (every secondary at that serial or later, with the primaries'
content), and ``read`` (`pulumi refresh`) compares the secondaries with what the primaries
serve now. The servers are tests/namedkit.py's primary and two secondaries; the provider
runs in this process (``bind``) and in the engine's provider host over gRPC
(``provider``); the ``engine`` test drives the same through the real CLI: a primary stack
and a region stack (``primaryStack``) on the local runner's named servers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bind9_topology.dns.checks import Endpoint, make_tsig_key
from bind9_topology.dns.gate import wait_until_transferred
from bind9_topology.dns.proofs import ContentProofs
from bind9_topology.local.named_process import free_port
from components.transfer_gate import (
    GateFailed,
    TransferGateProvider,
    changed_zones,
    follows,
    server_status,
)
from tests.namedkit import HOST, ZONE, LoopbackTopology, loopback_topology, start_all
from tests.test_provider_grpc import host  # noqa: F401  (the provider host fixture)

PRIMARY_IP = "10.0.1.10"


@pytest.fixture
def region(tmp_path: Path) -> Iterator[LoopbackTopology]:
    with loopback_topology(tmp_path / "dns") as c:
        start_all(c)
        assert c.gate().ok  # everyone serves the first serial
        yield c


def region_inputs(c: LoopbackTopology, *, deadline: float = 10.0) -> dict[str, Any]:
    """The gate's inputs as a region stack registers them: the primaries at direct
    addresses, no expected serial or digest (whatever the primaries serve)."""
    def server(name: str) -> dict[str, Any]:
        return {"name": name, "host": HOST, "port": c.ports[name]}

    return {
        "servers": {n: server(n) for n in ("primary-dns", "sec-a", "sec-b")},
        "zones": {ZONE: {"primaries": "primary-dns", "secondaries": "sec-a sec-b",
                         "expectedSerial": None, "expectedDigest": None}},
        "tsigKeyName": "transfer-key", "tsigAlgorithm": "hmac-sha256",
        "tsigSecret": c.secret, "deadlineSeconds": deadline, "pollIntervalSeconds": 0.2,
        "kubeconfig": None, "kubeContext": None,
    }


def cut_off_from_the_primary(c: LoopbackTopology, name: str) -> None:
    """Restart secondary *name* transferring from a port nobody listens on (a blocked
    port): it keeps serving the copy it has and never sees a newer one."""
    c.procs[name].stop(timeout=5)
    c.overrides[name] = {(PRIMARY_IP, 53): (HOST, free_port(HOST))}
    c.start(name, wait=False)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        from bind9_topology.dns.checks import query_soa

        if query_soa(c.ep(name), ZONE, timeout=0.5).serial == c.serial:
            return
        time.sleep(0.1)
    pytest.fail(f"{name} does not serve its copy after the restart")


def move_primary(c: LoopbackTopology) -> None:
    """The primary stack changes a record: the primary serves the next serial (its own
    `pulumi up` waited for that) before the region looks."""
    from bind9_topology.dns.checks import query_soa

    c.change_records()
    deadline = time.monotonic() + 10
    while query_soa(c.ep("primary-dns"), ZONE, timeout=0.5).serial != c.serial:
        if time.monotonic() > deadline:
            pytest.fail("the primary did not load the changed zone")
        time.sleep(0.05)


# --------------------------------------------------------------------------- unit


@pytest.mark.unit
def test_which_zones_are_followed() -> None:
    direct = {"name": "p", "host": "10.0.1.10", "port": 53}
    assert follows({"primaries": [direct], "secondaries": []})
    assert follows({"primaries": [direct], "expectedSerial": None, "expectedDigest": None})
    # a primary zone of the stack: its own serial and digest
    assert not follows({"primaries": [direct], "expectedSerial": 7})
    assert not follows({"primaries": [direct], "expectedDigest": "ab" * 48})
    # the stack's own pods are never asked in check; nothing to ask; not known yet
    assert not follows({"primaries": [{"name": "p", "instance": "p", "namespace": "n",
                                       "via": "kubernetes-api"}]})
    assert not follows({"primaries": []})
    from pulumi.runtime import rpc

    assert not follows({"primaries": [rpc.UNKNOWN]})
    assert not follows({"primaries": [{"name": "p", "host": rpc.UNKNOWN, "port": 53}]})


@pytest.mark.unit
def test_a_refresh_that_saw_a_zone_lagging_makes_the_next_up_re_verify_it() -> None:
    news = {"zones": {"a.example": {"primaries": []}}, "tsigKeyName": "k"}
    olds = {**news, "status": {"a.example": {"ready": True}}}
    assert TransferGateProvider().diff("id", olds, news).changes is False
    olds["status"]["a.example"]["ready"] = False
    assert TransferGateProvider().diff("id", olds, news).changes is True


# --------------------------------------------------------------------------- bind


@pytest.mark.bind
def test_check_names_the_zone_whose_primary_moved_and_update_re_verifies_it(
        region: LoopbackTopology) -> None:
    gate = TransferGateProvider()
    first = gate.check({}, region_inputs(region))
    assert not first.failures
    entry = first.inputs["zones"][ZONE]
    assert entry["primarySerial"] == region.serial
    assert entry["primaryDigest"] == region.digest
    assert entry["primaryErrors"] == []
    assert region.secret not in repr(entry)

    created = gate.create(first.inputs).outs
    status = created["status"][ZONE]
    assert created["ready"] is True and status["servedSerial"] == region.serial
    assert set(status["servers"]) == {"primary-dns", "sec-a", "sec-b"}

    # Nothing moved: the same inputs, no diff (what a no-change `pulumi preview` shows).
    again = gate.check(first.inputs, region_inputs(region))
    assert again.inputs["zones"] == first.inputs["zones"]
    assert gate.diff("id", created, again.inputs).changes is False

    # The primary stack moves the zone: the region's check names it, update re-verifies it.
    move_primary(region)
    moved = gate.check(created, region_inputs(region))
    assert moved.inputs["zones"][ZONE]["primarySerial"] == region.serial
    assert moved.inputs["zones"][ZONE]["primaryDigest"] == region.digest
    assert changed_zones(created, moved.inputs) == [ZONE]
    assert gate.diff("id", created, moved.inputs).changes is True
    updated = gate.update("id", created, moved.inputs).outs
    status = updated["status"][ZONE]
    assert updated["ready"] is True and status["servedSerial"] == region.serial
    assert {server_status(s)["serial"] for s in status["servers"].values()} == {region.serial}
    assert status["checkedAt"] != created["status"][ZONE]["checkedAt"]


@pytest.mark.bind
def test_a_primary_that_cannot_be_asked_gives_a_stable_diff_and_fails_up_naming_it(
        region: LoopbackTopology) -> None:
    gate = TransferGateProvider()
    checked = gate.check({}, region_inputs(region, deadline=3)).inputs
    created = gate.create(checked).outs
    region.procs["primary-dns"].stop(timeout=5)

    started = time.monotonic()
    down = gate.check(created, region_inputs(region, deadline=3)).inputs
    assert time.monotonic() - started < 3.0  # bounded: one 1 s question per server
    entry = down["zones"][ZONE]
    # what state said is kept; the zone differs only by who could not be asked
    assert entry["primarySerial"] == region.serial and entry["primaryDigest"] == region.digest
    (error,) = entry["primaryErrors"]
    assert error.startswith(f"primary-dns ({HOST}#{region.ports['primary-dns']}): ")
    assert error.rsplit(": ", 1)[1] in ("TIMEOUT", "CONNECTION_REFUSED")
    assert changed_zones(created, down) == [ZONE]
    # every preview while it is down shows the same diff, not an ever-changing one
    assert gate.check(created, region_inputs(region, deadline=3)).inputs["zones"] == down["zones"]

    with pytest.raises(GateFailed) as failed:
        gate.update("id", created, down)
    message = str(failed.value)
    assert f"primary primary-dns ({HOST}#{region.ports['primary-dns']})" in message, message
    assert "fix: the gate cannot reach it" in message, message
    assert "could not ask for the zone's serial: primary-dns" in message, message
    assert region.secret not in message


@pytest.mark.bind
def test_a_secondary_cut_off_from_the_primary_fails_up_and_shows_as_drift_on_refresh(
        region: LoopbackTopology) -> None:
    gate = TransferGateProvider()
    created = gate.create(gate.check({}, region_inputs(region, deadline=3)).inputs).outs
    before = region.serial
    cut_off_from_the_primary(region, "sec-b")
    move_primary(region)

    # refresh: sec-b lags what the primary serves now
    read = gate.read("transfer-gate", created).outs
    status = read["status"][ZONE]
    assert read["ready"] is False and status["ready"] is False
    assert status["primarySerial"] == region.serial
    assert server_status(status["servers"]["sec-b"])["serial"] == before
    assert server_status(status["servers"]["sec-b"])["reason"] == "STALE_SERIAL"
    assert server_status(status["servers"]["primary-dns"])["reason"] == "OK"
    # ... and the next `up` re-verifies the zone even with inputs that did not move
    assert gate.diff("id", read, created).changes is True

    moved = gate.check(created, region_inputs(region, deadline=3)).inputs
    with pytest.raises(GateFailed) as failed:
        gate.update("id", created, moved)
    message = str(failed.value)
    lagging = [line for line in message.splitlines() if line.strip().startswith("- ")]
    assert len(lagging) == 1, message
    assert f"secondary sec-b ({HOST}#{region.ports['sec-b']}): serves serial {before}" \
        in lagging[0], message
    assert "STALE_SERIAL" in lagging[0] and f"target serial {region.serial}" in message


@pytest.mark.bind
def test_a_secondary_with_another_key_fails_up_naming_it(region: LoopbackTopology) -> None:
    gate = TransferGateProvider()
    created = gate.create(gate.check({}, region_inputs(region, deadline=10)).inputs).outs
    right = region.secret
    region.procs["sec-a"].stop(timeout=5)
    from tests.conftest import new_secret

    region.secret = new_secret()  # sec-a's named.conf gets another key
    region.start("sec-a", wait=False)
    region.secret = right
    move_primary(region)
    moved = gate.check(created, region_inputs(region, deadline=10)).inputs
    started = time.monotonic()
    with pytest.raises(GateFailed) as failed:
        gate.update("id", created, moved)
    assert time.monotonic() - started < 8  # a wrong key fails within seconds
    message = str(failed.value)
    assert f"TSIG rejected by sec-a ({HOST}#{region.ports['sec-a']})" in message, message
    assert "holds another TSIG key" in message and right not in message


# ----------------------------------------------------------------- the gate itself


@pytest.mark.bind
def test_follow_learns_the_primaries_content_and_proves_it_on_the_secondaries(
        region: LoopbackTopology) -> None:
    prims, secs = region.endpoints()
    key = make_tsig_key("transfer-key", "hmac-sha256", region.secret)
    proofs = ContentProofs()
    report = wait_until_transferred(ZONE, prims, secs, None, None, key, 10, 0.2,
                                    proofs=proofs, follow_primaries=True)
    assert report.ok, report.message
    assert report.target_serial == region.serial
    assert all("digest verified" in s.detail or "AXFR" in s.detail for s in report.servers)
    # the content the secondaries proved is the primary's, learned by the pull
    for ep in secs:
        proof = proofs.known(ep, ZONE, region.serial)
        assert proof is not None and proof.digest == region.digest


@pytest.mark.bind
def test_a_primary_that_moves_on_between_check_and_up_is_followed(
        region: LoopbackTopology) -> None:
    """The check saw serial n; the primary serves n+1 by the time the gate runs: the gate
    targets n+1 (at least n: serials never go back) instead of failing."""
    gate = TransferGateProvider()
    created = gate.create(gate.check({}, region_inputs(region)).inputs).outs
    move_primary(region)
    seen = gate.check(created, region_inputs(region)).inputs
    move_primary(region)  # moves on again before `up` gets to the zone
    updated = gate.update("id", created, seen).outs
    assert seen["zones"][ZONE]["primarySerial"] == region.serial - 1
    assert updated["status"][ZONE]["servedSerial"] == region.serial


@pytest.mark.bind
def test_a_secondary_ahead_of_the_primaries_makes_the_gate_ask_them_again(
        region: LoopbackTopology) -> None:
    """The gate saw its primary at n, and a secondary already serves n+1: the primary is
    asked again each round, and once it serves n+1 that is the target (no failure); a
    secondary ahead of every primary for good fails, named, as a serial gone backwards.

    Staged with real servers: sec-b, cut off from the primary at n, stands as the region's
    primary; sec-a follows the real primary to n+1. Reconnected, sec-b moves to n+1.
    """
    import threading

    key = make_tsig_key("transfer-key", "hmac-sha256", region.secret)
    cut_off_from_the_primary(region, "sec-b")
    move_primary(region)
    from bind9_topology.dns.checks import query_soa

    assert query_soa(region.ep("sec-b"), ZONE, timeout=1).serial == region.serial - 1
    primaries, secondaries = [region.ep("sec-b")], [region.ep("sec-a")]

    stuck = wait_until_transferred(ZONE, primaries, secondaries, None, None, key, 2.0, 0.2,
                                   follow_primaries=True)
    assert not stuck.ok and stuck.target_serial == region.serial - 1, stuck.message
    assert "secondary sec-a" in stuck.message and "ahead of the primaries" in stuck.message

    reports: list[Any] = []
    gate = threading.Thread(target=lambda: reports.append(wait_until_transferred(
        ZONE, primaries, secondaries, None, None, key, 15.0, 0.2, follow_primaries=True)))
    gate.start()
    time.sleep(1.0)
    region.procs["sec-b"].stop(timeout=5)
    region.overrides.pop("sec-b")
    region.start("sec-b", wait=False)
    from bind9_topology.dns.checks import send_notify

    deadline = time.monotonic() + 10  # a NOTIFY, as the primary's next change sends one
    while query_soa(region.ep("sec-b"), ZONE, timeout=0.5).serial != region.serial:
        assert time.monotonic() < deadline, "sec-b did not transfer once reconnected"
        send_notify(region.ep("sec-b"), ZONE, key=key, serial=region.serial, timeout=0.5)
        time.sleep(0.2)
    gate.join(timeout=30)
    (report,) = reports
    assert report.ok and report.target_serial == region.serial, report.message


# --------------------------------------------------------------------------- provider


@pytest.mark.provider
def test_provider_host_check_observes_the_primaries(tmp_path: Path, host: Any) -> None:  # noqa: F811
    """Check, Diff, Create and Update through the engine's provider host (the provider
    dill-serialized, gRPC): what `pulumi preview` and `up` of a region stack run."""
    from google.protobuf import struct_pb2
    from pulumi.dynamic.dynamic import serialize_provider
    from pulumi.runtime.proto import provider_pb2 as pb

    from tests.test_provider_grpc import URN, _deserialize, _serialize

    with loopback_topology(tmp_path / "dns") as c:
        start_all(c)
        assert c.gate().ok
        host.Configure(pb.ConfigureRequest(args=struct_pb2.Struct(), acceptSecrets=True))
        provider = serialize_provider(TransferGateProvider())

        def check(olds: dict[str, Any]) -> dict[str, Any]:
            news = {**region_inputs(c), "__provider": provider}
            reply = host.Check(pb.CheckRequest(urn=URN, olds=_serialize(olds),
                                               news=_serialize(news)))
            assert not reply.failures
            return _deserialize(reply.inputs)

        first = check({})
        assert first["zones"][ZONE]["primarySerial"] == c.serial
        assert first["zones"][ZONE]["primaryDigest"] == c.digest
        created = _deserialize(host.Create(pb.CreateRequest(
            urn=URN, properties=_serialize(first), timeout=60)).properties)
        same = host.Diff(pb.DiffRequest(id="transfer-gate", urn=URN,
                                        olds=_serialize(created),
                                        news=_serialize(check(first))))
        assert same.changes == pb.DiffResponse.DIFF_NONE
        move_primary(c)
        moved = check(first)
        assert moved["zones"][ZONE]["primarySerial"] == c.serial
        diff = host.Diff(pb.DiffRequest(id="transfer-gate", urn=URN,
                                        olds=_serialize(created), news=_serialize(moved)))
        assert diff.changes == pb.DiffResponse.DIFF_SOME
        updated = _deserialize(host.Update(pb.UpdateRequest(
            id="transfer-gate", urn=URN, olds=_serialize(created), news=_serialize(moved),
            timeout=60)).properties)
        assert updated["status"][ZONE]["servedSerial"] == c.serial


# --------------------------------------------------------------------------- engine

P = "bind9-topology:"
RF_ZONE, RF_PRIMARY_IP, RF_SECONDARY_IP = "rf.example", "192.0.2.80", "198.51.100.80"


def _stack_file(engine: Any, name: str) -> Path:
    return Path(engine.project) / f"Pulumi.{name}.yaml"


def _set_config(engine: Any, name: str, **values: Any) -> None:
    """Set keys of a stack file, keeping what `pulumi config set --secret` wrote."""
    import yaml

    path = _stack_file(engine, name)
    doc = yaml.safe_load(path.read_text()) if path.exists() else {}
    doc.setdefault("config", {}).update({f"{P}{k}": v for k, v in values.items()})
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _records(www: str) -> list[dict[str, str]]:
    return [{"name": "@", "type": "NS", "data": "ns1.rf.example."},
            {"name": "ns1", "type": "A", "data": RF_PRIMARY_IP},
            {"name": "www", "type": "A", "data": www}]


def _gate_of(engine: Any, stack: str) -> dict[str, Any]:
    """The region gate's state (inputs and outputs) as `pulumi stack export` holds it."""
    import json

    exported = json.loads(engine.run("stack", "export", "--show-secrets", stack=stack).stdout)
    (gate,) = [r for r in exported["deployment"]["resources"]
               if r["type"].endswith("TransferGate")]
    return dict(gate)


def _served(engine: Any, instance: str) -> Endpoint:
    from bind9_topology.local.runner import load_state

    (info,) = [i for i in load_state(Path(engine.project))["servers"].values()
               if i["instance"] == instance]
    return Endpoint(str(info["host"]), int(info["port"]), instance)


def _stop_server(engine: Any, instance: str) -> None:
    """Stop the local runner's server of *instance*, by its pid (the runner started it
    for this test)."""
    import os
    import signal

    from bind9_topology.local.runner import load_state, pid_alive

    (info,) = [i for i in load_state(Path(engine.project))["servers"].values()
               if i["instance"] == instance]
    os.kill(int(info["pid"]), signal.SIGTERM)
    deadline = time.monotonic() + 10
    while pid_alive(info["pid"], info.get("conf")):
        assert time.monotonic() < deadline, f"{instance} did not stop"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.enginekit import local_runner_engine

    with local_runner_engine(tmp_path_factory.mktemp("engine-region-follow")) as eng:
        yield eng


@pytest.mark.engine
def test_region_stack_follows_the_primary_stack_through_the_engine(engine: Any) -> None:
    """The README's flow with `primaryStack`: a primary stack and a region stack on the
    local runner's named servers, `pulumi up` of both; the primary moves the zone, and the
    region's `pulumi preview` names the zone, its `up` re-verifies it; a region secondary
    that stopped fails the region's `up` naming it, and refresh shows the drift; a primary
    that cannot be asked neither hangs nor fails the preview, and fails `up` naming it."""
    import json

    from bind9_topology.dns.checks import query_soa

    def instance(name: str, role: str, ip: str) -> dict[str, Any]:
        return {"name": name, "role": role, "labels": {"dns-role": role},
                "service": {"type": "LoadBalancer", "loadBalancerIP": ip}}

    gate = {"enabled": True, "deadlineSeconds": 8, "pollIntervalSeconds": 0.2}
    primary_zone = {"zoneName": RF_ZONE, "type": "primary",
                    "instanceSelector": {"matchLabels": {"dns-role": "primary"}},
                    "soaRecord": {"primaryNs": "ns1.rf.example.",
                                  "adminEmail": "hostmaster@rf.example"},
                    "alsoNotify": [RF_SECONDARY_IP], "records": _records("192.0.2.1")}
    _set_config(engine, "rf-primary", region="rf-east", namespace="dns-rf-east",
                kubernetesRenderDir=".cache/rf-primary", gate=gate,
                instances=[instance("rf-primary", "primary", RF_PRIMARY_IP)],
                zones=[primary_zone])
    _set_config(engine, "rf-west", region="rf-west", namespace="dns-rf-west",
                kubernetesRenderDir=".cache/rf-west", gate=gate,
                primaryStack="organization/bind9-topology/rf-primary",
                instances=[instance("rf-west-a", "secondary", RF_SECONDARY_IP)],
                zones=[{"zoneName": RF_ZONE, "type": "secondary",
                        "instanceSelector": {"matchLabels": {"dns-role": "secondary"}}}])
    # the runner starts the region and the primary stack it transfers from
    started = json.loads(engine.cli("local", "up", "--stack", "rf-west", "--json").stdout)
    assert started["ready"] is True, started
    amap = {ip: a for ip, a in started["addressMap"].items()
            if ip in (RF_PRIMARY_IP, RF_SECONDARY_IP)}
    assert len(amap) == 2, started["addressMap"]
    secret = (Path(engine.project) / ".local-run/tsig.secret").read_text().strip()
    for stack in ("rf-primary", "rf-west"):
        _set_config(engine, stack, gate={**gate, "addressMap": amap})
        engine.init(stack, secret)
    engine.run("up", "--yes", "--skip-preview", stack="rf-primary")
    engine.run("up", "--yes", "--skip-preview", stack="rf-west")
    primary, secondary = _served(engine, "rf-primary"), _served(engine, "rf-west-a")
    first = query_soa(primary, RF_ZONE, timeout=2).serial
    zones = json.loads(engine.run("stack", "output", "zones", "--json", stack="rf-west").stdout)
    assert zones["rf-example-secondary"]["servedSerial"] == first, zones
    assert zones["rf-example-secondary"]["ready"] is True
    assert _gate_of(engine, "rf-west")["inputs"]["zones"][RF_ZONE]["primarySerial"] == first
    engine.run("preview", "--expect-no-changes", stack="rf-west")  # nothing moved

    # The primary stack changes a record: its servers move (the runner), its `pulumi up`.
    _set_config(engine, "rf-primary", zones=[{**primary_zone, "records": _records("192.0.2.2")}])
    engine.cli("local", "up", "--stack", "rf-primary")
    engine.run("up", "--yes", "--skip-preview", stack="rf-primary")
    moved = query_soa(primary, RF_ZONE, timeout=2).serial
    assert moved is not None and moved != first

    preview = engine.run("preview", "--diff", stack="rf-west")
    print(preview.stdout)
    import re

    assert re.search(rf"~ primarySerial\s*: {first} => {moved}\n", preview.stdout), \
        preview.stdout
    assert re.search(rf"~ {re.escape(RF_ZONE)}: {{", preview.stdout), preview.stdout
    steps = json.loads(engine.run("preview", "--json", stack="rf-west").stdout)["steps"]
    ops = {s["urn"].rsplit("::", 1)[-1]: s["op"] for s in steps}
    assert ops["rf-west-transfer-gate"] == "update", ops
    assert {op for name, op in ops.items() if name != "rf-west-transfer-gate"} <= {"same",
                                                                                  "read"}, ops
    before = _gate_of(engine, "rf-west")["outputs"]["status"][RF_ZONE]
    engine.run("up", "--yes", "--skip-preview", stack="rf-west")
    after = _gate_of(engine, "rf-west")["outputs"]["status"][RF_ZONE]
    assert after["servedSerial"] == moved and after["checkedAt"] != before["checkedAt"]
    assert server_status(after["servers"]["rf-west-a"])["serial"] == moved
    assert query_soa(secondary, RF_ZONE, timeout=2).serial == moved

    # The region's secondary stops; the primary moves on: `up` fails naming it.
    _stop_server(engine, "rf-west-a")
    _set_config(engine, "rf-primary", zones=[{**primary_zone, "records": _records("192.0.2.3")}])
    engine.cli("local", "up", "--stack", "rf-primary")
    third = query_soa(primary, RF_ZONE, timeout=2).serial
    assert third is not None and third != moved
    failed = engine.run("up", "--yes", "--skip-preview", stack="rf-west", check=False)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0, output
    assert f"zone {RF_ZONE}: not ready after 8s (target serial {third})" in output, output
    assert f"secondary rf-west-a ({secondary.host}#{secondary.port}): serves serial none" \
        in output, output
    assert "fix: the gate cannot reach it" in output and "Traceback" not in output, output
    assert secret not in output

    # refresh: the secondary does not serve what the primary serves now
    # (the gate only: the Kubernetes objects rendered to a directory have no cluster to read)
    engine.run("refresh", "--yes", "--skip-preview", "--target",
               _gate_of(engine, "rf-west")["urn"], stack="rf-west")
    refreshed = _gate_of(engine, "rf-west")["outputs"]
    status = refreshed["status"][RF_ZONE]
    assert refreshed["ready"] is False and status["ready"] is False, status
    assert status["primarySerial"] == third
    assert server_status(status["servers"]["rf-west-a"])["reason"] in (
        "TIMEOUT", "CONNECTION_REFUSED")
    # labelled as in config
    assert server_status(status["servers"][RF_PRIMARY_IP])["serial"] == third
    assert engine.run("preview", "--expect-no-changes", stack="rf-west",
                      check=False).returncode != 0  # the next `up` re-verifies it

    # A primary that cannot be asked: the preview neither hangs nor fails, and `up` fails
    # naming it with the fix.
    _stop_server(engine, "rf-primary")
    began = time.monotonic()
    quiet = engine.run("preview", "--diff", stack="rf-west")
    assert time.monotonic() - began < 60
    assert f'+ [0]: "{RF_PRIMARY_IP} ({primary.host}#{primary.port}): ' in quiet.stdout, \
        quiet.stdout
    again = engine.run("preview", "--json", stack="rf-west").stdout
    assert again.count(f"{RF_PRIMARY_IP} ({primary.host}#{primary.port}): ") >= 1
    assert _gate_of(engine, "rf-west")["inputs"]["zones"][RF_ZONE].get("primaryErrors") \
        in (None, [])  # state keeps what the last good `up` saw
    down = engine.run("up", "--yes", "--skip-preview", stack="rf-west", check=False)
    output = down.stdout + down.stderr
    assert down.returncode != 0, output
    assert f"primary {RF_PRIMARY_IP} ({primary.host}#{primary.port})" in output, output
    assert "could not ask for the zone's serial" in output, output
    assert "Traceback" not in output and secret not in output, output
