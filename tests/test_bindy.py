"""bindy import: the three dialects (tests/fixtures/bindy/<dialect>/), problems named by
file, document index and path, and `import-bindy` writing a stack that renders the very
same bytes (named.conf, zone files, Kubernetes manifests) as the bindy documents do."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from bind9_topology.config.bindy import (
    ALPHA_API,
    BETA_API,
    LEGACY_API,
    bindy_documents,
    convert,
)
from bind9_topology.config.bindy_import import import_stack
from bind9_topology.config.model import TopologyError
from bind9_topology.config.topology import load_topology
from components import cli

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "bindy"
DIALECTS = {"legacy": LEGACY_API, "v1alpha1": ALPHA_API, "v1beta1": BETA_API}
P = "bind9-topology:"


def fixture_files(dialect: str) -> list[Path]:
    return sorted((FIXTURES / dialect).glob("*.yaml"))


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def render(project: Path, stack: str, out: Path) -> dict[str, bytes]:
    assert cli.main(["--project", str(project), "render", "--stack", stack, "--out", str(out),
                     "--state", str(out.parent / f"{out.name}-serials.json")]) == 0
    return tree(out / stack)


def convert_files(paths: list[Path], namespace: str | None = "dns-system"):
    return convert([(p, p.name, p.name) for p in paths], namespace)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- the importer


@pytest.mark.parametrize("dialect", DIALECTS)
def test_import_renders_the_same_bytes_as_the_bindy_documents(dialect, tmp_path, capsys):
    """Stack A lists the bindy documents in bindyManifests; stack B is what import-bindy
    writes from them. `render` of both gives the same files, byte for byte."""
    bindy_project = tmp_path / "bindy"
    (bindy_project / "bindy").mkdir(parents=True)
    manifests = []
    for src in fixture_files(dialect):
        shutil.copy(src, bindy_project / "bindy" / src.name)
        manifests.append(f"bindy/{src.name}")
    (bindy_project / "Pulumi.s.yaml").write_text(yaml.safe_dump({"config": {
        f"{P}region": "us-east-1", f"{P}namespace": "dns-system",
        f"{P}bindyManifests": manifests}}))

    imported = tmp_path / "imported"
    imported.mkdir()
    assert cli.main(["--project", str(imported), "import-bindy",
                     *[str(p) for p in fixture_files(dialect)], "--stack", "s",
                     "--region", "us-east-1"]) == 0
    printed = capsys.readouterr().out
    assert f"from {DIALECTS[dialect]}" in printed
    stack = yaml.safe_load((imported / "Pulumi.s.yaml").read_text())["config"]
    assert f"{P}bindyManifests" not in stack
    for zone in stack[f"{P}zones"]:
        assert "records" not in zone  # records live in configs/zones/<zone>.yaml
        if zone["type"] == "primary":
            assert zone["recordsFile"] == f"configs/zones/{zone['zoneName']}.yaml"
            assert (imported / zone["recordsFile"]).is_file()
            # written one mapping a line: the zone build reads it without YAML's events
            from bind9_topology.config import fast_records
            text = (imported / zone["recordsFile"]).read_text()
            assert list(fast_records.PlainRecords(text).rows())

    from_bindy = render(bindy_project, "s", tmp_path / "out-bindy")
    from_stack = render(imported, "s", tmp_path / "out-imported")
    assert sorted(from_bindy) == sorted(from_stack)
    assert any(k.endswith("etc/bind/named.conf") for k in from_bindy)
    assert any("/zones/" in k for k in from_bindy)
    assert any(k.startswith("manifests/") for k in from_bindy)
    for name, data in from_bindy.items():
        assert from_stack[name] == data, name


def test_import_refuses_to_overwrite_unless_forced(tmp_path, capsys):
    files = fixture_files("v1beta1")
    assert cli.main(["--project", str(tmp_path), "import-bindy", *map(str, files),
                     "--stack", "s", "--region", "us-east-1"]) == 0
    stack_file = tmp_path / "Pulumi.s.yaml"
    stack_file.write_text("# edited by hand\n")
    capsys.readouterr()
    assert cli.main(["--project", str(tmp_path), "import-bindy", *map(str, files),
                     "--stack", "s", "--region", "us-east-1"]) == 2
    err = capsys.readouterr().err
    assert "Pulumi.s.yaml: exists; nothing was written" in err
    assert "configs/zones/example.com.yaml: exists" in err
    assert "--force" in err
    assert stack_file.read_text() == "# edited by hand\n"
    assert cli.main(["--project", str(tmp_path), "import-bindy", *map(str, files),
                     "--stack", "s", "--region", "us-east-1", "--force"]) == 0
    assert "bind9-topology:zones" in stack_file.read_text()


def test_import_writes_nothing_when_a_document_is_wrong(tmp_path, capsys):
    bad = write(tmp_path / "bad.yaml", (FIXTURES / "v1beta1" / "records.yaml").read_text()
                .replace("  ipv4Addresses:\n    - \"192.168.1.25\"",
                         "  ipv4Address: 192.168.1.25", 1))
    out = tmp_path / "project"
    out.mkdir()
    files = [FIXTURES / "v1beta1" / "clusters.yaml", FIXTURES / "v1beta1" / "zones.yaml", bad]
    assert cli.main(["--project", str(out), "import-bindy", *map(str, files), "--stack", "s",
                     "--region", "us-east-1"]) == 2
    err = capsys.readouterr().err
    assert (f"{bad}#5(ARecord/mail-host-example-com).spec.ipv4Address: unknown key "
            "'ipv4Address'") in err
    assert "v1beta1 takes a list: ipv4Addresses" in err
    assert list(out.iterdir()) == []


def test_import_needs_a_region(tmp_path):
    with pytest.raises(TopologyError) as info:
        import_stack(fixture_files("v1beta1"), stack="s", project_dir=tmp_path)
    assert [i.path for i in info.value.issues] == ["--region"]
    # the instances' region label is enough
    text = (FIXTURES / "v1alpha1" / "cluster.yaml").read_text().replace(
        "    environment: production\nspec:\n  clusterRef",
        "    environment: production\n    region: eu-west-1\nspec:\n  clusterRef")
    result = import_stack([write(tmp_path / "c.yaml", text), FIXTURES / "v1alpha1" / "zones.yaml"],
                          stack="s", project_dir=tmp_path)
    assert "bind9-topology:region: eu-west-1" in result.written[0].read_text()


# --------------------------------------------------------------------------- each dialect


def test_legacy_dialect_keeps_its_public_loader():
    instances, zones, issues = bindy_documents(FIXTURES / "legacy" / "dns.yaml", "x.yaml")
    assert issues == []
    assert [i["name"] for i in instances] == ["primary-dns", "secondary-dns"]
    assert [(z["name"], z["type"]) for z in zones] == [
        ("example-com", "primary"), ("example-com-secondary", "secondary")]


def test_legacy_dialect_names_what_it_does_not_map(tmp_path):
    text = (FIXTURES / "legacy" / "dns.yaml").read_text().replace(
        "  name: secondary-dns\n", "  name: secondary-dns\n  annotations: {team: dns}\n", 1)
    text += "extra: true\n"
    out = convert_files([write(tmp_path / "x.yaml", text)])
    assert [(i.path, i.message.split(";")[0]) for i in out.issues] == [
        ("x.yaml#1.metadata.annotations", "'annotations' is not mapped: bind9-topology takes "
         "name, namespace and labels from metadata"),
        ("x.yaml#3.extra", "unknown key 'extra' in a Kubernetes document"),
    ]


def test_v1alpha1_cluster_model(tmp_path):
    out = convert_files(fixture_files("v1alpha1"))
    assert out.issues == []
    assert out.dialects == {ALPHA_API}
    by_name = {i["name"]: i for i in out.instances}
    assert sorted(by_name) == ["primary-dns", "secondary-dns"]
    primary = by_name["primary-dns"]
    assert primary["labels"]["bindy.firestoned.io/cluster"] == "production-dns"
    assert primary["replicas"] == 2 and primary["version"] == "9.18"
    assert primary["service"] == {"type": "LoadBalancer", "loadBalancerIP": "10.0.1.10"}
    assert primary["config"]["allowTransfer"] == ["10.0.0.0/8"]
    assert "allowTransfer" not in by_name["secondary-dns"]["config"]
    zones = {z["name"]: z for z in out.zones}
    assert zones["example-com-secondary"]["secondaryConfig"] == {"primaryServers": ["10.0.1.10"]}
    records = {(r["name"], r["type"], r["data"]) for r in zones["example-com"]["records"]}
    assert {("@", "NS", "ns1.example.com."), ("www", "A", "192.168.1.10"),
            ("www", "AAAA", "2001:db8::10"), ("blog", "CNAME", "www.example.com."),
            ("@", "MX", "10 mail.example.com."), ("@", "TXT", '"v=spf1 mx -all"'),
            ("sub", "NS", "ns1.sub-provider.net."),
            ("_ldap._tcp", "SRV", "10 60 389 ldap.example.com."),
            ("@", "CAA", '0 issue "letsencrypt.org"')} <= records
    assert "serial" not in zones["example-com"]["soaRecord"]
    paths = {w.path for w in out.warnings}
    assert "zones.yaml#0(DNSZone/example-com).spec.soaRecord.serial" in paths
    assert "cluster.yaml#0(Bind9Cluster/production-dns).spec.global.dnssec.validation" in paths


def test_v1beta1_cluster_model(project_dir):
    out = convert_files(fixture_files("v1beta1"))
    assert out.issues == []
    by_name = {i["name"]: i for i in out.instances}
    # the ClusterBind9Provider's managed instances, named and labelled as bindy does
    assert sorted(by_name) == ["edge-secondary", "shared-dns-primary-0",
                               "shared-dns-secondary-0", "shared-dns-secondary-1"]
    managed = by_name["shared-dns-secondary-1"]
    assert managed["replicas"] == 1
    assert managed["labels"]["bindy.firestoned.io/managed-by"] == "Bind9Cluster"
    assert managed["labels"]["bindy.firestoned.io/role"] == "secondary"
    assert managed["config"]["allowQuery"] == ["0.0.0.0/0", "::/0"]  # bindy's "any"
    assert by_name["edge-secondary"]["version"] == "9.20"
    zones = {z["name"]: z for z in out.zones}
    com = zones["example-com"]
    assert com["alsoNotify"] == ["10.0.2.20"]  # the secondary with a fixed address
    records = com["records"]
    assert records[:4] == [
        {"name": "@", "type": "NS", "data": "ns1.example.com."},
        {"name": "@", "type": "NS", "data": "ns2.example.com."},
        {"name": "ns2.example.com.", "type": "A", "data": "10.0.2.20"},
        {"name": "@", "type": "NS", "data": "ns4.external-provider.net."},
    ]
    assert {"name": "www", "type": "A", "data": "192.168.1.11", "ttl": 300} in records
    assert {"name": "selector1._domainkey", "type": "TXT", "data":
            '"v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" '
            '"second-string-of-the-same-record"'} in records
    # bind9InstancesFrom adds edge-dns's secondary to example.com, not to internal.example
    assert com.get("ttl") == 3600
    assert zones["example-com-secondary"]["instanceSelector"] == {
        "matchLabels": {"dns-role": "secondary"}}
    assert zones["internal-example-secondary"]["instanceSelector"] == {"matchLabels": {
        "bindy.firestoned.io/cluster": "shared-dns", "dns-role": "secondary"}}
    # recordsFrom with matchExpressions
    assert [r for r in zones["internal-example"]["records"] if r["type"] == "A"] == [
        {"name": "db", "type": "A", "data": "10.10.0.5"}]
    # and the result is a valid stack
    topo = load_topology({"region": "us-east-1", "instances": out.instances, "zones": out.zones},
                         stack="s", project_dir=project_dir, tsig_secret=None,
                         secret_required=False)
    assert sorted(topo.contents) == ["example.com", "internal.example"]


# --------------------------------------------------------------------------- problems


BETA_ZONE = """apiVersion: bindy.firestoned.io/v1beta1
kind: DNSZone
metadata: {name: example-com, namespace: dns-system}
spec:
  zoneName: example.com
  clusterRef: shared-dns
  soaRecord: {primaryNs: ns1.example.com., adminEmail: admin.example.com., serial: 1,
              refresh: 3600, retry: 600, expire: 604800, negativeTtl: 300}
