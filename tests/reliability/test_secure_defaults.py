"""Secure defaults (issue 8), each checked by its behaviour and, where a pattern can only be
ruled out by reading the code, by a static scan of `cai_engine/` and `ui/`:

1. the studio (and `cai vllm serve`) binds 127.0.0.1 unless the user asks otherwise;
2. YAML is loaded safely, and nothing deserialises user data with code execution
   (no eval/exec, pickle, marshal, unsafe YAML loaders, `torch.load(weights_only=False)`);
3. subprocesses get argument lists, never a shell;
4. paths built from names stay in the data home; paths the user names explicitly are theirs;
5. `trust_remote_code` is off unless a model spec opts in;
6. API keys never reach the store, run folders, logs or export manifests.

The scans report `file:line: what` for every finding, and each scanner is itself checked
against a snippet holding every pattern it must catch, so a scan cannot pass by finding
nothing because it looks at nothing.
"""

from __future__ import annotations

import ast
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import duckdb
import pytest

from cai_engine import jobs
from cai_engine.cli import build_parser, main
from cai_engine.errors import CaiError
from cai_engine.home import db_path, models_dir
from cai_engine.models import load_model, parse_spec
from cai_engine.models.base import ModelError
from cai_engine.models.local import resolve_local_path
from cai_engine.store import Store
from tests.conftest import ROOT
from tests.fake_openai import FakeOpenAI
from tests.runners import finish, kill_runners
from tests.ui.studio import free_port

SCANNED = (ROOT / "cai_engine", ROOT / "ui")
LOOPBACK = "127.0.0.1"


def cai(capsys, *args: str) -> tuple[int, str, str]:
    """Run `cai ARGS` in-process; return `(exit status, stdout, stderr)`."""
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(autouse=True)
def reap_runners(cai_home):
    """No job process started by a test outlives it."""
    yield
    kill_runners(cai_home)


# == static scanning helpers ================================================================


def sources() -> list[tuple[str, ast.Module]]:
    """(path relative to the checkout, parsed module) for every Python file scanned."""
    found = []
    for base in SCANNED:
        for path in sorted(base.rglob("*.py")):
            found.append((str(path.relative_to(ROOT)), ast.parse(path.read_text(), str(path))))
    assert len(found) > 20, f"expected the engine and studio sources under {SCANNED}"
    return found


def aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> dotted module path, from every import in the module (any scope)."""
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    out[a.asname] = a.name
                else:
                    top = a.name.split(".")[0]
                    out[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                out[a.asname or a.name] = f"{node.module}.{a.name}"
    return out


def dotted(node: ast.AST, names: dict[str, str]) -> str | None:
    """`yaml.load`, `subprocess.Popen`, ... for a Name/Attribute chain, imports resolved."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([names.get(node.id, node.id), *reversed(parts)])


def assigned_values(tree: ast.Module, name: str) -> list[ast.AST]:
    """Every value assigned to a plain variable `name` anywhere in the module."""
    values = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            if any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                values.append(node.value)
        elif isinstance(node, ast.AnnAssign | ast.NamedExpr):
            if isinstance(node.target, ast.Name) and node.target.id == name and node.value:
                values.append(node.value)
    return values


def kwarg(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def arg(call: ast.Call, position: int, name: str) -> ast.AST | None:
    """A call's argument by keyword, else by position."""
    found = kwarg(call, name)
    if found is None and len(call.args) > position:
        found = call.args[position]
    return found


def is_const(node: ast.AST | None, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


# == 2. safe deserialisation ==================================================================

SAFE_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}
UNSAFE_LOADERS = {"Loader", "UnsafeLoader", "FullLoader", "CLoader", "CUnsafeLoader", "CFullLoader"}
CODE_BUILTINS = {"eval", "exec", "compile", "__import__"}
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle"}
UNSAFE_CALLS = {
    "yaml.unsafe_load": "yaml.unsafe_load",
    "yaml.unsafe_load_all": "yaml.unsafe_load_all",
    "yaml.full_load": "yaml.full_load",
    "yaml.full_load_all": "yaml.full_load_all",
    "pandas.read_pickle": "pandas.read_pickle (unpickles)",
    "pd.read_pickle": "pandas.read_pickle (unpickles)",
}


def loader_names(node: ast.AST, tree: ast.Module, seen: set[str] | None = None) -> set[str]:
    """The YAML loader class names an expression can evaluate to (following variables)."""
    seen = seen or set()
    found: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute) and sub.attr.endswith("Loader"):
            found.add(sub.attr)
        elif isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            if sub.value.endswith("Loader"):
                found.add(sub.value)
        elif isinstance(sub, ast.Name):
            if sub.id.endswith("Loader"):
                found.add(sub.id)
            elif sub.id not in seen:
                seen.add(sub.id)
                for value in assigned_values(tree, sub.id):
                    found |= loader_names(value, tree, seen)
    return found


