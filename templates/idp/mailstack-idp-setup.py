#!/usr/bin/python3
"""Make the local Glewlwyd hold what mailstack wants (the JSON file given): the admin's
generated password (replacing the package's well-known default first), the mail scope,
the OIDC plugin, the mail client and one account per user. Accounts are never deleted;
a user's password is set only when the account is created (later changes are the user's).
Installed by mailstack; run by the deploy whenever the wanted state changes."""

import http.cookiejar
import json
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

DEFAULT_ADMIN_PASSWORD = "password"  # what the Debian package starts with
MANAGED_PLUGIN = "oidc"


class Api:
    def __init__(self, base: str):
        # the API on this host's loopback: the certificate names the host, not 127.0.0.1
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
                                                  urllib.request.HTTPSHandler(context=context))

    def call(self, method: str, path: str, body=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with self.opener.open(request, timeout=30) as response:
                text = response.read().decode()
                return response.status, json.loads(text) if text else None
        except urllib.error.HTTPError as err:
            return err.code, None

    def must(self, method: str, path: str, body=None):
        status, answer = self.call(method, path, body)
        if status != 200:
            sys.exit(f"mailstack-idp-setup: {method} {path} answered {status}")
        return answer

    def login(self, password: str) -> bool:
        return self.call("POST", "/auth/", {"username": "admin", "password": password})[0] == 200


def wait_for(api: Api) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            api.call("GET", "/config/")
            return
        except OSError:
            if time.monotonic() > deadline:
                sys.exit("mailstack-idp-setup: Glewlwyd does not answer on its API")
            time.sleep(1)


def admin_session(api: Api, password: str) -> None:
    if api.login(password):
        return
    if not api.login(DEFAULT_ADMIN_PASSWORD):
        sys.exit("mailstack-idp-setup: cannot log in as admin with the generated or the default password")
    admin = api.must("GET", "/user/admin")
    api.must("PUT", "/user/admin", {**admin, "password": password})
    if not api.login(password):
        sys.exit("mailstack-idp-setup: the admin password was not replaced")
    print("replaced the default admin password")


def upsert(api: Api, collection: str, key: str, wanted: dict, keep=()) -> bool:
    """Create or update one item; `keep` names fields set on creation only. True if it changed."""
    status, current = api.call("GET", f"/{collection}/{wanted[key]}")
    if status == 404:
        api.must("POST", f"/{collection}/", wanted)
        print(f"added {collection} {wanted[key]}")
        return True
    if status != 200:
        sys.exit(f"mailstack-idp-setup: GET /{collection}/{wanted[key]} answered {status}")
    update = {k: v for k, v in wanted.items() if k not in keep}
    if collection == "mod/plugin":
        changed = current.get("parameters") != update.get("parameters") or not current.get("enabled", True)
    else:
        changed = any(current.get(k) != v for k, v in update.items() if k != "password") or "password" in update
    if changed:
        api.must("PUT", f"/{collection}/{wanted[key]}", update)
        print(f"updated {collection} {wanted[key]}")
    return changed


def main(state_file: str) -> None:
    with open(state_file) as handle:
        state = json.load(handle)
    api = Api(state["api"])
    wait_for(api)
    admin_session(api, state["admin_password"])
    upsert(api, "scope", "name", {"name": state["scope"], "display_name": "Mail",
                                   "description": "IMAP, POP3 and submission logins",
                                   "password_required": True, "password_max_age": 0, "scheme": {}})
    plugin_changed = upsert(api, "mod/plugin", "name", {"module": "oidc", "name": MANAGED_PLUGIN,
                                                        "display_name": "OpenID Connect",
                                                        "parameters": state["plugin"]})
    upsert(api, "client", "client_id", state["client"])
    for user in state["users"]:
        upsert(api, "user", "username", user, keep=("password",))
    if plugin_changed:  # Glewlwyd reads a plugin's parameters when it starts
        subprocess.run(["systemctl", "restart", "glewlwyd"], check=True)
        wait_for(api)


if __name__ == "__main__":
    main(sys.argv[1])
