"""The pyinfra operations every component shares: install a set of rendered files in
one round trip, check them with the daemon's own checker, then restart on change."""

from __future__ import annotations

import hashlib
import io
import shlex
import tarfile
from dataclasses import dataclass, field

from pyinfra import host
from pyinfra.api import FactBase, FileUploadCommand, operation
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.systemd import SystemdEnabled
from pyinfra.operations import apt, files, server, systemd
from pyinfra.operations.util import any_changed

from mailstack.component import File, Service

STAGING = "/root/.mailstack-staging"  # root-only: files get their owner and mode here
NOLOGIN = "/usr/sbin/nologin"  # the shell of the system users the components make


BIG = 1 << 20  # a file this large (a program) is hashed once: its stamp stands in for it after
STAMPS = "/var/lib/mailstack/stamps"  # per big file: "size inode mtime sha256" when last hashed
IDENTITY = "%s %i %.9Y"  # stat: a file replaced or written since has another size, inode or mtime


def stamp_path(path: str) -> str:
    return f"{STAMPS}/{hashlib.sha256(path.encode()).hexdigest()[:16]}"


class FileStates(FactBase):
    """Owner, group, mode and sha256 of many files at once: ["user group mode sha256" or
    "missing"], in the order of `paths`. One `stat` and one `sha256sum` for all of them (a
    process or three per file made a host's stock cost seconds of CPU where many lab hosts
    share two cores). A file in `stamped` (a program of ~100 MB) is hashed once: its stamp
    keeps that hash with the file's size, inode and mtime, and stands in while those are
    unchanged."""

    def command(self, paths, stamped=()):
        pairs = " ".join(f"{shlex.quote(p)} {shlex.quote(stamp_path(p)) if p in stamped else '-'}" for p in paths)
        # the pairs once (a hosting provider's thousands of files: the command must stay short),
        # then walked as often as needed: "$p" a path, "$t" its stamp or -
        each = "odd=1; for a in \"$@\"; do if [ $odd = 1 ]; then p=$a odd=0; continue; fi; t=$a odd=1; "
        small = f"{{ {each}if [ \"$t\" = - ] && [ -f \"$p\" ]; then printf '%s\\0' \"$p\"; fi; done; }}"
        return (f"set -- {pairs}; {each}printf 'o\\t%s\\n' \"$p\"; done; "
                f"{small} | xargs -0 -r stat --printf 's\\t%n\\t%U %G %a\\n' --; "
                f"{small} | xargs -0 -r sha256sum --; "
                f"{each}if [ \"$t\" = - ] || [ ! -f \"$p\" ]; then continue; fi; h=; "
                f"i=$(stat -c '{IDENTITY}' \"$p\"); "
                "[ -f \"$t\" ] && [ \"$(cut -d' ' -f1-3 \"$t\")\" = \"$i\" ] && h=$(cut -d' ' -f4 \"$t\"); "
                "if [ -z \"$h\" ]; then h=$(sha256sum < \"$p\" | cut -d' ' -f1); "
                f"mkdir -p {STAMPS} && echo \"$i $h\" > \"$t\"; fi; "
                "printf 'b\\t%s\\t%s %s\\n' \"$p\" \"$(stat -c '%U %G %a' \"$p\")\" \"$h\"; done; true")

    def process(self, output):
        order, stats, digests, big = [], {}, {}, {}
        for line in output:
            kind, _, rest = line.partition("\t")
            if kind == "o":
                order.append(rest)
            elif kind in ("s", "b"):
                path, _, state = rest.partition("\t")
                (stats if kind == "s" else big)[path] = state
            else:  # sha256sum: "DIGEST  PATH"
                digest, _, path = line.partition("  ")
                digests[path] = digest
        return [big.get(path) or (f"{stats[path]} {digests[path]}" if path in stats and path in digests
                                  else "missing") for path in order]


def stamped(files) -> list[str]:
    """The paths of the big files among `files` (their hash comes from their stamp)."""
    return [f.path for f in files if len(f.content) >= BIG]


_DIGESTS: dict[int, tuple[bytes, str]] = {}  # big contents shared by many hosts: hashed once a run