def deserialisation_findings(path: str, tree: ast.Module) -> list[str]:
    names = aliases(tree)
    bad: list[str] = []

    def flag(node: ast.AST, what: str) -> None:
        bad.append(f"{path}:{node.lineno}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            )
            for m in modules:
                if m and m.split(".")[0] in UNSAFE_MODULES:
                    flag(node, f"imports {m}")
        if isinstance(node, ast.Attribute) and node.attr in UNSAFE_LOADERS:
            if dotted(node.value, names) == "yaml":
                flag(node, f"uses yaml.{node.attr}, which can construct Python objects")
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in CODE_BUILTINS and func.id not in names:
            flag(node, f"calls {func.id}()")
            continue
        target = dotted(func, names)
        if target in UNSAFE_CALLS:
            flag(node, f"calls {UNSAFE_CALLS[target]}")
        elif target in ("yaml.load", "yaml.load_all"):
            loader = arg(node, 1, "Loader")
            kinds = loader_names(loader, tree) if loader is not None else set()
            if not kinds or not kinds <= SAFE_LOADERS:
                shown = ", ".join(sorted(kinds)) or "none given"
                flag(node, f"calls {target} without a safe loader ({shown})")
        elif target == "torch.load":
            weights_only = kwarg(node, "weights_only")
            if weights_only is not None and not is_const(weights_only, True):
                flag(node, "calls torch.load with weights_only other than True")
            if kwarg(node, "pickle_module") is not None:
                flag(node, "calls torch.load with a pickle_module")
        elif target in ("numpy.load", "np.load"):
            allow = kwarg(node, "allow_pickle")
            if allow is not None and not is_const(allow, False):
                flag(node, "calls numpy.load with allow_pickle")
    return bad


UNSAFE_SNIPPET = """
import pickle  # bad
import marshal as m  # bad
from shelve import open as sopen  # bad
import yaml
import torch
import numpy as np
from yaml import load as yload

eval("1")  # bad
exec("x = 1")  # bad
__import__("os")  # bad
yaml.load(text)  # bad
yaml.load(text, Loader=yaml.Loader)  # bad
yaml.load_all(text, yaml.FullLoader)  # bad
yload(text, Loader=yaml.UnsafeLoader)  # bad
yaml.unsafe_load(text)  # bad
yaml.full_load(text)  # bad
torch.load(path, weights_only=False)  # bad
torch.load(path, pickle_module=custom)  # bad
np.load(path, allow_pickle=True)  # bad
ldr = yaml.CLoader  # bad
yaml.load(text, Loader=ldr)  # bad
"""

SAFE_SNIPPET = """
import re
import yaml
import torch

loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
yaml.load(text, Loader=loader)
yaml.compose(text, Loader=loader)
yaml.load(text, yaml.SafeLoader)
yaml.safe_load(text)
torch.load(path)
torch.load(path, weights_only=True)
model.eval()
re.compile("x")
"""


def marked_lines(snippet: str) -> set[int]:
    return {n for n, line in enumerate(snippet.splitlines(), 1) if line.endswith("# bad")}


def flagged_lines(findings: list[str]) -> set[int]:
    return {int(f.split(":")[1]) for f in findings}


def test_the_deserialisation_scanner_catches_every_unsafe_pattern():
    findings = deserialisation_findings("snippet.py", ast.parse(UNSAFE_SNIPPET))
    assert flagged_lines(findings) == marked_lines(UNSAFE_SNIPPET), "\n".join(findings)
    assert deserialisation_findings("snippet.py", ast.parse(SAFE_SNIPPET)) == []


def test_nothing_deserialises_with_code_execution():
    """No eval/exec/compile/__import__, pickle, marshal, shelve, unsafe YAML loader,
    `torch.load` with `weights_only` other than True, or `numpy.load(allow_pickle=...)`."""
    findings = [f for path, tree in sources() for f in deserialisation_findings(path, tree)]
    assert findings == [], "unsafe deserialisation:\n" + "\n".join(findings)


def test_the_yaml_loaders_in_use_are_the_safe_ones():
    """A positive check beside the scan: the engine does load YAML, and only through
    `safe_load` or an explicit SafeLoader (so the scan above looked at real YAML calls)."""
    calls = []
    for path, tree in sources():
        names = aliases(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                target = dotted(node.func, names) or ""
                if target.startswith("yaml.") and "load" in target:
                    calls.append((path, node.lineno, target))
    assert calls, "expected YAML to be loaded somewhere in cai_engine/"
    assert {t for _, _, t in calls} <= {"yaml.safe_load", "yaml.safe_load_all", "yaml.load"}, calls


PYTHON_TAGS = [
    '!!python/object/apply:os.system ["touch {marker}"]',
    '!!python/object/apply:subprocess.call [["touch", "{marker}"]]',
    '!!python/object/new:subprocess.Popen [["touch", "{marker}"]]',
    "!!python/name:os.system",
]


@pytest.mark.parametrize("payload", PYTHON_TAGS)
def test_a_constitution_with_a_python_tag_is_refused_and_runs_nothing(
    payload, tmp_path, capsys, cai_home
):
    marker = tmp_path / "executed"
    evil = tmp_path / "evil.yaml"
    evil.write_text(
        "name: evil\n"
        "description: " + payload.format(marker=marker) + "\n"
        "principles:\n"
        "  - id: p\n"
        "    title: P\n"
        "    critique_request: c\n"
        "    revision_request: r\n"
        "    preference_question: q\n"
    )
    for command in (["constitution", "validate"], ["constitution", "import"]):
        rc, out, err = cai(capsys, *command, str(evil))
        assert rc == 1, (command, out)
        assert f"{evil}:2" in err, err  # names the file and the line
        assert "python/" in err and "constructor" in err, err  # and says what is refused
        assert "Traceback" not in err
    time.sleep(0.2)  # a spawned `touch` would have run by now
    assert not marker.exists(), "the YAML payload ran"
    assert Store(cai_home, lock_timeout=5).list_versions("evil") == []


@pytest.mark.parametrize("payload", PYTHON_TAGS[:2])
def test_a_job_or_training_config_with_a_python_tag_is_refused_and_runs_nothing(
    payload, tmp_path, capsys, cai_home
):
    marker = tmp_path / "executed"
    config = tmp_path / "config.yaml"
    config.write_text("total: " + payload.format(marker=marker) + "\n")
    value = "x=" + payload.format(marker=marker)
    for command in (
        ["jobs", "submit", "tick", "--config", str(config)],
        ["jobs", "submit", "tick", "--set", value],
        ["train", "sft", "--config", str(config)],
        ["train", "sft", "--data", "x", "--set", value],
    ):
        rc, out, err = cai(capsys, *command)
        assert rc == 1, (command, out)
        assert "python/object/apply" in err, (command, err)
    time.sleep(0.2)
    assert not marker.exists(), "the YAML payload ran"
    assert not (cai_home / "runs").exists() or not any((cai_home / "runs").iterdir())


# == 3. subprocesses without a shell ==========================================================

SHELL_CALLS = {
    "os.system",
    "os.popen",
    "subprocess.getoutput",
    "subprocess.getstatusoutput",
    "asyncio.create_subprocess_shell",
    "pty.spawn",
}
ARGV_CALLS = {
    "subprocess.Popen",
    "subprocess.run",
    "subprocess.call",
    "subprocess.check_call",
    "subprocess.check_output",
}


def is_stringy(node: ast.AST, tree: ast.Module, seen: set[str] | None = None) -> bool:
    """True if `node` evaluates to a command *string* (literal, f-string, concatenation,
    %-formatting, str.format, " ".join, shlex.join), following plain variables."""
    seen = seen or set()
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str | bytes)
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod):
        return is_stringy(node.left, tree, seen) or is_stringy(node.right, tree, seen)
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in ("format", "join"):
            if isinstance(func.value, ast.Constant) or is_stringy(func.value, tree, seen):
                return True
        return dotted(func, aliases(tree)) in ("shlex.join", "str")
    if isinstance(node, ast.Name) and node.id not in seen:
        seen.add(node.id)
        return any(is_stringy(v, tree, seen) for v in assigned_values(tree, node.id))
    return False


