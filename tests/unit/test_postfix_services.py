"""master.cf as rendered for submission, with and without the S/MIME gateway: rspamd
(header From bound to the login) runs on both paths; only where the gateway follows is
signing left to the return listener."""

import pytest
from unitdata import VALID

from deploys import postfix, rspamd, smime
from mailstack.inventory import check_text


def submission_options(monkeypatch, text: str) -> list[str]:
    inv = check_text(text, "inv.yml")
    for module in (postfix, smime):
        monkeypatch.setattr(module, "inventory", lambda: inv)
    monkeypatch.setattr(postfix, "this_host", lambda: inv.host("mx1"))
    services = postfix.services(postfix.smime_context())
    (submission,) = [s for s in services if s["line"].startswith("submission ")]
    return submission["options"]


WITHOUT_GATEWAY = VALID.replace("roles: [smime]", "roles: [mailbox]")


@pytest.mark.parametrize("text,daemon,content_filter", [
    (WITHOUT_GATEWAY, "ORIGINATING", None),
    (VALID, rspamd.SUBMISSION_VIA_GATEWAY, "content_filter=smime:[other.t.example]:10028"),
])
def test_submission_always_passes_rspamd(monkeypatch, text, daemon, content_filter):
    options = submission_options(monkeypatch, text)
    assert not any(o.startswith("smtpd_milters=") for o in options)  # main.cf's rspamd milter applies
    assert f"milter_macro_daemon_name={daemon}" in options
    assert [o for o in options if o.startswith("content_filter=")] == ([content_filter] if content_filter else [])
    sender_checks = next(o for o in options if o.startswith("smtpd_sender_restrictions="))
    assert "submission-null-sender" in sender_checks and "reject_authenticated_sender_login_mismatch" in sender_checks

