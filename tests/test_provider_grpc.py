"""TransferGateProvider through the engine's own path: the provider host over gRPC.

The host is started as the engine starts it (``python -m pulumi.dynamic``) in
a working directory that is NOT the project's, with PYTHONPATH pointing at
the project root so the dill-serialized provider can import ``components``.
Its port is read from its stdout. Properties carry the provider under
``__provider`` serialized exactly as the SDK does (serialize_provider), and
travel as the engine sends them to a provider that does not accept secrets
(plain values). The zone is served by real named (tests/namedkit.LoopbackTopology).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from components.transfer_gate import TransferGateProvider, server_status
from tests.conftest import new_secret
from tests.namedkit import HOST, ZONE, LoopbackTopology, loopback_topology, start_all

PROJECT = Path(__file__).resolve().parent.parent
URN = ("urn:pulumi:test::bind9-topology::pulumi-python:dynamic/bind9:TransferGate::"
       "test-transfer-gate")

pytestmark = [
    pytest.mark.provider,
]


def _serialize(props: dict[str, Any]) -> struct_pb2.Struct:
    from pulumi.runtime import rpc

    # A private loop: asyncio.run would leave the thread without a current event loop,
    # which breaks Pulumi's mocks in tests that run after this one.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(rpc.serialize_properties(props, {}))
    finally:
        loop.close()


def _deserialize(struct: struct_pb2.Struct) -> dict[str, Any]:
    from pulumi.runtime import rpc

    return dict(rpc.deserialize_properties(struct))


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Any]:
    from pulumi.runtime.proto import provider_pb2_grpc

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    proc = subprocess.Popen([sys.executable, "-m", "pulumi.dynamic"], cwd=elsewhere, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().strip()
        assert line.isdigit(), (line, proc.stderr.read() if proc.poll() is not None else "")
        channel = grpc.insecure_channel(f"127.0.0.1:{line}")
        grpc.channel_ready_future(channel).result(timeout=15)
        yield provider_pb2_grpc.ResourceProviderStub(channel)
        channel.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LoopbackTopology]:
    with loopback_topology(tmp_path / "dns") as c:
        start_all(c)
        yield c


def inputs(c: LoopbackTopology, *, secret: str | None = None,
           deadline: float = 20) -> dict[str, Any]:
    """The gate's inputs as the program registers them: each server once, the zone's
    primaries and secondaries refs into them (ADR 19)."""
    from pulumi.dynamic.dynamic import serialize_provider

    prims, secs = c.endpoints()
    return {
        "servers": {e.label: {"name": e.label, "host": e.host, "port": e.port}
                    for e in [*prims, *secs]},
        "zones": {ZONE: {
            "primaries": " ".join(e.label for e in prims),
            "secondaries": " ".join(e.label for e in secs),
            "expectedSerial": c.serial,
            "expectedDigest": c.digest,
            "triggers": {},
        }},
        "tsigKeyName": "transfer-key",
        "tsigAlgorithm": "hmac-sha256",
        "tsigSecret": secret or c.secret,
        "deadlineSeconds": deadline,
        "pollIntervalSeconds": 0.5,
        "__provider": serialize_provider(TransferGateProvider()),
    }


def test_provider_host_configure_check_diff_create_update_read(
        host: Any, cluster: LoopbackTopology) -> None:
    from pulumi.runtime.proto import provider_pb2 as pb

    host.Configure(pb.ConfigureRequest(args=struct_pb2.Struct(), acceptSecrets=True))
    with pytest.raises(grpc.RpcError) as info:  # the dynamic host leaves config checks to us
        host.CheckConfig(pb.CheckRequest(urn=URN, olds=struct_pb2.Struct(),
                                         news=struct_pb2.Struct()))
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED

    news = inputs(cluster)
    checked = host.Check(pb.CheckRequest(urn=URN, olds=struct_pb2.Struct(), news=_serialize(news)))
    assert not checked.failures
    assert set(_deserialize(checked.inputs)["zones"]) == {ZONE}

    created = host.Create(pb.CreateRequest(urn=URN, properties=_serialize(news), timeout=60))
    assert created.id == "transfer-gate"
    outs = _deserialize(created.properties)
    status = outs["status"][ZONE]
    assert outs["ready"] is True and status["ready"] is True
    assert status["servedSerial"] == cluster.serial
    assert set(status["servers"]) == {"primary-dns", "sec-a", "sec-b"}
    for server in map(server_status, status["servers"].values()):
        assert server["serial"] == cluster.serial and server["verifiedAt"]
        assert server["attempts"] >= 1

    same = host.Diff(pb.DiffRequest(id=created.id, urn=URN, olds=_serialize(outs),
                                    news=_serialize(news)))
    assert same.changes == pb.DiffResponse.DIFF_NONE and not same.replaces

    cluster.change_records()
    news2 = inputs(cluster)
    diff = host.Diff(pb.DiffRequest(id=created.id, urn=URN, olds=_serialize(outs),
                                    news=_serialize(news2)))
    assert diff.changes == pb.DiffResponse.DIFF_SOME and not diff.replaces

    updated = host.Update(pb.UpdateRequest(id=created.id, urn=URN, olds=_serialize(outs),
                                           news=_serialize(news2), timeout=60))
    outs2 = _deserialize(updated.properties)
    assert outs2["status"][ZONE]["servedSerial"] == cluster.serial
    served = outs2["status"][ZONE]["servers"].values()
    assert {server_status(s)["serial"] for s in served} == {cluster.serial}

    # drift: a secondary goes away; refresh (Read) reports what each server serves now
    cluster.procs["sec-b"].stop()
    read = host.Read(pb.ReadRequest(id=created.id, urn=URN, properties=_serialize(outs2),
                                    inputs=_serialize(news2)))
    now = _deserialize(read.properties)
    assert read.id == created.id
    servers = {k: server_status(v) for k, v in now["status"][ZONE]["servers"].items()}
    assert servers["primary-dns"]["serial"] == cluster.serial
    assert servers["sec-a"]["serial"] == cluster.serial
    assert servers["sec-b"].get("serial") is None  # None does not travel
    assert servers["sec-b"]["reason"] in ("TIMEOUT", "CONNECTION_REFUSED")
    assert now["ready"] is False and now["status"][ZONE]["ready"] is False


def test_provider_host_wrong_key_create_fails_with_tsig_reason(
    host: Any, cluster: LoopbackTopology
) -> None:
    from pulumi.runtime.proto import provider_pb2 as pb

    host.Configure(pb.ConfigureRequest(args=struct_pb2.Struct(), acceptSecrets=True))
    wrong = new_secret()
    with pytest.raises(grpc.RpcError) as info:
        host.Create(pb.CreateRequest(urn=URN, properties=_serialize(
            inputs(cluster, secret=wrong, deadline=15)), timeout=60))
    details = info.value.details() or ""
    assert "TSIG_BADSIG" in details or "TSIG_BADKEY" in details, details
    assert "primary-dns" in details and HOST in details
    assert wrong not in details and cluster.secret not in details
    # the message alone: what the engine prints under the resource, no Python traceback
    assert details.startswith(f"zone {ZONE}: TSIG rejected by primary-dns"), details
    assert "Traceback" not in details and 'File "' not in details, details
    assert "fix: " in details and "tsigSecret" in details, details


def test_provider_host_bug_keeps_its_traceback(host: Any, cluster: LoopbackTopology) -> None:
    """Only the gate's own verdict is shown bare; an unexpected error keeps its traceback."""
    from pulumi.runtime.proto import provider_pb2 as pb

    host.Configure(pb.ConfigureRequest(args=struct_pb2.Struct(), acceptSecrets=True))
    props = inputs(cluster)
    props["zones"][ZONE]["primaries"] = [{"name": "x", "host": "127.0.0.1", "port": "not-a-port"}]
    with pytest.raises(grpc.RpcError) as info:
        host.Create(pb.CreateRequest(urn=URN, properties=_serialize(props), timeout=60))
    details = info.value.details() or ""
    assert "Traceback" in details and "ValueError" in details, details