def is_argv_like(node: ast.AST, tree: ast.Module, seen: set[str] | None = None) -> bool:
    """A list/tuple display, a call (its result is checked where it is made), or a
    variable only ever assigned those."""
    seen = seen or set()
    if isinstance(node, ast.List | ast.Tuple | ast.ListComp | ast.Call):
        return not is_stringy(node, tree)
    if isinstance(node, ast.Name) and node.id not in seen:
        seen.add(node.id)
        values = assigned_values(tree, node.id)
        return bool(values) and all(is_argv_like(v, tree, seen) for v in values)
    return False


def shell_findings(path: str, tree: ast.Module) -> list[str]:
    names = aliases(tree)
    bad: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        shell = kwarg(node, "shell")
        if shell is not None and not is_const(shell, False):
            bad.append(f"{path}:{node.lineno}: passes shell={ast.unparse(shell)}")
        target = dotted(node.func, names)
        if target in SHELL_CALLS or (target or "").startswith("commands."):
            bad.append(f"{path}:{node.lineno}: calls {target}, which runs a shell")
        elif target in ARGV_CALLS:
            argv = arg(node, 0, "args")
            if argv is None or not is_argv_like(argv, tree):
                shown = ast.unparse(argv) if argv is not None else "nothing"
                bad.append(f"{path}:{node.lineno}: {target} gets {shown}, not an argument list")
    return bad