def digest(content: bytes) -> str:
    if len(content) < BIG:
        return hashlib.sha256(content).hexdigest()
    known = _DIGESTS.get(id(content))
    if known is None or known[0] is not content:
        known = _DIGESTS[id(content)] = (content, hashlib.sha256(content).hexdigest())
    return known[1]


class UnitStates(FactBase):
    """{unit: "ActiveState UnitFileState"} of the units given, in one systemctl call."""

    def command(self, units):
        return "systemctl show -p Id,ActiveState,UnitFileState -- " + " ".join(shlex.quote(u) for u in units)

    def process(self, output):
        found: dict[str, dict[str, str]] = {}
        unit: dict[str, str] = {}
        for line in output:
            key, _, value = line.partition("=")
            if key == "Id":
                unit = found[value] = {}
            unit[key] = value
        return {name: f"{props.get('ActiveState', '')} {props.get('UnitFileState', '')}".strip()
                for name, props in found.items()}


class Together(FactBase):
    """Several facts in one command (one round trip, not one each): the output lines of
    each, in order, or None for one whose command failed. `facts`: (fact class, arguments)."""

    def command(self, facts):
        parts = []
        for fact, arguments in facts:
            command = fact.command if isinstance(fact.command, str) else fact().command(**dict(arguments))
            parts.append(f"{{ {command} ; }}; echo {BOUNDARY}$?")
        return "; ".join(parts)

    def process(self, output):
        answers, lines = [], []
        for line in output:
            if line.startswith(BOUNDARY):
                answers.append(lines if line == f"{BOUNDARY}0" else None)
                lines = []
            else:
                lines.append(line)
        return answers


BOUNDARY = "--mailstack-fact-ends-"


def together(*facts: tuple[type[FactBase], dict]) -> list:
    """The facts asked in one command, each processed as its own (None: no answer)."""
    answers = host.get_fact(Together, facts=tuple((fact, tuple(sorted(arguments.items())))
                                                  for fact, arguments in facts)) or [None] * len(facts)
    return [fact().process(lines) if lines is not None else None
            for (fact, _), lines in zip(facts, answers, strict=True)]


@dataclass
class Stock:
    """What a host had when this deploy started, read in one command (its packages, the
    units and the files of every service here, the components' manifests): while `settled`,
    the operations decide from it instead of asking the host again. Files the deploy writes
    are entered as written; anything else that may change the host (packages, a unit
    started, pyinfra's own operations) unsettles it, and later operations ask the host.
    So a service's checker, restart and on_change command must change none of the files,
    units, directories or accounts the deploy manages."""

    packages: set[str]
    units: dict[str, str]
    files: dict[str, str]
    manifests: dict[str, list[str]] = field(default_factory=dict)
    settled: bool = True
    extra: dict | None = None  # directories, accounts, probes: read at the first use of any


STOCK: dict[str, Stock] = {}  # host name -> its stock, for this run


def take_stock(paths: list[str], units: list[str], big: list[str] = ()) -> Stock:
    """Read this host's packages, units, files (`big`: those read by their stamp) and
    manifests once, before its operations run: one command (one more for each further
    COMMAND_LIMIT of file paths, a hosting provider's thousands of files)."""
    first, *more = _file_questions(paths, big)
    states, packages, unit_states, manifests = together(
        (FileStates, first), (DebPackages, {}), (UnitStates, {"units": tuple(unit_name(u) for u in units)}),
        (Manifests, {}))
    for question in more:
        states = states and (states + (host.get_fact(FileStates, **question) or []))
    STOCK[host.name] = Stock(packages=set(packages or {}), units=unit_states or {},
                             files=dict(zip(paths, states or [], strict=False)), manifests=manifests or {})
    return STOCK[host.name]


def file_states(paths: list[str], big=()) -> list[str] | None:
    """FileStates of `paths` (`big`: read by their stamp), in as few commands as fit."""
    states: list[str] = []
    for question in _file_questions(paths, big):
        answer = host.get_fact(FileStates, **question)
        if answer is None:
            return None
        states += answer
    return states


