"""Where CAI Studio keeps its data, and where it finds the files it ships.

The *data home* holds the DuckDB file, run folders and models. Resolution order: an explicit
``--home``, then the ``CAI_HOME`` environment variable, then ``storage/`` at the root of this
checkout; installed from a wheel (no checkout), ``$XDG_DATA_HOME/cai-studio`` (by default
``~/.local/share/cai-studio``).

What ships with the engine is found the same way in a checkout (run in place or installed with
``pip install -e .``) and in a wheel install: the studio is the ``ui`` package next to
``cai_engine``; the prompt sets are package data; the bundled constitutions are the checkout's
``constitutions/`` (where users edit them) or, in a wheel, the copy ``setup.py`` puts in
``cai_engine/data/constitutions/``.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent
# The checkout; in a wheel install, the site-packages folder that holds cai_engine and ui.
CHECKOUT_ROOT = PACKAGE_ROOT.parent
# A wheel install has no pyproject.toml next to its packages.
IN_CHECKOUT = (CHECKOUT_ROOT / "pyproject.toml").is_file()

BUNDLED_CONSTITUTIONS = (
    CHECKOUT_ROOT / "constitutions" if IN_CHECKOUT else PACKAGE_ROOT / "data" / "constitutions"
)
BUNDLED_PROMPT_SETS = PACKAGE_ROOT / "data" / "prompt_sets"


def studio_app_path() -> Path:
    """The studio's router, the file to hand to `streamlit run`."""
    return CHECKOUT_ROOT / "ui" / "app.py"


def default_home() -> Path:
    """The data home when neither `--home` nor `$CAI_HOME` names one."""
    if IN_CHECKOUT:
        return CHECKOUT_ROOT / "storage"
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "cai-studio"


def resolve_home(home: str | os.PathLike | None = None) -> Path:
    """Return the data home as an absolute path, creating it if needed.

    Args:
        home (`str` or `PathLike`, *optional*):
            An explicit data home. Defaults to `$CAI_HOME`, then `default_home()`.
    """
    chosen = home or os.environ.get("CAI_HOME") or default_home()
    path = Path(chosen).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def db_path(home: Path) -> Path:
    return home / "cai.duckdb"


def runs_dir(home: Path) -> Path:
    return home / "runs"


def models_dir(home: Path) -> Path:
    return home / "models"
