#!/usr/bin/python3
"""Make the local Glewlwyd hold what mailstack wants (the JSON file given): the admin's
generated password, the mail scope, the OIDC plugin, the mail client and exactly the
inventory's accounts. Installed by mailstack; run by the deploy whenever the wanted state
changes, and (--seal) by Glewlwyd's unit before every start.

  mailstack-idp-setup STATE          the admin API, over TLS checked against the platform CA
  mailstack-idp-setup --seal FILE    offline, Glewlwyd stopped: an admin password the package
                                     set (the well-known default) is replaced in the database
                                     by the generated one (in FILE), so the default never answers

The inventory is the authority for accounts: one it lists that mailstack did not create
(someone made it first, with a password of their own) gets the inventory's first
password, and an account it no longer lists is deleted with its sessions and tokens. A
user's password is otherwise set only when mailstack creates the account (later changes
are the user's)."""

import base64
import hashlib
import hmac
import http.client
import json
import os
import secrets
import sqlite3
import ssl
import string
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

DEFAULT_ADMIN_PASSWORD = "password"  # what the Debian package starts with
MANAGED_PLUGIN = "oidc"
DATABASE = "/var/lib/dbconfig-common/sqlite3/glewlwyd/glewlwyd"  # Debian's, with sqlite3
CREATED = "/var/lib/mailstack/idp-accounts.json"  # the accounts mailstack created itself
APPLIED = "/var/lib/mailstack/idp-applied.json"  # each account as last written: {username: digest}
KEPT = ("admin",)  # accounts that are Glewlwyd's own, never the inventory's
ITERATIONS = 150000  # what Glewlwyd itself now writes: base64(PBKDF2-SHA256(password, salt) + salt),N
LEGACY_ITERATIONS = 1000  # a stored hash without ",N" (the package's default admin password)


def stored(password: str, salt: bytes, iterations: int = ITERATIONS) -> str:
    digest = base64.b64encode(hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations) + salt).decode()
    return digest if iterations == LEGACY_ITERATIONS else f"{digest},{iterations}"


def matches(password: str, hashed: str) -> bool:
    digest, _, iterations = hashed.partition(",")
    raw = base64.b64decode(digest)
    count = int(iterations) if iterations else LEGACY_ITERATIONS
    return len(raw) > 32 and hmac.compare_digest(stored(password, raw[32:], count), hashed)


def seal(admin_password: str) -> None:
    """Before Glewlwyd starts: the package's default admin password never goes live."""
    if not os.path.exists(DATABASE):
        return
    with sqlite3.connect(DATABASE) as db:
        rows = db.execute("SELECT guw_id, guw_password FROM g_user_password JOIN g_user USING (gu_id) "
                          "WHERE gu_username = 'admin'").fetchall()
        for row_id, hashed in rows:
            if matches(DEFAULT_ADMIN_PASSWORD, hashed):
                salt = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(16)).encode()
                db.execute("UPDATE g_user_password SET guw_password = ? WHERE guw_id = ?",
                           (stored(admin_password, salt), row_id))
                print("replaced the package's default admin password before Glewlwyd started")


class Api:
    """Glewlwyd's admin API by the host's own name, its certificate checked like any client's,
    over one kept-alive connection (a TLS handshake per call would dominate a sync of
    thousands of accounts)."""

    def __init__(self, base: str, trust: str):
        url = urllib.parse.urlsplit(base)
        self.prefix = url.path.rstrip("/")
        self.context = ssl.create_default_context(cafile=trust)
        self.address = (url.hostname, url.port or 443)
        self.connection: http.client.HTTPSConnection | None = None
        self.cookies: dict[str, str] = {}  # the admin session

    def call(self, method: str, path: str, body=None):
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        for attempt in (1, 2):
            if self.connection is None:
                self.connection = http.client.HTTPSConnection(*self.address, timeout=30, context=self.context)
            try:
                self.connection.request(method, self.prefix + path, body=data, headers=headers)
                response = self.connection.getresponse()
                text = response.read().decode()
                break
            except OSError as err:  # also: refused while Glewlwyd starts (wait_for tries again)
                self.connection.close()
                self.connection = None
                # the server ended the kept-alive connection before it read this call: once more
                if attempt == 2 or not isinstance(err, (http.client.RemoteDisconnected, BrokenPipeError,
                                                        ConnectionResetError)):
                    raise
        for cookie in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = cookie.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]
        return response.status, json.loads(text) if text else None

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
        except OSError as error:  # refused while it starts; a TLS failure says why (ssl.SSLError is one)
            if time.monotonic() > deadline:
                sys.exit(f"mailstack-idp-setup: Glewlwyd does not answer on its API ({error})")
            time.sleep(1)


def admin_session(api: Api, password: str) -> None:
    if not api.login(password):  # sealed before every start: the default never answers
        sys.exit("mailstack-idp-setup: cannot log in as admin with the generated password")


def upsert(api: Api, collection: str, key: str, wanted: dict) -> bool:
    """Create or update one item. True if it changed."""
    status, current = api.call("GET", f"/{collection}/{wanted[key]}")
    if status == 404:
        api.must("POST", f"/{collection}/", wanted)
        print(f"added {collection} {wanted[key]}")
        return True
    if status != 200:
        sys.exit(f"mailstack-idp-setup: GET /{collection}/{wanted[key]} answered {status}")
    if collection == "mod/plugin":
        changed = current.get("parameters") != wanted.get("parameters") or not current.get("enabled", True)
    else:
        changed = any(current.get(k) != v for k, v in wanted.items() if k != "password") or "password" in wanted
    if changed:
        api.must("PUT", f"/{collection}/{wanted[key]}", wanted)
        print(f"updated {collection} {wanted[key]}")
    return changed


