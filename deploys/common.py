"""The one shape every service deploy shares: render, check, restart on change."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from pyinfra import host
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


@dataclass(frozen=True)
class ConfigFile:
    """One file of a service: a template under templates/ or literal content."""

    dest: str
    template: str | None = None
    content: str | None = None
    mode: str = "0644"
    user: str = "root"
    group: str = "root"


def install(component: str, packages: tuple[str, ...]) -> None:
    """The Debian packages a deploy needs (a no-op when present, as in the lab image)."""
    apt.packages(name=f"{component} packages", packages=list(packages), no_recommends=True)


def put_file(item: ConfigFile, context: dict):
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