SHELL_SNIPPET = """
import os
import subprocess
import subprocess as sp
from subprocess import check_output

subprocess.run(["ls"], shell=True)  # bad
os.system("ls")  # bad
os.popen("ls")  # bad
subprocess.getoutput("ls")  # bad
sp.getstatusoutput("ls")  # bad
subprocess.call("ls -l")  # bad
subprocess.Popen(f"ls {x}")  # bad
check_output("ls " + x)  # bad
subprocess.run(" ".join(argv))  # bad
subprocess.run("ls %s" % x)  # bad
cmd = "ls -l"
subprocess.run(cmd)  # bad
subprocess.Popen(args="ls")  # bad
subprocess.run(["ls"], shell=flag)  # bad
"""

ARGV_SNIPPET = """
import subprocess

cmd = [sys.executable, "-m", "x"]
subprocess.call(cmd, env=env)
subprocess.Popen([*prefix, "cai_engine.runner"], stdout=log)
subprocess.run(build_command(x), check=True)
subprocess.run(("ls", "-l"), shell=False)
"""


def test_the_shell_scanner_catches_every_shell_pattern():
    findings = shell_findings("snippet.py", ast.parse(SHELL_SNIPPET))
    assert flagged_lines(findings) == marked_lines(SHELL_SNIPPET), "\n".join(findings)
    assert shell_findings("snippet.py", ast.parse(ARGV_SNIPPET)) == []


def test_no_subprocess_goes_through_a_shell():
    """No shell=True, os.system, os.popen, subprocess.getoutput/getstatusoutput, and every
    subprocess.Popen/run/call/check_call/check_output gets an argument list."""
    sites = 0
    findings = []
    for path, tree in sources():
        findings += shell_findings(path, tree)
        names = aliases(tree)
        sites += sum(
            1
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and dotted(n.func, names) in ARGV_CALLS
        )
    assert sites >= 3, "expected the studio, vllm and job launches to be found"
    assert findings == [], "shell use:\n" + "\n".join(findings)


def test_the_argument_lists_built_by_calls_are_lists_of_strings(monkeypatch, tmp_path):
    """The call sites the scan accepts because their argv comes from a function: check what
    those functions return."""
    from cai_engine import vllm_server
    from cai_engine.training.jobs import launcher

    monkeypatch.setattr(vllm_server, "python", lambda: Path("/venv/bin/python"))
    argv = vllm_server.command(Path("/m; rm -rf ~"), "name && id", 8000)
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    assert "/m; rm -rf ~" in argv and "name && id" in argv  # whole arguments, never split
    for how in ({}, {"launcher": "torchrun", "nproc": 2}, {"launcher": "accelerate",
                                                           "accelerate_config": "a b.yaml"}):  # fmt: skip
        prefix = launcher(how)
        assert isinstance(prefix, list) and all(isinstance(a, str) for a in prefix), prefix


def test_a_job_process_is_started_with_an_argument_list_and_no_shell(store, monkeypatch):
    seen = []
    real = subprocess.Popen

    class Recording(real):
        def __init__(self, args, *rest, **kwargs):
            seen.append((args, kwargs))
            super().__init__(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", Recording)
    job = jobs.submit(store, "tick", {"total": 1, "delay_s": 0})
    assert finish(store, job.id).status == "succeeded"
    [(args, kwargs)] = seen
    assert isinstance(args, list) and all(isinstance(a, str) for a in args), args
    assert not kwargs.get("shell")


# == 1. the studio binds loopback ============================================================


def studio_argv(monkeypatch, capsys, *flags: str) -> list[str]:
    """The `streamlit run` argv that `cai studio FLAGS` would start."""
    from cai_engine.cli import studio

    seen = []
    monkeypatch.setattr(studio, "run_until_stopped", lambda argv, env: seen.append(argv) or 0)
    assert main(["studio", *flags]) == 0
    capsys.readouterr()
    [argv] = seen
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), argv
    assert argv[1:4] == ["-m", "streamlit", "run"], argv
    return argv


def option(argv: list[str], name: str) -> str:
    assert argv.count(name) == 1, argv
    return argv[argv.index(name) + 1]


@pytest.mark.parametrize(
    "flags, address",
    [
        ((), LOOPBACK),
        (("--port", "8600"), LOOPBACK),
        (("--address", "0.0.0.0"), "0.0.0.0"),
        (("--address", "192.168.10.7", "--port", "9000"), "192.168.10.7"),
    ],
)
def test_cai_studio_binds_loopback_unless_an_address_is_given(flags, address, monkeypatch, capsys):
    argv = studio_argv(monkeypatch, capsys, *flags)
    assert option(argv, "--server.address") == address
    assert not any(a.startswith("--server.address=") for a in argv)


def test_the_studio_help_says_it_is_local_only_by_default():
    parser = build_parser(["studio"])
    assert parser.parse_args(["studio"]).address == LOOPBACK
    assert parser.parse_args(["vllm", "serve"]).host == LOOPBACK