def _file_questions(paths: list[str], big=()) -> list[dict]:
    """FileStates' arguments for `paths` in parts whose commands stay under COMMAND_LIMIT."""
    big, parts, part, size = set(big), [], [], 0
    most = len(stamp_path("")) + 8  # what a path adds besides itself at most: its stamp's path, quoted, or "-"
    for path in paths:
        if part and size + len(path) + most > COMMAND_LIMIT:
            parts.append(part)
            part, size = [], 0
        part.append(path)
        size += len(path) + (most if path in big else 4)
    parts.append(part)
    return [{"paths": tuple(part), "stamped": tuple(p for p in part if p in big)} for part in parts]


def stock() -> Stock | None:
    """This host's stock while nothing has changed on it in this run, else None."""
    found = STOCK.get(host.name)
    return found if found and found.settled else None


def unsettle() -> None:
    """Something changed on this host: from now on its operations ask it again."""
    if host.name in STOCK:
        STOCK[host.name].settled = False


class DirectoryStates(FactBase):
    """{path: "user group mode"} of the directories given ("missing" for none), in one command."""

    def command(self, paths):
        quoted = " ".join(shlex.quote(p) for p in paths)
        return f"for p in {quoted}; do if [ -d \"$p\" ]; then stat -c '%U %G %a' \"$p\"; else echo missing; fi; done"

    def process(self, output):
        return list(output)


class Accounts(FactBase):
    """The passwd and group entries of the names given (one command): {"passwd": {name:
    fields}, "group": {name: fields}}."""

    def command(self, names):
        quoted = " ".join(shlex.quote(n) for n in names)
        return f"getent passwd {quoted}; getent group {quoted}; true"

    def process(self, output):
        found: dict[str, dict[str, list[str]]] = {"passwd": {}, "group": {}}
        for line in output:
            fields = line.split(":")
            found["passwd" if len(fields) == 7 else "group"][fields[0]] = fields
        return found


class Probes(FactBase):
    """"yes" or "no" for each shell test given, in one command."""

    def command(self, tests):
        return "; ".join(f"if ({test}) >/dev/null 2>&1; then echo yes; else echo no; fi" for test in tests)

    def process(self, output):
        return list(output)


# host name -> the directories, accounts and probes its install stages ensure
WANTED: dict[str, dict[str, list[str]]] = {}


def _wanted(kind: str, *names: str) -> None:
    WANTED.setdefault(host.name, {"directories": [], "accounts": [], "probes": []})[kind].extend(names)


def unless(holds: str, operation, name: str, **arguments):
    """pyinfra's `operation` with `arguments`, skipped while the host is settled and the shell
    test `holds` is true there: every such test of a host is asked in one command, where each
    of pyinfra's operations would ask its own facts (a round trip each, most of a no-op run).
    The operation makes `holds` true and changes nothing else the stock knows (the deploy's
    files and units, its directories and accounts): the host stays settled."""
    _wanted("probes", holds)
    options = {key: arguments.pop(key) for key in [k for k in arguments if k.startswith("_")]}  # pyinfra's own
    return _unless(name=name, holds=holds, operation=operation, arguments=arguments, **options)


def absent(path: str, name: str):
    """files.file(present=False), from the stock while settled."""
    quoted = shlex.quote(path)
    return unless(f"[ ! -e {quoted} ] && [ ! -L {quoted} ]", files.file, name=name, path=path, present=False)


def gone(path: str, name: str):
    """A directory (and all in it) removed, from the stock while settled."""
    quoted = shlex.quote(path)
    return unless(f"[ ! -e {quoted} ] && [ ! -L {quoted} ]", files.directory, name=name, path=path, present=False)


def virtualenv(path: str, name: str):
    """A venv of Debian's python3 with no pip of its own (ensurepip takes seconds; `pip_install`
    installs into it with Debian's pip wheel), from the stock while settled."""
    quoted = shlex.quote(path)
    return unless(f"[ -x {quoted}/bin/python ]", server.shell, name=name,
                  commands=[f"python3 -m venv --without-pip {quoted}"])


PIP_WHEEL = "/usr/share/python-wheels/pip-*.whl"  # Debian's python3-pip-whl (python3-venv needs it)


def pip_install(venv: str, wheels: str) -> str:
    """The command that installs `wheels`/requirements.txt into `venv` from those wheels only."""
    return (f"set -- {PIP_WHEEL} && {venv}/bin/python \"$1/pip\" install --quiet --disable-pip-version-check "
            f"--no-index --find-links {wheels} -r {wheels}/requirements.txt")


