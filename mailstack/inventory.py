"""Load a mailstack inventory: YAML with line numbers, schema, defaults, semantic rules.

`load(path)` returns an immutable `Inventory` or raises `InventoryInvalid` carrying
every problem at once, each with the file, line and YAML path.
"""

from __future__ import annotations

import copy
import difflib
import ipaddress
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jsonschema
import jsonschema_rs
import yaml
from jsonschema.exceptions import best_match

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "inventory.schema.json"

PathT = tuple  # a YAML path: keys (str) and list indices (int)


# --- problems -------------------------------------------------------------

@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with an inventory, where it is and what to do."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} {self.path}: {self.message}"


class InventoryInvalid(Exception):
    """The inventory has problems; nothing may be deployed from it."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(set(problems))
        super().__init__("\n".join(str(p) for p in self.problems))


def format_path(path: PathT) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


# --- YAML with line numbers --------------------------------------------------

class _Positions:
    """Line numbers of every YAML path of one document."""

    def __init__(self, file: str):
        self.file = file
        self.lines: dict[PathT, int] = {}

    def line(self, path: PathT) -> int:
        path = tuple(path)
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path, 1)

    def problem(self, path: PathT, message: str) -> Problem:
        return Problem(self.file, self.line(path), format_path(path), message)


def _construct(loader: yaml.SafeLoader, node: yaml.Node, path: PathT, pos: _Positions,
               problems: list[Problem], depth: int = 0) -> Any:
    pos.lines.setdefault(path, node.start_mark.line + 1)
    if depth > 64:
        problems.append(pos.problem(path, "nested too deeply (recursive YAML alias?)"))
        return None
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append(pos.problem(path, "a key must be a plain string"))
                continue
            key = key_node.value
            child = (*path, key)
            if key in result:
                problems.append(Problem(pos.file, key_node.start_mark.line + 1, format_path(child),
                                        f"duplicate key {key!r} (first on line {pos.lines[child]})"))
                continue
            pos.lines[child] = key_node.start_mark.line + 1
            result[key] = _construct(loader, value_node, child, pos, problems, depth + 1)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(loader, item, (*path, i), pos, problems, depth + 1)
                for i, item in enumerate(node.value)]
    return loader.construct_object(node)


def load_yaml(text: str, file: str) -> tuple[Any, _Positions, list[Problem]]:
    """Parse YAML keeping the line of every path; every key is read as a string."""
    pos = _Positions(file)
    problems: list[Problem] = []
    loader = yaml.CSafeLoader(text) if yaml.__with_libyaml__ else yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = _construct(loader, node, (), pos, problems) if node is not None else None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        line = mark.line + 1 if mark else 1
        reason = getattr(err, "problem", None) or str(err)
        context, start = getattr(err, "context", None), getattr(err, "context_mark", None)
        if context and start:
            context += f" that starts on line {start.line + 1}"
        text_ = f"YAML syntax error: {reason}" + (f" ({context})" if context else "")
        return None, pos, [Problem(file, line, "(top level)", text_)]
    finally:
        loader.dispose()
    return data, pos, problems


# --- schema ------------------------------------------------------------------

@cache
def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def _is_ip(value: object) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_network(value: object) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


def _is_interface(value: object) -> bool:
    try:
        ipaddress.ip_interface(value)
    except ValueError:
        return False
    return "/" in str(value)


FORMATS = jsonschema.FormatChecker(formats=())
FORMATS.checks("ip-address")(_is_ip)
FORMATS.checks("ip-network")(_is_network)
FORMATS.checks("ip-interface")(_is_interface)


@cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema(), format_checker=FORMATS)


@cache
def _fast_validator():
    """A compiled validator for the common case of a valid inventory; the detailed
    (slower) one only runs to explain what is wrong."""
    return jsonschema_rs.validator_for(schema(), validate_formats=True, formats={
        "ip-address": _is_ip, "ip-network": _is_network, "ip-interface": _is_interface})


def _resolve(node: dict) -> dict:
    ref = node.get("$ref")
    if not ref:
        return node
    target = schema()
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return {**_resolve(target), **{k: v for k, v in node.items() if k != "$ref"}}


KINDS = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
         dict: "a mapping", list: "a list", type(None): "empty (null)"}


def _schema_problems(data: Any, pos: _Positions) -> list[Problem]:
    if _fast_validator().is_valid(data):
        return []
    problems = []
    for error in _validator().iter_errors(data):
        if error.context:
            error = best_match(error.context)
        path = tuple(error.absolute_path)
        sub = _resolve(error.schema) if isinstance(error.schema, dict) else {}
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = sorted(sub.get("properties", {}))
            for key in sorted(set(error.instance) - set(allowed)):
                guess = difflib.get_close_matches(key, allowed, n=1)
                hint = f"; did you mean {guess[0]!r}?" if guess else ""
                problems.append(pos.problem((*path, key), f"unknown key {key!r}{hint} "
                                            f"(allowed: {', '.join(allowed)})"))
        elif error.validator == "required":
            for key in error.validator_value:
                if key not in error.instance:
                    problems.append(pos.problem(path, f"missing required key {key!r}"))
        elif error.validator in ("pattern", "format") and "x-error" in sub:
            problems.append(pos.problem(path, f"{error.instance!r} {sub['x-error']}"))
        elif error.validator == "type":
            kind = KINDS.get(type(error.instance), type(error.instance).__name__)
            expected = error.validator_value
            expected = " or ".join(expected) if isinstance(expected, list) else expected
            problems.append(pos.problem(path, f"{error.instance!r} is {kind}, expected {expected}"))
        else:
            problems.append(pos.problem(path, error.message))
    return problems


def apply_defaults(node: dict, data: Any) -> None:
    """Fill in every default the schema declares, recursively, in place."""
    node = _resolve(node)
    if isinstance(data, dict):
        props = node.get("properties", {})
        for key, sub in props.items():
            resolved = _resolve(sub)
            if key not in data and "default" in resolved:
                data[key] = copy.deepcopy(resolved["default"])
            if key in data:
                apply_defaults(sub, data[key])
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            for key, value in data.items():
                if key not in props:
                    apply_defaults(extra, value)
    elif isinstance(data, list) and isinstance(node.get("items"), dict):
        for item in data:
            apply_defaults(node["items"], item)


# --- semantic rules ------------------------------------------------------------

# role -> (roles of which at least one must exist somewhere, why)
ROLE_NEEDS = {
    "submission": (("mailbox", "proxy"), "an authentication path (Dovecot SASL on a 'mailbox' or 'proxy' host)"),
    "mx": (("mailbox", "proxy"), "somewhere to deliver to (a 'mailbox' or 'proxy' host)"),
    "proxy": (("mailbox",), "mailbox backends (hosts with 'mailbox')"),
    "sandbox": (("filter",), "rspamd to call it (a 'filter' host)"),
}


def _duplicates(values: list, where: list[PathT], pos: _Positions, what: str) -> list[Problem]:
    problems, first = [], {}
    for value, path in zip(values, where, strict=True):
        if value in first:
            problems.append(pos.problem(path, f"{what} {value!r} is already used at "
                                        f"{format_path(first[value])} (line {pos.line(first[value])})"))
        else:
            first[value] = path
    return problems


def _mailbox_hosts(domain: dict, hosts: list[dict]) -> list[str]:
    """Where a domain's mail is delivered: explicit, or derived from the roles."""
    if "mailbox" in domain:
        return list(domain["mailbox"])
    store = {"mailbox", "proxy"}
    roles = {h["name"]: set(h["roles"]) for h in hosts}
    on_mx = [name for name in domain["mx"] if roles.get(name, set()) & store]
    proxies = [h["name"] for h in hosts if "proxy" in h["roles"]]
    return on_mx or proxies or [h["name"] for h in hosts if "mailbox" in h["roles"]]


