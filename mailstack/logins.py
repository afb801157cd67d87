"""Where Dovecot checks a login beyond its own files, as the services that answer publish
it (owned by no component, like mailstack/s3.py for the store): Nauthilus's JSON API with
Dovecot's backchannel credentials (deploys/nauthilus/ serves it), and the OpenID Connect
provider's token introspection (deploys/idp/, or the operator's own provider)."""

from __future__ import annotations

import base64
from pathlib import Path

from mailstack.dns import webmail_name
from mailstack.inventory import Domain, Inventory
from mailstack.plan import platform_hosts
from mailstack.secrets import password

NAUTHILUS_API_PATH = "/api/v1/auth/json"
BACKCHANNEL_USER = "dovecot"  # the name Dovecot presents to Nauthilus
BACKCHANNEL_SECRET = "nauthilus-backchannel"  # mailstack.secrets.password(inv, BACKCHANNEL_SECRET)
IDP_PORT = 4593  # the platform's own provider (Glewlwyd), HTTPS
IDP_CLIENT_SECRET = "idp-client"  # the mail apps' client, the one Dovecot introspects with


def asks_nauthilus(inv: Inventory) -> bool:
    return inv.nauthilus["enabled"]


def auth_host(inv: Inventory):
    return platform_hosts(inv, "auth")[0]


def nauthilus_url(inv: Inventory) -> str:
    """Where Dovecot posts logins: the auth host by name (its certificate is checked)."""
    return f"https://{auth_host(inv).fqdn}:{inv.nauthilus['port']}{NAUTHILUS_API_PATH}"


def backchannel(inv: Inventory) -> str:
    """The Basic credentials Dovecot presents (generated once, kept with the secrets)."""
    return base64.b64encode(f"{BACKCHANNEL_USER}:{password(inv, BACKCHANNEL_SECRET)}".encode()).decode()


def issuer_host(inv: Inventory):
    return inv.hosts_with("idp")[0]


def introspection(inv: Inventory) -> tuple[str, str, str]:
    """(introspection URL, client id, client secret) Dovecot checks tokens with."""
    settings = inv.oidc
    if settings["provider"] == "external":
        secret = Path(settings["client_secret_file"]).expanduser().read_text().strip()
        return settings["introspection_url"], settings["client_id"], secret
    url = provider_url(inv, "introspect")
    return url, settings["client_id"], password(inv, IDP_CLIENT_SECRET)


def provider_url(inv: Inventory, endpoint: str) -> str:
    """An OpenID Connect endpoint (auth, token, userinfo) of the platform's own provider."""
    return f"https://{issuer_host(inv).fqdn}:{IDP_PORT}/api/oidc/{endpoint}"


def webmail_redirect_uri(domain: Domain) -> str:
    """Where the provider sends a browser back to the domain's webmail (Roundcube's own
    path): the one address it redirects to for that site, registered exactly."""
    return f"https://{webmail_name(domain)}/index.php/login/oauth"


def webmail_domains(inv: Inventory) -> tuple[Domain, ...]:
    """The platform's domains whose webmail is served (by the host with the `webmail` role)."""
    return tuple(d for d in inv.own_domains() if d.webmail) if inv.hosts_with("webmail") else ()
