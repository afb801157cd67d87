"""The webmail component as rendered (no host): who may log in at which site, what the IdP
accepts as a return address, what Dovecot believes, and what the inventory refuses."""

import json

import pytest
from unitdata import VALID

from deploys import configured
from mailstack.inventory import InventoryInvalid, check_text
from mailstack.plan import plans

WEBMAIL = VALID.replace("roles: [smime]", "roles: [smime, idp, web, webmail]").replace(
    "    dmarc:\n      policy: none\n", "    dmarc:\n      policy: none\n    webmail: true\n").replace(
    "    tenant: second\n", "    tenant: second\n    webmail: true\n    password_login: false\n") + "oidc: {enabled: true}\n"


@pytest.fixture(autouse=True)
def secrets_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))


def files(text: str, host: str) -> dict:
    plan = plans(check_text(text, "inv.yml"))[host]
    return {f.path: f for c in plan.components for s in configured(c, plan) for f in s.files}


def problems(text: str) -> str:
    with pytest.raises(InventoryInvalid) as caught:
        check_text(text, "inv.yml")
    return str(caught.value)


def test_each_site_logs_in_its_own_domains_users_at_its_own_servers_and_tokens_only_goes_to_the_idp():
    rendered = files(WEBMAIL, "other")
    settings = json.loads(rendered["/etc/roundcube/mailstack.json"].content)
    assert settings["sites"] == {
        "webmail.one.example": {"imap_host": "ssl://imap.one.example:993", "smtp_host": "ssl://smtp.one.example:465",
                                "username_domain": "one.example", "username_domain_forced": True,
                                "oauth_login_redirect": False},
        "webmail.two.example": {"imap_host": "ssl://imap.two.example:993", "smtp_host": "ssl://smtp.two.example:465",
                                "username_domain": "two.example", "username_domain_forced": True,
                                "oauth_login_redirect": True}}
    common = settings["common"]
    assert common["oauth_auth_uri"] == "https://other.t.example:4593/api/oidc/auth"
    assert common["imap_conn_options"]["ssl"]["verify_peer"] and common["plugins"] == ["mailstack_client_ip"]
    assert not common["enable_installer"] and common["display_product_info"] == 0
    assert common["session_lifetime"] == 30 and common["login_rate_limit"] == 0  # no per-account lockout
    secret = rendered["/etc/roundcube/mailstack.json"]
    assert secret.secret and secret.mode == "0640" and secret.group == "www-data" and len(common["des_key"]) >= 24
    site = rendered["/etc/nginx/sites-enabled/mailstack-webmail"].content.decode()
    assert "server_name webmail.one.example webmail.two.example;" in site and "server_tokens off;" in site
    assert "frame-ancestors 'self'" in site and "limit_req zone=webmail_logins" in site
    assert "zone=webmail_logins:1m rate=10r/m;" in site
    assert "installer" not in site.split("location / { return 404; }")[0].split("root ")[1].split("\n", 1)[1]


def test_the_inventory_sets_the_session_length_and_the_login_rate():
    tuned = WEBMAIL + "webmail: {session_minutes: 90, logins_per_minute: 4}\n"
    rendered = files(tuned, "other")
    assert json.loads(rendered["/etc/roundcube/mailstack.json"].content)["common"]["session_lifetime"] == 90
    assert "rate=4r/m;" in rendered["/etc/nginx/sites-enabled/mailstack-webmail"].content.decode()


def test_a_site_asked_for_by_another_name_gets_nothing():
    config = files(WEBMAIL, "other")["/etc/roundcube/config.inc.php"].content.decode()
    assert "http_response_code(421)" in config and "$settings['sites'][$site]" in config


def test_the_idp_returns_browsers_to_the_webmail_sites_only_and_names_the_address_in_the_token():
    state = json.loads(files(WEBMAIL, "other")["/etc/mailstack/idp.json"].content)
    assert state["client"]["redirect_uri"] == ["https://webmail.one.example/index.php/login/oauth",
                                               "https://webmail.two.example/index.php/login/oauth"]
    assert state["plugin"]["email-claim"] == "mandatory"
    without = WEBMAIL.replace(", webmail]", "]").replace("    webmail: true\n", "")
    without = json.loads(files(without, "other")["/etc/mailstack/idp.json"].content)
    assert without["client"]["redirect_uri"] == []


def test_dovecot_believes_the_webmail_host_about_its_browsers_and_a_ban_closes_https_there():
    moved = WEBMAIL.replace("roles: [mx, submission, mailbox, filter]", "roles: [mx, submission, mailbox, filter, web, "
                            "webmail]").replace("roles: [smime, idp, web, webmail]", "roles: [smime, idp]")
    dovecot = files(WEBMAIL, "mx1")["/etc/dovecot/dovecot.conf"].lines
    assert "login_trusted_networks = 192.0.2.2" in dovecot
    assert "login_trusted_networks = 192.0.2.1" in files(moved, "mx1")["/etc/dovecot/dovecot.conf"].lines
    assert "login_trusted_networks = " in files(VALID, "mx1")["/etc/dovecot/dovecot.conf"].lines
    jail = files(moved, "mx1")["/etc/fail2ban/jail.d/mailstack.conf"].lines
    assert "port = 143,993,110,995,587,465,443" in jail
    assert "port = 143,993,110,995,587,465" in files(VALID, "mx1")["/etc/fail2ban/jail.d/mailstack.conf"].lines
    # where webmail runs, Roundcube's own failed logins are counted too (Dovecot may run elsewhere)
    webmail_jail = files(WEBMAIL, "other")["/etc/fail2ban/jail.d/mailstack-webmail.conf"].lines
    assert "journalmatch = SYSLOG_IDENTIFIER=roundcube" in webmail_jail
    assert "port = 143,993,110,995,587,465,443" in webmail_jail


def test_the_inventory_refuses_webmail_without_its_host_or_its_nginx_or_an_idp_for_tokens_only():
    assert "needs a host with the roles 'webmail' and 'web'" in problems(
        WEBMAIL.replace(", webmail]", "]"))
    assert "give this host the role 'web' too" in problems(WEBMAIL.replace("web, webmail]", "webmail]"))
    external = WEBMAIL.replace("roles: [smime, idp, web, webmail]", "roles: [smime, web, webmail]").replace(
        "oidc: {enabled: true}", "oidc: {enabled: true, provider: external, introspection_url: 'https://idp.example/i',"
        " client_secret_file: /etc/hostname}")
    assert "external provider are not implemented yet" in problems(external)


def test_a_unit_with_a_dot_in_its_name_is_still_a_service():
    from deploys.ops import unit_name
    assert unit_name("php8.2-fpm") == "php8.2-fpm.service"
    assert unit_name("mailstack-acme.timer") == "mailstack-acme.timer" and unit_name("nginx") == "nginx.service"
