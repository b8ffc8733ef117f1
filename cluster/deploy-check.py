#!/usr/bin/env python3
"""Checks the deployment files against the real `elastic` CLI (docs/deploy.md).

    python3 cluster/deploy-check.py --elastic .build/debug/elastic
    python3 cluster/deploy-check.py --elastic .build/debug/elastic --self-test

The files cannot be run here (no Docker engine, no Kubernetes), so this reads them instead:
Dockerfile, cluster/compose.yaml, cluster/k8s/*.yaml (every document), docs/deploy.md and the
local scripts (cluster/local.sh, cluster/lib/common.sh). It extracts every `elastic`
invocation -- exec-form commands and args, `sh -c` scripts and their `$(...)`, health checks
and probes, the commands in the docs' code blocks -- and checks each subcommand, flag, value
and argument count against what `elastic SUBCOMMAND --help` lists. Then it checks what the
invocations imply: ports, volumes, the job files' paths, compose dependencies, the Kubernetes
kinds and references (Services, Secrets, ConfigMaps, claims, environment variables), the
Dockerfile's stages and the image name the docs say to build. It prints what it checked; on
any problem it prints each one as `FILE: WHERE: WHAT` and exits 1.

--self-test runs the checks on the real files (they must pass), then on mutated copies (a flag
renamed in the CLI's help, a flag misspelt in a manifest, a port, a dependency, ...) and expects
every mutation to be caught with the right message; it exits 1 if one is not.

Needs Python 3 and PyYAML; runs the binary only with --help and --version (and ldd on it).
"""

import argparse
import difflib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

try:
    import yaml
except ImportError:  # pragma: no cover
    sys.exit("deploy-check: needs PyYAML (pip install pyyaml, or apt-get install python3-yaml)")

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = "Dockerfile"
COMPOSE = "cluster/compose.yaml"
K8S_DIR = "cluster/k8s"
DOCS = "docs/deploy.md"
LOCAL_SCRIPTS = ["cluster/local.sh", "cluster/lib/common.sh"]

LISTEN_FLAGS = {"listen", "data-listen", "http"}
LONG_RUNNING = {("controller",), ("join",)}
MIN_GRACE_SECONDS = 45  # a leaving worker may hand off its state for up to 40 s
SHELLS = {"sh", "bash", "dash", "ash"}


class Problem(Exception):
    pass


# --------------------------------------------------------------------------------------------
# The CLI, as its help pages describe it


@dataclass
class Option:
    name: str
    value: str | None  # the placeholder, or None for a flag
    repeatable: bool
    default: str | None = None  # as `(default: …)` in the help


@dataclass
class HelpPage:
    path: tuple
    subcommands: list = field(default_factory=list)
    options: dict = field(default_factory=dict)
    shorts: dict = field(default_factory=dict)
    arguments: list = field(default_factory=list)  # (name, repeatable)
    required_options: set = field(default_factory=set)
    required_arguments: int = 0


SECTION = re.compile(r"^([A-Z][A-Z -]*[A-Z]):(.*)$")
OPTION_LINE = re.compile(r"^  (?:-([A-Za-z0-9]), )?--([A-Za-z0-9][A-Za-z0-9-]*)(?: <([^>]+)>)?( \.\.\.)?(?=\s|$)")
ARGUMENT_LINE = re.compile(r"^  <([^>]+)>( \.\.\.)?(?=\s|$)")
SUBCOMMAND_LINE = re.compile(r"^  ([a-z][a-z0-9-]*)(?=\s|$)")


def parse_help(path, text):
    page = HelpPage(path=tuple(path))
    section, usage, last, texts = None, [], None, {}
    for line in text.splitlines():
        match = SECTION.match(line)
        if match:
            section = match.group(1)
            if section == "USAGE":
                usage.append(match.group(2).strip())
            continue
        if not line.strip():
            if section == "USAGE":
                section = "AFTER USAGE"
            continue
        if section == "USAGE":
            usage.append(line.strip())
        elif section == "SUBCOMMANDS":
            m = SUBCOMMAND_LINE.match(line)
            if m:
                page.subcommands.append(m.group(1))
        elif section == "ARGUMENTS":
            m = ARGUMENT_LINE.match(line)
            if m:
                page.arguments.append((m.group(1), bool(m.group(2))))
        elif section not in (None, "OVERVIEW", "AFTER USAGE"):
            m = OPTION_LINE.match(line)
            if m:
                option = Option(m.group(2), m.group(3), bool(m.group(4)))
                page.options[option.name] = option
                if m.group(1):
                    page.shorts[m.group(1)] = option
                last, texts[option.name] = option, line
            elif line.startswith("   ") and last is not None:
                texts[last.name] += " " + line.strip()
            else:
                last = None
    for name, entry in texts.items():
        default = re.search(r"\(default:\s*([^)]*)\)", entry)
        if default:
            page.options[name].default = default.group(1).strip()
    # USAGE: `--name <value> ...` is repeatable; what is outside [...] is required.
    text_usage = " ".join(usage)
    for m in re.finditer(r"--([A-Za-z0-9-]+) <[^>]+> \.\.\.", text_usage):
        if m.group(1) in page.options:
            page.options[m.group(1)].repeatable = True
    prefix = " ".join(("elastic",) + tuple(path))
    if text_usage.startswith(prefix):
        text_usage = text_usage[len(prefix):]
    while True:
        stripped = re.sub(r"\[[^\[\]]*\]", "", text_usage)
        if stripped == text_usage:
            break
        text_usage = stripped
    for m in re.finditer(r"--([A-Za-z0-9-]+)(?: <[^>]+>)?|<([^>]+)>", text_usage):
        if m.group(1):
            page.required_options.add(m.group(1))
        elif m.group(2) not in ("subcommand", "options"):
            # `<options>`: ArgumentParser's short form of a usage line too long to print.
            page.required_arguments += 1
    return page


class CLI:
    """The real CLI: runs `elastic PATH --help` once per page."""

    def __init__(self, binary):
        self.binary = str(binary)
        self._texts = {}
        self._pages = {}
        self._version = None

    def help_text(self, path):
        key = tuple(path)
        if key not in self._texts:
            try:
                done = subprocess.run([self.binary, *key, "--help"], capture_output=True, text=True, timeout=60)
            except (OSError, subprocess.TimeoutExpired) as error:
                raise Problem(f"cannot run {self.binary} {' '.join(key)} --help: {error}")
            if done.returncode != 0:
                raise Problem(f"{self.binary} {' '.join(key)} --help exited {done.returncode}: {done.stderr.strip()[:300]}")
            self._texts[key] = done.stdout
        return self._texts[key]

    def page(self, path):
        key = tuple(path)
        if key not in self._pages:
            self._pages[key] = parse_help(key, self.help_text(key))
        return self._pages[key]

    def version(self):
        if self._version is None:
            try:
                done = subprocess.run([self.binary, "--version"], capture_output=True, text=True, timeout=60)
            except (OSError, subprocess.TimeoutExpired) as error:
                raise Problem(f"cannot run {self.binary} --version: {error}")
            self._version = done.stdout.strip()
        return self._version


class EditedCLI(CLI):
    """The real CLI's help with text replaced in one page (self-test: a renamed flag)."""

    def __init__(self, real, path, old, new):
        super().__init__(real.binary)
        self.real, self.edit = real, (tuple(path), old, new)
        self._version = real.version()

    def help_text(self, path):
        text = self.real.help_text(path)
        if tuple(path) == self.edit[0]:
            if self.edit[1] not in text:
                raise Problem(f"self-test: `elastic {' '.join(path)} --help` no longer contains {self.edit[1]!r}")
            text = text.replace(self.edit[1], self.edit[2])
        return text


# --------------------------------------------------------------------------------------------
# Shell: enough of sh to find the commands of a script (quotes, comments, $(...), here-documents,
# ;, &&, ||, |, &, redirections, exec, if/then/!, assignments)


@dataclass
class ShellCommand:
    words: list
    exec_: bool
    writes: list  # redirection targets and mv destinations
    text: str


class Script:
    def __init__(self, text):
        self.substitutions = {}  # placeholder -> Script
        self.commands = []
        self._parse(text)

    def all_commands(self):
        """Every command, those inside $(...) included (with `inside_substitution`)."""
        for command in self.commands:
            yield command, False
        for script in self.substitutions.values():
            for command, _ in script.all_commands():
                yield command, True

    def substitution(self, word):
        """The script of a word that is exactly one $(...), or None."""
        m = re.fullmatch(r"@SUB\d+@", word or "")
        return self.substitutions.get(word) if m else None

    def _parse(self, text):
        text = re.sub(r"\\\n", " ", text)
        lines, skipping = [], None
        for line in text.split("\n"):
            if skipping is not None:
                if line.strip() == skipping:
                    skipping = None
                continue
            heredoc = re.search(r"<<-?\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1", line)
            if heredoc and "<<<" not in line:
                skipping = heredoc.group(2)
            lines.append(line)
        text = self._extract(("\n".join(lines)))
        for segment in self._split(text):
            try:
                words = shlex.split(segment, posix=True)
            except ValueError as error:
                raise Problem(f"cannot parse the shell command `{segment.strip()}`: {error}")
            self._command(words, segment)

    def _extract(self, text):
        """Drops comments and replaces each $(...) by a placeholder word."""
        out, i, single, double = [], 0, False, False
        while i < len(text):
            c = text[i]
            if c == "\\" and not single:
                out.append(text[i:i + 2])
                i += 2
                continue
            if c == "'" and not double:
                single = not single
            elif c == '"' and not single:
                double = not double
            elif c == "#" and not single and not double and (i == 0 or text[i - 1] in " \t\n;&|("):
                while i < len(text) and text[i] != "\n":
                    i += 1
                continue
            elif c == "$" and not single and text.startswith("$(", i):
                end = self._matching(text, i + 1)
                if text.startswith("$((", i):
                    out.append("0")  # arithmetic
                else:
                    placeholder = f"@SUB{len(self.substitutions)}@"
                    self.substitutions[placeholder] = Script(text[i + 2:end])
                    out.append(placeholder)
                i = end + 1
                continue
            out.append(c)
            i += 1
        if single or double:
            raise Problem(f"unbalanced quotes in the shell script `{text.strip()[:80]}`")
        return "".join(out)

    @staticmethod
    def _matching(text, start):
        depth, i, single, double = 0, start, False, False
        while i < len(text):
            c = text[i]
            if c == "\\" and not single:
                i += 2
                continue
            if c == "'" and not double:
                single = not single
            elif c == '"' and not single:
                double = not double
            elif not single and not double:
                if c == "(":
                    depth += 1
                elif c == ")":
                    depth -= 1
                    if depth == 0:
                        return i
            i += 1
        raise Problem(f"unbalanced $( in the shell script `{text.strip()[:80]}`")

    @staticmethod
    def _split(text):
        segments, current, i, single, double = [], [], 0, False, False
        while i < len(text):
            c = text[i]
            if c == "\\" and not single:
                current.append(text[i:i + 2])
                i += 2
                continue
            if c == "'" and not double:
                single = not single
            elif c == '"' and not single:
                double = not double
            elif not single and not double:
                two = text[i:i + 2]
                if c in "\n;" or two in ("&&", "||"):
                    segments.append("".join(current))
                    current = []
                    i += 2 if two in ("&&", "||", ";;") else 1
                    continue
                if c == "|" or (c == "&" and text[i - 1:i] not in (">", "<") and text[i + 1:i + 2] != ">"):
                    segments.append("".join(current))
                    current = []
                    i += 1
                    continue
            current.append(c)
            i += 1
        segments.append("".join(current))
        return [s for s in segments if s.strip()]

    KEYWORDS = {"if", "then", "elif", "else", "fi", "while", "until", "do", "done", "!", "{", "}", "(", ")", "time", "command"}
    REDIRECT = re.compile(r"^(\d*|&)(>>|>\||>&|<&|<<-?|<<<|<>|>|<)(.*)$")

    def _command(self, words, text):
        exec_ = False
        while words and (words[0] in self.KEYWORDS or words[0] == "exec" or re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0])):
            if words[0] == "exec":
                exec_ = True
            words = words[1:]
        kept, writes, i = [], [], 0
        while i < len(words):
            m = self.REDIRECT.match(words[i])
            if m:
                target = m.group(3)
                if not target and i + 1 < len(words):
                    target = words[i + 1]
                    i += 1
                if m.group(2) in (">", ">>", ">|") and not target.startswith("&"):
                    writes.append(target)
                i += 1
                continue
            kept.append(words[i])
            i += 1
        if kept and kept[0] == "mv" and len(kept) >= 3:
            writes.append(kept[-1])
        if kept:
            self.commands.append(ShellCommand(kept, exec_, writes, text.strip()))


