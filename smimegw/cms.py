"""S/MIME operations: encryption and decryption through the system's `openssl cms` (no key ever
leaves a file), signing with `cryptography`, signature checks with libcrypto in-process."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import threading
import time
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7

OPENSSL = os.environ.get("SMIMEGW_OPENSSL", "openssl")
CIPHER = "-aes-256-cbc"  # what every S/MIME client decrypts
STORE_SECONDS = 60  # the trusted CAs are read again at least this often


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
    file, and never openssl's default store besides."""
    if os.path.isdir(trust):
        return ["-CApath", trust, "-no-CAfile", "-no-CAstore"]
    return ["-CAfile", trust, "-no-CApath", "-no-CAstore"]


class _LibCrypto:
    """The few libcrypto calls `openssl cms -verify` makes, called in-process: a process per
    signature (about 3 ms to start) was most of what a verification cost."""

    SMIME_SIGN = 4  # X509_PURPOSE_SMIME_SIGN: what `-purpose smimesign` asks
    ERROR_TEXT = 256

    def __init__(self):
        lib = ctypes.CDLL(ctypes.util.find_library("crypto") or "libcrypto.so.3")
        p, i = ctypes.c_void_p, ctypes.c_int

        def fn(name, restype, *argtypes):
            call = getattr(lib, name)
            call.restype, call.argtypes = restype, argtypes
            return call

        self.bio_from = fn("BIO_new_mem_buf", p, ctypes.c_char_p, i)
        self.bio_free = fn("BIO_free", i, p)
        self.read = fn("SMIME_read_CMS", p, p, ctypes.POINTER(p))
        self.cms_free = fn("CMS_ContentInfo_free", None, p)
        self.verify = fn("CMS_verify", i, p, p, p, p, p, ctypes.c_uint)
        self.signers = fn("CMS_get0_signers", p, p)
        self.count = fn("OPENSSL_sk_num", i, p)
        self.item = fn("OPENSSL_sk_value", p, p, i)
        self.stack_free = fn("OPENSSL_sk_free", None, p)
        self.der = fn("i2d_X509", i, p, ctypes.POINTER(ctypes.c_char_p))
        self.store = fn("X509_STORE_new", p)
        self.store_free = fn("X509_STORE_free", None, p)
        self.store_ref = fn("X509_STORE_up_ref", i, p)
        self.load_path = fn("X509_STORE_load_path", i, p, ctypes.c_char_p)
        self.load_file = fn("X509_STORE_load_file", i, p, ctypes.c_char_p)
        self.purpose = fn("X509_STORE_set_purpose", i, p, i)
        self.error = fn("ERR_get_error", ctypes.c_ulong)
        self.error_text = fn("ERR_error_string_n", None, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_size_t)
        self.clear = fn("ERR_clear_error", None)
        self.lock = threading.Lock()
        self.kept = None  # ((trust, its mtime), X509_STORE)

    def failure(self, what: str) -> str:
        """The first reason libcrypto gave, else `what` (its error queue emptied)."""
        code, first = self.error(), ""
        if code:
            text = ctypes.create_string_buffer(self.ERROR_TEXT)
            self.error_text(code, text, self.ERROR_TEXT)
            first = text.value.decode(errors="replace").rpartition(":")[2] or text.value.decode(errors="replace")
        self.clear()
        return first or what

    def signer_der(self, cms) -> bytes:
        stack = self.signers(cms)
        if not stack:
            return b""
        try:
            if self.count(stack) < 1:
                return b""
            cert = self.item(stack, 0)
            size = self.der(cert, None)
            if size <= 0:
                return b""
            out = ctypes.create_string_buffer(size)
            cursor = ctypes.cast(out, ctypes.c_char_p)
            self.der(cert, ctypes.byref(cursor))
            return out.raw[:size]
        finally:
            self.stack_free(stack)

    def trusted(self, trust: str):
        """A store of the CAs in `trust` (a hashed directory or one file), kept while `trust`
        is unchanged and for at most a minute (a CA file rewritten in place): the CAs a chain
        needs are read once a minute, not for every message. The caller holds a reference of its
        own and frees it."""
        stamp = (trust, os.stat(trust).st_mtime_ns, int(time.monotonic() // STORE_SECONDS))
        with self.lock:
            if self.kept is None or self.kept[0] != stamp:
                fresh = self.load(trust)
                if self.kept is not None:
                    self.store_free(self.kept[1])  # checks still running hold references of their own
                self.kept = (stamp, fresh)
            self.store_ref(self.kept[1])
            return self.kept[1]

    def load(self, trust: str):
        """A new store of the CAs in `trust`, checking signers for S/MIME signing."""
        store = self.store()
        load = self.load_path if os.path.isdir(trust) else self.load_file
        if not store or load(store, trust.encode()) != 1 or self.purpose(store, self.SMIME_SIGN) != 1:
            if store:
                self.store_free(store)
            raise CMSError(self.failure(f"cannot load the trusted CAs from {trust}"))
        return store

    def check(self, message: bytes, trust: str) -> Verification:
        """What `openssl cms -verify -purpose smimesign` with only `trust` decides."""
        self.clear()
        store = self.trusted(trust)
        source = self.bio_from(message, len(message))
        content = ctypes.c_void_p()
        cms = None
        try:
            if not source:
                return Verification(False, b"", self.failure("out of memory"))
            cms = self.read(source, ctypes.byref(content))
            if not cms:
                return Verification(False, b"", self.failure("not an S/MIME signature"))
            if self.verify(cms, None, store, content, None, 0) != 1:
                return Verification(False, b"", self.failure("verification failure"))
            der = self.signer_der(cms)
            self.clear()
            pem = x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM) if der else b""
            return Verification(True, pem)
        finally:
            if cms:
                self.cms_free(cms)
            if content:
                self.bio_free(content)
            if source:
                self.bio_free(source)
            self.store_free(store)


@lru_cache(maxsize=1)
def check_library() -> _LibCrypto:
    """libcrypto, loaded once (an error here when the system has none of these calls)."""
    return _LibCrypto()


async def verify(message: bytes, trust: str, timeout: float) -> Verification:
    """Check a signed message against the trusted CAs only; keep the signer certificate
    (libcrypto in a worker thread, so the event loop goes on; past `timeout`, CMSTimeout)."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(check_library().check, message, trust), timeout)
    except TimeoutError:
        raise CMSTimeout(f"signature check did not finish within {timeout:g} s") from None