def _submission_hosts(domain: dict, hosts: list[dict]) -> list[str]:
    """Where a domain's users submit mail: explicit, or derived from the roles."""
    if "submission" in domain:
        return list(domain["submission"])
    submission = [h["name"] for h in hosts if "submission" in h["roles"]]
    near = {*domain["mx"], *_mailbox_hosts(domain, hosts)}
    return [name for name in submission if name in near] or submission


def _semantic_problems(data: dict, pos: _Positions) -> list[Problem]:
    problems: list[Problem] = []
    hosts, domains = data["hosts"], data["domains"]
    users, aliases = data["users"], data["aliases"]
    roles_of = {h["name"]: set(h["roles"]) for h in hosts}
    present = Counter(role for h in hosts for role in set(h["roles"]))

    problems += _duplicates([h["name"] for h in hosts],
                            [("hosts", i, "name") for i in range(len(hosts))], pos, "host name")
    problems += _duplicates([str(ipaddress.ip_address(h["address"])) for h in hosts],
                            [("hosts", i, "address") for i in range(len(hosts))], pos, "address")
    for i, host in enumerate(hosts):
        for role in host["roles"]:
            needs, why = ROLE_NEEDS.get(role, ((), ""))
            if needs and not any(present[n] for n in needs):
                problems.append(pos.problem(("hosts", i, "roles"), f"role {role!r} needs {why}, "
                                            "but no host has it"))

    claimed: dict[str, PathT] = {}
    for i, domain in enumerate(domains):
        path = ("domains", i, "name")
        if domain["name"] in claimed:
            other = domains[claimed[domain["name"]][1]]
            problems.append(pos.problem(path, f"domain {domain['name']!r} is already claimed by "
                                        f"tenant {other.get('tenant', other['name'])!r} at "
                                        f"{format_path(claimed[domain['name']])} "
                                        f"(line {pos.line(claimed[domain['name']])})"))
        else:
            claimed[domain["name"]] = path
        for j, mx in enumerate(domain["mx"]):
            where = ("domains", i, "mx", j)
            if mx not in roles_of:
                problems.append(pos.problem(where, f"MX host {mx!r} is not defined under hosts"))
            elif "mx" not in roles_of[mx]:
                problems.append(pos.problem(where, f"MX host {mx!r} does not have the 'mx' role "
                                            f"(its roles: {', '.join(sorted(roles_of[mx]))})"))
        for j, name in enumerate(domain.get("mailbox", ())):
            if not roles_of.get(name, set()) & {"mailbox", "proxy"}:
                problems.append(pos.problem(("domains", i, "mailbox", j), f"host {name!r} is "
                                            "not defined or has neither 'mailbox' nor 'proxy'"))
        for j, name in enumerate(domain.get("submission", ())):
            if "submission" not in roles_of.get(name, set()):
                problems.append(pos.problem(("domains", i, "submission", j), f"host {name!r} is "
                                            "not defined or has no 'submission' role"))
        if "mailbox" not in domain and len(_mailbox_hosts(domain, hosts)) > 1:
            problems.append(pos.problem(("domains", i), "several mailbox hosts and no proxy could "
                                        "hold this domain: say which in domains[].mailbox"))
        inbound = domain["inbound"]
        if inbound["spam"] == "discard" and not inbound["confirm_discard"]:
            problems.append(pos.problem(("domains", i, "inbound", "spam"),
                                        "'discard' drops spam without telling the sender; set "
                                        "inbound.confirm_discard: true to choose it on purpose"))
        smime_used = domain["smime"]["sign"] != "never" or domain["smime"]["encrypt"] != "never"
        if smime_used and not present["smime"]:
            problems.append(pos.problem(("domains", i, "smime"),
                                        "S/MIME is enabled but no host has the 'smime' role"))

    local = set(claimed)
    user_addresses = [u["address"].lower() for u in users]
    problems += _duplicates(user_addresses, [("users", i, "address") for i in range(len(users))],
                            pos, "user address")
    for i, address in enumerate(user_addresses):
        if address.split("@")[1] not in local:
            problems.append(pos.problem(("users", i, "address"), f"domain "
                                        f"{address.split('@')[1]!r} of this user is not listed under domains"))
    alias_addresses = [a["address"].lower() for a in aliases]
    problems += _duplicates(alias_addresses, [("aliases", i, "address") for i in range(len(aliases))],
                            pos, "alias address")
    known = set(user_addresses) | set(alias_addresses)
    for i, alias in enumerate(aliases):
        address = alias_addresses[i]
        if address.split("@")[1] not in local:
            problems.append(pos.problem(("aliases", i, "address"), f"domain "
                                        f"{address.split('@')[1]!r} of this alias is not listed under domains"))
        if address in user_addresses:
            problems.append(pos.problem(("aliases", i, "address"),
                                        f"{address!r} is both a user and an alias"))
        for j, target in enumerate(alias["to"]):
            target = target.lower()
            if target.split("@")[1] in local and target not in known:
                problems.append(pos.problem(("aliases", i, "to", j),
                                            f"{target!r} is in a local domain but is neither a user "
                                            "nor an alias"))

    smime = data["smime"]
    gateways = [h["name"] for h in hosts if "smime" in h["roles"] and not h["outside"]]
    mtas = [h["name"] for h in hosts if {"mx", "submission"} & set(h["roles"]) and not h["outside"]]
    if smime["plaintext_loopback"] and any(name not in gateways[:1] for name in mtas):
        problems.append(pos.problem(("smime", "plaintext_loopback"), "plaintext needs the gateway on "
                                    "the same host as every MX and submission host; mail would cross "
                                    "the network in clear"))
    outside = {h["name"] for h in hosts if h["outside"]}
    own = {d["name"] for d in domains if not set(d["mx"]) <= outside}
    for i, partner in enumerate(smime["partners"]):
        if partner["domain"] in own:
            problems.append(pos.problem(("smime", "partners", i, "domain"), f"{partner['domain']!r} is "
                                        "one of the platform's own domains; set its policy under "
                                        "domains[].smime instead"))

    tls = data["tls"]
    if tls["source"] == "files":
        covered = {f["host"] for f in tls["files"]}
        for i, host in enumerate(hosts):
            if host["name"] not in covered:
                problems.append(pos.problem(("hosts", i, "name"), "tls.source is 'files' but "
                                            "tls.files has no certificate for this host"))
    for i, entry in enumerate(tls["files"]):
        if entry["host"] not in roles_of:
            problems.append(pos.problem(("tls", "files", i, "host"),
                                        f"host {entry['host']!r} is not defined under hosts"))
    problems += _send_as_problems(data, pos)
    problems += _lab_only_problems(data, pos)
    problems += _topology_problems(data, pos)
    return problems


