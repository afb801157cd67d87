"""Nauthilus (issue 10) without the program itself: the pinned artifact is checked before any
host is touched, the rules refuse what is not built, and what is rendered for Nauthilus and
for Dovecot holds the trust boundary (HTTPS by name, Basic credentials, no open fallback).
The lab tests (tests/lab/test_nauthilus.py) run against a real Nauthilus where one is pinned."""

import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
import zipfile

import pytest
from unitdata import ROOT, VALID

from deploys import configured
from mailstack import artifacts
from mailstack.inventory import InventoryInvalid, check_text
from mailstack.lab.recipes import with_nauthilus
from mailstack.plan import plans

PROGRAM = b"#!/bin/sh\n# stands for the nauthilus program: only its bytes are hashed and copied here\n"


@pytest.fixture(autouse=True)
def scratch(tmp_path, monkeypatch):
    monkeypatch.setattr(artifacts, "CACHE", tmp_path / "cache")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def pinned(tmp_path, content: bytes = PROGRAM, name: str = "nauthilus", sha256: str | None = None) -> str:
    """Inventory lines that pin `content` (kept in a local mirror file) as the artifact."""
    mirror = tmp_path / name
    mirror.write_bytes(content)
    digest = sha256 or hashlib.sha256(content).hexdigest()
    return (f"artifacts:\n  nauthilus:\n    version: '2.0.0'\n    url: https://downloads.invalid/{name}\n"
            f"    sha256: {digest}\n    mirror: {mirror}\n")


def inventory(tmp_path, extra: str = "", roles: str = "[mx, submission, mailbox, filter, auth]") -> str:
    return (VALID.replace("roles: [mx, submission, mailbox, filter]", f"roles: {roles}")
            + "nauthilus: {enabled: true}\n" + pinned(tmp_path) + extra)


def problems(text: str) -> list[str]:
    with pytest.raises(InventoryInvalid) as err:
        check_text(text, "inv.yml")
    return [str(p) for p in err.value.problems]


def rendered(text: str, host: str) -> dict:
    plan = plans(check_text(text, "inv.yml"))[host]
    return {f.path: f for c in plan.components for s in configured(c, plan) for f in s.files}


def test_the_artifact_is_taken_from_the_mirror_and_cached_by_its_hash(tmp_path):
    entry = {"url": "https://downloads.invalid/x", "mirror": str(tmp_path / "prog"),
             "sha256": hashlib.sha256(PROGRAM).hexdigest()}
    (tmp_path / "prog").write_bytes(PROGRAM)
    found = artifacts.program(entry, "nauthilus")
    assert found.read_bytes() == PROGRAM and found.parent.name == entry["sha256"]
    (tmp_path / "prog").unlink()  # the cache serves it now, hash checked again
    assert artifacts.program(entry, "nauthilus") == found


def test_an_artifact_that_is_not_the_pinned_one_is_refused(tmp_path):
    (tmp_path / "prog").write_bytes(PROGRAM + b"tampered")
    entry = {"url": "https://downloads.invalid/x", "mirror": str(tmp_path / "prog"),
             "sha256": hashlib.sha256(PROGRAM).hexdigest()}
    with pytest.raises(artifacts.ArtifactUnavailable, match="not the pinned"):
        artifacts.fetch(entry)
    assert not (artifacts.CACHE / entry["sha256"]).exists(), "a refused artifact must not be cached"
    with pytest.raises(artifacts.ArtifactUnavailable, match="is not a file on this machine"):
        artifacts.fetch({**entry, "mirror": str(tmp_path / "missing")})