def digest(user: dict) -> str:
    """What an account is, but for its first password (set only when it is created)."""
    return hashlib.sha256(json.dumps({k: v for k, v in user.items() if k != "password"}, sort_keys=True)
                          .encode()).hexdigest()


def accounts(api: Api, users: list[dict]) -> None:
    """Exactly the inventory's accounts: created with their first password; one that
    mailstack did not create is given that password and its sessions and tokens end; the
    others are deleted likewise. Where no record exists yet (the first run of this tool),
    the accounts found are taken as mailstack's: Glewlwyd's admin was sealed before it
    ever answered, so no one else could have made them. Once a run has recorded what it
    wrote, the next one asks Glewlwyd only about the accounts the inventory added, changed or
    dropped since, and those mailstack's record does not list (a platform of ten thousand
    accounts that adds one asks about one); without that record (remove it to have every
    account checked) Glewlwyd's accounts are read in one listing."""
    first_run = not os.path.exists(CREATED)
    created = set() if first_run else set(json.loads(Path(CREATED).read_text()))
    applied = None if first_run or not os.path.exists(APPLIED) else json.loads(Path(APPLIED).read_text())
    wanted = {user["username"]: user for user in users}
    if applied is None:
        listed = {u["username"]: u for u in api.must("GET", "/user/?limit=1000000") or []}
        asked, dropped = users, set(listed) - set(wanted) - set(KEPT)
    else:
        asked = [user for name, user in wanted.items() if applied.get(name) != digest(user) or name not in created]
        listed = {}
        for user in asked:
            status, found = api.call("GET", f"/user/{urllib.parse.quote(user['username'])}")
            if status not in (200, 404):
                sys.exit(f"mailstack-idp-setup: GET /user/{user['username']} answered {status}")
            if status == 200:
                listed[user["username"]] = found
        dropped = set(applied) - set(wanted) - set(KEPT)
    for user in asked:
        name = user["username"]
        current = listed.get(name)
        if current is not None and name not in created and not first_run:
            api.must("PUT", f"/user/{urllib.parse.quote(name)}", user)  # the inventory's first password
            revoke(api, name)
            print(f"user {name}: mailstack had not created it; its password is the inventory's again")
        elif current is None:
            api.must("POST", "/user/", user)
            print(f"added user {name}")
        elif any(current.get(k) != v for k, v in user.items() if k != "password"):
            api.must("PUT", f"/user/{urllib.parse.quote(name)}", {k: v for k, v in user.items() if k != "password"})
            print(f"updated user {name}")
        created.add(name)
    for name in sorted(dropped):
        if api.call("GET", f"/user/{urllib.parse.quote(name)}")[0] == 404:
            continue  # gone already
        revoke(api, name)
        api.must("DELETE", f"/user/{urllib.parse.quote(name)}")
        print(f"deleted user {name} (not in the inventory), its sessions and tokens ended")
    os.makedirs(os.path.dirname(CREATED), mode=0o700, exist_ok=True)
    record(CREATED, sorted(created & set(wanted)))
    record(APPLIED, {name: digest(user) for name, user in wanted.items()})


def record(path: str, value) -> None:
    with open(path + ".new", "w") as handle:
        json.dump(value, handle)
    os.replace(path + ".new", path)


def revoke(api: Api, username: str) -> None:
    """End the account's IdP sessions and disable its refresh tokens (as admin, for it)."""
    name = urllib.parse.quote(username, safe="")
    sessions, tokens = f"/delegate/{name}/profile/session", f"/{MANAGED_PLUGIN}/token"
    for listing, item, key in ((sessions, sessions + "/{}", "session_hash"),
                               (f"{tokens}?username={name}", tokens + "/{}?username=" + name, "token_hash")):
        for found in api.must("GET", listing) or []:
            if found.get("enabled"):
                api.must("DELETE", item.format(urllib.parse.quote(found[key], safe="")))


def main(state_file: str) -> None:
    with open(state_file) as handle:
        state = json.load(handle)
    api = Api(state["api"], state["trust"])
    wait_for(api)
    admin_session(api, state["admin_password"])
    upsert(api, "scope", "name", {"name": state["scope"], "display_name": "Mail",
                                   "description": "IMAP, POP3 and submission logins",
                                   "password_required": True, "password_max_age": 0, "scheme": {}})
    plugin_changed = upsert(api, "mod/plugin", "name", {"module": "oidc", "name": MANAGED_PLUGIN,
                                                        "display_name": "OpenID Connect",
                                                        "parameters": state["plugin"]})
    upsert(api, "client", "client_id", state["client"])
    accounts(api, state["users"])
    if plugin_changed:  # Glewlwyd reads a plugin's parameters when it starts
        subprocess.run(["systemctl", "restart", "glewlwyd"], check=True)
        wait_for(api)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--seal"]:
        seal(Path(sys.argv[2]).read_text().strip())
    else:
        main(sys.argv[1])