def _send_as_problems(data: dict, pos: _Positions) -> list[Problem]:
    """send_as may only grant addresses of the user's own tenant."""
    problems = []
    tenant_of = {d["name"]: d.get("tenant", d["name"]) for d in data["domains"]}
    for i, user in enumerate(data["users"]):
        tenant = tenant_of.get(user["address"].split("@")[1].lower())
        for j, address in enumerate(user["send_as"]):
            domain = address.split("@")[1]
            if tenant_of.get(domain) != tenant:
                problems.append(pos.problem(("users", i, "send_as", j), f"{address!r} is not an address of "
                                            f"tenant {tenant!r}; send_as may only grant addresses of the "
                                            "user's own tenant"))
    return problems


def _lab_only_problems(data: dict, pos: _Positions) -> list[Problem]:
    """Settings a throwaway lab needs and a production platform must never have."""
    if data["platform"]["lab"]:
        return []
    problems = []
    for i, host in enumerate(data["hosts"]):
        if host["outside"]:
            problems.append(pos.problem(("hosts", i, "outside"), "only a lab (platform.lab: true) may have "
                                        "hosts that play the outside world"))
        if "dns" in host["roles"]:
            problems.append(pos.problem(("hosts", i, "roles"), "the 'dns' role serves a lab's zones; publish "
                                        "production DNS from `mailstack dns` (or set platform.lab: true)"))
        if not host["ssh"]["verify_host_key"]:
            problems.append(pos.problem(("hosts", i, "ssh", "verify_host_key"), "host keys are always "
                                        "verified outside a lab: put the host's key into a known_hosts file "
                                        "(ssh.known_hosts) instead of turning the check off"))
    return problems


