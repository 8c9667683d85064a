"""A non-editable install is whole: the wheel carries the studio, the constitutions and the prompts.

The wheel is built the way `python -m build` builds it (an sdist first, then a wheel from the
sdist), from a copy of the sources, so a stale `build/` in the checkout cannot leak into it. It is
installed with `--no-deps` into a fresh venv that sees the dependencies of the running interpreter
through a `.pth` file, and every command runs from a scratch folder, so what is imported is the
installed wheel and never this checkout.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import tarfile
import time
import urllib.error
import urllib.request
import venv
import zipfile
from pathlib import Path

import pytest

from tests.ui.studio import free_port

ROOT = Path(__file__).resolve().parent.parent
# What building needs from the checkout (pyproject's readme included).
BUILD_INPUTS = [
    "pyproject.toml",
    "setup.py",
    "MANIFEST.in",
    "README.md",
    "cai_engine",
    "ui",
    "constitutions",
]

pytestmark = [
    pytest.mark.slow,  # about 20 s: two builds, a venv, three commands and a studio start
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX venv layout and signals"),
]


def _run(cmd: list, cwd: Path, env: dict | None = None, timeout: float = 120) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def _dependency_paths() -> list[str]:
    """Where the running interpreter finds its installed packages (the venv `make` builds)."""
    paths = sysconfig.get_paths()
    found = [paths["purelib"], paths["platlib"], *site.getsitepackages()]
    return [p for p in dict.fromkeys(found) if Path(p).is_dir()]


class Installed:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.wheel = self._build(tmp / "build")
        self.venv = tmp / "venv"
        venv.EnvBuilder(with_pip=False, symlinks=True).create(self.venv)
        self.python = self.venv / "bin" / "python"
        self.cai = self.venv / "bin" / "cai"
        self.work = tmp / "work"  # the cwd of every command: the checkout is not on sys.path
        self.work.mkdir()
        site_packages = Path(
            _run([self.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                 self.work, self.env()).strip()
        )  # fmt: skip
        # A plain path line: the dependencies' own .pth files (our editable finder) stay unread.
        (site_packages / "_cai_test_deps.pth").write_text("\n".join(_dependency_paths()) + "\n")
        _run(
            [sys.executable, "-m", "pip", "--python", self.python, "install", "-q",
             "--no-deps", "--no-index", "--no-build-isolation", self.wheel],
            self.work, self.env(),
        )  # fmt: skip

    @staticmethod
    def _build(where: Path) -> Path:
        src = where / "src"
        for name in BUILD_INPUTS:
            if (ROOT / name).is_dir():
                shutil.copytree(
                    ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                src.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, src / name)
        dist = where / "dist"
        sdist = _run(
            [sys.executable, "-c",
             "import sys, setuptools.build_meta as b; print(b.build_sdist(sys.argv[1]))", dist],
            src,
        )  # fmt: skip
        sdist = dist / sdist.strip().splitlines()[-1]
        _run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index",
             "--no-build-isolation", "-w", dist, sdist],
            where,
        )  # fmt: skip
        (wheel,) = dist.glob("*.whl")
        return wheel

    def env(self, **extra) -> dict:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE"}
        }
        return {**env, "CAI_HOME": str(self.tmp / "home"), **extra}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    return Installed(tmp_path_factory.mktemp("wheel"))


def test_the_wheel_carries_the_studio_the_constitutions_and_the_prompt_sets(installed):
    with zipfile.ZipFile(installed.wheel) as whl:
        names = set(whl.namelist())
        expected = {"ui/__init__.py", "ui/app.py", "ui/common.py"}
        expected |= {f"ui/app_pages/{p.name}" for p in (ROOT / "ui" / "app_pages").glob("*.py")}
        expected |= {f"cai_engine/data/prompt_sets/{p.name}" for p in (ROOT / "cai_engine" / "data" / "prompt_sets").glob("*.jsonl")}  # fmt: skip
        expected.add("cai_engine/data/gold/gold.jsonl")  # the judge check's bundled gold set
        constitutions = sorted((ROOT / "constitutions").glob("*.yaml"))
        assert {"default.yaml", "harmless.yaml"} <= {p.name for p in constitutions}
        expected |= {f"cai_engine/data/constitutions/{p.name}" for p in constitutions}
        assert expected - names == set()
        for p in constitutions:
            assert whl.read(f"cai_engine/data/constitutions/{p.name}") == p.read_bytes()
        gold = ROOT / "cai_engine" / "data" / "gold" / "gold.jsonl"
        assert whl.read("cai_engine/data/gold/gold.jsonl") == gold.read_bytes()
        # only the two packages: no tests, benchmarks, data home or top-level constitutions
        assert {n.split("/")[0] for n in names} == {
            "cai_engine",
            "ui",
            "cai_studio-0.1.0.dist-info",
        }
    with tarfile.open(next(installed.wheel.parent.glob("*.tar.gz"))) as sdist:
        assert any(n.endswith("/constitutions/harmless.yaml") for n in sdist.getnames())


def test_the_installed_copy_is_what_runs(installed):
    code = (
        "import json, cai_engine, ui, cai_engine.home as h\n"
        "print(json.dumps({'engine': cai_engine.__file__, 'ui': ui.__file__,"
        " 'in_checkout': h.IN_CHECKOUT, 'constitutions': str(h.BUNDLED_CONSTITUTIONS),"
        " 'prompt_sets': str(h.BUNDLED_PROMPT_SETS), 'app': str(h.studio_app_path())}))"
    )
    got = json.loads(_run([installed.python, "-c", code], installed.work, installed.env()))
    venv_dir = str(installed.venv.resolve())
    for key in ["engine", "ui", "constitutions", "prompt_sets", "app"]:
        assert Path(got[key]).resolve().is_relative_to(venv_dir), (key, got[key])
    assert got["in_checkout"] is False
    assert Path(got["app"]).is_file()
    assert (Path(got["constitutions"]) / "harmless.yaml").is_file()


def _first_column(table: str) -> set[str]:
    return {line.split()[0] for line in table.splitlines()[2:] if line.strip()}


def test_cai_init_installs_the_bundled_constitutions_and_prompt_sets(installed):
    env = installed.env()
    out = _run([installed.cai, "init"], installed.work, env)
    assert f"data home: {installed.tmp / 'home'}" in out
    constitutions = _first_column(
        _run([installed.cai, "constitution", "list"], installed.work, env)
    )
    assert {p.stem for p in (ROOT / "constitutions").glob("*.yaml")} <= constitutions
    assert {"default", "harmless"} <= constitutions
    table = _run([installed.cai, "prompts", "list"], installed.work, env)
    sizes = {
        line.split()[0]: int(line.split()[1]) for line in table.splitlines()[2:] if line.strip()
    }
    for path in (ROOT / "cai_engine" / "data" / "prompt_sets").glob("*.jsonl"):
        assert sizes.get(path.stem) == sum(
            1 for line in path.read_text().splitlines() if line.strip()
        )


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, read from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def test_cai_studio_serves_the_installed_app(installed):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = installed.tmp / "studio.log"
    env = installed.env(
        STREAMLIT_SERVER_FILE_WATCHER_TYPE="none",
        # /_stcore/script-health-check runs the app once: the router and its default page
        STREAMLIT_SERVER_SCRIPT_HEALTH_CHECK_ENABLED="true",
    )
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [installed.cai, "studio", "--port", str(port)],
            cwd=installed.work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopping it stops streamlit too
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            assert proc.poll() is None, "cai studio exited:\n" + log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "no health:\n" + log_path.read_text()[-3000:]
            time.sleep(0.3)
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.status == 200 and b'id="root"' in r.read()
        try:  # 200 "ok", or 503 "error" / "timeout" (after Streamlit's own 60 s)
            with urllib.request.urlopen(f"{url}/_stcore/script-health-check", timeout=90) as r:
                verdict = r.read()
        except urllib.error.HTTPError as e:
            verdict = e.read()
        assert verdict.strip() == b"ok", (
            f"the app did not run: {verdict!r}\n" + log_path.read_text()[-3000:]
        )
        # the server runs the installed app, not this checkout's
        cmdlines = [
            Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            for pid in _group_members(proc.pid)
        ]
        apps = [a.decode() for cmd in cmdlines for a in cmd if a.endswith(b"app.py")]
        assert apps and all(Path(a).is_relative_to(installed.venv) for a in apps), apps
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group is gone if the studio failed
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 15
        while _group_members(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = _group_members(proc.pid)
        if left:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    assert left == [], f"still running after SIGTERM: {left}"