def test_provider_host_stale_secondary_message_names_server_serial_reason_fix(
    host: Any, cluster: LoopbackTopology
) -> None:
    from pulumi.runtime.proto import provider_pb2 as pb

    host.Configure(pb.ConfigureRequest(args=struct_pb2.Struct(), acceptSecrets=True))
    cluster.procs["sec-b"].stop()
    with pytest.raises(grpc.RpcError) as info:
        host.Create(pb.CreateRequest(urn=URN, properties=_serialize(
            inputs(cluster, deadline=2)), timeout=60))
    details = info.value.details() or ""
    assert details.startswith(f"zone {ZONE}: not ready after 2s"), details
    assert "Traceback" not in details, details
    lines = details.splitlines()
    assert any(f"secondary sec-b ({HOST}#{cluster.ports['sec-b']}): serves serial none" in line
               for line in lines), details
    assert "sec-a" not in details  # only the lagging server
    assert any(line.strip().startswith("fix: the gate cannot reach it") for line in lines)


def old_shape(props: dict[str, Any]) -> dict[str, Any]:
    """*props* as a state written of ADR 19 or older holds them: each zone its own server lists,
    no servers map, each server's status a map."""
    servers = props.get("servers") or {}
    zones = {z: {**e, **{k: [servers[r] for r in e[k].split()]
                         for k in ("primaries", "secondaries") if isinstance(e.get(k), str)}}
             for z, e in (props.get("zones") or {}).items()}
    status = {z: {**s, "servers": {n: dict(server_status(v)) for n, v in s["servers"].items()}}
              for z, s in (props.get("status") or {}).items()}
    out = {k: v for k, v in props.items() if k != "servers"}
    return {**out, "zones": zones, **({"status": status} if "status" in props else {})}


