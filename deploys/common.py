"""The one shape every service deploy shares: render, check, restart on change."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pyinfra import host
from pyinfra.api import FileUploadCommand, operation
from pyinfra.api.exceptions import DeployError
from pyinfra.api.util import get_template
from pyinfra.facts.files import File, Sha256File
from pyinfra.operations import apt, files, server, systemd
from pyinfra.operations.util import any_changed

from mailstack.inventory import Host, Inventory

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def inventory() -> Inventory:
    return host.data.mailstack


def this_host() -> Host:
    return host.data.mailstack_host


def text(content: str) -> io.StringIO:
    """File content for files.put, newline-terminated."""
    return io.StringIO(content.rstrip("\n") + "\n")


def template(name: str) -> str:
    """Path of a template, e.g. "postfix/main.cf.j2"."""
    return str(TEMPLATES / name)


def guard(value, where: str = "a rendered file"):
    """Refuse a value that could add lines to a configuration file, whatever the schema
    let through: every inventory value passes here on its way into a file."""
    if isinstance(value, str):
        if any(c in value for c in "\n\r\0"):
            raise DeployError(f"refusing to write {value[:60]!r} into {where}: it contains a line break or NUL")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            guard(key, where)
            guard(item, where)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            guard(item, where)
    return value


def table(rows) -> str:
    """A lookup table of "key value" lines (Postfix maps, rspamd maps); every cell guarded."""
    return "\n".join(f"{guard(key)} {guard(value)}" for key, value in rows)


@dataclass(frozen=True)
class ConfigFile:
    """One file of a service: a template under templates/ or literal content. A
    `secret` file (keys, password hashes) is never shown by --diff and never readable
    by others, not even for a moment."""

    dest: str
    template: str | None = None
    content: str | None = None
    mode: str = "0644"
    user: str = "root"
    group: str = "root"
    secret: bool = False


STAGING = "/root/.mailstack-staging"  # root-only: secrets get their owner and mode here


@operation()
def secret_file(dest: str, data: bytes, user: str = "root", group: str = "root", mode: str = "0600"):
    """Install private data at `dest` without printing it (no diff, even with --diff) and
    without a moment when others may read it: uploaded into a root-only directory, given
    its owner and mode there, then renamed into place."""
    digest = hashlib.sha256(data).hexdigest()
    info = host.get_fact(File, path=dest)
    same_meta = bool(info) and (info["user"], info["group"], info["mode"]) == (user, group, int(mode[-3:]))
    if same_meta and host.get_fact(Sha256File, path=dest) == digest:
        host.noop(f"{dest} is current (content not shown)")
        return
    staged = f"{STAGING}/{digest[:16]}"
    yield f"install -d -m 0700 -o root -g root {STAGING}"
    yield FileUploadCommand(io.BytesIO(data), staged)
    yield f"chown {user}:{group} {staged} && chmod {mode} {staged} && mv -f {staged} {dest}"


def put_secret(name: str, dest: str, src: str | Path | None = None, content: str | None = None,
               user: str = "root", group: str = "root", mode: str = "0600"):
    """secret_file from a local file (`src`) or from text (`content`)."""
    data = Path(src).read_bytes() if src is not None else text(content).getvalue().encode()
    return secret_file(name=name, dest=dest, data=data, user=user, group=group, mode=mode)


def install(component: str, packages: tuple[str, ...]) -> None:
    """The Debian packages a deploy needs (a no-op when present, as in the lab image)."""
    apt.packages(name=f"{component} packages", packages=list(packages), no_recommends=True)


def render(name: str, context: dict) -> str:
    """A template rendered here as pyinfra would (for secret files, which skip its diff)."""
    return get_template(template(name)).render(**context)


def put_file(item: ConfigFile, context: dict):
    guard(context, item.dest)
    if item.secret:
        content = render(item.template, context) if item.template else item.content
        return put_secret(f"Write {item.dest} (secret)", item.dest, content=content, user=item.user,
                          group=item.group, mode=item.mode)
    if item.template:
        return files.template(name=f"Render {item.dest}", src=template(item.template),
                              dest=item.dest, mode=item.mode, user=item.user, group=item.group,
                              **context)
    return files.put(name=f"Write {item.dest}", src=text(item.content), dest=item.dest,
                     mode=item.mode, user=item.user, group=item.group)


def configure_service(service: str, items: list[ConfigFile], context: dict,
                      check: str | None = None, extra_changes: tuple = ()) -> None:
    """Write the files; when any changed, run the daemon's own checker, then restart.
    The service always ends enabled and running."""
    ops = [put_file(item, context) for item in items]
    changed = any_changed(*ops, *extra_changes)
    if check:
        server.shell(name=f"Check the {service} configuration", commands=[check], _if=changed)
    systemd.service(name=f"Restart {service} (configuration changed)", service=service,
                    restarted=True, daemon_reload=True, _if=changed)
    systemd.service(name=f"{service} enabled and running", service=service, running=True,
                    enabled=True)
