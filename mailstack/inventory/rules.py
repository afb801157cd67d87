"""Rules that hold for every platform, whatever its components: names and addresses
unique, references resolve, tenants stay apart, lab-only settings stay in labs. Each
component brings its own rules (deploys/<component>.py)."""

from __future__ import annotations

import ipaddress
from collections import Counter

from mailstack.inventory.source import PathT, Positions, Problem, format_path

# role -> (roles of which at least one must exist somewhere, why)
ROLE_NEEDS = {
    "submission": (("mailbox",), "mailboxes whose users log in (a 'mailbox' host)"),
    "mx": (("mailbox",), "somewhere to deliver to (a 'mailbox' host)"),
    "proxy": (("mailbox",), "mailbox backends (hosts with 'mailbox')"),
    "sandbox": (("filter",), "rspamd to call it (a 'filter' host)"),
}


def _duplicates(values: list, where: list[PathT], pos: Positions, what: str) -> list[Problem]:
    problems, first = [], {}
    for value, path in zip(values, where, strict=True):
        if value in first:
            problems.append(pos.problem(path, f"{what} {value!r} is already used at "
                                        f"{format_path(first[value])} (line {pos.line(first[value])})"))
        else:
            first[value] = path
    return problems


def mailbox_hosts(domain: dict, hosts: list[dict]) -> list[str]:
    """Where a domain's mailboxes are: explicit, or derived from the roles."""
    if "mailbox" in domain:
        return list(domain["mailbox"])
    roles = {h["name"]: set(h["roles"]) for h in hosts}
    on_mx = [name for name in domain["mx"] if "mailbox" in roles.get(name, set())]
    return on_mx or [h["name"] for h in hosts if "mailbox" in h["roles"]]


def submission_hosts(domain: dict, hosts: list[dict]) -> list[str]:
    """Where a domain's users submit mail: explicit, or derived from the roles."""
    if "submission" in domain:
        return list(domain["submission"])
    submission = [h["name"] for h in hosts if "submission" in h["roles"]]
    near = {*domain["mx"], *mailbox_hosts(domain, hosts)}
    return [name for name in submission if name in near] or submission


def platform_problems(data: dict, pos: Positions) -> list[Problem]:
    """Every rule of this module, all problems at once."""
    return [problem for rule in (_host_problems, _domain_problems, _policy_problems, _list_problems, _address_problems,
                                 _send_as_problems, _migration_problems, _lab_only_problems)
            for problem in rule(data, pos)]


def _host_problems(data: dict, pos: Positions) -> list[Problem]:
    """Unique names and addresses; every role has what it needs somewhere."""
    problems: list[Problem] = []
    hosts = data["hosts"]
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
    return problems


def _domain_problems(data: dict, pos: Positions) -> list[Problem]:
    """One tenant per domain; its MX, mailbox and submission hosts exist and fit."""
    problems: list[Problem] = []
    hosts, domains = data["hosts"], data["domains"]
    roles_of = {h["name"]: set(h["roles"]) for h in hosts}
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
            if "mailbox" not in roles_of.get(name, set()):
                problems.append(pos.problem(("domains", i, "mailbox", j), f"host {name!r} is "
                                            "not defined or has no 'mailbox' role"))
        if len(domain.get("mailbox", ())) > 1 and not any("proxy" in r for r in roles_of.values()):
            problems.append(pos.problem(("domains", i, "mailbox"), "a domain on several mailbox hosts "
                                        "needs a 'proxy' host, where its users log in"))
        for j, name in enumerate(domain.get("submission", ())):
            if "submission" not in roles_of.get(name, set()):
                problems.append(pos.problem(("domains", i, "submission", j), f"host {name!r} is "
                                            "not defined or has no 'submission' role"))
        if domain["dkim"].get("previous") == domain["dkim"]["selector"]:
            problems.append(pos.problem(("domains", i, "dkim", "previous"), "is the selector that signs: a "
                                        "rotation names the new selector in `selector`, the old one here"))
        if "mailbox" not in domain and len(mailbox_hosts(domain, hosts)) > 1:
            problems.append(pos.problem(("domains", i), "several mailbox hosts could hold this "
                                        "domain: say which in domains[].mailbox"))
    return problems


def _policy_problems(data: dict, pos: Positions) -> list[Problem]:
    """Spam and malware policies: a discard is confirmed by its domain; a quarantine has a
    mailbox to go to, a user of the same domain."""
    problems: list[Problem] = []
    users = {u["address"].lower(): u for u in data["users"]}
    domains = {d["name"]: (i, d) for i, d in enumerate(data["domains"])}
    choices = [(("domains", i, "inbound"), d["name"], d["inbound"]) for i, d in enumerate(data["domains"])]
    choices += [(("users", j, "inbound"), u["address"].split("@")[1].lower(), u["inbound"])
                for j, u in enumerate(data["users"])]
    for where, name, policy in choices:
        if name not in domains:
            continue  # reported with the user's address
        inbound = domains[name][1]["inbound"]
        for kind in ("spam", "malware"):
            if policy.get(kind) == "discard" and not inbound["confirm_discard"]:
                problems.append(pos.problem((*where, kind), f"'discard' drops {kind} without telling the "
                                            f"sender; set domains[].inbound.confirm_discard: true for "
                                            f"{name} to choose it on purpose"))
            if policy.get(kind) == "quarantine" and "quarantine" not in inbound:
                problems.append(pos.problem((*where, kind), f"'quarantine' needs a quarantine mailbox: set "
                                            f"domains[].inbound.quarantine for {name} to one of its users"))
    for i, domain in enumerate(data["domains"]):
        address = domain["inbound"].get("quarantine", "").lower()
        if address and (address not in users or address.split("@")[1] != domain["name"]):
            problems.append(pos.problem(("domains", i, "inbound", "quarantine"), f"{address} is not a user "
                                        f"of {domain['name']} (the quarantine is a mailbox its admin reads)"))
    return problems