def _topology_problems(data: dict, pos: _Positions) -> list[Problem]:
    """Splits of roles across hosts that the deploys do not build yet (issue 13)."""
    problems = []
    hosts = {h["name"]: h for h in data["hosts"]}
    filters = [h for h in data["hosts"] if "filter" in h["roles"] and not h["outside"]]
    for i, host in enumerate(data["hosts"]):
        roles = set(host["roles"])
        if host["outside"]:
            continue
        if "submission" in roles and "mailbox" not in roles:
            problems.append(pos.problem(("hosts", i, "roles"), "a 'submission' host without 'mailbox' needs "
                                        "SASL from a remote Dovecot, which is not implemented yet (issue 13)"))
        if filters and {"mx", "submission"} & roles and "filter" not in roles:
            problems.append(pos.problem(("hosts", i, "roles"), "Postfix here would reach rspamd on another "
                                        "host, which is not implemented yet (issue 13): add 'filter'"))
    for i, domain in enumerate(data["domains"]):
        if all(hosts.get(m, {}).get("outside") for m in domain["mx"]):
            continue
        store = _mailbox_hosts(domain, data["hosts"])
        for j, mx in enumerate(domain["mx"]):
            if store and mx not in store:
                problems.append(pos.problem(("domains", i, "mx", j), f"MX host {mx!r} would deliver to the "
                                            f"mailbox host {store[0]!r} over the network, which is not "
                                            "implemented yet (issue 13): make it the domain's mailbox host"))
    return problems