def test_cai_vllm_serve_binds_loopback_by_default(monkeypatch):
    from cai_engine import vllm_server

    monkeypatch.setattr(vllm_server, "python", lambda: Path("/venv/bin/python"))
    assert option(vllm_server.command(Path("/m"), "m", 8000), "--host") == LOOPBACK
    assert option(vllm_server.command(Path("/m"), "m", 8000, "10.0.0.2"), "--host") == "10.0.0.2"


def test_no_config_or_make_target_widens_the_studio_bind():
    """Streamlit's own default binds every interface, so nothing may start it without
    `cai studio`'s address, and no checked-in Streamlit config may widen it."""
    for config in (ROOT / ".streamlit" / "config.toml", ROOT / "ui" / ".streamlit" / "config.toml"):
        if config.exists():
            server = tomllib.loads(config.read_text()).get("server", {})
            assert server.get("address", LOOPBACK) in (LOOPBACK, "localhost"), config
    makefile = (ROOT / "Makefile").read_text()
    assert "streamlit run" not in makefile and "-m streamlit" not in makefile
    studio_lines = [line for line in makefile.splitlines() if "cai studio" in line]
    assert studio_lines, "expected `make run` to start the studio with `cai studio`"
    for line in studio_lines:
        assert "--address" not in line or f"--address {LOOPBACK}" in line, line


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the TCP sockets listening on `port` (IPv4 and IPv6)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            hexaddr, hexport = local.split(":")
            if state != "0A" or int(hexport, 16) != port:  # 0A = LISTEN
                continue
            raw = bytes.fromhex(hexaddr)
            # the kernel prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(socket.inet_ntop(socket.AF_INET if width == 8 else socket.AF_INET6, raw))
    return found


