"""ClamAV through rspamd, with real mail: viruses are refused at SMTP time with their
name, clean mail and documents pass, Office macros are refused (the lab's default), and
with clamd down mail waits at the sender (4xx) and arrives once clamd is back."""

import io
import smtplib
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest
from helpers import imap_find, message
from test_mail_flow import deferred_at, from_outside, smtp_from_test_machine

from deploys.clamav import EICAR, LAB_SIGNATURE

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "samples"
DOCX = "application/vnd.ms-word.document.macroEnabled.12"


def with_attachment(tag: str, data: bytes, filename: str, mime: str = "application/octet-stream",
                    recipient: str = "alice@example.test") -> EmailMessage:
    msg = message("carol@ext.test", recipient, tag)
    maintype, subtype = mime.split("/")
    msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg


def refusal(msg: EmailMessage, addr) -> smtplib.SMTPDataError:
    with smtp_from_test_machine(addr) as client, pytest.raises(smtplib.SMTPDataError) as err:
        client.send_message(msg)
    return err.value


# clamd's own protocol on its socket: PING answers PONG once the signatures are loaded
PING = ("python3 -c \"import socket; s = socket.socket(socket.AF_UNIX); s.connect('/run/clamav/clamd.ctl'); "
        "s.sendall(b'zPING\\0'); assert s.recv(16) == b'PONG\\0'\"")
WAIT_FOR_CLAMD = f"for i in $(seq 60); do {PING} 2>/dev/null && break; sleep 1; done; {PING}"


@pytest.fixture(scope="module")
def clamd_ready(mail, rspamd_ready):
    mail.check_output(WAIT_FOR_CLAMD)


@pytest.mark.parametrize("how", ["attachment", "inline"])
def test_eicar_is_refused_with_the_virus_name(addr, tag, clamd_ready, how):
    if how == "attachment":
        msg = with_attachment(tag, EICAR.encode(), "invoice.com")
    else:
        msg = message("carol@ext.test", "alice@example.test", tag, body=f"see below\n{EICAR}\n")
    err = refusal(msg, addr)
    assert err.smtp_code == 554, err
    assert f"{LAB_SIGNATURE}.UNOFFICIAL".encode() in err.smtp_error, err.smtp_error


def test_clean_mail_with_an_attachment_is_delivered(addr, fqdn, ca_file, tag, clamd_ready):
    data = (SAMPLES / "office-clean.docm").read_bytes() if SAMPLES.exists() else b"%PDF-1.4 harmless\n"
    from_outside(addr, fqdn, ca_file, with_attachment(tag, data, "report.docm", DOCX))
    raw = imap_find(addr["mail"], fqdn["mail"], ca_file, "alice@example.test", tag)
    assert raw is not None, "a clean attachment did not arrive"


def test_office_macros_are_refused_by_default(addr, tag, clamd_ready):
    if not (SAMPLES / "office-macro.docm").exists():
        pytest.skip(f"the macro sample is not here ({SAMPLES}/office-macro.docm, shipped beside the project)")
    err = refusal(with_attachment(tag, (SAMPLES / "office-macro.docm").read_bytes(), "order.docm", DOCX), addr)
    assert err.smtp_code == 554 and b"Heuristics.OLE2.ContainsMacros.VBA" in err.smtp_error, err


def test_clamd_down_means_4xx_then_delivery(mail, ext, addr, fqdn, ca_file, tag, clamd_ready):
    sent = 3
    mail.check_output("systemctl stop clamav-daemon.socket clamav-daemon.service")
    try:
        with smtp_from_test_machine(addr) as client:
            client.mail("carol@ext.test")
            client.rcpt("alice@example.test")
            code, reply = client.data(message("carol@ext.test", "alice@example.test", tag).as_bytes())
        assert 400 <= code < 500 and b"virus scanner unavailable" in reply, (code, reply)
        for i in range(sent):
            from_outside(addr, fqdn, ca_file, message("carol@ext.test", "alice@example.test", f"{tag}-{i}"))
        assert deferred_at(ext, "virus scanner unavailable", at_least=sent) >= sent  # waiting, not lost
    finally:
        mail.check_output("systemctl start clamav-daemon.service")
    mail.check_output(WAIT_FOR_CLAMD)
    ext.check_output("postqueue -f")
    arrived = [imap_find(addr["mail"], fqdn["mail"], ca_file, "alice@example.test", f"{tag}-{i}", timeout=120)
               for i in range(sent)]
    assert sum(raw is not None for raw in arrived) == sent


TAKES_ZIP = "dave@tenant-b.test"  # example.test refuses every .zip by its own list
CLAMD_MAX_FILES = 10000  # clamd's default: it stops reading an archive after so many members


def archive(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as zipped:
        for name, data in members:
            zipped.writestr(name, data)
    return buffer.getvalue()


def test_an_archive_too_big_to_scan_whole_is_refused_not_passed(addr, tag, clamd_ready):
    """The attacker hides EICAR behind more members than clamd reads: what it could not
    scan is a finding (the recipient's malware policy: reject), not a clean pass."""
    padding = [(f"{i}.txt", b"") for i in range(CLAMD_MAX_FILES)]
    data = archive([*padding, ("last.com", EICAR.encode())])
    err = refusal(with_attachment(tag, data, "photos.zip", "application/zip", TAKES_ZIP), addr)
    assert err.smtp_code == 554 and b"Heuristics.Limits.Exceeded" in err.smtp_error, err


def test_an_encrypted_archive_is_refused_by_the_malware_policy(addr, tag, clamd_ready):
    """Its content cannot be read, so it is not taken as clean: the zip's members marked
    encrypted (general purpose flag bit 0), as any password-protected zip has them."""
    data = bytearray(archive([("invoice.pdf", f"%PDF-1.4 {tag}".encode())], zipfile.ZIP_STORED))
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(signature)
        data[at + offset] |= 1
    err = refusal(with_attachment(tag, bytes(data), "invoice.zip", "application/zip", TAKES_ZIP), addr)
    assert err.smtp_code == 554 and b"Heuristics.Encrypted" in err.smtp_error, err