def test_provider_host_reads_a_state_of_the_old_shape(
        host: Any, cluster: LoopbackTopology) -> None:
    """A stack whose state predates the compact shape (server lists per
    zone, a server's status a map):
    no change shows as none, a change re-verifies the zone and writes the new shape,
    refresh reads it."""
    from pulumi.runtime.proto import provider_pb2 as pb

    host.Configure(pb.ConfigureRequest(args=struct_pb2.Struct(), acceptSecrets=True))
    news = inputs(cluster)
    created = host.Create(pb.CreateRequest(urn=URN, properties=_serialize(news), timeout=60))
    outs = _deserialize(created.properties)
    old = old_shape(outs)
    assert isinstance(old["zones"][ZONE]["primaries"], list)
    assert isinstance(old["status"][ZONE]["servers"]["sec-a"], dict)

    checked = host.Check(pb.CheckRequest(urn=URN, olds=_serialize(old), news=_serialize(news)))
    assert not checked.failures
    same = host.Diff(pb.DiffRequest(id=created.id, urn=URN, olds=_serialize(old),
                                    news=checked.inputs))
    assert same.changes == pb.DiffResponse.DIFF_NONE

    cluster.change_records()
    news2 = inputs(cluster)
    diff = host.Diff(pb.DiffRequest(id=created.id, urn=URN, olds=_serialize(old),
                                    news=_serialize(news2)))
    assert diff.changes == pb.DiffResponse.DIFF_SOME
    updated = host.Update(pb.UpdateRequest(id=created.id, urn=URN, olds=_serialize(old),
                                           news=_serialize(news2), timeout=60))
    outs2 = _deserialize(updated.properties)
    assert outs2["zones"][ZONE]["primaries"] == "primary-dns"
    servers = outs2["status"][ZONE]["servers"]
    assert all(isinstance(v, str) for v in servers.values())
    assert {server_status(v)["serial"] for v in servers.values()} == {cluster.serial}
    # the new fields carry no secret (the engine keeps tsigSecret a secret)
    assert cluster.secret not in repr([outs2["servers"], outs2["zones"], outs2["status"]])

    # refresh of a state still in the old shape: the servers' status in the new one
    read = host.Read(pb.ReadRequest(id=created.id, urn=URN, properties=_serialize(old),
                                    inputs=_serialize(old_shape(news))))
    now = _deserialize(read.properties)
    assert now["ready"] is True and now["status"][ZONE]["ready"] is True
    servers = now["status"][ZONE]["servers"]
    assert all(isinstance(v, str) for v in servers.values())
    assert {server_status(v)["serial"] for v in servers.values()} == {cluster.serial}