def symlink(path: str, target: str, name: str):
    """files.link, from the stock while settled."""
    return unless(f"[ \"$(readlink {shlex.quote(path)})\" = {shlex.quote(target)} ]", files.link, name=name,
                  path=path, target=target)


@operation()
def _unless(holds: str, operation, arguments: dict):
    answers = _stocked("probes")
    tests = wanted("probes")
    if answers and dict(zip(tests, answers, strict=False)).get(holds) == "yes":
        host.noop("as wanted")
        return
    yield from operation._inner(**arguments)
    if answers:  # done: it holds from now on
        answers[tests.index(holds)] = "yes"


EXTRAS = {"directories": (DirectoryStates, "paths"), "accounts": (Accounts, "names"), "probes": (Probes, "tests")}


def wanted(kind: str) -> list[str]:
    """What this host's install stages ensure of `kind`, in the order its stock answers."""
    names = WANTED.get(host.name, {}).get(kind, [])
    return sorted(set(names)) if kind == "accounts" else names


def _stocked(kind: str):
    """The stock of `kind` (directories, accounts, probes): all three read in one command at
    the first use of any, while the host is settled; None once it is not."""
    known = stock()
    if known is None:
        return None
    if known.extra is None:
        kinds = [k for k in EXTRAS if wanted(k)]
        answers = together(*((EXTRAS[k][0], {EXTRAS[k][1]: tuple(wanted(k))}) for k in kinds))
        known.extra = dict(zip(kinds, answers, strict=True))
    return known.extra.get(kind)


def _ask_again() -> None:
    """An account is made: the next question about directories, accounts or probes reads them
    all again (one command), the files and units stay as stocked."""
    known = stock()
    if known:
        known.extra = None


def directory(path: str, mode: str = "0755", user: str = "root", group: str = "root") -> None:
    """files.directory, decided from the stock while the host is settled."""
    _wanted("directories", path)
    _directory(name=path, path=path, mode=mode, user=user, group=group)


@operation()
def _directory(path: str, mode: str, user: str, group: str):
    states = _stocked("directories")
    found = dict(zip(wanted("directories"), states or [], strict=False))
    if found.get(path) == f"{user} {group} {int(mode, 8):o}":
        host.noop(f"{path} is as wanted")
        return
    yield from files.directory._inner(path=path, mode=mode, user=user, group=group)
    if states:  # done: as the stock now says, and the host stays settled
        states[wanted("directories").index(path)] = f"{user} {group} {int(mode, 8):o}"


def system_group(group: str, gid: int | None = None) -> None:
    """server.group (a system group unless its gid is given), from the stock while settled."""
    _wanted("accounts", group)
    _group(name=f"{group} group", group=group, gid=gid)


@operation()
def _group(group: str, gid: int | None):
    found = _stocked("accounts")
    entry = found and found["group"].get(group)
    if entry and (gid is None or entry[2] == str(gid)):
        host.noop(f"group {group} exists")
        return
    if found and not entry:  # a new group: the command pyinfra would run, without its facts
        yield f"groupadd {'-r' if gid is None else f'-g {gid}'} {shlex.quote(group)}"
    else:
        yield from server.group._inner(group=group, gid=gid, system=gid is None)
    _ask_again()


def system_user(user: str, home: str, group: str | None = None, uid: int | None = None) -> None:
    """server.user with no login shell and no home made (a system user unless its uid is
    given), from the stock while settled."""
    _wanted("accounts", user, *([group] if group else []))
    _user(name=f"{user} user", user=user, home=home, group=group, uid=uid)


@operation()
def _user(user: str, home: str, group: str | None, uid: int | None):
    found = _stocked("accounts")
    entry = found and found["passwd"].get(user)
    primary = found and group and found["group"].get(group)
    if entry and entry[5] == home and entry[6] == NOLOGIN and (uid is None or entry[2] == str(uid)) \
            and (group is None or (primary and primary[2] == entry[3])):
        host.noop(f"user {user} exists")
        return
    if found and not entry:  # a new user: the command pyinfra would run, without its facts (seconds)
        own = group or (user if user in found["group"] else None)  # a group of its name: that one
        yield " ".join(["useradd -M", f"-d {shlex.quote(home)} -s {NOLOGIN}",
                        *([f"-g {shlex.quote(own)}"] if own else []), "-r" if uid is None else f"--uid {uid}",
                        shlex.quote(user)])
    else:
        yield from server.user._inner(user=user, home=home, group=group, uid=uid, shell=NOLOGIN,
                                      ensure_home=False, system=uid is None)
    _ask_again()