# --------------------------------------------------------------------------------------------
# Invocations of elastic and what the CLI says of them


@dataclass
class Invocation:
    file: str
    where: str
    args: list
    main: bool = False  # the container's process (exec form, or exec'd by its script)
    script: Script | None = None
    path: tuple = ()
    options: dict = field(default_factory=dict)  # name -> [values]
    positionals: list = field(default_factory=list)
    page: HelpPage | None = None
    valid: bool = False

    def label(self):
        return "elastic " + " ".join(self.path) if self.path else "elastic"

    def value(self, name):
        values = self.options.get(name)
        return values[-1] if values else None


def is_elastic(word, aliases=()):
    return word == "elastic" or word.endswith("/elastic") or word in aliases


def check_invocation(cli, report, inv, partial=False):
    """Checks subcommand, flags, values and arguments; fills inv.path/options/positionals.
    `partial`: a mention in prose, which may leave out required arguments."""
    page, path, args = cli.page(()), [], list(inv.args)
    while page.subcommands and args and args[0] in page.subcommands:
        path.append(args.pop(0))
        page = cli.page(path)
    inv.path, inv.page = tuple(path), page
    where = f"{inv.where}: `{inv.label()}`"
    if args and args[0] in ("--help", "-h", "--version", "help"):
        inv.valid = True
        return
    if page.subcommands and partial and (not args or re.fullmatch(r"[A-Z][A-Z_|-]*|…|\.\.\.", args[0])):
        inv.valid = True  # `elastic checkpoint`, `elastic SUBCOMMAND --help`: a mention
        return
    if page.subcommands:
        if not args:
            report.problem(inv.file, where, f"needs a subcommand ({', '.join(page.subcommands)})")
        else:
            close = difflib.get_close_matches(args[0], page.subcommands, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            report.problem(inv.file, where, f"has no subcommand '{args[0]}' (it has: {', '.join(page.subcommands)}){hint}")
        return
    ok, positional_only, i = True, False, 0
    while i < len(args):
        word = args[i]
        if word == "--" and not positional_only:
            positional_only = True
        elif word.startswith("--") and not positional_only:
            name, eq, value = word[2:].partition("=")
            option = page.options.get(name)
            if option is None:
                close = difflib.get_close_matches(name, list(page.options), n=1)
                hint = f"; did you mean --{close[0]}?" if close else ""
                report.problem(inv.file, where, f"unknown flag --{name}: `{inv.label()} --help` lists {', '.join('--' + o for o in page.options)}{hint}")
                ok = False
            elif option.value is None:
                if eq:
                    report.problem(inv.file, where, f"--{name} is a flag and takes no value (got '{value}')")
                    ok = False
                inv.options.setdefault(name, []).append(None)
            else:
                if not eq:
                    if i + 1 >= len(args) or (args[i + 1].startswith("--") and len(args[i + 1]) > 2):
                        report.problem(inv.file, where, f"--{name} needs a value <{option.value}>")
                        ok = False
                        i += 1
                        continue
                    value = args[i + 1]
                    i += 1
                if name in inv.options and not option.repeatable:
                    report.problem(inv.file, where, f"--{name} is given twice and is not repeatable")
                    ok = False
                inv.options.setdefault(name, []).append(value)
                if option.value == "host:port" and not host_port_ok(value):
                    report.problem(inv.file, where, f"--{name} '{value}' is not HOST:PORT")
                    ok = False
        elif word.startswith("-") and len(word) == 2 and not positional_only:
            if word[1] not in page.shorts:
                report.problem(inv.file, where, f"unknown short flag {word}")
                ok = False
        else:
            inv.positionals.append(word)
        i += 1
    repeatable = bool(page.arguments) and page.arguments[-1][1]
    if partial:
        inv.valid = ok
        return
    if len(inv.positionals) > len(page.arguments) and not repeatable:
        extra = inv.positionals[len(page.arguments):]
        report.problem(inv.file, where, f"takes {len(page.arguments)} argument(s) ({' '.join('<' + a + '>' for a, _ in page.arguments) or 'none'}); got also {' '.join(extra)}")
        ok = False
    if len(inv.positionals) < page.required_arguments:
        report.problem(inv.file, where, f"needs {page.required_arguments} argument(s) ({' '.join('<' + a + '>' for a, _ in page.arguments)}); got {len(inv.positionals)}")
        ok = False
    for name in sorted(page.required_options - set(inv.options)):
        report.problem(inv.file, where, f"needs --{name}")
        ok = False
    for (name, _), value in zip(page.arguments, inv.positionals):
        if name == "host:port" and not host_port_ok(value):
            report.problem(inv.file, where, f"argument <{name}> '{value}' is not HOST:PORT")
            ok = False
    inv.valid = ok


def host_port_ok(value):
    if "$" in value or "@SUB" in value:
        return True  # set at run time
    return re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}", value) is not None


def split_host_port(value):
    if not value or not host_port_ok(value) or "$" in value:
        return None, None
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def invocations_of_argv(argv, file, where, aliases=()):
    """The elastic invocations of a container's argv: exec form, or a shell's -c script."""
    if not argv:
        return []
    if is_elastic(argv[0], aliases):
        return [Invocation(file, where, list(argv[1:]), main=True)]
    if os.path.basename(argv[0]) in SHELLS:
        for index, word in enumerate(argv[1:], start=1):
            if word.startswith("-") and "c" in word[1:] and index + 1 < len(argv):
                return invocations_of_script(argv[index + 1], file, where, aliases, container=True)
    return []


def invocations_of_script(text, file, where, aliases=(), container=False):
    script = Script(text)
    found = []
    for command, inside in script.all_commands():
        words = command.words
        if words and is_elastic(words[0], aliases):
            found.append(Invocation(file, where, list(words[1:]), main=container and command.exec_ and not inside, script=script))
    return found


# --------------------------------------------------------------------------------------------
# The deployment, as read from the files


@dataclass
class Mount:
    path: str
    volume: tuple  # (kind, name)
    sub: str
    read_only: bool


@dataclass
class Workload:
    platform: str  # compose | kubernetes
    file: str
    name: str  # "service worker" / "Deployment elastic-worker, container worker"
    owner: str  # the compose service / the k8s object name
    kind: str
    one_shot: bool
    argv: list = field(default_factory=list)
    invocations: list = field(default_factory=list)
    mounts: list = field(default_factory=list)
    ports: list = field(default_factory=list)  # (port, what)
    port_names: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)  # k8s: name -> env entry
    env_from: list = field(default_factory=list)
    labels: dict = field(default_factory=dict)
    spec: dict = field(default_factory=dict)  # the compose service / the container
    pod: dict = field(default_factory=dict)  # k8s pod spec
    obj: dict = field(default_factory=dict)  # k8s object
    init_container: bool = False
    runs_shell: bool = False

    @property
    def main(self):
        mains = [inv for inv in self.invocations if inv.main]
        return mains[0] if mains else None

    @property
    def role(self):
        main = self.main
        return main.path if main and main.valid else None

    def locate(self, path):
        """(volume, path inside it, read only) of an absolute path in this container."""
        best = None
        for mount in self.mounts:
            prefix = mount.path.rstrip("/")
            if path == prefix or path.startswith(prefix + "/"):
                if best is None or len(prefix) > len(best.path.rstrip("/")):
                    best = mount
        if best is None:
            return ("container", self.owner), os.path.normpath(path), False
        rest = path[len(best.path.rstrip("/")):].lstrip("/")
        inside = os.path.normpath("/" + "/".join(p for p in (best.sub, rest) if p))
        return best.volume, inside, best.read_only


def describe(volume):
    return "the container's own filesystem" if volume[0] == "container" else f"{volume[0]} '{volume[1]}'"


def per_replica(volume):
    return volume[0] in ("container", "emptyDir", "volumeClaimTemplate", "tmpfs")


def shared_kind(volume):
    return volume[0] in ("volume", "persistentVolumeClaim", "nfs")


class Report:
    def __init__(self):
        self.checked = []
        self.problems = []

    def ok(self, text):
        self.checked.append(text)

    def problem(self, file, where, what):
        line = f"{file}: {where}: {what}" if where else f"{file}: {what}"
        if line not in self.problems:
            self.problems.append(line)