def non_loopback_ipv4() -> str | None:
    """This machine's address on its default route, if it has one (nothing is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.254.254.254", 9))
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") or ip == "0.0.0.0" else ip


def test_a_started_studio_listens_on_loopback_only(cai_home, tmp_path):
    port = free_port()
    log = open(tmp_path / "studio.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cai_engine.cli", "studio", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "CAI_HOME": str(cai_home)},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own group: `cai studio` and the streamlit it starts
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://{LOOPBACK}:{port}/_stcore/health", timeout=2
                ) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (
                "the studio did not start:\n" + (tmp_path / "studio.log").read_text()[-3000:]
            )
            time.sleep(0.3)
        assert listening_addresses(port) == {LOOPBACK}
        ip = non_loopback_ipv4()
        if ip:
            with pytest.raises(OSError), socket.create_connection((ip, port), timeout=2):
                pass
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


# == 4. paths stay in the data home, or are the user's own ==================================


@pytest.fixture
def outside_model(cai_home, tmp_path) -> Path:
    """A complete-looking model folder outside the data home."""
    target = tmp_path / "outside"
    target.mkdir()
    (target / "config.json").write_text('{"model_type": "llama"}')
    (target / "lineage.json").write_text('{"kind": "reward"}')
    models_dir(cai_home).mkdir(parents=True, exist_ok=True)
    return target


def escaping_names(cai_home: Path, outside: Path) -> list[str]:
    rel = os.path.relpath(outside, models_dir(cai_home))
    assert rel.startswith(".."), rel
    return [rel, str(outside), f"nested/../{rel}"]


def test_a_trained_model_name_cannot_leave_the_models_folder(cai_home, outside_model):
    for name in escaping_names(cai_home, outside_model):
        with pytest.raises(CaiError) as e:  # refused when the spec is read, before any path
            resolve_local_path(parse_spec(f"model:{name}"), cai_home)
        assert name in str(e.value)


def test_a_reward_model_name_cannot_leave_the_models_folder(cai_home, outside_model):
    from cai_engine.training.rl import reward_model_path

    for name in escaping_names(cai_home, outside_model):
        with pytest.raises(CaiError) as e:
            reward_model_path(f"model:{name}", cai_home)
        assert name in str(e.value)


def test_a_trained_model_inside_the_models_folder_still_resolves(cai_home):
    target = models_dir(cai_home) / "mine.v2"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    assert Path(resolve_local_path(parse_spec("model:mine.v2"), cai_home)) == target
    with pytest.raises(ModelError, match="no trained model named 'other'.*known: mine.v2"):
        resolve_local_path(parse_spec("model:other"), cai_home)


@pytest.mark.parametrize("kind", ["sft", "reward", "dpo", "rl"])
@pytest.mark.parametrize("name", ["../evil", "a/b", "..", ".hidden", "/tmp/x", "a\\b"])
def test_a_trained_models_name_is_a_plain_name(kind, name):
    from pydantic import ValidationError

    from cai_engine.training.kinds import TRAINING_KINDS

    extra = {"reward_model": "model:r"} if kind == "rl" else {}
    with pytest.raises(ValidationError, match="name"):
        TRAINING_KINDS[kind].config(data="x", name=name, **extra)
    assert TRAINING_KINDS[kind].config(data="x", name="my-model.v2", **extra).name == "my-model.v2"


@pytest.mark.parametrize(
    "command",
    [
        ["export", "sft", "--job", "{escape}"],
        ["export", "prefs", "--job", "{escape}", "--from-revisions"],
        ["export", "prefs", "--labels", "{escape}"],
    ],
)
def test_a_job_id_cannot_place_a_default_export_outside_the_home(
    command, cai_home, tmp_path, capsys
):
    """Without --out an export goes to <home>/exports/<job>-...; a job id that would climb
    out of it is refused (it names no job) before anything is written."""
    store = Store(cai_home, lock_timeout=5)
    store.job_rows()  # create the store
    before = {p for p in tmp_path.rglob("*")}
    escape = "../../escaped"  # <home>/exports/../../escaped-... is a sibling of the home
    assert (cai_home / "exports" / escape).resolve().parent == tmp_path
    rc, out, err = cai(capsys, *[a.format(escape=escape) for a in command])
    assert rc == 1 and f"no job '{escape}'" in err, (out, err)
    created = {p for p in tmp_path.rglob("*")} - before
    assert not [p for p in created if not p.is_relative_to(cai_home)], created
    assert not any("escaped" in str(p) for p in created), created


def test_training_data_that_is_no_folder_is_treated_as_a_job_id_not_a_home_path(
    seeded_store, cai_home, tmp_path
):
    from cai_engine.training.jobs import submit

    base = tmp_path / "base-model"  # submit only checks that the base model folder exists
    base.mkdir()
    (base / "config.json").write_text("{}")

    (cai_home / "runs").mkdir(exist_ok=True)
    with pytest.raises(CaiError, match="neither an export folder nor a job"):
        submit(
            seeded_store, "sft", {"data": "../../../nowhere", "model": f"hf:{base}", "max_steps": 1}
        )
    assert list((cai_home / "runs").iterdir()) == []


@pytest.mark.parametrize("name", ["../../evil", "a/b"])
def test_a_constitution_imported_under_a_new_name_must_be_a_slug(name, capsys, tmp_path, cai_home):
    source = tmp_path / "c.yaml"
    source.write_text((ROOT / "constitutions" / "default.yaml").read_text())
    rc, out, err = cai(capsys, "constitution", "import", str(source), "--name", name)
    assert rc == 1, out
    assert name in err
    assert Store(cai_home, lock_timeout=5).list_versions(name) == []


def test_an_uploaded_files_name_is_never_opened(tmp_path):
    """Uploads arrive as (filename, bytes); even a filename naming a real file or folder is
    only a label: the bytes are what is read."""
    from cai_engine.peer_formats import import_files
    from cai_engine.prompts import parse_prompts

    on_disk = tmp_path / "prompts.jsonl"
    on_disk.write_text('{"prompt": "from the disk"}\n')
    prompts, _ = parse_prompts((str(on_disk), b'{"prompt": "from the upload"}\n'))
    assert [p.text for p in prompts] == ["from the upload"]

    folder = tmp_path / "dataset.jsonl"  # a folder whose name looks like a file
    folder.mkdir()
    prompts, _ = parse_prompts((str(folder), b'{"prompt": "uploaded"}\n'))
    assert [p.text for p in prompts] == ["uploaded"]

    real = tmp_path / "real.yaml"
    real.write_text((ROOT / "constitutions" / "harmless.yaml").read_text())
    uploaded = (ROOT / "constitutions" / "default.yaml").read_bytes()
    assert import_files([(str(real), uploaded)]).constitution.name == "default"


def test_paths_the_user_names_are_used_as_given(
    seeded_store, cai_home, tmp_path, capsys, monkeypatch
):
    """What "explicitly named" means (read from cli.py, export.py, prompts.py,
    peer_formats.py, training/data.py and models/spec.py): a path is the user's when they
    type it as a path: `--out`, the files given to `constitution import` and `prompts
    import`, `--config`, a `--data` folder, and a model spec `hf:/path` or `/path`. Those are
    used as given, relative ones against the current directory (as a shell would), anywhere
    on disk. Everything else is a *name* (a job id, `model:<name>`, a trained model's
    `--name`, a constitution name), which the engine turns into a path only under the data
    home, refusing one that would leave it (the tests above). An uploaded file's name is a
    label, never opened."""
    elsewhere = tmp_path / "elsewhere" / "harmless.llm-swarm.json"
    rc, out, err = cai(
        capsys, "constitution", "export", "harmless", "--format", "llm-swarm",
        "--out", str(elsewhere),
    )  # fmt: skip
    assert rc == 0, err
    assert json.loads(elsewhere.read_text())["constitutions"]

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    rc, out, err = cai(capsys, "constitution", "export", "default", "--out", "../default.yaml")
    assert rc == 0, err
    assert (tmp_path / "default.yaml").read_text().startswith("name: default")
    assert not list(cai_home.rglob("default.yaml"))  # relative to the cwd, not the home

    prompts = tmp_path / "mine.jsonl"
    prompts.write_text('{"prompt": "a prompt from outside the home"}\n')
    rc, out, err = cai(capsys, "prompts", "import", "../mine.jsonl", "--name", "mine")
    assert rc == 0, err
    assert [p.text for p in seeded_store.get_prompts("mine")] == ["a prompt from outside the home"]


# == 5. trust_remote_code =====================================================================

LOADERS = ("from_pretrained", "load_dataset", "pipeline")


def remote_code_findings(path: str, tree: ast.Module) -> list[str]:
    """Loader calls that could trust remote code without the spec's opt-in: a
    `trust_remote_code` other than False or `<spec>.trust_remote_code`, or `**kwargs`."""
    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name not in LOADERS:
            continue
        for k in node.keywords:
            if k.arg is None:
                bad.append(
                    f"{path}:{node.lineno}: {name}(**{ast.unparse(k.value)}) hides its options"
                )
            elif k.arg == "trust_remote_code":
                ok = is_const(k.value, False) or (
                    isinstance(k.value, ast.Attribute)
                    and k.value.attr == "trust_remote_code"
                    and "spec" in ast.unparse(k.value.value)
                )
                if not ok:
                    bad.append(
                        f"{path}:{node.lineno}: {name}(trust_remote_code={ast.unparse(k.value)})"
                    )
    return bad


def test_the_remote_code_scanner_catches_an_unconditional_opt_in():
    snippet = (
        "AutoModel.from_pretrained(p, trust_remote_code=True)\n"
        "AutoTokenizer.from_pretrained(p, **options)\n"
        "load_dataset(name, trust_remote_code=flag)\n"
        "AutoModel.from_pretrained(p, trust_remote_code=spec.trust_remote_code)\n"
        "AutoModel.from_pretrained(p, trust_remote_code=False)\n"
        "AutoModel.from_pretrained(p)\n"
    )
    findings = remote_code_findings("snippet.py", ast.parse(snippet))
    assert [int(f.split(":")[1]) for f in findings] == [1, 2, 3], findings


def test_no_loader_trusts_remote_code_unless_the_spec_says_so():
    """Every from_pretrained/load_dataset/pipeline call either leaves trust_remote_code at
    its default (False) or passes the model spec's own opt-in."""
    calls, findings = 0, []
    for path, tree in sources():
        findings += remote_code_findings(path, tree)
        calls += sum(
            1
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and getattr(n.func, "attr", None) == "from_pretrained"
        )
    assert calls >= 5, "expected the model and training loaders to be found"
    assert findings == [], "\n".join(findings)


