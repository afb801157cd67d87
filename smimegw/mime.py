"""Just enough MIME: split a message into its transport headers and its MIME entity."""

from __future__ import annotations

import re

# Headers that belong to the MIME entity (they move inside signatures and encryption).
ENTITY = re.compile(rb"^(content-|mime-version:)", re.IGNORECASE)


def normalize(data: bytes) -> bytes:
    """LF line ends, as openssl's S/MIME text mode expects."""
    return data.replace(b"\r\n", b"\n")


def _header_blocks(head: bytes) -> list[bytes]:
    blocks: list[bytes] = []
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t") and blocks:
            blocks[-1] += b"\n" + line
        elif line:
            blocks.append(line)
    return blocks


def split(message: bytes) -> tuple[list[bytes], bytes]:
    """(transport headers, entity = content headers + blank line + body)."""
    head, sep, body = message.partition(b"\n\n")
    if not sep:
        head, body = message, b""
    blocks = _header_blocks(head)
    transport = [b for b in blocks if not ENTITY.match(b)]
    content = [b for b in blocks if ENTITY.match(b) and not b.lower().startswith(b"mime-version:")]
    if not content:
        content = [b"Content-Type: text/plain; charset=us-ascii"]
    return transport, b"\n".join(content) + b"\n\n" + body


def join(transport: list[bytes], entity: bytes) -> bytes:
    """A whole message again, with exactly one MIME-Version header."""
    head, _, body = entity.partition(b"\n\n")
    content = [b for b in _header_blocks(head) if not b.lower().startswith(b"mime-version:")]
    return b"\n".join([*transport, b"MIME-Version: 1.0", *content]) + b"\n\n" + body


def drop(transport: list[bytes], name: bytes) -> list[bytes]:
    prefix = name.lower() + b":"
    return [b for b in transport if not b.lower().startswith(prefix)]


def content_type(entity: bytes) -> bytes:
    for block in _header_blocks(entity.split(b"\n\n", 1)[0]):
        if block.lower().startswith(b"content-type:"):
            return re.sub(rb"\s+", b" ", block[13:]).strip().lower()
    return b"text/plain"


def is_encrypted(entity: bytes) -> bool:
    kind = content_type(entity)
    return kind.startswith((b"application/pkcs7-mime", b"application/x-pkcs7-mime")) and \
        b"signed-data" not in kind


def is_signed(entity: bytes) -> bool:
    kind = content_type(entity)
    return (kind.startswith(b"multipart/signed") and b"pkcs7-signature" in kind) or \
        (kind.startswith((b"application/pkcs7-mime", b"application/x-pkcs7-mime"))
         and b"signed-data" in kind)