UNIT_TYPES = frozenset({"service", "socket", "timer", "target", "path", "mount", "slice"})


def unit_name(unit: str) -> str:
    """A unit's full name: `.service` unless it names its type (php8.2-fpm is a service)."""
    return unit if unit.rpartition(".")[2] in UNIT_TYPES else f"{unit}.service"


def _state(file: File) -> str:
    return f"{file.user} {file.group} {int(file.mode[-3:], 8):o} {digest(file.content)}"


PENDING = "/var/lib/mailstack/pending"  # per service: its files changed, not yet applied


def pending_marker(service: Service) -> str:
    """The marker that stays while the service's changed files are not yet checked and applied."""
    what = service.unit or (service.files[0].path if service.files else " ".join(service.absent))
    return f"{PENDING}/{hashlib.sha256(what.encode()).hexdigest()[:16]}"


@operation()
def install_files(files: tuple[File, ...], absent: tuple[str, ...] = (), pending: str | None = None):
    """Make `files` exactly as given and remove `absent`: every changed file is uploaded
    into a root-only directory, given its owner and mode there, then renamed into place,
    its directory made if needed (no moment with the wrong owner or half a file; contents
    are never printed, so secrets stay secret). With `pending`, that marker is made before
    any file changes, and a marker left by a run that failed before it applied the files
    counts as a change (the checker, restart or command run again)."""
    markers = [pending] if pending else []
    paths = [f.path for f in files] + list(absent) + markers
    if not paths:
        host.noop("no files")
        return
    known = stock()
    if known and all(path in known.files for path in paths):
        found = [known.files[path] for path in paths]
    else:
        found = file_states(paths, stamped(files)) or ["missing"] * len(paths)  # fake connector: no facts
    changed = [f for f, state in zip(files, found, strict=False) if state != _state(f)]
    stale = [path for path, state in zip(absent, found[len(files):], strict=False) if state != "missing"]
    unapplied = bool(markers) and found[-1] != "missing"
    if not changed and not stale and not unapplied:
        host.noop(f"{len(files)} files are current")
        return
    mark = [f"mkdir -p {PENDING} && touch {pending}"] if markers else []  # before any file changes
    remove = [f"rm -f {shlex.quote(path)}" for path in stale]  # stamps too
    if changed:
        yield from _write(changed, mark, remove)
    else:
        yield from _commands([*mark, *remove])
    # done (pyinfra's change detection stops at the first command: never here): what this wrote
    # is known, the stock stays true and the host settled (a new user's maps do not make every
    # later operation ask the host again, hashing its files)
    if known:
        known.files.update({**dict.fromkeys(stale, "missing"), **{f.path: _state(f) for f in changed}})


def _write(changed: list[File], mark: list[str], remove: list[str]):
    """The commands that upload the changed files and put them in place, after `mark` and `remove`."""
    if host.name not in STAGED:  # once a run: an upload needs it there
        yield f"install -d -m 0700 -o root -g root {STAGING}"
        STAGED.add(host.name)
    small = [f for f in changed if len(f.content) < BIG]
    if small:  # one upload for all of them: a round trip or two each made a fresh deploy wait
        yield FileUploadCommand(_bundle(small), f"{STAGING}/{BUNDLE}")
    for file in changed:
        if len(file.content) >= BIG:
            yield FileUploadCommand(io.BytesIO(file.content), _staged(file))
    steps = [*mark, *remove]
    if small:
        steps.append(f"tar -x --no-same-owner --touch -f {STAGING}/{BUNDLE} -C {STAGING} && rm {STAGING}/{BUNDLE}")
    for file in changed:
        staged, parent = _staged(file), shlex.quote(file.path.rsplit("/", 1)[0] or "/")
        steps.append(f"chown {shlex.quote(file.user)}:{shlex.quote(file.group)} {staged} && chmod {file.mode} {staged}"
                     f" && mkdir -p {parent} && mv -f {staged} {shlex.quote(file.path)}")
        if len(file.content) >= BIG:
            steps.append(f"mkdir -p {STAMPS} && echo \"$(stat -c '{IDENTITY}' {shlex.quote(file.path)})\" "
                         f"{digest(file.content)} > {stamp_path(file.path)}")
    yield from _commands(steps)


