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



