"""`cai studio` as a user runs it: stopping the command (SIGTERM, or SIGINT as Ctrl-C sends it)
stops the Streamlit server it started and frees the port; and the studio shows no Deploy
button, whether Streamlit reads the checkout's .streamlit/config.toml or `cai studio` is run
from a folder without one (as an installed wheel is)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from tests.ui.studio import (
    browser_page,
    free_port,
    require_chromium,
    running_studio,
    wait_for_app,
)

ROOT = Path(__file__).resolve().parents[2]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
            return r.read().strip() == b"ok"
    except OSError:
        return False


def port_is_free(port: int) -> bool:
    """Whether a new server could listen on the port (as Streamlit binds: SO_REUSEADDR)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@contextmanager
def cai_studio(home: Path, cwd: Path, timeout: float = 90):
    """Run `cai studio` (this checkout's CLI, from `cwd`) on a free port until it is healthy;
    yield (the command's process, the URL, the port). Whatever is left of its session is
    killed afterwards."""
    port = free_port()
    log_path = home.parent / f"cai-studio-{port}.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STREAMLIT_SERVER_FILE_WATCHER_TYPE": "none"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cai_engine.cli", "--home", str(home), "studio",
             "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: cleaned up below whatever the outcome
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while not healthy(url):
            assert proc.poll() is None, "cai studio exited:\n" + log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "no health:\n" + log_path.read_text()[-3000:]
            time.sleep(0.3)
        yield proc, url, port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


def streamlit_server(proc) -> psutil.Process:
    """The `streamlit run` process that `cai studio` started."""
    (child,) = [
        c for c in psutil.Process(proc.pid).children() if "streamlit" in " ".join(c.cmdline())
    ]
    return child


def gone(process: psutil.Process, timeout: float) -> bool:
    """Whether the process ended (and is not a zombie) within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.parametrize(
    "sig, group",
    [(signal.SIGTERM, False), (signal.SIGINT, False), (signal.SIGINT, True)],
    ids=["SIGTERM", "SIGINT", "Ctrl-C"],  # Ctrl-C: a terminal signals the whole group
)
def test_stopping_cai_studio_stops_its_streamlit_server_and_frees_the_port(
    cai_home, tmp_path, sig, group
):
    with cai_studio(cai_home, tmp_path) as (proc, url, port):
        server = streamlit_server(proc)
        assert not port_is_free(port)
        if group:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)  # to the command only, as a service manager or `kill` does
        code = proc.wait(timeout=30)
        assert gone(server, timeout=20), f"streamlit (pid {server.pid}) outlived `cai studio`"
        assert not healthy(url)
        assert port_is_free(port)
        assert code == 128 + sig or code == 0, code  # streamlit's own status, or the signal's


@pytest.mark.browser
def test_the_studio_from_the_checkout_shows_no_deploy_button(cai_home):
    """`streamlit run ui/app.py` in the checkout reads .streamlit/config.toml."""
    require_chromium()
    with running_studio(cai_home) as url, browser_page() as page:
        assert_no_deploy_button(page, url)


@pytest.mark.browser
def test_cai_studio_run_from_another_folder_shows_no_deploy_button(cai_home, tmp_path):
    """No config.toml in the working folder (as for an installed wheel): the flags that
    `cai studio` passes hide it."""
    require_chromium()
    assert not (tmp_path / ".streamlit").exists()
    with cai_studio(cai_home, tmp_path) as (_, url, _), browser_page() as page:
        assert_no_deploy_button(page, url)


def assert_no_deploy_button(page, url: str) -> None:
    page.goto(url)
    wait_for_app(page)
    # the toolbar is drawn (its menu) before anything is checked
    page.locator("[data-testid=stMainMenu]").wait_for()
    assert page.locator("[data-testid=stAppDeployButton]").count() == 0
    assert page.get_by_role("button", name="Deploy").count() == 0
    page.locator("[data-testid=stMainMenu]").click()
    menu = page.locator("[data-testid=stMainMenuPopover]")
    menu.wait_for()
    items = menu.inner_text()
    assert "Print" in items and "Dark" in items  # the viewer's items stay (theme, print)
    for developer_item in ("Deploy", "Rerun", "Clear cache"):
        assert developer_item not in items, items
