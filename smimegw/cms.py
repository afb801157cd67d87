"""S/MIME operations through the system's `openssl cms` (no key ever leaves a file)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

OPENSSL = os.environ.get("SMIMEGW_OPENSSL", "openssl")
CIPHER = "-aes-256-cbc"  # what every S/MIME client decrypts


class CMSError(Exception):
    """openssl refused: the message says what it printed."""


async def _openssl(args: list[str], data: bytes) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        OPENSSL, "cms", *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate(data)
    if proc.returncode != 0:
        raise CMSError(err.decode(errors="replace").strip().splitlines()[0] if err else
                       f"openssl cms {args[0]} failed ({proc.returncode})")
    return out


async def sign(entity: bytes, cert: str, key: str) -> bytes:
    """Clear-signed multipart/signed (SHA-256) of a MIME entity."""
    return await _openssl(["-sign", "-signer", cert, "-inkey", key, "-md", "sha256"], entity)


async def encrypt(entity: bytes, certs: list[str]) -> bytes:
    """application/pkcs7-mime enveloped-data for every certificate."""
    return await _openssl(["-encrypt", CIPHER, *certs], entity)


async def decrypt(message: bytes, cert: str, key: str) -> bytes:
    """The entity inside enveloped-data encrypted to `cert`."""
    return await _openssl(["-decrypt", "-recip", cert, "-inkey", key], message)


@dataclass(frozen=True)
class Verification:
    ok: bool
    signer_pem: bytes  # the signer's certificate, empty when unknown
    reason: str = ""


async def verify(message: bytes, trust: str) -> Verification:
    """Check a signed message against the trusted CAs; keep the signer certificate."""
    with tempfile.TemporaryDirectory(prefix="smimegw-") as tmp:
        signer = Path(tmp) / "signer.pem"
        try:
            await _openssl(["-verify", "-CAfile", trust, "-purpose", "smimesign",
                            "-signer", str(signer), "-out", os.devnull], message)
        except CMSError as err:
            pem = signer.read_bytes() if signer.exists() else b""
            return Verification(False, pem, str(err))
        return Verification(True, signer.read_bytes())