def test_a_release_archive_gives_up_the_named_program(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in (("nauthilus-2.0.0/README", b"docs"), ("nauthilus-2.0.0/nauthilus", PROGRAM)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    (tmp_path / "release.tar.gz").write_bytes(buffer.getvalue())
    entry = {"url": "https://downloads.invalid/release.tar.gz", "mirror": str(tmp_path / "release.tar.gz"),
             "sha256": hashlib.sha256(buffer.getvalue()).hexdigest()}
    assert artifacts.program(entry, "nauthilus").read_bytes() == PROGRAM
    with pytest.raises(artifacts.ArtifactUnavailable, match="holds no program named 'weed'"):
        artifacts.program(entry, "weed")


def test_check_refuses_a_mismatched_or_missing_artifact_at_its_line(tmp_path):
    text = inventory(tmp_path).replace(hashlib.sha256(PROGRAM).hexdigest(), "f" * 64)
    [found] = problems(text)
    line = text.splitlines().index("  nauthilus:") + 1
    assert found.startswith(f"inv.yml:{line} artifacts.nauthilus: ") and "not the pinned" in found, found
    without = VALID.replace("filter]", "filter, auth]") + "nauthilus: {enabled: true}\n"
    assert any("nauthilus.artifact: names no entry under artifacts" in p for p in problems(without))


@pytest.mark.parametrize("extra,roles,expected", [
    ("", "[mx, submission, mailbox, filter]", "nauthilus.enabled: Nauthilus needs exactly one host with the 'auth' role"),
    ("", "[mx, submission, mailbox, filter, proxy, auth]", "Nauthilus with a Dovecot proxy is not implemented yet"),
])
def test_what_is_not_built_is_refused(tmp_path, extra, roles, expected):
    assert any(expected in p for p in problems(inventory(tmp_path, extra, roles))), problems(inventory(tmp_path, extra, roles))


def test_directory_domains_are_refused(tmp_path):
    text = inventory(tmp_path).replace("    tenant: second\n", "    tenant: second\n    user_source: ldap\n")
    text += "ldap: {uris: ['ldaps://dir.example'], base_dn: 'dc=x', bind_dn: 'cn=y', bind_password_file: /etc/hostname}\n"
    assert any("domains[1].user_source: directory users through Nauthilus are not implemented yet" in p
               for p in problems(text))


def test_nauthilus_is_configured_from_the_inventory(tmp_path):
    files = rendered(inventory(tmp_path, "bruteforce: {max_failures: 5, window: 10m, ban_time: 1h}\n"), "mx1")
    config = json.loads(files["/etc/nauthilus/nauthilus.yml"].content.decode().split("\n", 1)[1])
    assert config["runtime"]["servers"]["http"]["address"] == "192.0.2.1:9443"
    assert config["runtime"]["servers"]["http"]["tls"]["enabled"] is True
    assert config["storage"]["redis"]["primary"]["address"] == "127.0.0.1:6379"
    assert config["storage"]["redis"]["database_number"] == 1  # rspamd and the limits keep 0
    assert config["auth"]["backends"]["order"] == ["lua"]
    assert config["auth"]["controls"]["enabled"] == ["brute_force"]
    [ipv4, ipv6] = config["auth"]["controls"]["brute_force"]["buckets"]
    assert (ipv4["failed_requests"], ipv4["period"], ipv4["ban_time"], ipv4["cidr"]) == (5, "600s", "3600s", 32)
    assert ipv4["ipv4"] is True and ipv6["ipv6"] is True and (ipv6["cidr"], "ipv4" in ipv6) == (64, False)
    assert "192.0.2.1" in config["auth"]["controls"]["brute_force"]["ip_allowlist"]  # never the own hosts
    assert files["/etc/nauthilus/nauthilus.yml"].secret and files["/etc/nauthilus/nauthilus.yml"].mode == "0640"
    users = files["/etc/nauthilus/users"]
    assert users.secret and "ann@one.example\t$6$abcdefgh$0123456789abcdef" in users.lines
    assert files["/usr/local/sbin/nauthilus"].content == PROGRAM
    unit = files["/etc/systemd/system/mailstack-nauthilus.service"].lines
    assert {"User=nauthilus", "NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet="} <= set(unit)


def test_dovecot_asks_nauthilus_over_https_and_never_falls_back(tmp_path):
    files = rendered(inventory(tmp_path), "mx1")
    gate = files["/etc/dovecot/mailstack/nauthilus-passdb.conf"].lines
    assert {"  driver = lua", "  result_success = continue-ok", "  result_failure = return-fail",
            "  result_internalfail = return-fail"} <= set(gate)
    script = files["/etc/dovecot/mailstack/nauthilus.lua"]
    assert 'local URL = "https://mx1.t.example:9443/api/v1/auth/json"' in script.lines and script.secret
    assert "  return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE, \"nauthilus answered \" .. tostring(status)" \
        in script.lines
    # Nauthilus 3 answers 400 to a body with any undocumented field; a refusal is 401, 403 or 429
    body = script.content.decode().split("json.encode({", 1)[1].split("})", 1)[0]
    fields = set(re.findall(r"(\w+) = ", body))
    assert fields == {"username", "password", "service", "method", "client_ip", "client_port", "local_ip",
                      "local_port", "ssl"}, fields
    assert "  elseif status == 401 or status == 403 or status == 429 then" in script.lines
    conf = files["/etc/dovecot/dovecot.conf"].lines
    assert conf.index("!include_try /etc/dovecot/mailstack/nauthilus-passdb.conf") < conf.index("passdb {")
    assert "  skip = unauthenticated" in conf and "  result_failure = return-fail" in conf
    plain = rendered(VALID, "mx1")["/etc/dovecot/dovecot.conf"].lines
    assert "  skip = never" in plain and "  result_failure = continue" in plain


def test_only_the_other_login_hosts_reach_nauthilus(tmp_path):
    text = inventory(tmp_path, roles="[mx, submission, mailbox, filter]").replace(
        "  - name: other\n", "  - name: auth1\n    address: 192.0.2.3\n    roles: [auth]\n  - name: other\n")
    rules = rendered(text, "auth1")["/etc/nftables.conf"].lines
    assert '    ip saddr { 192.0.2.1 } tcp dport 9443 accept comment "auth: Nauthilus for the login hosts (HTTPS)"' \
        in rules, [r for r in rules if "9443" in r]
    alone = rendered(inventory(tmp_path), "mx1")["/etc/nftables.conf"].lines
    assert not any("9443" in line for line in alone), "one host: Nauthilus is reached over lo only"


def test_the_lab_with_nauthilus_passes_check_and_leaves_the_outside_world_alone(tmp_path):
    """`mailstack lab with-nauthilus` (docs/lab.md); ext keeps its own logins."""
    (tmp_path / "nauthilus").write_bytes(PROGRAM)
    text = with_nauthilus((ROOT / "inventories" / "lab.yml").read_text(), tmp_path / "nauthilus")
    assert "/etc/dovecot/mailstack/nauthilus.lua" in rendered(text, "mail")
    outside = rendered(text, "ext")
    assert "/etc/dovecot/mailstack/nauthilus.lua" not in outside
    assert "  skip = never" in outside["/etc/dovecot/dovecot.conf"].lines
    assert "/etc/nauthilus/nauthilus.yml" not in outside


def test_an_artifact_needs_a_source(tmp_path):
    text = inventory(tmp_path)
    text = "\n".join(line for line in text.splitlines() if not line.startswith(("    url:", "    mirror:"))) + "\n"
    assert any("artifacts.nauthilus: has neither url nor mirror" in p for p in problems(text)), problems(text)


def test_an_artifact_nothing_uses_is_refused(tmp_path):
    """A pinned program no deploy takes would claim something that is not deployed."""
    text = VALID + pinned(tmp_path)
    line = text.splitlines().index("  nauthilus:") + 1
    assert problems(text) == [f"inv.yml:{line} artifacts.nauthilus: has no effect: nothing uses it "
                              "(nauthilus.artifact names the program Nauthilus runs); remove it"]


MODULE, VERSION = "example.test/hello", "v1.2.3"
HELLO = 'package main\n\nvar version = "dev"\n\nfunc main() { println("hello", version) }\n'


def module_proxy(tmp_path) -> str:
    """A Go module proxy in a directory (GOPROXY=file://...), serving one module with a main
    package under cmd/hello and a resources directory: what the go command would fetch."""
    base = tmp_path / "proxy" / MODULE / "@v"
    base.mkdir(parents=True)
    (base / "list").write_text(f"{VERSION}\n")
    (base / f"{VERSION}.info").write_text(json.dumps({"Version": VERSION, "Time": "2026-01-01T00:00:00Z"}))
    go_mod = f"module {MODULE}\n\ngo 1.21\n"
    (base / f"{VERSION}.mod").write_text(go_mod)
    with zipfile.ZipFile(base / f"{VERSION}.zip", "w") as zipped:
        for name, text in (("go.mod", go_mod), ("cmd/hello/main.go", HELLO), ("resources/en.json", '{"hi": "hello"}')):
            zipped.writestr(f"{MODULE}@{VERSION}/{name}", text)
    return f"file://{tmp_path / 'proxy'}"


@pytest.mark.skipif(shutil.which("go") is None, reason="no go command on this machine (the module form needs one)")
def test_a_go_module_is_built_once_with_its_flags_and_its_resources(tmp_path, monkeypatch):
    """The Go module form, built by the real go command from a module proxy (a directory
    here): static, with the pinned flags; cached by its inputs; its resources beside it; a
    pinned sha256 that differs refuses it."""
    monkeypatch.setenv("GOPROXY", module_proxy(tmp_path))
    monkeypatch.setenv("GOSUMDB", "off")  # a module the checksum database cannot know
    monkeypatch.setenv("GOMODCACHE", str(tmp_path / "modcache"))
    monkeypatch.setenv("GOFLAGS", "-modcacherw")
    entry = {"module": MODULE, "version": VERSION, "package": "cmd/hello", "tags": ["netgo"],
             "build_env": {"GOAMD64": "v1"}, "ldflags": "-X main.version=pinned", "resources": "resources"}
    built = artifacts.program(entry, "nauthilus")
    assert subprocess.run([built], capture_output=True, text=True).stderr.strip() == "hello pinned"
    assert (artifacts.resources(entry) / "en.json").read_text() == '{"hi": "hello"}'
    stamp = built.stat().st_mtime_ns
    assert artifacts.program(entry, "nauthilus").stat().st_mtime_ns == stamp  # cached, not built again
    assert artifacts.program({**entry, "ldflags": "-X main.version=other"}, "nauthilus") != built  # its own build
    with pytest.raises(artifacts.ArtifactUnavailable, match="not the pinned"):
        artifacts.program({**entry, "sha256": "0" * 64}, "nauthilus")
    with pytest.raises(artifacts.ArtifactUnavailable, match="pin one of the two"):
        artifacts.program({**entry, "url": "https://downloads.invalid/x"}, "nauthilus")
    with pytest.raises(artifacts.ArtifactUnavailable, match="go install"):
        artifacts.program({**entry, "version": "v9.9.9"}, "nauthilus")  # the proxy has no such version