def _list_problems(data: dict, pos: Positions) -> list[Problem]:
    """A domain's allow and deny lists: no entry twice, none both allowed and refused, no
    network inside another of the same list."""
    problems: list[Problem] = []
    for i, domain in enumerate(data["domains"]):
        seen: dict[str, tuple] = {}
        for kind in ("allow", "deny"):
            for j, entry in enumerate(domain[kind]["senders"]):
                where, key = ("domains", i, kind, "senders", j), entry.lower()
                if key in seen:
                    other = seen[key]
                    what = "is listed twice" if other[2] == kind else "is both allowed and refused"
                    problems.append(pos.problem(where, f"{entry!r} {what} (also at {format_path(other)}, "
                                                f"line {pos.line(other)})"))
                else:
                    seen[key] = where
            networks = [(j, ipaddress.ip_network(n, strict=False)) for j, n in enumerate(domain[kind]["ips"])]
            for j, network in networks:
                for k, other in networks:
                    if k != j and network.version == other.version and network.subnet_of(other) and (
                            network != other or k < j):
                        problems.append(pos.problem(("domains", i, kind, "ips", j), f"{network} is already "
                                                    f"covered by {other} (domains[{i}].{kind}.ips[{k}])"))
                        break
        first: dict[str, int] = {}
        for j, extension in enumerate(domain["deny"]["attachments"]):
            if extension in first:
                problems.append(pos.problem(("domains", i, "deny", "attachments", j), f"{extension!r} is listed "
                                            f"twice (also at domains[{i}].deny.attachments[{first[extension]}])"))
            first.setdefault(extension, j)
        allowed = {ipaddress.ip_network(n, strict=False) for n in domain["allow"]["ips"]}
        for j, n in enumerate(domain["deny"]["ips"]):
            if ipaddress.ip_network(n, strict=False) in allowed:
                problems.append(pos.problem(("domains", i, "deny", "ips", j), f"{n} is both allowed and refused"))
    return problems


def _address_problems(data: dict, pos: Positions) -> list[Problem]:
    """Users and aliases are unique, in listed domains, and aliases reach someone."""
    problems: list[Problem] = []
    users, aliases = data["users"], data["aliases"]
    local = {d["name"] for d in data["domains"]}
    user_addresses = [u["address"].lower() for u in users]
    problems += _duplicates(user_addresses, [("users", i, "address") for i in range(len(users))],
                            pos, "user address")
    stores = {d["name"]: mailbox_hosts(d, data["hosts"]) for d in data["domains"]}
    for i, address in enumerate(user_addresses):
        if address.split("@")[1] not in local:
            problems.append(pos.problem(("users", i, "address"), f"domain "
                                        f"{address.split('@')[1]!r} of this user is not listed under domains"))
        elif "mailbox" in users[i] and users[i]["mailbox"] not in stores[address.split("@")[1]]:
            backends = ", ".join(stores[address.split("@")[1]]) or "none"
            problems.append(pos.problem(("users", i, "mailbox"), f"{users[i]['mailbox']!r} is not one of "
                                        f"the mailbox hosts of its domain ({backends})"))
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
    return problems


def _send_as_problems(data: dict, pos: Positions) -> list[Problem]:
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


def _migration_problems(data: dict, pos: Positions) -> list[Problem]:
    """Each mailbox moved in goes to one platform user, from a named old server."""
    migration, problems = data["migration"], []
    users = {u["address"].lower() for u in data["users"]}
    if migration["users"] and "source" not in migration:
        problems.append(pos.problem(("migration",), "migration.users needs migration.source: the old server"))
    problems += _duplicates([u["address"].lower() for u in migration["users"]],
                            [("migration", "users", i, "address") for i in range(len(migration["users"]))], pos,
                            "address")
    for i, entry in enumerate(migration["users"]):
        if entry["address"].lower() not in users:
            problems.append(pos.problem(("migration", "users", i, "address"), f"{entry['address']!r} is not a user "
                                        "under users: mail moves into a platform user's mailbox"))
    return problems


def _lab_only_problems(data: dict, pos: Positions) -> list[Problem]:
    """Settings a throwaway lab needs and a production platform must never have."""
    if data["platform"]["lab"]:
        return []
    problems = []
    for i, host in enumerate(data["hosts"]):
        if host["outside"]:
            problems.append(pos.problem(("hosts", i, "outside"), "only a lab (platform.lab: true) may have "
                                        "hosts that play the outside world"))
        if not host["ssh"]["verify_host_key"]:
            problems.append(pos.problem(("hosts", i, "ssh", "verify_host_key"), "host keys are always "
                                        "verified outside a lab: put the host's key into a known_hosts file "
                                        "(ssh.known_hosts) instead of turning the check off"))
    return problems