class Deployment:
    def __init__(self, files, cli, report):
        self.files, self.cli, self.report = files, cli, report
        self.workloads = []
        self.image = None
        self.dockerfile = None
        self.compose = None
        self.k8s = []  # (file, doc)
        self.jobs = {"compose": {}, "kubernetes": {}}  # platform -> {mounted path: (file, json)}
        self.docs_secrets = {}  # name -> set(keys)

    # -- loading -------------------------------------------------------------------------------

    def yaml_documents(self, name):
        try:
            docs = [doc for doc in yaml.safe_load_all(self.files[name]) if doc is not None]
        except yaml.YAMLError as error:
            self.report.problem(name, "", f"not valid YAML: {error}")
            return []
        self.report.ok(f"{name}: parsed {len(docs)} YAML document(s)")
        return docs

    def run(self):
        self.dockerfile = parse_dockerfile(self.files.get(DOCKERFILE, ""))
        compose_docs = self.yaml_documents(COMPOSE) if COMPOSE in self.files else []
        if not compose_docs:
            self.report.problem(COMPOSE, "", "missing or empty")
        k8s_files = sorted(f for f in self.files if f.startswith(K8S_DIR + "/") and f.endswith((".yaml", ".yml")))
        if not k8s_files:
            self.report.problem(K8S_DIR, "", "no manifests")
        for name in k8s_files:
            for doc in self.yaml_documents(name):
                self.k8s.append((name, doc))
        if compose_docs:
            self.compose = compose_docs[0]
            self.load_compose()
        self.load_kubernetes()
        for workload in self.workloads:
            for inv in workload.invocations:
                check_invocation(self.cli, self.report, inv)
        self.report.ok(f"{sum(len(w.invocations) for w in self.workloads)} elastic invocations in compose and Kubernetes checked against `elastic … --help`")
        self.check_images()
        self.check_dockerfile()
        self.check_roles()
        if self.compose is not None:
            self.check_compose()
        if self.k8s:
            self.check_kubernetes()
        self.check_jobs()
        self.check_docs()
        self.check_local_scripts()

    def default_argv(self, command=None, args=None):
        """The container's argv, with the image's ENTRYPOINT and CMD (Docker and Kubernetes rules)."""
        entrypoint = self.dockerfile.entrypoint if self.dockerfile else []
        cmd = self.dockerfile.cmd if self.dockerfile else []
        if command is not None:
            return list(command) + list(args or [])
        return list(entrypoint) + list(args if args is not None else cmd)

    # -- compose -------------------------------------------------------------------------------

    def load_compose(self):
        doc = self.compose
        services = doc.get("services")
        if not isinstance(services, dict) or not services:
            self.report.problem(COMPOSE, "", "no services")
            return
        for name, service in services.items():
            where = f"service {name}"
            if not isinstance(service, dict):
                self.report.problem(COMPOSE, where, "not a mapping")
                continue
            unescaped = lambda v: v.replace("$$", "$") if isinstance(v, str) else v
            def argv_of(value):
                if value is None:
                    return None
                if isinstance(value, str):
                    return shlex.split(unescaped(value))
                return [unescaped(str(v)) for v in value]
            entrypoint, command = argv_of(service.get("entrypoint")), argv_of(service.get("command"))
            if entrypoint is not None:
                argv = entrypoint + (command or [])
            else:
                argv = self.default_argv(args=command)
            restart = str(service.get("restart", "no"))
            workload = Workload("compose", COMPOSE, where, name, "service", one_shot=restart == "no",
                                argv=argv, spec=service)
            workload.runs_shell = bool(argv) and os.path.basename(argv[0]) in SHELLS
            try:
                workload.invocations = invocations_of_argv(argv, COMPOSE, where)
            except Problem as error:
                self.report.problem(COMPOSE, where, str(error))
            health = (service.get("healthcheck") or {}).get("test")
            if health:
                hwhere = f"{where}, healthcheck"
                try:
                    if isinstance(health, str):
                        workload.invocations += invocations_of_script(unescaped(health), COMPOSE, hwhere)
                    elif health[0] == "CMD":
                        workload.invocations += [Invocation(COMPOSE, hwhere, [unescaped(a) for a in health[2:]])] if is_elastic(health[1]) else []
                    elif health[0] == "CMD-SHELL":
                        workload.invocations += invocations_of_script(unescaped(health[1]), COMPOSE, hwhere)
                except Problem as error:
                    self.report.problem(COMPOSE, hwhere, str(error))
            for entry in service.get("volumes") or []:
                mount = self.compose_mount(entry, where)
                if mount:
                    workload.mounts.append(mount)
            for entry in service.get("configs") or []:
                source = entry if isinstance(entry, str) else entry.get("source")
                target = f"/{source}" if isinstance(entry, str) else entry.get("target", f"/{source}")
                workload.mounts.append(Mount(target, ("config", source), "", True))
            for entry in service.get("expose") or []:
                port = str(entry).split("/")[0]
                if port.isdigit():
                    workload.ports.append((int(port), f"expose {entry}"))
                else:
                    self.report.problem(COMPOSE, where, f"expose {entry}: name one port (a range cannot be checked)")
            for entry in service.get("ports") or []:
                text = str(entry.get("target")) if isinstance(entry, dict) else str(entry)
                port = text.split("/")[0].rsplit(":", 1)[-1]
                if port.isdigit():
                    workload.ports.append((int(port), f"ports {entry}"))
                else:
                    self.report.problem(COMPOSE, where, f"ports {entry}: name one container port (a range cannot be checked)")
            self.workloads.append(workload)

    def compose_mount(self, entry, where):
        if isinstance(entry, str):
            parts = entry.split(":")
            if len(parts) == 1:
                return Mount(parts[0], ("anonymous", parts[0]), "", False)
            source, target = parts[0], parts[1]
            read_only = len(parts) > 2 and "ro" in parts[2].split(",")
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        elif isinstance(entry, dict):
            kind, source, target = entry.get("type", "volume"), entry.get("source"), entry.get("target")
            read_only = bool(entry.get("read_only"))
        else:
            self.report.problem(COMPOSE, where, f"volume entry {entry!r} is neither a string nor a mapping")
            return None
        if kind == "volume" and source not in (self.compose.get("volumes") or {}):
            self.report.problem(COMPOSE, where, f"mounts volume '{source}', which the top-level `volumes:` does not declare")
        return Mount(target, (kind, source), "", read_only)

    def check_compose(self):
        doc, report = self.compose, self.report
        # Interpolation: compose replaces $NAME and ${NAME} with the host's environment, and
        # refuses a lone `$`; a literal $ is `$$`.
        for keypath, value in walk_strings(doc):
            if re.search(r"\$", value.replace("$$", "")):
                fragment = re.search(r"\$(\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*|.?)", value.replace("$$", "")).group(0)
                report.problem(COMPOSE, keypath, f"'{fragment}' is interpolated by compose on the host (or refused); write $$ for a $ the container's shell should see")
        report.ok(f"{COMPOSE}: no `$` left for compose to interpolate")
        services = {w.owner: w for w in self.workloads if w.platform == "compose"}
        used_volumes, used_configs = set(), set()
        for w in services.values():
            for m in w.mounts:
                if m.volume[0] == "volume":
                    used_volumes.add(m.volume[1])
                if m.volume[0] == "config":
                    used_configs.add(m.volume[1])
                    if m.volume[1] not in (doc.get("configs") or {}):
                        report.problem(COMPOSE, w.name, f"uses config '{m.volume[1]}', which the top-level `configs:` does not declare")
        for name in doc.get("volumes") or {}:
            if name not in used_volumes:
                report.problem(COMPOSE, "volumes", f"volume '{name}' is declared but no service mounts it")
        for name, config in (doc.get("configs") or {}).items():
            if name not in used_configs:
                report.problem(COMPOSE, "configs", f"config '{name}' is declared but no service uses it")
            if not isinstance(config, dict) or not ("content" in config or "file" in config):
                report.problem(COMPOSE, f"configs {name}", "needs `content:` or `file:`")
        report.ok(f"{COMPOSE}: volumes {sorted(used_volumes)} and configs {sorted(used_configs)} declared and used")

        # Dependencies.
        def depends(service):
            value = service.spec.get("depends_on") or {}
            if isinstance(value, list):
                return {name: "service_started" for name in value}
            return {name: (spec or {}).get("condition", "service_started") for name, spec in value.items()}

        edges = {name: depends(w) for name, w in services.items()}
        for name, targets in edges.items():
            for target, condition in targets.items():
                where = f"service {name}, depends_on {target}"
                if target not in services:
                    report.problem(COMPOSE, where, "no such service")
                elif condition not in ("service_started", "service_healthy", "service_completed_successfully"):
                    report.problem(COMPOSE, where, f"unknown condition '{condition}'")
                elif condition == "service_healthy" and not services[target].spec.get("healthcheck"):
                    report.problem(COMPOSE, where, f"waits for service_healthy, but {target} has no healthcheck")
                elif condition == "service_completed_successfully" and not services[target].one_shot:
                    report.problem(COMPOSE, where, f"waits for {target} to complete, but {target} restarts (it is not one-shot)")

        def after(source, target, conditions):
            """Whether `source` starts only after `target` reached one of `conditions`."""
            seen, todo = set(), [source]
            while todo:
                current = todo.pop()
                for nxt, condition in edges.get(current, {}).items():
                    if nxt == target and condition in conditions:
                        return True
                    if nxt not in seen and nxt in services:
                        seen.add(nxt)
                        todo.append(nxt)
            return False

        inits = [w for w in services.values() if any(inv.path == ("certs", "init") for inv in w.invocations)]
        if not inits:
            report.problem(COMPOSE, "", "no service runs `elastic certs init` (the one-shot init service)")
        for init in inits:
            if not init.one_shot:
                report.problem(COMPOSE, init.name, f"runs `elastic certs init` but restarts (restart: {init.spec.get('restart')}); the init service must be one-shot (restart: \"no\")")
            for name, w in services.items():
                if name != init.owner and not w.one_shot and not after(name, init.owner, {"service_completed_successfully"}):
                    report.problem(COMPOSE, w.name, f"does not wait for the init service: add depends_on: {{{init.owner}: {{condition: service_completed_successfully}}}}")
        if inits:
            report.ok(f"{COMPOSE}: init service '{inits[0].owner}' is one-shot and every long-running service waits for it")

        for name, w in services.items():
            role = w.role
            # One-shot or not, as the process says.
            if role in LONG_RUNNING and w.one_shot:
                report.problem(COMPOSE, w.name, f"runs `{w.main.label()}`, which runs until stopped, with restart \"no\"; give it restart: unless-stopped")
            if role not in LONG_RUNNING and not w.one_shot:
                report.problem(COMPOSE, w.name, f"exits when done but has restart: {w.spec.get('restart')}; a one-shot service needs restart \"no\"")
            # Files read from one-shot services.
            for inv in w.invocations:
                for reader in reads_of(inv):
                    volume, inside, _ = w.locate(reader)
                    writers = [o for o in services.values() if o is not w and any(o.locate(t)[:2] == (volume, inside) for t in writes_of(o))]
                    if not writers:
                        report.problem(COMPOSE, w.name, f"`{inv.label()}` reads {reader}, which no other service writes on a shared volume")
                    for o in writers:
                        if not o.one_shot:
                            continue
                        if not after(name, o.owner, {"service_completed_successfully"}):
                            report.problem(COMPOSE, w.name, f"reads {reader} written by {o.owner} but does not wait for it: depends_on {o.owner} with condition service_completed_successfully")
                        else:
                            report.ok(f"{COMPOSE}: service {name} reads {reader} after {o.owner} wrote it")
            # Whom it dials.
            for inv in w.invocations:
                for host, port, what in dials_of(inv):
                    if host in ("127.0.0.1", "localhost", "::1"):
                        if port not in listen_ports(w):
                            report.problem(COMPOSE, f"{inv.where}", f"`{inv.label()}` {what} {host}:{port}, but nothing in this container listens on {port}")
                        continue
                    target = services.get(host)
                    if target is None:
                        report.problem(COMPOSE, inv.where, f"`{inv.label()}` {what} {host}:{port}, but there is no service '{host}'")
                        continue
                    if port not in listen_ports(target):
                        report.problem(COMPOSE, inv.where, f"`{inv.label()}` {what} {host}:{port}, but service {host} listens on {sorted(listen_ports(target)) or 'no port'}")
                    conditions = {"service_healthy"} if w.one_shot else {"service_healthy", "service_started"}
                    if not after(name, host, conditions):
                        report.problem(COMPOSE, w.name, f"dials {host} but does not wait for it: depends_on {host} with condition {'service_healthy' if w.one_shot else 'service_healthy or service_started'}")
                    else:
                        report.ok(f"{COMPOSE}: service {name} dials {host}:{port} after it is up; {host} listens there")
            # Ports named must be ports listened on.
            listened = listen_ports(w)
            for port, what in w.ports:
                if port not in listened:
                    report.problem(COMPOSE, w.name, f"{what}: port {port} is not a --listen/--data-listen port of its command ({sorted(listened) or 'none'})")
            if w.ports:
                report.ok(f"{COMPOSE}: service {name} ports {[p for p, _ in w.ports]} match its listen ports")
        self.check_role_rules("compose")

    # -- Kubernetes ----------------------------------------------------------------------------

    POD_KINDS = {"Deployment", "StatefulSet", "Job", "DaemonSet", "ReplicaSet", "Pod", "CronJob"}

    def load_kubernetes(self):
        for file, doc in self.k8s:
            if not isinstance(doc, dict):
                self.report.problem(file, "", "a document that is not a mapping")
                continue
            kind, name = doc.get("kind"), (doc.get("metadata") or {}).get("name")
            if not doc.get("apiVersion") or not kind or not name:
                self.report.problem(file, f"{kind or '?'} {name or '?'}", "needs apiVersion, kind and metadata.name")
                continue
            if kind not in self.POD_KINDS:
                continue
            template = doc
            if kind == "CronJob":
                template = ((doc.get("spec") or {}).get("jobTemplate") or {})
            pod_meta, pod = ({}, doc.get("spec") or {}) if kind == "Pod" else (
                ((template.get("spec") or {}).get("template") or {}).get("metadata") or {},
                ((template.get("spec") or {}).get("template") or {}).get("spec") or {})
            volumes = {v.get("name"): v for v in pod.get("volumes") or []}
            claims = {((c.get("metadata") or {}).get("name")) for c in (doc.get("spec") or {}).get("volumeClaimTemplates") or []}
            one_shot_pod = kind in ("Job", "CronJob", "Pod") and pod.get("restartPolicy") in ("Never", "OnFailure")
            if kind in ("Job", "CronJob") and not one_shot_pod:
                self.report.problem(file, f"{kind} {name}", "the pod template needs restartPolicy: OnFailure or Never")
            for group, is_init in (("initContainers", True), ("containers", False)):
                for container in pod.get(group) or []:
                    cname = container.get("name", "?")
                    where = f"{kind} {name}, {'init container' if is_init else 'container'} {cname}"
                    w = Workload("kubernetes", file, where, name, kind, one_shot=is_init or one_shot_pod, spec=container,
                                 pod=pod, obj=doc, init_container=is_init, labels=pod_meta.get("labels") or {})
                    for entry in container.get("env") or []:
                        w.env[entry.get("name")] = entry
                    w.env_from = container.get("envFrom") or []
                    command, args = container.get("command"), container.get("args")
                    command = None if command is None else [self.kube_expand(str(a), w, f"{where}, command") for a in command]
                    args = None if args is None else [self.kube_expand(str(a), w, f"{where}, args") for a in args]
                    w.argv = self.default_argv(command, args)
                    w.runs_shell = bool(w.argv) and os.path.basename(w.argv[0]) in SHELLS
                    try:
                        w.invocations = invocations_of_argv(w.argv, file, where)
                    except Problem as error:
                        self.report.problem(file, where, str(error))
                    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                        spec = container.get(probe) or {}
                        exec_command = (spec.get("exec") or {}).get("command")
                        if exec_command:
                            argv = [self.kube_expand(str(a), w, f"{where}, {probe}") for a in exec_command]
                            found = invocations_of_argv(argv, file, f"{where}, {probe}")
                            for inv in found:
                                inv.main = False
                            w.invocations += found
                        for action in ("tcpSocket", "httpGet", "grpc"):
                            if action in spec:
                                port = spec[action].get("port")
                                w.ports.append((port, f"{probe} {action} port {port}"))
                    for entry in container.get("ports") or []:
                        port = entry.get("containerPort")
                        w.ports.append((port, f"containerPort {port}"))
                        if entry.get("name"):
                            w.port_names[entry["name"]] = port
                    for mount in container.get("volumeMounts") or []:
                        vname = mount.get("name")
                        volume = volumes.get(vname)
                        if volume is None and vname in claims:
                            key = ("volumeClaimTemplate", f"{name}/{vname}")
                        elif volume is None:
                            self.report.problem(file, where, f"volumeMount '{vname}' names no volume of the pod (nor a volumeClaimTemplate)")
                            continue
                        elif "persistentVolumeClaim" in volume:
                            key = ("persistentVolumeClaim", volume["persistentVolumeClaim"].get("claimName"))
                        elif "emptyDir" in volume:
                            key = ("emptyDir", f"{name}/{vname}")
                        elif "configMap" in volume:
                            key = ("configMap", volume["configMap"].get("name"))
                        elif "secret" in volume:
                            key = ("secret", volume["secret"].get("secretName"))
                        elif "nfs" in volume:
                            key = ("nfs", f"{volume['nfs'].get('server')}:{volume['nfs'].get('path')}")
                        elif "hostPath" in volume:
                            key = ("hostPath", volume["hostPath"].get("path"))
                        else:
                            key = ("other", f"{name}/{vname}")
                        w.mounts.append(Mount(mount.get("mountPath", ""), key, mount.get("subPath", ""), bool(mount.get("readOnly"))))
                    self.workloads.append(w)

    def kube_expand(self, text, w, where):
        """What the kubelet does to command/args: $(VAR) from the container's env, $$ -> $."""
        def replace(m):
            if m.group(0) == "$$":
                return "$"
            name = m.group(1)
            if name in w.env or self.env_from_provides(w, name):
                return "${" + name + "}"
            self.report.problem(w.file, where, f"$({name}) is not an environment variable of the container; Kubernetes would pass it literally")
            return m.group(0)
        return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", replace, text)

    def env_from_provides(self, w, name):
        for source in w.env_from:
            prefix = source.get("prefix", "")
            if not name.startswith(prefix):
                continue
            key = name[len(prefix):]
            if "secretRef" in source and key in self.docs_secrets.get(source["secretRef"].get("name"), set()):
                return True
            if "configMapRef" in source:
                for file, doc in self.k8s:
                    if isinstance(doc, dict) and doc.get("kind") == "ConfigMap" and (doc.get("metadata") or {}).get("name") == source["configMapRef"].get("name"):
                        if key in (doc.get("data") or {}):
                            return True
        return False

    def env_source(self, w, value):
        """For a value that is exactly ${VAR}: the env entry (or envFrom source) behind it."""
        m = re.fullmatch(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", value or "")
        if not m:
            return None
        if m.group(1) in w.env:
            return w.env[m.group(1)]
        for source in w.env_from:
            if self.env_from_provides(w, m.group(1)):
                ref = "secretKeyRef" if "secretRef" in source else "configMapKeyRef"
                name = (source.get("secretRef") or source.get("configMapRef")).get("name")
                key = m.group(1)[len(source.get("prefix", "")):]
                return {"name": m.group(1), "valueFrom": {ref: {"name": name, "key": key}}}
        return None

    def objects(self, kind):
        return [(f, d) for f, d in self.k8s if isinstance(d, dict) and d.get("kind") == kind]

    def check_kubernetes(self):
        report = self.report
        namespaces = {(d.get("metadata") or {}).get("name") for _, d in self.objects("Namespace")}
        used = set()
        for file, doc in self.k8s:
            if not isinstance(doc, dict) or doc.get("kind") in ("Namespace", None):
                continue
            ns = (doc.get("metadata") or {}).get("namespace")
            used.add(ns)
            if namespaces and ns not in namespaces:
                report.problem(file, f"{doc['kind']} {doc['metadata'].get('name')}", f"namespace '{ns}' is not the Namespace the manifests create ({', '.join(sorted(namespaces))})")
        if len(used) > 1:
            report.problem(K8S_DIR, "", f"objects are in several namespaces: {sorted(map(str, used))}")
        report.ok(f"{K8S_DIR}: every object in namespace {sorted(map(str, used))}")
        self.namespace = next(iter(used)) if len(used) == 1 else None

        # Selectors match their templates.
        for file, doc in self.k8s:
            if isinstance(doc, dict) and doc.get("kind") in ("Deployment", "StatefulSet", "ReplicaSet", "DaemonSet"):
                selector = ((doc.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
                labels = (((doc.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
                if not selector or any(labels.get(k) != v for k, v in selector.items()):
                    report.problem(file, f"{doc['kind']} {doc['metadata']['name']}", f"spec.selector.matchLabels {selector} does not match the template's labels {labels}")
        pods = [w for w in self.workloads if w.platform == "kubernetes" and not w.init_container]

        # Services: selector -> pods, targetPort -> a containerPort.
        self.services = {}
        for file, doc in self.objects("Service"):
            name = doc["metadata"]["name"]
            selector = (doc.get("spec") or {}).get("selector") or {}
            matched = [w for w in pods if selector and all(w.labels.get(k) == v for k, v in selector.items())]
            where = f"Service {name}"
            if not matched:
                report.problem(file, where, f"selector {selector} matches no pod template of the manifests")
            ports = {}
            for entry in (doc.get("spec") or {}).get("ports") or []:
                target = entry.get("targetPort", entry.get("port"))
                resolved = set()
                for w in matched:
                    if isinstance(target, str):
                        if target in w.port_names:
                            resolved.add(w.port_names[target])
                    elif target in [p for p, _ in w.ports]:
                        resolved.add(target)
                if matched and not resolved:
                    report.problem(file, where, f"port {entry.get('port')}: targetPort {target} is not a containerPort of {', '.join(w.name for w in matched)}")
                ports[entry.get("port")] = resolved
            self.services[name] = (file, matched, ports)
            if matched:
                report.ok(f"{file}: Service {name} selects {', '.join(sorted({w.owner for w in matched}))}, ports {sorted(ports)}")

        for w in self.workloads:
            if w.platform != "kubernetes":
                continue
            # Ports the container names must be ports it listens on.
            listened = listen_ports(w)
            for port, what in w.ports:
                resolved = w.port_names.get(port, port) if isinstance(port, str) else port
                if resolved not in listened:
                    report.problem(w.file, w.name, f"{what} is not a --listen/--data-listen port of its command ({sorted(listened) or 'none'})")
            if w.ports:
                report.ok(f"{w.file}: {w.name}: ports {[p for p, _ in w.ports]} match its listen ports")
            # Dials: a Service of the manifests, on a port that reaches the listener.
            for inv in w.invocations:
                for host, port, what in dials_of(inv):
                    if host in ("127.0.0.1", "localhost", "::1"):
                        if port not in listened:
                            report.problem(w.file, inv.where, f"`{inv.label()}` {what} {host}:{port}, but the container listens on {sorted(listened) or 'no port'}")
                        continue
                    service = self.service_of_host(host)
                    if service is None:
                        report.problem(w.file, inv.where, f"`{inv.label()}` {what} {host}:{port}, but no Service '{host.split('.')[0]}' in namespace {self.namespace} is in the manifests")
                        continue
                    sfile, matched, ports = self.services[service]
                    if port not in ports:
                        report.problem(w.file, inv.where, f"`{inv.label()}` {what} {host}:{port}, but Service {service} has ports {sorted(ports)}")
                        continue
                    backends = [m for m in matched if ports[port] & listen_ports(m)]
                    if not backends:
                        report.problem(w.file, inv.where, f"`{inv.label()}` {what} {host}:{port}: Service {service} forwards it to {sorted(ports[port])}, where none of its pods listens")
                    else:
                        report.ok(f"{w.file}: {w.name} dials {host}:{port} -> Service {service} -> {backends[0].owner} port {sorted(ports[port])[0]}")
            # References: Secrets, ConfigMaps, claims.
            for env in w.env.values():
                ref = (env.get("valueFrom") or {})
                if "secretKeyRef" in ref:
                    self.check_secret(w, ref["secretKeyRef"].get("name"), ref["secretKeyRef"].get("key"))
                if "configMapKeyRef" in ref:
                    self.check_config_map(w, ref["configMapKeyRef"].get("name"), ref["configMapKeyRef"].get("key"))
            for source in w.env_from:
                if "secretRef" in source:
                    self.check_secret(w, source["secretRef"].get("name"), None)
            for mount in w.mounts:
                if mount.volume[0] == "configMap":
                    self.check_config_map(w, mount.volume[1], None)
                if mount.volume[0] == "persistentVolumeClaim":
                    claims = [d for _, d in self.objects("PersistentVolumeClaim") if d["metadata"]["name"] == mount.volume[1]]
                    if not claims:
                        report.problem(w.file, w.name, f"claim '{mount.volume[1]}' is not a PersistentVolumeClaim of the manifests")
            # The user the image runs as.
            uid = self.dockerfile.uid if self.dockerfile else None
            for context in (w.pod.get("securityContext") or {}, w.spec.get("securityContext") or {}):
                if uid is not None and "runAsUser" in context and context["runAsUser"] != uid:
                    report.problem(w.file, w.name, f"runAsUser {context['runAsUser']} is not the image's USER {uid} (Dockerfile), who owns its directories")
        self.check_role_rules("kubernetes")

    def service_of_host(self, host):
        parts = host.split(".")
        if parts[0] not in self.services:
            return None
        if len(parts) > 1 and parts[1] != self.namespace:
            return None
        return parts[0]

    def check_secret(self, w, name, key):
        defined = [d for _, d in self.objects("Secret") if d["metadata"]["name"] == name]
        keys = set()
        for d in defined:
            keys |= set((d.get("data") or {}).keys()) | set((d.get("stringData") or {}).keys())
        keys |= self.docs_secrets.get(name, set())
        if not defined and name not in self.docs_secrets:
            self.report.problem(w.file, w.name, f"references Secret '{name}', which neither the manifests nor {DOCS} (kubectl create secret generic {name} ...) create")
        elif key is not None and key not in keys:
            self.report.problem(w.file, w.name, f"references key '{key}' of Secret '{name}', but {DOCS} creates it with keys {sorted(keys)}")
        else:
            self.report.ok(f"{w.file}: {w.name} reads Secret {name}{' key ' + key if key else ''}, which {DOCS} creates")

    def check_config_map(self, w, name, key):
        maps = [d for _, d in self.objects("ConfigMap") if d["metadata"]["name"] == name]
        if not maps:
            self.report.problem(w.file, w.name, f"references ConfigMap '{name}', which the manifests do not define")
        elif key is not None and key not in (maps[0].get("data") or {}):
            self.report.problem(w.file, w.name, f"references key '{key}' of ConfigMap '{name}', which has {sorted(maps[0].get('data') or {})}")

    # -- rules by role, for both platforms ------------------------------------------------------

    def check_roles(self):
        for w in self.workloads:
            for inv in w.invocations:
                if inv.valid and inv.path in LONG_RUNNING and w.runs_shell and not inv.main and inv.where == w.name:
                    self.report.problem(w.file, w.name, f"`{inv.label()}` runs under /bin/sh without `exec`: sh stays PID 1 and does not pass SIGTERM on, so it would never stop cleanly (a worker would not leave)")
            if w.main and w.main.valid and w.main.path not in LONG_RUNNING and w.platform == "kubernetes" and not w.one_shot:
                self.report.problem(w.file, w.name, f"`{w.main.label()}` exits when done, but a {w.kind} restarts it forever; run it in an init container or a Job")

    def check_role_rules(self, platform):
        report = self.report
        workloads = [w for w in self.workloads if w.platform == platform]
        controllers = [w for w in workloads if w.role == ("controller",)]
        workers = [w for w in workloads if w.role == ("join",)]
        file = COMPOSE if platform == "compose" else K8S_DIR
        if len(controllers) != 1:
            report.problem(file, "", f"needs exactly one container running `elastic controller` (found {len(controllers)})")
        if not workers:
            report.problem(file, "", "no container runs `elastic join`")
        for c in controllers:
            listen = c.main.value("listen") or c.main.page.options["listen"].default
            host, port = split_host_port(listen)
            if host in ("127.0.0.1", "localhost", "::1"):
                report.problem(c.file, c.name, f"--listen {listen} is loopback: no other container can reach it; listen on 0.0.0.0")
            data_dir = c.main.value("data-dir")
            if not data_dir or not data_dir.startswith("/"):
                report.problem(c.file, c.name, f"`elastic controller` needs an absolute --data-dir (got {data_dir})")
                continue
            volume, inside, read_only = c.locate(data_dir)
            if per_replica(volume) and volume[0] != "volumeClaimTemplate":
                report.problem(c.file, c.name, f"--data-dir {data_dir} (PKI, tokens, ledger) is on {volume[0]} storage and would be lost with the container; put it on a volume")
            elif read_only:
                report.problem(c.file, c.name, f"--data-dir {data_dir} is mounted read-only")
            else:
                report.ok(f"{c.file}: {c.name}: controller data dir {data_dir} on {describe(volume)}")
            if platform == "kubernetes":
                if c.kind != "StatefulSet":
                    report.problem(c.file, c.name, f"the controller runs in a {c.kind}; use a StatefulSet (one pod, its own volume)")
                replicas = (c.obj.get("spec") or {}).get("replicas", 1)
                if replicas != 1:
                    report.problem(c.file, c.name, f"replicas: {replicas}; there is exactly one controller")
                service_name = (c.obj.get("spec") or {}).get("serviceName")
                if c.kind == "StatefulSet" and service_name not in getattr(self, "services", {}):
                    report.problem(c.file, c.name, f"serviceName '{service_name}' is not a Service of the manifests")
                if volume[0] not in ("volumeClaimTemplate", "persistentVolumeClaim"):
                    report.problem(c.file, c.name, f"--data-dir {data_dir} must be on a volumeClaimTemplate or a PersistentVolumeClaim")
                else:
                    report.ok(f"{c.file}: controller StatefulSet with replicas 1, its data dir on {describe(volume)}")
            # Every other command on the controller's data dir sees the same place.
            for w in workloads:
                for inv in w.invocations:
                    if not inv.valid:
                        continue
                    flag = "dir" if inv.path[:1] == ("certs",) else "data-dir" if inv.path[:1] in (("token",), ("status",), ("train",)) else None
                    if flag is None:
                        continue
                    value = inv.value(flag)
                    if not value:
                        report.problem(w.file, inv.where, f"`{inv.label()}` without --{flag} uses {inv.page.options[flag].default} in the working directory, not the controller's {data_dir}")
                    elif w.locate(value)[:2] != (volume, inside):
                        there = w.locate(value)
                        report.problem(w.file, inv.where, f"`{inv.label()}` --{flag} {value} ({describe(there[0])}) is not the controller's data dir {data_dir} ({describe(volume)})")
            inits = [inv for w in workloads for inv in w.invocations if inv.path == ("certs", "init")]
            if not inits:
                report.problem(file, "", "nothing runs `elastic certs init` for the controller's data dir")
            else:
                report.ok(f"{file}: `elastic certs init`, `certs hash`, `token create` and `status` use the controller's data dir")
        for w in workers:
            inv = w.main
            where = w.name
            for flag in ("token", "ca-hash"):
                value = inv.value(flag)
                if not value:
                    report.problem(w.file, where, f"`elastic join` without --{flag}: a new {'container' if platform == 'compose' else 'pod'} cannot bootstrap its certificate")
                elif platform == "kubernetes":
                    source = self.env_source(w, value)
                    if not source or "secretKeyRef" not in (source.get("valueFrom") or {}):
                        report.problem(w.file, where, f"--{flag} {value} does not come from a Secret (env valueFrom.secretKeyRef or envFrom.secretRef)")
                    else:
                        report.ok(f"{w.file}: {where}: --{flag} from Secret {source['valueFrom']['secretKeyRef']['name']} key {source['valueFrom']['secretKeyRef']['key']}")
                else:
                    script = inv.script.substitution(value) if inv.script else None
                    if script is None or not reads_from_script(script):
                        report.problem(w.file, where, f"--{flag} {value}: read it from the file the one-shot service writes ($(cat FILE))")
            name = inv.value("name")
            if platform == "kubernetes":
                source = self.env_source(w, name) if name else None
                if not source or ((source.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath") != "metadata.name":
                    report.problem(w.file, where, f"--name {name}: every replica needs its own name; take the pod name from the downward API (fieldRef metadata.name)")
                advertise = inv.value("data-advertise")
                source = self.env_source(w, advertise) if advertise else None
                if not source or ((source.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath") != "status.podIP":
                    report.problem(w.file, where, f"--data-advertise {advertise}: peers dial it; advertise the pod IP from the downward API (fieldRef status.podIP)")
                else:
                    report.ok(f"{w.file}: {where}: --name from metadata.name, --data-advertise from status.podIP")
            else:
                if name is not None and "HOSTNAME" not in name and "@SUB" not in name:
                    report.problem(w.file, where, f"--name {name} is the same for every replica; use \"$$HOSTNAME\"")
                advertise = inv.value("data-advertise")
                if advertise is not None and "$" not in advertise and "@SUB" not in advertise:
                    report.problem(w.file, where, f"--data-advertise {advertise} is the same for every replica")
            listen = inv.value("data-listen") or inv.page.options["data-listen"].default
            host, port = split_host_port(listen)
            if host in ("127.0.0.1", "localhost", "::1"):
                report.problem(w.file, where, f"--data-listen {listen} is loopback: peers in other containers cannot reach it")
            if port == 0 and w.ports:
                report.problem(w.file, where, "--data-listen port 0 picks a random port, which the declared ports cannot name")
            data_dir = inv.value("data-dir")
            if not data_dir:
                report.problem(w.file, where, f"`elastic join` without --data-dir keeps its certificate in {inv.page.options['data-dir'].default}; give an absolute --data-dir")
            else:
                volume, _, read_only = w.locate(data_dir)
                if not per_replica(volume):
                    report.problem(w.file, where, f"--data-dir {data_dir} is on {describe(volume)}, shared by every replica: they would share one node key; keep it per container ({'the container filesystem' if platform == 'compose' else 'an emptyDir'})")
                elif read_only:
                    report.problem(w.file, where, f"--data-dir {data_dir} is read-only")
                else:
                    report.ok(f"{w.file}: {where}: worker data dir {data_dir} is per {'container' if platform == 'compose' else 'pod'}")
            grace = None
            if platform == "compose":
                if "container_name" in w.spec:
                    report.problem(w.file, where, "container_name prevents --scale; remove it")
                for port, what in w.ports:
                    if what.startswith("ports") and ":" in what.split(" ", 1)[1]:
                        report.problem(w.file, where, f"{what} binds a host port, which a second replica cannot bind")
                text = w.spec.get("stop_grace_period")
                grace = duration_seconds(text) if text else 10
                label = f"stop_grace_period {text or '(default 10s)'}"
            else:
                if w.kind != "Deployment":
                    report.problem(w.file, where, f"workers run in a {w.kind}; use a Deployment (kubectl scale)")
                replicas = (w.obj.get("spec") or {}).get("replicas")
                if not isinstance(replicas, int):
                    report.problem(w.file, where, "the workers' Deployment needs spec.replicas")
                grace = w.pod.get("terminationGracePeriodSeconds", 30)
                label = f"terminationGracePeriodSeconds {grace}"
            if grace is None or grace < MIN_GRACE_SECONDS:
                report.problem(w.file, where, f"{label}: a leaving worker may hand off its state for up to 40 s; give it at least {MIN_GRACE_SECONDS}s before SIGKILL")
            else:
                report.ok(f"{w.file}: {where}: {label} >= {MIN_GRACE_SECONDS}s for a graceful leave")

    # -- the image -----------------------------------------------------------------------------

    def check_images(self):
        images = {}
        for w in self.workloads:
            image = w.spec.get("image")
            if not image:
                self.report.problem(w.file, w.name, "no image")
                continue
            images.setdefault(image, []).append(w)
        if len(images) > 1:
            for image, ws in images.items():
                self.report.problem(ws[0].file, ws[0].name, f"image {image}; the deployment uses {', '.join(sorted(images))}: one image, built from the Dockerfile")
        self.image = next(iter(images)) if images else None
        version = self.cli.version()
        if self.image and self.image.rsplit(":", 1)[-1] != version:
            self.report.problem(COMPOSE, "image", f"{self.image}: its tag should be the version of the binary it contains ({version}, `elastic --version`)")
        for w in self.workloads:
            build = w.spec.get("build") if w.platform == "compose" else None
            if build is None:
                continue
            context = build if isinstance(build, str) else build.get("context", ".")
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            if (ROOT / "cluster" / context / dockerfile).resolve() != (ROOT / DOCKERFILE).resolve():
                self.report.problem(COMPOSE, w.name, f"build context {context} with dockerfile {dockerfile} is not the repository's Dockerfile")
        if self.image:
            self.report.ok(f"image {self.image} (tag = `elastic --version`) for every service and container; compose builds it from {DOCKERFILE}")

    def check_dockerfile(self):
        d, report = self.dockerfile, self.report
        if d is None or not d.stages:
            report.problem(DOCKERFILE, "", "missing or has no FROM")
            return
        if len(d.stages) < 2:
            report.problem(DOCKERFILE, "", "not multi-stage: build in one stage, copy the binary into a runtime stage")
            return
        final, builds = d.stages[-1], d.stages[:-1]
        if re.search(r"swift", final.base, re.I):
            report.problem(DOCKERFILE, f"final stage FROM {final.base}", "the runtime stage is based on a Swift image: it would carry the toolchain")
        for line in final.runs:
            if re.search(r"\bswift(lang|ly)?\b|swift\.org|/usr/lib/swift", line, re.I):
                report.problem(DOCKERFILE, "final stage", f"RUN installs or names the Swift toolchain: {line.strip()[:120]}")
        for source, dest, stage in final.copies:
            if stage and re.search(r"/usr/bin/swift|/usr/lib/swift|/opt/swift", source):
                report.problem(DOCKERFILE, "final stage", f"COPY --from={stage} {source}: that is the Swift toolchain")
        binary = None
        names = {s.name for s in builds if s.name} | {str(i) for i in range(len(builds))}
        for source, dest, stage in final.copies:
            if stage in names and os.path.basename(source) == "elastic":
                binary = dest if not dest.endswith("/") else dest + "elastic"
        if binary is None:
            report.problem(DOCKERFILE, "final stage", "does not COPY --from=<build stage> the elastic binary")
        elif d.entrypoint[:1] not in (["elastic"], [binary]) or (d.entrypoint[:1] == ["elastic"] and os.path.dirname(binary) not in ("/usr/local/bin", "/usr/bin", "/bin")):
            report.problem(DOCKERFILE, "ENTRYPOINT", f"{d.entrypoint} does not run the copied binary {binary}")
        if not any(re.search(r"swift build\b.*(-c release|--configuration release)", r) for s in builds for r in s.runs):
            report.problem(DOCKERFILE, "build stage", "no `swift build -c release`")
        if d.user in (None, "root", "0", "0:0"):
            report.problem(DOCKERFILE, "final stage", "runs as root; add a USER")
        if any(w.runs_shell for w in self.workloads) and re.search(r"scratch|distroless|static", final.base):
            report.problem(DOCKERFILE, f"final stage FROM {final.base}", "the manifests run /bin/sh, which this base image lacks")
        listened = set()
        for w in self.workloads:
            listened |= listen_ports(w)
        for port in d.expose:
            if port not in listened:
                report.problem(DOCKERFILE, f"EXPOSE {port}", f"no manifest listens on {port} (--listen/--data-listen: {sorted(listened)})")
        # Named volumes start out with the owner of the image's directory: it must exist.
        prepared = set(d.paths) | {d.workdir}
        for w in self.workloads:
            if w.platform != "compose":
                continue
            for m in w.mounts:
                if m.volume[0] == "volume" and m.path not in prepared:
                    report.problem(COMPOSE, w.name, f"volume {m.volume[1]} is mounted at {m.path}, which the image does not create: Docker would make it root-owned and USER {d.user} could not write it (create it in the Dockerfile's runtime stage)")
        self.check_libraries(final)
        report.ok(f"{DOCKERFILE}: {len(d.stages)} stages; the runtime stage FROM {final.base} copies {binary} from the build stage, has no Swift toolchain, runs as USER {d.user}; EXPOSE {d.expose}")

    def check_libraries(self, final):
        """Every shared library the binary links (but Swift's, static in the image) is installed."""
        if not shutil.which("ldd"):
            self.report.ok("ldd not found: the runtime libraries were not compared with the binary's")
            return
        try:
            done = subprocess.run(["ldd", self.cli.binary], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return
        base = {"linux-vdso", "libc", "libm", "libpthread", "libdl", "librt", "ld-linux-x86-64", "ld-linux-aarch64", "libstdc++", "libgcc_s", "libz", "libutil"}
        packages = {"libzstd": "libzstd1", "libopenblas": "libopenblas0", "libgfortran": "libopenblas0", "libquadmath": "libopenblas0"}
        installed = " ".join(final.runs)
        for line in done.stdout.splitlines():
            m = re.match(r"\s*(\S+?)\.so", line)
            if not m or "swift" in line or re.search(r"lib(swift|Foundation|_Foundation|dispatch|BlocksRuntime)", line):
                continue
            lib = os.path.basename(m.group(1))
            if lib in base:
                continue
            package = packages.get(lib)
            if package is None:
                self.report.problem(DOCKERFILE, "final stage", f"the binary links {lib}, which the runtime stage is not known to install; add its Debian package (and teach cluster/deploy-check.py its name)")
            elif package not in installed:
                self.report.problem(DOCKERFILE, "final stage", f"the binary links {lib}; install {package} in the runtime stage")
        self.report.ok(f"{DOCKERFILE}: the runtime stage installs the libraries `ldd` lists for the binary")

    # -- the jobs ------------------------------------------------------------------------------

    def check_jobs(self):
        report = self.report
        for w in self.workloads:
            if w.role != ("controller",):
                continue
            for m in w.mounts:
                if m.volume[0] == "config":
                    config = (self.compose.get("configs") or {}).get(m.volume[1]) or {}
                    text = config.get("content") if "content" in config else self.read_optional(Path(COMPOSE).parent / config.get("file", ""))
                    self.add_job(w, m.path, text)
                elif m.volume[0] == "configMap":
                    maps = [d for _, d in self.objects("ConfigMap") if d["metadata"]["name"] == m.volume[1]]
                    files = [f for f, d in self.objects("ConfigMap") if d["metadata"]["name"] == m.volume[1]]
                    for key, text in ((maps[0].get("data") or {}).items() if maps else []):
                        self.add_job(w, m.path.rstrip("/") + "/" + key, text, files[0])
        for w in self.workloads:
            job = w.main.value("job") if w.role == ("controller",) else None
            if job and job not in self.jobs[w.platform]:
                report.problem(w.file, w.name, f"--job {job} is not a job file mounted in the controller ({sorted(self.jobs[w.platform])})")
        for platform, jobs in self.jobs.items():
            file = COMPOSE if platform == "compose" else K8S_DIR
            if not jobs:
                report.problem(file, "", "the controller mounts no job file")
            sharers = [w for w in self.workloads if w.platform == platform and w.role in LONG_RUNNING]
            writers = [inv for w in self.workloads if w.platform == platform for inv in w.invocations if inv.path in (("data", "generate"), ("data", "import"))]
            for path, (jfile, job) in jobs.items():
                where = f"job {path}"
                locations = [("data.path", (job.get("data") or {}).get("path"), False)]
                if job.get("checkpoint") is not None:
                    locations.append(("checkpoint.directory", (job.get("checkpoint") or {}).get("directory"), True))
                for label, location, writable in locations:
                    if not isinstance(location, str) or not location.startswith("/"):
                        report.problem(jfile, where, f"{label} {location!r} must be an absolute path on the shared volume (a relative one is resolved against the job file's folder)")
                        continue
                    seen = {}
                    for w in sharers:
                        volume, inside, read_only = w.locate(location)
                        seen.setdefault((volume, inside), []).append(w.owner)
                        if not shared_kind(volume):
                            report.problem(jfile, where, f"{label} {location} is not on a shared volume in {w.name} ({describe(volume)}); the controller and every worker must see the same files")
                        if writable and read_only:
                            report.problem(jfile, where, f"{label} {location} is mounted read-only in {w.name}, which writes checkpoints there")
                        if volume[0] == "persistentVolumeClaim":
                            claims = [d for _, d in self.objects("PersistentVolumeClaim") if d["metadata"]["name"] == volume[1]]
                            if claims and "ReadWriteMany" not in ((claims[0].get("spec") or {}).get("accessModes") or []):
                                report.problem(jfile, where, f"{label} {location} is on claim {volume[1]}, which is not ReadWriteMany: pods on other nodes could not mount it")
                    if len(seen) > 1:
                        report.problem(jfile, where, f"{label} {location} is not the same volume for the controller and every worker: {', '.join(f'{v[0][0]} {v[0][1]}:{v[1]} in {sorted(set(o))}' for v, o in seen.items())}")
                    elif seen:
                        (volume, inside), owners = next(iter(seen.items()))
                        report.ok(f"{jfile}: {where}: {label} {location} is {describe(volume)} for {', '.join(sorted(set(owners)))}")
                    if label == "data.path":
                        made = [inv for inv in writers if self.workload_of(inv).locate(inv.value("out") or "")[:2] in seen]
                        if not made:
                            report.problem(jfile, where, f"data.path {location}: no `elastic data generate|import --out` writes it")
                for key in ("name", "model", "data", "batch"):
                    if key not in job:
                        report.problem(jfile, where, f"missing field '{key}' (docs/job-spec.md)")
        compose_jobs = {os.path.basename(p): j for p, (_, j) in self.jobs["compose"].items()}
        k8s_jobs = {os.path.basename(p): j for p, (_, j) in self.jobs["kubernetes"].items()}
        if compose_jobs and k8s_jobs:
            if compose_jobs != k8s_jobs:
                differ = sorted(k for k in set(compose_jobs) | set(k8s_jobs) if compose_jobs.get(k) != k8s_jobs.get(k))
                report.problem(K8S_DIR, "ConfigMap", f"the job files differ from {COMPOSE}'s: {differ}")
            else:
                report.ok(f"job files {sorted(compose_jobs)} are the same in compose and Kubernetes")

    def add_job(self, w, path, text, file=None):
        file = file or w.file
        try:
            job = json.loads(text or "")
        except json.JSONDecodeError as error:
            self.report.problem(file, w.name, f"job file {path} is not JSON: {error}")
            return
        self.jobs[w.platform][path] = (file, job)

    def read_optional(self, relative):
        try:
            return (ROOT / relative).read_text()
        except OSError:
            return None

    def workload_of(self, inv):
        return next(w for w in self.workloads if inv in w.invocations)

    # -- docs ----------------------------------------------------------------------------------

    def scan_docs_secrets(self):
        text = self.files.get(DOCS, "")
        for block in code_blocks(text):
            try:
                script = Script(block)
            except Problem:
                continue
            for command, _ in script.all_commands():
                words = command.words
                if words[:1] == ["kubectl"] and "secret" in words and "create" in words and "generic" in words:
                    name = words[words.index("generic") + 1]
                    keys = {w.split("=", 1)[1].split("=", 1)[0] for w in words if w.startswith("--from-literal=")}
                    keys |= {os.path.basename(w.split("=", 1)[1]) if "=" not in w.split("=", 1)[1] else w.split("=", 1)[1].split("=")[0] for w in words if w.startswith("--from-file=")}
                    self.docs_secrets.setdefault(name, set()).update(keys)

    def check_docs(self):
        report, text = self.report, self.files.get(DOCS)
        if text is None:
            report.problem(DOCS, "", "missing")
            return
        builds = re.findall(r"docker build\s+(?:[^\n]*?\s)?(?:-t|--tag)[ =](\S+)", text)
        if not builds:
            report.problem(DOCS, "", "does not say how to build the image (docker build -t IMAGE .)")
        for image in builds:
            if image != self.image:
                report.problem(DOCS, f"docker build -t {image}", f"the manifests use image {self.image}")
        if builds and all(b == self.image for b in builds):
            report.ok(f"{DOCS}: builds {self.image}, the image the manifests use")
        if "terminationGracePeriodSeconds" not in text:
            report.problem(DOCS, "", "does not mention terminationGracePeriodSeconds (graceful leave on scale-down)")
        checked = 0
        services = {w.owner: w for w in self.workloads if w.platform == "compose" and not w.init_container}
        for block in code_blocks(text):
            try:
                script = Script(block)
            except Problem as error:
                report.problem(DOCS, "code block", str(error))
                continue
            for command, _ in script.all_commands():
                words = command.words
                target, elastic_words = self.docs_target(words)
                if words[:1] == ["kubectl"] and "scale" in words:
                    names = [w.split("/", 1)[1] for w in words if w.startswith(("deployment/", "deploy/", "statefulset/"))]
                    for name in names:
                        if not any(w.owner == name and w.role == ("join",) for w in self.workloads if w.platform == "kubernetes"):
                            report.problem(DOCS, f"`{command.text}`", f"{name} is not the workers' Deployment")
                for word in words:
                    m = re.fullmatch(r"(\w[\w-]*)=\d+", word)
                    if m and "--scale" in words and words[words.index(word) - 1] == "--scale" and m.group(1) not in services:
                        report.problem(DOCS, f"`{command.text}`", f"--scale {m.group(1)}: no such compose service")
                if words[:1] == ["kubectl"] and {"apply", "create", "delete", "replace"} & set(words):
                    for flag, arg in zip(words, words[1:]):
                        if flag in ("-f", "--filename") and arg != "-" and not (ROOT / arg).exists():
                            report.problem(DOCS, f"`{command.text}`", f"{arg} does not exist")
                if elastic_words is None:
                    continue
                inv = Invocation(DOCS, f"`{command.text[:90]}`", elastic_words[1:], script=script)
                check_invocation(self.cli, report, inv)
                checked += 1
                if inv.valid and target is not None:
                    self.check_docs_paths(inv, target)
        report.ok(f"{DOCS}: {checked} elastic commands in its code blocks checked against `elastic … --help`, their paths against the containers they run in")
        # Commands named in the prose: subcommands and flags (arguments may be left out).
        prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
        mentions = 0
        for span in re.findall(r"`([^`]+)`", prose):
            span = " ".join(span.split())
            if not span.startswith("elastic "):
                continue
            try:
                script = Script(span)
            except Problem as error:
                report.problem(DOCS, f"`{span}`", str(error))
                continue
            for command in script.commands:
                if command.words and is_elastic(command.words[0]):
                    check_invocation(self.cli, report, Invocation(DOCS, f"`{span}`", command.words[1:]), partial=True)
                    mentions += 1
        report.ok(f"{DOCS}: {mentions} elastic commands named in its prose have the subcommands and flags `--help` lists")

    def docs_target(self, words):
        """(workload, elastic words) of `elastic …`, `docker compose exec SERVICE elastic …` or
        `kubectl exec TARGET -- elastic …`; (None, None) for anything else."""
        if words and is_elastic(words[0]):
            return None, words
        if words[:2] == ["docker", "compose"] or words[:1] == ["docker-compose"]:
            rest = words[2:] if words[0] == "docker" else words[1:]
            while rest and rest[0].startswith("-"):
                rest = rest[2:] if rest[0] in ("-f", "--file", "-p", "--project-name") else rest[1:]
            if rest[:1] in (["exec"], ["run"]):
                rest = rest[1:]
                while rest and rest[0].startswith("-"):
                    rest = rest[2:] if rest[0] in ("-e", "--env", "-u", "--user", "-w", "--workdir") else rest[1:]
                if len(rest) >= 2 and is_elastic(rest[1]):
                    target = next((w for w in self.workloads if w.platform == "compose" and w.owner == rest[0]), None)
                    if target is None:
                        self.report.problem(DOCS, f"`{' '.join(words)[:90]}`", f"no compose service '{rest[0]}'")
                    return target, rest[1:]
            return None, None
        if words[:1] == ["kubectl"] and "exec" in words and "--" in words:
            after = words[words.index("--") + 1:]
            if not after or not is_elastic(after[0]):
                return None, None
            rest = words[words.index("exec") + 1:words.index("--")]
            pods = []
            while rest:
                if rest[0] in ("-n", "--namespace", "-c", "--container"):
                    rest = rest[2:]
                elif rest[0].startswith("-"):
                    rest = rest[1:]
                else:
                    pods.append(rest.pop(0))
            pod = pods[0] if pods else ""
            name = pod.split("/", 1)[1] if "/" in pod else re.sub(r"-\d+$", "", pod)
            container = next((words[i + 1] for i, w in enumerate(words[:words.index("--")]) if w in ("-c", "--container")), None)
            target = next((w for w in self.workloads if w.platform == "kubernetes" and w.owner == name and not w.init_container
                           and (container is None or w.spec.get("name") == container)), None)
            if target is None:
                self.report.problem(DOCS, f"`{' '.join(words)[:90]}`", f"no workload of the manifests runs as pod '{pod}'")
            return target, after
        return None, None

    def check_docs_paths(self, inv, target):
        report = self.report
        controller = target.main
        if controller is None or controller.path != ("controller",):
            return
        data_dir = controller.value("data-dir")
        flag = "dir" if inv.path[:1] == ("certs",) else "data-dir" if inv.path[:1] in (("token",), ("status",), ("train",)) else None
        if flag and inv.value(flag) != data_dir:
            report.problem(DOCS, inv.where, f"--{flag} {inv.value(flag)} is not the controller's data dir {data_dir} in {target.name}")
        jobs = self.jobs[target.platform]
        if inv.path == ("train",) and inv.positionals and inv.positionals[0] not in jobs:
            report.problem(DOCS, inv.where, f"job file {inv.positionals[0]} is not mounted in {target.name} (it has {sorted(jobs)})")
        if inv.path[:1] == ("checkpoint",) and inv.positionals:
            roots = {(j.get("checkpoint") or {}).get("directory") for _, j in jobs.values()}
            root = inv.positionals[0]
            if not any(root == r or root.startswith(r + "/") for r in roots if r):
                report.problem(DOCS, inv.where, f"{root} is not a job's checkpoint.directory ({sorted(r for r in roots if r)})")

    # -- the local scripts -----------------------------------------------------------------------

    def check_local_scripts(self):
        count = 0
        for name in LOCAL_SCRIPTS:
            text = self.files.get(name)
            if text is None:
                continue
            try:
                found = invocations_of_script(text, name, "script", aliases=('$E', '${E}', '$ELASTIC_BIN', '${ELASTIC_BIN}'))
            except Problem as error:
                self.report.problem(name, "", str(error))
                continue
            for inv in found:
                inv.where = f"`{' '.join(inv.args)[:80]}`"
                inv.args = [a for a in inv.args if a != "$@"]
                check_invocation(self.cli, self.report, inv)
                count += 1
        self.report.ok(f"{', '.join(LOCAL_SCRIPTS)}: {count} elastic invocations checked against `elastic … --help`")


# --------------------------------------------------------------------------------------------
# Helpers over invocations and files


def listen_ports(w):
    ports = set()
    for inv in w.invocations:
        if not inv.valid or not inv.main:
            continue
        for name in LISTEN_FLAGS:
            option = inv.page.options.get(name)
            if option is None:
                continue
            value = inv.value(name) or option.default
            _, port = split_host_port(value)
            if port:
                ports.add(port)
    return ports


def dials_of(inv):
    """(host, port, verb) of the addresses an invocation connects to."""
    if not inv.valid:
        return []
    out = []
    for (name, _), value in zip(inv.page.arguments, inv.positionals):
        if name == "host:port":
            host, port = split_host_port(value)
            if host:
                out.append((host, port, "dials"))
    for name, option in inv.page.options.items():
        if option.value == "host:port" and name not in LISTEN_FLAGS and inv.value(name):
            host, port = split_host_port(inv.value(name))
            if host:
                out.append((host, port, f"--{name}"))
    return out


def reads_from_script(script):
    return [c.words[1] for c in script.commands if c.words[:1] == ["cat"] and len(c.words) == 2]


def reads_of(inv):
    """Files an invocation's arguments read through $(cat FILE)."""
    if not inv.script:
        return []
    out = []
    for values in inv.options.values():
        for value in values:
            script = inv.script.substitution(value) if value else None
            if script:
                out += reads_from_script(script)
    return out


def writes_of(w):
    out = []
    for inv in w.invocations:
        if inv.script:
            for command, _ in inv.script.all_commands():
                out += command.writes
            break
    return out


def walk_strings(value, path=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from walk_strings(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from walk_strings(v, f"{path}[{i}]")
    elif isinstance(value, str):
        yield path, value


def duration_seconds(text):
    total, matched = 0.0, False
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", str(text)):
        matched = True
        total += float(number) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}[unit]
    return total if matched else None


def code_blocks(markdown):
    return [m.group(2) for m in re.finditer(r"^```(sh|bash|shell|console)?[ \t]*\n(.*?)^```", markdown, re.S | re.M)]


@dataclass
class Stage:
    base: str
    name: str | None
    runs: list = field(default_factory=list)
    copies: list = field(default_factory=list)  # (source, dest, from stage)


@dataclass
class Dockerfile:
    stages: list
    entrypoint: list
    cmd: list
    user: str | None
    uid: int | None
    workdir: str
    expose: list
    paths: list  # absolute paths named in the runtime stage's RUN lines


def parse_dockerfile(text):
    lines, current = [], ""
    for raw in text.splitlines():
        if raw.strip().startswith("#") and not current:
            continue
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        current += raw
        if current.strip():
            lines.append(current.strip())
        current = ""
    stages, entrypoint, cmd, user, workdir, expose = [], [], [], None, "/", []
    for line in lines:
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            m = re.match(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            stages.append(Stage(m.group(1), m.group(2)))
            entrypoint, cmd, user, workdir, expose = [], [], None, "/", []
        elif not stages:
            continue
        elif instruction == "RUN":
            stages[-1].runs.append(rest)
        elif instruction == "COPY":
            words = rest.split()
            stage = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
            files = [w for w in words if not w.startswith("--")]
            for source in files[:-1]:
                stages[-1].copies.append((source, files[-1], stage))
        elif instruction in ("ENTRYPOINT", "CMD"):
            try:
                value = json.loads(rest)
            except json.JSONDecodeError:
                value = ["/bin/sh", "-c", rest]
            if instruction == "ENTRYPOINT":
                entrypoint = value
            else:
                cmd = value
        elif instruction == "USER":
            user = rest.strip()
        elif instruction == "WORKDIR":
            workdir = rest.strip()
        elif instruction == "EXPOSE":
            expose += [int(p.split("/")[0]) for p in rest.split()]
    uid = int(user.split(":")[0]) if user and user.split(":")[0].isdigit() else None
    paths = re.findall(r"(?<![\w/])(/[A-Za-z0-9_./-]+)", " ".join(stages[-1].runs)) if stages else []
    return Dockerfile(stages, entrypoint, cmd, user, uid, workdir, expose, [p.rstrip("/") for p in paths])


# --------------------------------------------------------------------------------------------
# Running


def load_files():
    files = {}
    for name in [DOCKERFILE, COMPOSE, DOCS] + LOCAL_SCRIPTS:
        path = ROOT / name
        if path.exists():
            files[name] = path.read_text()
    k8s = ROOT / K8S_DIR
    if k8s.is_dir():
        for path in sorted(k8s.iterdir()):
            if path.suffix in (".yaml", ".yml"):
                files[f"{K8S_DIR}/{path.name}"] = path.read_text()
    return files


def validate(files, cli):
    report = Report()
    deployment = Deployment(files, cli, report)
    try:
        deployment.scan_docs_secrets()
        deployment.run()
    except Problem as error:
        report.problem("deploy-check", "", str(error))
    except Exception as error:  # a file shaped in a way this script does not expect
        import traceback
        frame = traceback.extract_tb(error.__traceback__)[-1]
        report.problem("deploy-check", "", f"cannot check the files: {type(error).__name__}: {error} (deploy-check.py line {frame.lineno}); fix the file or teach the script")
    return report


# Each mutation: (what, a file or the path of a CLI help page, old text, new text (every
# occurrence), words a problem must contain).
MUTATIONS = [
    ("the CLI renames join's --data-advertise", ("join",), "--data-advertise", "--advertise-host", "unknown flag --data-advertise"),
    ("the CLI renames controller's --data-dir", ("controller",), "--data-dir <data-dir>", "--state-dir <data-dir>", "unknown flag --data-dir"),
    ("the CLI renames `token create`", ("token",), "  create ", "  new    ", "no subcommand 'create'"),
    ("a misspelt flag in the k8s workers", "cluster/k8s/50-workers.yaml", "- --data-listen", "- --data-listn", "unknown flag --data-listn"),
    ("a misspelt flag in a compose sh -c script", COMPOSE, "--data-listen 0.0.0.0:7401", "--data-listen=0.0.0.0:7401 --datalisten 0.0.0.0:7401", "unknown flag --datalisten"),
    ("a misspelt flag in a docs command", DOCS, "elastic certs hash --dir", "elastic certs hash --directory", "unknown flag --directory"),
    ("the Service forwards to another port", "cluster/k8s/30-controller.yaml", "targetPort: control", "targetPort: 7500", "targetPort 7500"),
    ("the controller's containerPort differs from --listen", "cluster/k8s/30-controller.yaml", "containerPort: 7400", "containerPort: 7500", "containerPort 7500"),
    ("workers dial a port the controller does not listen on", COMPOSE, "join controller:7400", "join controller:7500", "controller:7500"),
    ("the grace period is too short for a hand-off", "cluster/k8s/50-workers.yaml", "terminationGracePeriodSeconds: 60", "terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds 30"),
    ("compose workers stop too fast for a hand-off", COMPOSE, "stop_grace_period: 60s", "stop_grace_period: 10s", "stop_grace_period 10s"),
    ("the controller does not wait for init", COMPOSE, "      init:\n        condition: service_completed_successfully\n", "      init:\n        condition: service_started\n", "does not wait for the init service"),
    ("the init service restarts", COMPOSE, "  init:\n    <<: *elastic\n    restart: \"no\"", "  init:\n    <<: *elastic\n    restart: always", "must be one-shot"),
    ("a worker is not exec'd (sh keeps SIGTERM)", COMPOSE, "exec elastic join", "elastic join", "without `exec`"),
    ("compose interpolates $HOSTNAME on the host", COMPOSE, '"$$HOSTNAME"', '"$HOSTNAME"', "interpolated by compose"),
    ("an undeclared compose volume", COMPOSE, "  checkpoints:\n  datasets:\n", "  datasets:\n", "does not declare"),
    ("a $(VAR) that is not in the container's env", "cluster/k8s/50-workers.yaml", "- $(POD_IP)", "- $(POD_ADDRESS)", "$(POD_ADDRESS)"),
    ("the Secret key in the docs differs", DOCS, "--from-literal=ca-hash=", "--from-literal=cahash=", "key 'ca-hash'"),
    ("a job's checkpoint directory off the shared volume", "cluster/k8s/20-jobs.yaml", '"directory": "/var/lib/elastic/shared/checkpoints/w1"}', '"directory": "/tmp/checkpoints/w1"}', "not on a shared volume"),
    ("a second controller", "cluster/k8s/30-controller.yaml", "  replicas: 1\n", "  replicas: 2\n", "replicas: 2"),
    ("the worker data dir on the shared volume", "cluster/k8s/50-workers.yaml", "- /var/lib/elastic/worker\n", "- /var/lib/elastic/shared/worker\n", "one node key"),
    ("the runtime stage is a Swift image", DOCKERFILE, "FROM debian:bookworm-slim", "FROM swift:6.3-bookworm-slim", "toolchain"),
    ("the docs build another image name", DOCS, "docker build -t elastic:0.1.0", "docker build -t elastic:latest", "docker build -t elastic:latest"),
    ("a volume mount point the image does not create", COMPOSE, "- checkpoints:/var/lib/elastic/shared/checkpoints", "- checkpoints:/srv/checkpoints", "root-owned"),
    ("a subcommand named in the docs' prose does not exist", DOCS, "`elastic token list`", "`elastic token show`", "no subcommand 'show'"),
    ("workers do not wait for the token", COMPOSE, "      token:\n        condition: service_completed_successfully\n", "", "does not wait for it"),
    ("the shared claim is not ReadWriteMany", "cluster/k8s/10-shared-storage.yaml", '["ReadWriteMany"]', '["ReadWriteOnce"]', "not ReadWriteMany"),
]


def self_test(cli):
    base = load_files()
    report = validate(base, cli)
    if report.problems:
        print("self-test: the real files do not pass:")
        for line in report.problems:
            print(f"  - {line}")
        return 1
    print(f"self-test: the real files pass ({len(report.checked)} checks); now {len(MUTATIONS)} mutations, each must be caught:")
    failures = 0
    for what, target, old, new, expected in MUTATIONS:
        files, mutated_cli = dict(base), cli
        if isinstance(target, tuple):
            mutated_cli = EditedCLI(cli, target, old, new)
        else:
            if old not in files.get(target, ""):
                print(f"  FAIL  {what}: {target} no longer contains {old!r}; update the mutation")
                failures += 1
                continue
            files[target] = files[target].replace(old, new)
        result = validate(files, mutated_cli)
        hits = [p for p in result.problems if expected in p]
        if hits:
            print(f"  ok    {what}: {hits[0]}")
        else:
            failures += 1
            print(f"  FAIL  {what}: expected a problem with {expected!r}; got {result.problems or 'none'}")
    print(f"self-test: {'PASS' if not failures else 'FAIL'} ({len(MUTATIONS) - failures}/{len(MUTATIONS)} mutations caught)")
    return 1 if failures else 0


def main():
    parser = argparse.ArgumentParser(description="Check the deployment files (Dockerfile, cluster/compose.yaml, cluster/k8s/, docs/deploy.md) against the real elastic CLI.")
    default = os.environ.get("ELASTIC_BIN") or str(ROOT / ".build/debug/elastic")
    parser.add_argument("--elastic", default=default, help=f"the elastic binary whose --help is the truth (default: $ELASTIC_BIN or {default})")
    parser.add_argument("--self-test", action="store_true", help="also check that mutated copies of the files (and of the CLI's help) are caught")
    parser.add_argument("--quiet", action="store_true", help="print only problems and the verdict")
    options = parser.parse_args()
    if not os.access(options.elastic, os.X_OK):
        print(f"deploy-check: {options.elastic} is not an executable; build it (swift build) or pass --elastic PATH", file=sys.stderr)
        return 2
    cli = CLI(options.elastic)
    if options.self_test:
        return self_test(cli)
    report = validate(load_files(), cli)
    if not options.quiet:
        for line in report.checked:
            print(f"  ok  {line}")
    if report.problems:
        print(f"deploy-check: {len(report.problems)} problem(s):")
        for line in report.problems:
            print(f"  - {line}")
        return 1
    print(f"deploy-check: OK ({len(report.checked)} checks; {options.elastic} {cli.version()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