def _planned_problems(data: Any, pos: _Positions) -> list[Problem]:
    """Settings the schema marks `x-planned`: accepted by no deploy yet, so refused
    rather than silently ignored (an operator must not believe they protect anything)."""
    problems: list[Problem] = []

    def walk(node: dict, value: Any, path: PathT) -> None:
        node = _resolve(node)
        if isinstance(value, dict):
            props, extra = node.get("properties", {}), node.get("additionalProperties")
            for key, item in value.items():
                sub = props.get(key, extra if isinstance(extra, dict) else None)
                if sub is None:
                    continue
                planned = _resolve(sub).get("x-planned")
                if planned:
                    problems.append(pos.problem((*path, key), f"{key!r} is not implemented yet "
                                                f"(planned: {planned}); remove it"))
                else:
                    walk(sub, item, (*path, key))
        elif isinstance(value, list) and isinstance(node.get("items"), dict):
            for i, item in enumerate(value):
                walk(node["items"], item, (*path, i))
        elif isinstance(value, str) and value in node.get("x-planned-values", {}):
            problems.append(pos.problem(path, f"{value!r} is not implemented yet "
                                        f"(planned: {node['x-planned-values'][value]})"))

    walk(schema(), data, ())
    return problems


# --- the model -----------------------------------------------------------------

def freeze(value: Any) -> Any:
    """Deep read-only copy: mappings become MappingProxyType, lists tuples."""
    if isinstance(value, dict):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    return value


def _build(cls, values: Mapping):
    names = {f.name for f in fields(cls)}
    return cls(**{k: freeze(v) for k, v in values.items() if k in names})


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    fqdn: str
    roles: tuple[str, ...]
    outside: bool
    ssh: Mapping


@dataclass(frozen=True)
class Domain:
    name: str
    tenant: str
    mx: tuple[str, ...]
    mailbox: tuple[str, ...]
    submission: tuple[str, ...]
    imap: bool
    pop3: bool
    pop3_starttls: bool
    quota: str
    dkim: Mapping
    dmarc: Mapping
    spf: Mapping
    inbound: Mapping
    allow: Mapping
    deny: Mapping
    smime: Mapping
    mta_sts: str


@dataclass(frozen=True)
class User:
    address: str
    password: str
    quota: str
    enabled: bool
    send_as: tuple[str, ...]
    name: str = ""

    @property
    def domain(self) -> str:
        return self.address.split("@")[1]


@dataclass(frozen=True)
class Alias:
    address: str
    to: tuple[str, ...]

    @property
    def domain(self) -> str:
        return self.address.split("@")[1]