"""


@pytest.mark.parametrize("text, path, fragments", [
    (BETA_ZONE.replace("  clusterRef", "  recordFrom: []\n  clusterRef"),
     "x.yaml#1(DNSZone/example-com).spec.recordFrom",
     ["unknown key 'recordFrom'", "bindy's DNSZone (bindy.firestoned.io/v1beta1)",
      "did you mean 'recordsFrom'?"]),
    ("apiVersion: bindy.firestoned.io/v1beta1\nkind: SRVRecord\nmetadata: {name: xmpp}\n"
     "spec: {service: xmpp-client, proto: tcp, name: '@', priority: 10, weight: 50,"
     " port: 5222, target: xmpp.example.com.}\n",
     "x.yaml#1(SRVRecord/xmpp).spec.service", ["write name: _<service>._<proto>"]),
    (BETA_ZONE.replace("  clusterRef", "  nameServers:\n"
                       "  - {hostname: ns2.example.com., ipv4: 1.2.3.4}\n  clusterRef"),
     "x.yaml#1(DNSZone/example-com).spec.nameServers[0].ipv4",
     ["unknown key 'ipv4'", "valid keys here: hostname, ipv4Address, ipv6Address"]),
    ("apiVersion: bindy.firestoned.io/v1alpha1\nkind: ARecord\nmetadata: {name: www}\n"
     "spec: {zoneRef: example-com, name: www, ipv4Addresses: [192.0.2.1]}\n",
     "x.yaml#1(ARecord/www).spec.ipv4Addresses", ["bindy.firestoned.io/v1alpha1 takes one"]),
    (BETA_ZONE.replace("kind: DNSZone", "kind: DNSZone\nstatuz: {}"),
     "x.yaml#1.statuz", ["unknown key 'statuz' in a Kubernetes document"]),
    (BETA_ZONE.replace("bindy.firestoned.io/v1beta1", "bindy.firestoned.io/v2"),
     "x.yaml#1.apiVersion", ["expected one of 'dns.firestoned.io/v1alpha1'"]),
])
def test_unknown_fields_name_document_and_path(tmp_path, text, path, fragments):
    cluster = ("apiVersion: bindy.firestoned.io/v1beta1\nkind: Bind9Cluster\n"
               "metadata: {name: shared-dns, namespace: dns-system}\nspec: {}\n")
    f = write(tmp_path / "x.yaml", cluster + "---\n" + text)
    issues = [i for i in convert_files([f]).issues if i.path == path]
    assert issues, [str(i) for i in convert_files([f]).issues]
    for fragment in fragments:
        assert fragment in issues[0].message, issues[0].message


@pytest.mark.parametrize("spec_add, path, fragment", [
    ("  configMapRefs: {namedConf: my-named-conf}\n", "spec.configMapRefs",
     "cannot be mapped: bind9-topology renders named.conf itself"),
    ("  acls: {internal: [10.0.0.0/8]}\n", "spec.acls", "has no named ACLs"),
    ("  global:\n    dnssec:\n      signing: {enabled: true}\n", "spec.global.dnssec.signing",
     "serves zones unsigned"),
])
def test_what_cannot_be_mapped_is_an_error_by_name(tmp_path, spec_add, path, fragment):
    f = write(tmp_path / "x.yaml", "apiVersion: bindy.firestoned.io/v1beta1\n"
              "kind: Bind9Cluster\nmetadata: {name: c, namespace: dns-system}\nspec:\n"
              "  version: '9.18'\n" + spec_add)
    issues = convert_files([f]).issues
    assert [i.path for i in issues] == [f"x.yaml#0(Bind9Cluster/c).{path}"]
    assert fragment in issues[0].message


def test_dnssec_policy_and_unselected_records_are_named(tmp_path):
    docs = (FIXTURES / "v1beta1" / "clusters.yaml").read_text() + "---\n" + BETA_ZONE.replace(
        "  clusterRef", "  dnssecPolicy: default\n  clusterRef") + (
        "---\napiVersion: bindy.firestoned.io/v1beta1\nkind: ARecord\n"
        "metadata: {name: stray, namespace: dns-system, labels: {zone: nowhere.example}}\n"
        "spec: {name: stray, ipv4Addresses: [192.0.2.9]}\n")
    out = convert_files([write(tmp_path / "x.yaml", docs)])
    assert [(i.path, "dnssecPolicy 'default' cannot be mapped" in i.message)
            for i in out.issues] == [("x.yaml#3(DNSZone/example-com).spec.dnssecPolicy", True)]
    stray = [w for w in out.warnings if w.path == "x.yaml#4(ARecord/stray)"]
    assert stray and "no DNSZone's recordsFrom selects its labels" in stray[0].message


def test_secondaries_with_other_primaries_get_their_own_zone_entries(tmp_path):
    text = (FIXTURES / "v1alpha1" / "cluster.yaml").read_text() + """---