def test_trust_remote_code_is_off_unless_the_spec_opts_in():
    assert parse_spec("hf:/m").trust_remote_code is False
    assert parse_spec("embedded").trust_remote_code is False
    assert parse_spec("model:x").trust_remote_code is False
    assert parse_spec("hf:/m?trust_remote_code=false").trust_remote_code is False
    opted = parse_spec("hf:/m?trust_remote_code=true")
    assert opted.trust_remote_code is True
    assert parse_spec(str(opted)).trust_remote_code is True  # survives a job config
    assert "trust_remote_code" not in str(parse_spec("hf:/m"))
    with pytest.raises(ModelError, match="trust_remote_code"):
        parse_spec("openai:m?base_url=http://127.0.0.1:1/v1&trust_remote_code=true")


def test_loading_a_model_passes_the_specs_trust_remote_code(tiny_spec, monkeypatch):
    import transformers

    seen: list[tuple[str, object]] = []
    for cls in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        original = cls.from_pretrained

        def recording(*args, _original=original, _cls=cls.__name__, **kwargs):
            seen.append((_cls, kwargs.get("trust_remote_code", False)))
            return _original(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", recording)

    load_model(tiny_spec)
    assert sorted(seen) == [("AutoModelForCausalLM", False), ("AutoTokenizer", False)]
    seen.clear()
    load_model(f"{tiny_spec}&trust_remote_code=true")
    assert sorted(seen) == [("AutoModelForCausalLM", True), ("AutoTokenizer", True)]


# == 6. API keys stay out of everything written ===============================================

KEY_ENV = "CAI_TEST_SECRET_KEY"


@pytest.fixture
def fake():
    server = FakeOpenAI()
    yield server
    server.close()


def everything_written(home: Path) -> tuple[bytes, str]:
    """Every byte under the data home, and a text dump of every table in the store (DuckDB
    may compress strings, so its file's bytes alone prove nothing)."""
    blobs = b"".join(p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file())
    con = duckdb.connect(str(db_path(home)), read_only=True)
    try:
        tables = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
            ).fetchall()
        ]
        dump = "\n".join(
            f"{t}: {row}" for t in tables for row in con.execute(f'SELECT * FROM "{t}"').fetchall()
        )
    finally:
        con.close()
    return blobs, dump