COMPONENTS = ("postfix", "dovecot", "rspamd", "clamav", "nauthilus", "smime", "peekaboo",
              "oidc", "s3", "backup", "monitoring")


@dataclass(frozen=True)
class Inventory:
    """A validated inventory with every default applied; read-only."""

    file: str
    platform: Mapping
    hosts: tuple[Host, ...]
    domains: tuple[Domain, ...]
    users: tuple[User, ...]
    aliases: tuple[Alias, ...]
    tls: Mapping
    artifacts: Mapping
    lab: Mapping
    components: Mapping

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def hosts_with(self, role: str) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if role in h.roles)

    def domain(self, name: str) -> Domain:
        return next(d for d in self.domains if d.name == name)

    def own_domains(self) -> tuple[Domain, ...]:
        """The platform's domains: all but those whose MX hosts all play the outside world."""
        outside = {h.name for h in self.hosts if h.outside}
        return tuple(d for d in self.domains if not set(d.mx) <= outside)

    def senders(self, domains: set[str] | None = None) -> dict[str, tuple[str, ...]]:
        """Who may send as whom: each address -> the logins that may use it (its own user,
        the users an alias reaches, `send_as` grants), for users of `domains` (default: all)."""
        logins: dict[str, set[str]] = {}
        users = {u.address for u in self.users if domains is None or u.domain in domains}
        for user in self.users:
            if user.address in users:
                for address in (user.address, *user.send_as):
                    logins.setdefault(address, set()).add(user.address)
        for alias in self.aliases:
            for target in alias.to:
                if target in users and (domains is None or alias.domain in domains):
                    logins.setdefault(alias.address, set()).add(target)
        return {address: tuple(sorted(who)) for address, who in sorted(logins.items())}

    def __getattr__(self, name: str) -> Mapping:
        components = object.__getattribute__(self, "components")
        if name in components:
            return components[name]
        raise AttributeError(name)


def _model(data: dict, file: str) -> Inventory:
    platform = data["platform"]
    hosts = [_build(Host, {**h, "fqdn": h.get("fqdn", f"{h['name']}.{platform['domain']}")})
             for h in data["hosts"]]
    domains = [_build(Domain, {**d, "tenant": d.get("tenant", d["name"]),
                               "mailbox": _mailbox_hosts(d, data["hosts"]),
                               "submission": _submission_hosts(d, data["hosts"])})
               for d in data["domains"]]
    quotas = {d["name"]: d["quota"] for d in data["domains"]}
    users = [_build(User, {**u, "address": u["address"].lower(),
                           "quota": u.get("quota", quotas[u["address"].split("@")[1].lower()])})
             for u in data["users"]]
    aliases = [_build(Alias, {**a, "address": a["address"].lower(),
                              "to": [t.lower() for t in a["to"]]}) for a in data["aliases"]]
    return Inventory(
        file=file, platform=freeze(platform), hosts=tuple(hosts), domains=tuple(domains),
        users=tuple(users), aliases=tuple(aliases), tls=freeze(data["tls"]),
        artifacts=freeze(data["artifacts"]), lab=freeze(data["lab"]),
        components=freeze({name: data[name] for name in COMPONENTS}),
    )


def check_text(text: str, file: str) -> Inventory:
    """Validate inventory text; raise InventoryInvalid with every problem found."""
    data, pos, problems = load_yaml(text, file)
    if problems and data is None:
        raise InventoryInvalid(problems)
    if data is None:
        raise InventoryInvalid([Problem(file, 1, "(top level)", "the inventory is empty")])
    problems += _schema_problems(data, pos)
    if problems:
        raise InventoryInvalid(problems)
    problems = _planned_problems(data, pos)
    if problems:
        raise InventoryInvalid(problems)
    apply_defaults(schema(), data)
    problems = _semantic_problems(data, pos)
    if problems:
        raise InventoryInvalid(problems)
    return _model(data, file)


def load(path: str | Path) -> Inventory:
    """Load and validate the inventory at `path`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InventoryInvalid([Problem(str(path), 1, "(top level)", f"cannot read: {err}")]) from None
    return check_text(text, str(path))
