"""Shared data of the unit tests: the repository root and a small valid inventory."""

import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAB_CLAMAV = "clamav: {freshclam: false}\n"  # what a lab inventory says: no Internet for freshclam

VALID = textwrap.dedent("""\
    platform:
      name: t
      domain: t.example
      postmaster: postmaster@one.example
    hosts:
      - name: mx1
        address: 192.0.2.1
        roles: [mx, submission, mailbox, filter]
      - name: other
        address: 192.0.2.2
        roles: [smime]
    domains:
      - name: one.example
        mx: [mx1]
        dmarc:
          policy: none
      - name: two.example
        tenant: second
        mx: [mx1]
    users:
      - address: ann@one.example
        password: "{SHA512-CRYPT}$6$abcdefgh$0123456789abcdef"
      - address: ben@two.example
        password: "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$abc$def"
    aliases:
      - address: postmaster@one.example
        to: [ann@one.example]
    """)




def usable_example(name: str, directory: Path) -> Path:
    """A copy of inventories/<name> that deploys on this machine: the operator's TLS files
    it names (single-host: /etc/mailstack/acme/...) are made here, in `directory`."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from mailstack.secrets import issue, new_ca

    text = (ROOT / "inventories" / name).read_text()
    operator_dir = "/etc/mailstack/acme/"
    if operator_dir in text:
        ca, ca_key = new_ca("operator CA")
        for host in ("mx1",):
            key = ec.generate_private_key(ec.SECP256R1())
            cert = issue(ca, ca_key, key, [f"{host}.example"], "server")
            (directory / f"{host}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            (directory / f"{host}.key").write_bytes(key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        text = text.replace(operator_dir, f"{directory}/")
    path = directory / name
    path.write_text(text)
    return path