COMMAND_LIMIT = 60_000  # bytes of one command: SSH and `sh -c` refuse far longer ones (128 KiB)


def _commands(steps: list[str]):
    """`steps` joined by && into as few commands as fit COMMAND_LIMIT (one, for all but
    thousands of files), in order: a failed step stops the rest."""
    command: list[str] = []
    size = 0  # of " && ".join(command), give or take its separators
    for step in steps:
        if command and size + len(step) + 4 > COMMAND_LIMIT:
            yield " && ".join(command)
            command, size = [], 0
        command.append(step)
        size += len(step) + 4
    if command:
        yield " && ".join(command)


STAGED: set[str] = set()  # the hosts whose STAGING this run has made sure of
BUNDLE = "files.tar"  # the small changed files of one operation, uploaded together into STAGING


def _staged(file: File) -> str:
    """Where a changed file waits in STAGING to get its owner and mode."""
    return f"{STAGING}/{hashlib.sha256(file.path.encode()).hexdigest()[:16]}"


def _bundle(files: list[File]) -> io.BytesIO:
    """A tar of `files` under their staging names, root's and unreadable to others (the
    command that places them gives each its owner and mode; `tar --touch` the time it is
    written, as daemons that reload a file newer than they read, NSD's zones, need)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for file in files:
            member = tarfile.TarInfo(_staged(file).rsplit("/", 1)[1])
            member.size, member.mode = len(file.content), 0o600
            archive.addfile(member, io.BytesIO(file.content))
    buffer.seek(0)
    return buffer


MANIFESTS = "/var/lib/mailstack/components"  # per component: the units and files it put on this host


class Manifests(FactBase):
    """The components' manifests on the host: {component name: [lines]}, in one command."""

    command = (f"for f in {MANIFESTS}/*; do [ -f \"$f\" ] && echo \"== ${{f##*/}}\" && cat \"$f\"; done; true")

    def process(self, output):
        found: dict[str, list[str]] = {}
        lines: list[str] = []
        for line in output:
            if line.startswith("== "):
                lines = found[line[3:]] = []
            else:
                lines.append(line)
        return found


def manifest(name: str, units: list[str], files: list[str]) -> File:
    """What a component put on this host, so that switching it off removes exactly that."""
    return File.text(f"{MANIFESTS}/{name}", "\n".join([*(f"unit {u}" for u in units), *(f"file {f}" for f in files)]))


def retire(name: str, lines: list[str], keep: set[str]) -> None:
    """A component this host no longer runs: its units stopped and disabled, the files its
    manifest lists removed (but the units and files another component here has now), then
    the manifest."""
    units = [line[5:] for line in lines if line.startswith("unit ") and line[5:] not in keep]
    paths = [line[5:] for line in lines if line.startswith("file ") and line[5:] not in keep]
    for unit in units:
        systemd.service(name=f"{unit} stopped and disabled ({name} is off here)", service=unit, running=False,
                        enabled=False)
    install_files(name=f"Files of {name} removed (off here)", files=(), absent=(*paths, f"{MANIFESTS}/{name}"))
    if any(path.startswith("/etc/systemd/") for path in paths):
        systemd.daemon_reload(name=f"systemd forgets {name}'s units")
    for unit in (line[5:] for line in lines if line.startswith("unit ") and line[5:] in keep):
        # a daemon another component runs too (nginx) had read files of this one: it reads its own only
        systemd.service(name=f"{unit} restarted without {name}'s files", service=unit, running=True, restarted=True)


NO_START = "/usr/sbin/policy-rc.d"  # Debian asks it before a package starts a daemon; 101: do not


