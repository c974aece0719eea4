"""Issue 11, item 3 against the real thing: every zone validate refuses for BIND's
reasons, named-checkzone refuses too (or logs the record as broken), and an IDN zone
written with A-labels loads.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.test_bad_input import BIND_REFUSES, Raw, assert_issue, issues_of, load, project

pytestmark = pytest.mark.config

__all__ = ["project"]  # the fixture, shared with test_bad_input


# --------------------------------------------------------------------------- 3. against named


#: What real named-checkzone says about each case (with named's own defaults for a primary
#: zone: check-names fail, integrity checks on): refused (exit 1), or the log line that
#: shows the record is broken though the zone loads.
NAMED_SAYS = {
    "ns-target-is-cname": "not loaded due to errors",
    "in-zone-ns-without-address": "not loaded due to errors",
    "ttl-above-2^31-1": "MAXTTL",
    "mx-target-is-cname": "is a CNAME (illegal)",
    "srv-target-is-cname": "is a CNAME (illegal)",
    "underscore-in-address-owner": "not loaded due to errors",
    "underscore-in-mx-target": "not loaded due to errors",
    "ns-target-is-an-address": "appears to be an address",
    "soa-primary-ns-not-hostname": "not loaded due to errors",
}


def _zone_text(raw: Raw) -> str:
    zone = raw["zones"][0]
    soa = zone["soaRecord"]
    lines = ["$ORIGIN example.com.", "$TTL 3600",
             f"@ IN SOA {soa['primaryNs']} hostmaster.example.com. 1 3600 600 1209600 300"]
    for record in zone["records"]:
        ttl = record.get("ttl", "")
        lines.append(f"{record['name']} {ttl} IN {record['type']} {record['data']}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("case", BIND_REFUSES)
def test_named_checkzone_agrees_with_validate(case, minimal_raw, project, tmp_path):
    named_checkzone = shutil.which("named-checkzone")
    assert named_checkzone, "named-checkzone is missing: bash scripts/install-deps.sh"
    mutate, path, _ = BIND_REFUSES[case]
    mutate(minimal_raw)
    assert_issue(issues_of(minimal_raw, project), path)
    zone_file = tmp_path / "db.example.com"
    zone_file.write_text(_zone_text(minimal_raw))
    proc = subprocess.run([named_checkzone, "-k", "fail", "-i", "full", "example.com",
                           str(zone_file)], capture_output=True, text=True, timeout=60)
    said = proc.stdout + proc.stderr
    assert NAMED_SAYS[case] in said, said
    if "not loaded" in NAMED_SAYS[case]:
        assert proc.returncode != 0, said


def test_named_checkzone_loads_the_idn_zone(minimal_raw, project, tmp_path):
    named_checkzone = shutil.which("named-checkzone")
    assert named_checkzone, "named-checkzone is missing: bash scripts/install-deps.sh"
    minimal_raw["zones"][0]["zoneName"] = minimal_raw["zones"][1]["zoneName"] = "bücher.example"
    minimal_raw["zones"][0]["soaRecord"]["primaryNs"] = "ns1"
    minimal_raw["zones"][0]["records"].append({"name": "müller", "type": "A",
                                               "data": "192.0.2.7"})
    topo = load(minimal_raw, project)
    zone_file = tmp_path / "db"
    zone_file.write_text(topo.contents["xn--bcher-kva.example"].text(1))
    proc = subprocess.run([named_checkzone, "-k", "fail", "xn--bcher-kva.example",
                           str(zone_file)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
