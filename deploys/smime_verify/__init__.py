"""Filter hosts, when a platform domain has S/MIME: the first-pass signature check
(smimegw.verifier) rspamd asks for inbound signed mail (multipart/signed) for an S/MIME tenant.
rspamd writes its answer, the verdict the gateway would write, as X-Mailstack-SMIME; such mail
then takes no gateway pass, which only encrypted and opaque-signed mail (pkcs7-mime) and
submitted mail still do. Keyless: it reads the trusted CAs only, runs as its own user under a
hardened unit and listens on loopback for rspamd alone. No answer means a temporary error."""

from __future__ import annotations

import json
from pathlib import Path

from deploys.ops import directory, system_user
from deploys.parts import smimegw_unit
from mailstack import tls
from mailstack.component import Component, File, Service
from mailstack.conventions import SMIME_RESULT
from mailstack.plan import HostPlan

USER = UNIT = "mailstack-smime-verify"
HOME = "/opt/mailstack-smime-verify"
ETC = "/etc/mailstack-smime-verify"
PORT = 10030
SOURCE = Path(__file__).resolve().parents[2] / "smimegw"
MODULES = ("__init__.py", "cms.py", "gateway.py", "mime.py", "policy.py", "verifier.py")  # what it imports


def settings(plan: HostPlan) -> dict:
    smime = plan.inv.smime
    return {"listen": "127.0.0.1", "port": PORT, "trust": tls.TRUST_DIR, "timeout": smime["openssl_timeout"],
            "max_message_size": plan.inv.postfix["message_size_limit"],
            "max_mime_depth": smime["max_mime_depth"], "max_mime_parts": smime["max_mime_parts"]}


def configure(plan: HostPlan) -> list[Service]:
    config = f"{ETC}/config.json"
    return [Service(UNIT, (
        *(File.copy(f"{HOME}/smimegw/{name}", SOURCE / name) for name in MODULES),
        File.text(config, json.dumps(settings(plan), indent=2, sort_keys=True), mode="0640", group=USER),
        smimegw_unit(UNIT, "mailstack first-pass S/MIME signature check (for rspamd)", "smimegw.verifier", HOME,
                     config),
    ), check=f"runuser -u {USER} -- env PYTHONPATH={HOME} python3 -m smimegw.verifier --check {config} >/dev/null")]


def rspamd_files(plan: HostPlan) -> tuple[File, ...]:
    """The rspamd rule that asks it (one file in mailstack.d)."""
    return (File.template("/etc/rspamd/mailstack.d/smime_verify.lua", "smime_verify/smime_verify.lua.j2", {
        "port": PORT, "timeout": plan.inv.smime["openssl_timeout"] + 5, "result_header": SMIME_RESULT}),)


def install(plan: HostPlan) -> None:
    system_user(USER, home=HOME)
    for path in (HOME, f"{HOME}/smimegw", ETC):
        directory(path, user="root", group=USER, mode="0750")


COMPONENT = Component(
    name="smime_verify",
    roles=frozenset({"filter"}),
    packages=("python3-cryptography", "libssl3"),
    units=(UNIT,),
    local=(("127.0.0.1", PORT),),
    loopback_clients=lambda plan: {PORT: ("_rspamd",)},  # its rule runs in rspamd
    enabled=lambda inv: any(d.smime_enabled for d in inv.own_domains()),
    extends={"rspamd": rspamd_files},
    install=install,
    configure=configure,
)