def packages(component: str, names: tuple[str, ...], preseed: tuple[str, ...] = (), quiet: bool = False) -> None:
    """Debian packages (a no-op when present, as in the lab image), with the debconf
    answers they need given first; `quiet`: their daemons do not start from the install
    (they start once configured)."""
    known = STOCK.get(host.name)  # at preparation: the stock taken then
    missing = bool(names) and not set(names) <= (known.packages if known else set(host.get_fact(DebPackages) or {}))
    if not missing:
        return  # nothing to install: no operation, no question to the host
    unsettle()  # an install may write files and start daemons: ask the host from now on
    if preseed:
        server.shell(name=f"{component} debconf answers", commands=[
            f"printf '%s\\n' {' '.join(shlex.quote(line) for line in preseed)} | debconf-set-selections"])
    if quiet:
        server.shell(name=f"{component}: no daemon starts before it is configured", commands=[
            f"printf '#!/bin/sh\\nexit 101\\n' > {NO_START} && chmod 0755 {NO_START}"])
    apt.packages(name=f"{component} packages", packages=list(names), no_recommends=True)
    if quiet:
        server.shell(name=f"{component}: daemons may start again", commands=[f"rm -f {NO_START}"])


# apt-get update can wait for ever on a stalled mirror or proxy (seen with the lab's proxy under
# many hosts at once): each try has a time limit, and a stalled one is tried again
BOUNDED_UPDATE = "for try in 1 2 3; do timeout -k 10 180 apt-get update && exit 0; sleep 5; done; exit 1"


APT_STAMP = "/var/lib/apt/periodic/update-success-stamp"  # apt's, touched by every refresh


def package_lists(max_age: int, name: str):
    """Refresh apt's package lists when they are older than `max_age` seconds, in bounded tries."""
    return unless(f"[ -n \"$(find {APT_STAMP} -mmin -{max_age // 60})\" ]", _refresh, name=name, max_age=max_age)


@operation()
def _refresh(max_age: int):
    for command in apt.update._inner(cache_time=max_age):
        yield BOUNDED_UPDATE if command == "apt-get update" else command


# enabling reloads systemd each time (it re-reads every unit: a second or more on a busy fresh
# host), and for a packaged daemon runs update-rc.d for SysV init, which a systemd host never
# reads: the deploy enables without either and reloads once at a host's end (reload_units)
ENABLE = "SYSTEMCTL_SKIP_SYSV=1 systemctl enable --no-reload"
ENABLED: dict[str, list] = {}  # host name -> the operations that may have enabled a unit
STARTED: dict[str, set[str]] = {}  # host name -> the units this deploy started or restarted


@operation()
def unit_state(unit: str, running: bool | None = True, enabled: bool | None = True):
    """The unit running and/or enabled (None: left as it is), from the stock while the
    host is settled, else as the host says (systemd's facts)."""
    name = unit_name(unit)
    known = stock()
    state = known.units.get(name) if known else None
    if state is None:
        if running is not None:
            commands = list(systemd.service._inner(service=unit, running=running))
            yield from commands
            if commands and running:
                STARTED.setdefault(host.name, set()).add(name)
        if enabled and not (host.get_fact(SystemdEnabled, services=[name]) or {}).get(name):
            yield f"{ENABLE} {shlex.quote(name)}"
        return
    active, _, file_state = state.partition(" ")
    wanted = [*(["systemctl start"] if running and active != "active" else []),
              *([ENABLE] if enabled and file_state not in ("enabled", "static", "alias", "indirect") else [])]
    if not wanted:
        host.noop(f"{unit} is {'running' if running else 'enabled'}")
        return
    for action in wanted:
        yield f"{action} {shlex.quote(name)}"
    _note_unit(name, active="active" if running else None, file_state="enabled" if enabled else None)
    if running and active != "active":
        STARTED.setdefault(host.name, set()).add(name)


def _note_unit(name: str, active: str | None = None, file_state: str | None = None) -> None:
    """What this deploy did to a unit, entered in the stock: the host stays settled (a start
    or an enable changes nothing else the stock holds). Like every entry an operation makes in
    the stock, after its last command: pyinfra's change detection runs an operation up to its
    first command, then runs it again."""
    known = stock()
    if known:
        was_active, _, was_file = known.units.get(name, "").partition(" ")
        known.units[name] = f"{active or was_active} {file_state or was_file}".strip()