apiVersion: bindy.firestoned.io/v1alpha1
kind: Bind9Instance
metadata:
  name: secondary-dr
  namespace: dns-system
  labels: {dns-role: secondary}
spec:
  clusterRef: production-dns
  role: secondary
  primaryServers: ["10.9.1.10"]
"""
    out = convert_files([write(tmp_path / "c.yaml", text), FIXTURES / "v1alpha1" / "zones.yaml"])
    assert out.issues == []
    secondary = {z["name"]: z for z in out.zones if z["type"] == "secondary"}
    assert {n: (z["instanceSelector"]["matchLabels"], z["secondaryConfig"]["primaryServers"])
            for n, z in secondary.items()} == {
        "example-com-secondary-secondary-dns": (
            {"bindy.firestoned.io/instance": "secondary-dns"}, ["10.0.1.10"]),
        "example-com-secondary-secondary-dr": (
            {"bindy.firestoned.io/instance": "secondary-dr"}, ["10.9.1.10"]),
    }
    dr = next(i for i in out.instances if i["name"] == "secondary-dr")
    assert dr["labels"]["bindy.firestoned.io/instance"] == "secondary-dr"
    topo = load_topology({"region": "us-east-1", "instances": out.instances, "zones": out.zones},
                         stack="s", project_dir=tmp_path, tsig_secret=None,
                         secret_required=False)
    assert [z.zoneName for z in topo.spec.zones_for(topo.spec.instances[2])] == ["example.com"]


def test_primary_servers_must_be_addresses(tmp_path):
    text = (FIXTURES / "v1alpha1" / "cluster.yaml").read_text().replace(
        '"10.0.1.10"  # IP of primary-dns service', "primary.example.com")
    out = convert_files([write(tmp_path / "c.yaml", text), FIXTURES / "v1alpha1" / "zones.yaml"])
    assert [i.path for i in out.issues] == [
        "c.yaml#2(Bind9Instance/secondary-dns).spec.primaryServers"]
    assert "not hostnames" in out.issues[0].message


def test_bindy_manifests_of_a_stack_take_every_dialect(project_dir, tmp_path):
    project = tmp_path / "p"
    shutil.copytree(FIXTURES, project / "bindy")
    raw = {"region": "us-east-1", "bindyManifests": ["bindy/v1beta1/clusters.yaml",
                                                     "bindy/v1beta1/zones.yaml",
                                                     "bindy/v1beta1/records.yaml"]}
    topo = load_topology(raw, stack="s", project_dir=project, tsig_secret=None,
                         secret_required=False)
    assert len(topo.spec.instances) == 4
    assert any(w.path.endswith("spec.soaRecord.serial") for w in topo.warnings)
    raw["namespace"] = "other"
    with pytest.raises(TopologyError) as info:
        load_topology(raw, stack="s", project_dir=project, tsig_secret=None,
                      secret_required=False)
    assert ("bindy/v1beta1/zones.yaml#0(DNSZone/example-com).metadata.namespace"
            in {i.path for i in info.value.issues})


def _unnamed(path: Path, index: int, how: str) -> str:
    """The YAML of *path* with document *index* stripped of its name (or its metadata)."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    meta = docs[index].get("metadata") or {}
    if how == "no metadata":
        docs[index].pop("metadata", None)
    elif how == "no name":
        docs[index]["metadata"] = {k: v for k, v in meta.items() if k != "name"}
    else:
        docs[index]["metadata"] = {**meta, "name": ""}
    return yaml.safe_dump_all(docs, sort_keys=False)


