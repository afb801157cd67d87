"""Just enough MIME: split a message into its transport headers and its MIME entity."""

from __future__ import annotations

import re

# Headers that belong to the MIME entity (they move inside signatures and encryption); a name
# may have blanks before its colon (obsolete syntax MIME readers still accept)
ENTITY = re.compile(rb"^(content-[^:]*|mime-version[ \t]*):", re.IGNORECASE)
MIME_VERSION = re.compile(rb"^mime-version[ \t]*:", re.IGNORECASE)
CONTENT_TYPE = re.compile(rb"^content-type[ \t]*:", re.IGNORECASE)


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
    content = [b for b in blocks if ENTITY.match(b) and not MIME_VERSION.match(b)]
    if not content:
        content = [b"Content-Type: text/plain; charset=us-ascii"]
    return transport, b"\n".join(content) + b"\n\n" + body


def join(transport: list[bytes], entity: bytes) -> bytes:
    """A whole message again, with exactly one MIME-Version header."""
    head, _, body = entity.partition(b"\n\n")
    content = [b for b in _header_blocks(head) if not MIME_VERSION.match(b)]
    return b"\n".join([*transport, b"MIME-Version: 1.0", *content]) + b"\n\n" + body


def unfolded(entity: bytes) -> bytes:
    """The entity with each header on one line as `Name: value`: how openssl must get it (it
    cannot read a Content-Type whose value starts on a continuation line, which MIME readers
    accept; the gateway must see what the recipient's reader will)."""
    head, _, body = entity.partition(b"\n\n")
    lines = []
    for block in _header_blocks(head):
        name, _, value = block.partition(b":")
        lines.append(name.strip() + b": " + re.sub(rb"\s+", b" ", value).strip())
    return b"\n".join(lines) + b"\n\n" + body


def drop(transport: list[bytes], prefix: bytes) -> list[bytes]:
    """Transport headers without those whose name starts with `prefix` (any case)."""
    prefix = prefix.lower()
    return [b for b in transport if not b.lower().startswith(prefix)]


def _content_type(entity: bytes) -> bytes:
    """The Content-Type value, unfolded, case kept (boundaries are case-sensitive)."""
    for block in _header_blocks(entity.split(b"\n\n", 1)[0]):
        if CONTENT_TYPE.match(block):
            return re.sub(rb"\s+", b" ", block.partition(b":")[2]).strip()
    return b"text/plain"


def content_type(entity: bytes) -> bytes:
    return _content_type(entity).lower()


class MimeLimit(ValueError):
    """The MIME structure is deeper or has more parts than the gateway accepts."""


BOUNDARY = re.compile(rb'boundary\s*=\s*(?:"([^"\n]{1,200})"|([^\s;"]{1,200}))', re.IGNORECASE)


def _children(entity: bytes) -> list[bytes]:
    """The parts of a multipart entity, or the message inside message/rfc822."""
    kind = _content_type(entity)
    body = entity.partition(b"\n\n")[2]
    if kind.lower().startswith(b"message/rfc822"):
        return [body]
    if not kind.lower().startswith(b"multipart/"):
        return []
    match = BOUNDARY.search(kind)
    if not match:
        return []
    delimiter = b"\n--" + (match.group(1) or match.group(2))
    parts = []
    for piece in (b"\n" + body).split(delimiter)[1:]:
        if piece.startswith(b"--"):  # the closing delimiter: the rest is epilogue
            break
        parts.append(piece.partition(b"\n")[2])
    return parts


def check_structure(entity: bytes, max_depth: int, max_parts: int) -> int:
    """Count the entity's MIME parts; raise MimeLimit past `max_depth` nesting levels or
    `max_parts` parts. Iterative, so hostile nesting cannot exhaust the stack."""
    pending, count = [(entity, 0)], 0
    while pending:
        part, depth = pending.pop()
        count += 1
        if count > max_parts:
            raise MimeLimit(f"more than {max_parts} MIME parts")
        if depth > max_depth:
            raise MimeLimit(f"MIME parts nested more than {max_depth} levels deep")
        pending.extend((child, depth + 1) for child in _children(part))
    return count


def is_encrypted(entity: bytes) -> bool:
    kind = content_type(entity)
    return kind.startswith((b"application/pkcs7-mime", b"application/x-pkcs7-mime")) and \
        b"signed-data" not in kind


def is_signed(entity: bytes) -> bool:
    kind = content_type(entity)
    return (kind.startswith(b"multipart/signed") and b"pkcs7-signature" in kind) or \
        (kind.startswith((b"application/pkcs7-mime", b"application/x-pkcs7-mime"))
         and b"signed-data" in kind)
