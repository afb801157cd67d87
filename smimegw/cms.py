"""S/MIME operations through the system's `openssl cms` (no key ever leaves a file)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7

OPENSSL = os.environ.get("SMIMEGW_OPENSSL", "openssl")
CIPHER = "-aes-256-cbc"  # what every S/MIME client decrypts


class CMSError(Exception):
    """openssl refused: the message says what it printed."""


class CMSTimeout(Exception):
    """openssl (or signing) ran too long and was stopped: the message must be deferred."""


async def _openssl(args: list[str], data: bytes, timeout: float) -> bytes:
    """`openssl cms ARGS` on `data`; killed, and CMSError, when it runs past `timeout` s."""
    proc = await asyncio.create_subprocess_exec(
        OPENSSL, "cms", *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(data), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise CMSTimeout(f"openssl cms {args[0]} did not finish within {timeout:g} s; killed") from None
    if proc.returncode != 0:
        raise CMSError(err.decode(errors="replace").strip().splitlines()[0] if err else
                       f"openssl cms {args[0]} failed ({proc.returncode})")
    return out


@lru_cache(maxsize=256)
def _signer(cert: str, key: str):
    """A tenant's certificate and key, read once (files stay 0600, readable by us only)."""
    with open(cert, "rb") as c, open(key, "rb") as k:
        return x509.load_pem_x509_certificate(c.read()), serialization.load_pem_private_key(k.read(), None)


async def sign(entity: bytes, cert: str, key: str, timeout: float) -> bytes:
    """Clear-signed multipart/signed (SHA-256) of a MIME entity; in-process, since
    signing is the one step `cryptography` does here without a process per message."""
    certificate, private_key = _signer(cert, key)
    builder = pkcs7.PKCS7SignatureBuilder().set_data(entity).add_signer(certificate, private_key, hashes.SHA256())
    try:
        signed = await asyncio.wait_for(asyncio.to_thread(
            builder.sign, serialization.Encoding.SMIME, [pkcs7.PKCS7Options.DetachedSignature]), timeout)
    except TimeoutError:
        raise CMSTimeout(f"signing did not finish within {timeout:g} s") from None
    except ValueError as err:
        raise CMSError(f"signing failed: {err}") from None
    return signed.replace(b"\r\n", b"\n")


async def encrypt(entity: bytes, certs: list[str], timeout: float) -> bytes:
    """application/pkcs7-mime enveloped-data for every certificate."""
    return await _openssl(["-encrypt", CIPHER, *certs], entity, timeout)


async def decrypt(message: bytes, cert: str, key: str, timeout: float) -> bytes:
    """The entity inside enveloped-data encrypted to `cert`."""
    return await _openssl(["-decrypt", "-recip", cert, "-inkey", key], message, timeout)


@dataclass(frozen=True)
class Verification:
    ok: bool
    signer_pem: bytes  # the signer's certificate, empty when unknown
    reason: str = ""


def trust_options(trust: str) -> list[str]:
    """openssl's trust: a hashed directory (each CA read only when a chain needs it) or one
    file, and never openssl's default store besides (parsing the whole system bundle for each
    message was 17 of the 21 ms a verification cost)."""
    if os.path.isdir(trust):
        return ["-CApath", trust, "-no-CAfile", "-no-CAstore"]
    return ["-CAfile", trust, "-no-CApath", "-no-CAstore"]


async def verify(message: bytes, trust: str, timeout: float) -> Verification:
    """Check a signed message against the trusted CAs; keep the signer certificate."""
    with tempfile.TemporaryDirectory(prefix="smimegw-") as tmp:
        signer = Path(tmp) / "signer.pem"
        try:
            await _openssl(["-verify", *trust_options(trust), "-purpose", "smimesign",
                            "-signer", str(signer), "-out", os.devnull], message, timeout)
        except CMSError as err:
            pem = signer.read_bytes() if signer.exists() else b""
            return Verification(False, pem, str(err))
        return Verification(True, signer.read_bytes())