@pytest.mark.parametrize("how", ["no name", "no metadata", "empty name"])
@pytest.mark.parametrize("fixture, index, kind", [
    ("legacy/dns.yaml", 0, "Bind9Instance"),
    ("legacy/dns.yaml", 2, "DNSZone"),
    ("v1alpha1/zones.yaml", 0, "DNSZone"),
    ("v1beta1/clusters.yaml", 1, "Bind9Cluster"),
    ("v1beta1/records.yaml", 0, "ARecord"),
])
def test_a_document_without_a_name_is_refused_with_its_path(tmp_path, fixture, index, kind,
                                                            how):
    """The Kubernetes API refuses an object without metadata.name; so does the import, naming
    `<file>#<index>(<Kind>)` (a legacy DNSZone without one used to be rendered)."""
    f = write(tmp_path / "x.yaml", _unnamed(FIXTURES / fixture, index, how))
    issues = convert_files([f]).issues
    path = f"x.yaml#{index}({kind}).metadata.name"
    named = [i for i in issues if i.path == path]
    assert named, [str(i) for i in issues]
    assert "every Kubernetes object needs a name" in named[0].message
    assert ("is missing" if how != "empty name" else "is empty") in named[0].message, named[0]
    assert not [i for i in issues if "None" in i.path], [str(i) for i in issues]


def test_a_stack_with_an_unnamed_bindy_zone_is_refused(tmp_path):
    (tmp_path / "bindy").mkdir()
    write(tmp_path / "bindy" / "dns.yaml", _unnamed(FIXTURES / "legacy" / "dns.yaml", 2,
                                                    "no name"))
    raw = {"region": "us-east-1", "bindyManifests": ["bindy/dns.yaml"]}
    with pytest.raises(TopologyError) as info:
        load_topology(raw, stack="s", project_dir=tmp_path, tsig_secret=None,
                      secret_required=False)
    assert {i.path for i in info.value.issues} == {
        "bind9-topology:bindyManifests[0](bindy/dns.yaml)#2(DNSZone).metadata.name"}