@operation()
def restart(unit: str, reread: bool = False, reload: bool = False):
    """The unit restarted (or reloaded, when `reload`), systemd re-reading its units first when
    `reread`, in one command; it is running then (in the stock too). A unit this deploy started
    or restarted is restarted, never reloaded: a reload's signal can reach a daemon that has
    not set its handler yet and end it (rspamd on a fresh host), and in a container systemd
    may fail to attach the reload's process to a unit that started a moment ago."""
    name = unit_name(unit)
    started = STARTED.setdefault(host.name, set())
    action = "reload" if reload and name not in started else "restart"
    yield " && ".join([*(["systemctl daemon-reload"] if reread else []), f"systemctl {action} {shlex.quote(name)}"])
    _note_unit(name, active="active")
    started.add(name)


def enabled(unit: str, **kwargs) -> None:
    """unit_state for enabling, recorded so that reload_units knows to reload systemd."""
    ENABLED.setdefault(host.name, []).append(unit_state(unit=unit, running=None, **kwargs))


def reload_units() -> None:
    """One systemd reload after this host's units were enabled (what enabling would have done
    each time): systemd then knows their new links and aliases."""
    done = ENABLED.get(host.name, [])
    if done:
        server.shell(name="systemd reads the units this deploy enabled", commands=["systemctl daemon-reload"],
                     _if=any_changed(*done))


# starts, restarts and reloads are retried: systemd in a container now and then fails to attach
# the process it starts to the unit's cgroup (status 219/CGROUP); a later attempt works
RETRIED = {"_retries": 3, "_retry_delay": 2}


def rereads_units(service: Service) -> bool:
    """Whether systemd must re-read its units when the service's files change: when they hold
    a definition systemd may have in memory (a unit file that was there, a drop-in, a unit it
    knew). A unit systemd has never seen it reads from disk when first asked for it (each
    re-read takes a second or more on a busy fresh host)."""
    defined = [f.path for f in service.files if f.path.startswith("/etc/systemd/")]
    if not defined:
        return False
    known = STOCK.get(host.name)  # at preparation: the stock taken then
    if known is None or any(".d/" in path or known.files.get(path, "missing") != "missing" for path in defined):
        return True
    return any(" " in known.units.get(unit_name(path.rsplit("/", 1)[1]), "unknown") for path in defined)


def apply(service: Service) -> None:
    """Install the service's files; when any changed, run its checker, then restart or
    reload it (or run its on_change command). A unit always ends enabled and running."""
    what = service.unit or (service.files[0].path if service.files else " ".join(service.absent))
    marker = pending_marker(service)
    written = install_files(name=f"Files of {what}", files=service.files, absent=service.absent, pending=marker)
    changed = written.did_change
    if service.check:
        server.shell(name=f"Check the {what} configuration", commands=[service.check], _if=changed)
    if service.on_change:
        server.shell(name=f"Apply {what}", commands=[service.on_change], _if=changed)
    if service.unit:
        _keep_running(service, changed)
    server.shell(name=f"{what}: applied", commands=[f"rm -f {marker}"], _if=changed)


def _keep_running(service: Service, changed) -> None:
    """The unit enabled and running, restarted or reloaded when its files `changed`."""
    # enabled before any start: some units exist for systemd only once enabled (rsyslog's
    # syslog.service alias, which its socket needs)
    enabled(service.unit, name=f"{service.unit} enabled")
    reread = rereads_units(service)
    if service.reload:
        if reread:
            systemd.daemon_reload(name=f"systemd reads {service.unit}'s new definition", _if=changed)
        # running first (a first start reads the new files); then a graceful reload on change,
        # unless this deploy just started it (systemd in a container often fails to attach a
        # reload's process to the cgroup of a unit that started a moment ago: 219/CGROUP)
        started = unit_state(name=f"{service.unit} running", unit=service.unit, enabled=None, **RETRIED)
        restart(name=f"Reload {service.unit} (configuration changed)", unit=service.unit, reload=True,
                _if=lambda: changed() and not started.did_change(), **RETRIED)
    else:
        restart(name=f"Restart {service.unit} (configuration changed)", unit=service.unit, reread=reread,
                _if=changed, **RETRIED)
        unit_state(name=f"{service.unit} running", unit=service.unit, enabled=None, **RETRIED)
