"""Shared fixtures: the project directory, a fresh TSIG secret, the prod stack's raw
config, a minimal valid raw config, and a big synthetic zone for the $INCLUDE split.

Raw configs are the stack config mapping WITHOUT the ``bind9-topology:`` prefix,
exactly what ``bind9_topology.config.topology.read_stack_file`` returns.
"""

from __future__ import annotations

import base64
import copy
import ipaddress
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bind9_topology.config.topology import Topology, load_topology, read_stack_file

PROJECT_DIR = Path(__file__).resolve().parent.parent

#: serial used wherever a test needs fixed serials (golden files, checkconf)
FIXED_SERIAL = 2024051701

#: records in the synthetic big zone: enough that its file passes ZONE_PART_BYTES
BIG_ZONE_RECORDS = 30_000
BIG_ZONE_NAME = "big.example"

_MINIMAL: dict[str, Any] = {
    "region": "us-east-1",
    "environment": "production",
    "namespace": "dns-system",
    "instances": [
        {
            "name": "primary-dns",
            "role": "primary",
            "service": {"type": "LoadBalancer", "loadBalancerIP": "10.0.1.10"},
        },
        {"name": "secondary-dns", "role": "secondary"},
    ],
    "zones": [
        {
            "zoneName": "example.com",
            "type": "primary",
            "instanceSelector": {"matchLabels": {"dns-role": "primary"}},
            "soaRecord": {"primaryNs": "ns1.example.com.", "adminEmail": "hostmaster@example.com"},
            "alsoNotify": ["10.0.1.20"],
            "records": [
                {"name": "@", "type": "NS", "data": "ns1.example.com."},
                {"name": "ns1", "type": "A", "data": "10.0.1.10"},
            ],
        },
        {
            "zoneName": "example.com",
            "type": "secondary",
            "instanceSelector": {"matchLabels": {"dns-role": "secondary"}},
            "secondaryConfig": {"primaryServers": ["10.0.1.10"]},
        },
    ],
}


def new_secret() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture(scope="session")
def project_dir() -> Path:
    return PROJECT_DIR


@pytest.fixture
def tsig_secret() -> str:
    """A random TSIG secret: base64 of 32 bytes, new for every test."""
    return new_secret()


@pytest.fixture
def prod_raw(project_dir: Path) -> dict[str, Any]:
    """The prod stack's raw config (a fresh copy: tests may change it)."""
    return read_stack_file(project_dir, "prod")


@pytest.fixture
def minimal_raw() -> dict[str, Any]:
    """A small valid raw config: one primary, one secondary, example.com on both."""
    return copy.deepcopy(_MINIMAL)


@pytest.fixture
def make_raw() -> Callable[..., dict[str, Any]]:
    """Factory: a fresh minimal valid raw config, top-level keys overridden by kwargs."""

    def make(**overrides: Any) -> dict[str, Any]:
        raw = copy.deepcopy(_MINIMAL)
        raw.update(copy.deepcopy(overrides))
        return raw

    return make


def doc_ipv6(n: int) -> str:
    """The n-th address of 2001:db8::/32 (documentation range), valid for any n < 2**96."""
    return str(ipaddress.IPv6Address((0x20010DB8 << 96) | n))


def big_zone_raw(records: int = BIG_ZONE_RECORDS) -> dict[str, Any]:
    """The minimal config plus a primary zone of `records` AAAA records (about 1.2 MB)."""
    raw = copy.deepcopy(_MINIMAL)
    body = [
        {"name": "@", "type": "NS", "data": "ns1.example.com."},
        *(
            {"name": f"host-{n:05d}", "type": "AAAA", "data": doc_ipv6(n)}
            for n in range(records)
        ),
    ]
    raw["zones"].append(
        {
            "zoneName": BIG_ZONE_NAME,
            "type": "primary",
            "instanceSelector": {"matchLabels": {"dns-role": "primary"}},
            "soaRecord": {"primaryNs": "ns1.example.com.", "adminEmail": "hostmaster@example.com"},
            "records": body,
        }
    )
    return raw


@pytest.fixture(scope="session")
def big_topology() -> Topology:
    """A topology whose primary serves a zone too big for one ConfigMap file (split by $INCLUDE).

    Session-scoped: building 30k records with dnspython takes a couple of seconds.
    """
    return load_topology(
        big_zone_raw(), stack="big", project_dir=PROJECT_DIR, tsig_secret=new_secret()
    )


@pytest.fixture
def loopback(tmp_path: Path) -> Iterator[Any]:
    """One primary and two secondaries of real named on 127.0.0.1 (tests/namedkit.py)."""
    from tests.namedkit import loopback_topology

    with loopback_topology(tmp_path) as topology:
        yield topology