def test_an_api_key_reaches_the_server_but_nothing_written(
    seeded_store, cai_home, fake, monkeypatch, capsys
):
    canary = f"sk-canary-{secrets.token_hex(16)}"
    monkeypatch.setenv(KEY_ENV, canary)
    spec = fake.spec(api_key_env=KEY_ENV, retries=0)
    few = {"max_new_tokens": 8}
    submitted = {
        "generate": jobs.submit(
            seeded_store,
            "generate",
            {"prompts": "red-team:test", "model": spec, "limit": 2, "sampling": few},
        ),
        "critique": jobs.submit(
            seeded_store,
            "critique",
            {
                "constitution": "harmless",
                "prompts": "red-team:train",
                "model": spec,
                "limit": 2,
                "rounds": 1,
                "sampling": few,
            },
        ),
    }
    done = {k: finish(seeded_store, j.id, timeout=60) for k, j in submitted.items()}
    # pairs of each trace's answer and revision: they differ, so the judge is really asked
    pairs = jobs.submit(seeded_store, "pairs", {"from_critique": done["critique"].id})
    done["pairs"] = finish(seeded_store, pairs.id, timeout=60)
    label = jobs.submit(
        seeded_store,
        "label",
        {"pairs": done["pairs"].id, "constitution": "harmless", "model": spec, "limit": 2},
    )
    done["label"] = finish(seeded_store, label.id, timeout=60)
    for kind, job in done.items():
        assert job.status == "succeeded", (kind, job.error)
    # the key was used: every request the jobs made carried it
    assert {r["path"] for r in fake.requests} >= {"/v1/chat/completions", "/v1/completions"}
    assert all(r["auth"] == f"Bearer {canary}" for r in fake.requests)

    exports = [
        ["export", "sft", "--job", done["critique"].id],
        ["export", "prefs", "--job", done["critique"].id, "--from-revisions"],
        ["export", "prefs", "--labels", done["label"].id],
    ]
    shown = []
    for command in exports:
        rc, out, err = cai(capsys, *command)
        assert rc == 0, err
        shown.append(out + err)
    manifests = list((cai_home / "exports").rglob("manifest.json"))
    assert len(manifests) == 3, manifests
    for job in done.values():
        for command in (["jobs", "show", job.id], ["jobs", "logs", job.id]):
            rc, out, err = cai(capsys, *command)
            assert rc == 0, err
            shown.append(out + err)
    rc, out, err = cai(capsys, "jobs", "list")
    shown.append(out + err)

    blobs, dump = everything_written(cai_home)
    assert "answer to: " in dump  # the dump does hold what the jobs wrote
    assert KEY_ENV in dump  # and the spec, which names the variable, not its value
    assert canary.encode() not in blobs
    assert canary not in dump
    assert not any(canary in text for text in shown)


def test_a_failing_job_does_not_leak_the_key_into_its_error(
    seeded_store, cai_home, fake, monkeypatch, capsys
):
    canary = f"sk-canary-{secrets.token_hex(16)}"
    monkeypatch.setenv(KEY_ENV, canary)
    fake.then = "400"
    spec = fake.spec(api_key_env=KEY_ENV, retries=0)
    job = jobs.submit(
        seeded_store, "generate", {"prompts": "red-team:test", "model": spec, "limit": 1}
    )
    job = finish(seeded_store, job.id, timeout=60)
    assert job.status == "failed" and "HTTP 400" in job.error
    assert fake.requests and fake.requests[0]["auth"] == f"Bearer {canary}"
    rc, out, err = cai(capsys, "jobs", "show", job.id)
    blobs, dump = everything_written(cai_home)
    assert canary.encode() not in blobs and canary not in dump and canary not in out + err


def test_a_key_written_into_a_spec_is_refused_and_not_stored(seeded_store, cai_home, fake):
    canary = f"sk-canary-{secrets.token_hex(16)}"
    with pytest.raises(CaiError, match="api_key"):
        jobs.submit(
            seeded_store,
            "generate",
            {"prompts": "red-team:test", "model": f"{fake.spec()}&api_key={canary}"},
        )
    assert seeded_store.job_rows() == []
    blobs, dump = everything_written(cai_home)
    assert canary.encode() not in blobs and canary not in dump


def test_a_key_written_into_the_base_url_is_refused_and_not_stored(seeded_store, cai_home, fake):
    canary = f"sk-canary-{secrets.token_hex(16)}"
    url = fake.base_url.replace("http://", f"http://user:{canary}@")
    with pytest.raises(CaiError, match="api_key_env"):
        jobs.submit(
            seeded_store,
            "generate",
            {"prompts": "red-team:test", "model": f"openai:fake-model?base_url={url}"},
        )
    blobs, dump = everything_written(cai_home)
    assert canary.encode() not in blobs and canary not in dump
