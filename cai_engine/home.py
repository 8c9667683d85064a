"""Where CAI Studio keeps its data: the *data home* holds the DuckDB file, run folders and models.

Resolution order: an explicit ``--home``, then the ``CAI_HOME`` environment variable, then
``storage/`` at the root of this checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

CHECKOUT_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_CONSTITUTIONS = CHECKOUT_ROOT / "constitutions"
BUNDLED_PROMPT_SETS = Path(__file__).resolve().parent / "data" / "prompt_sets"


def resolve_home(home: str | os.PathLike | None = None) -> Path:
    """Return the data home as an absolute path, creating it if needed.

    Args:
        home (`str` or `PathLike`, *optional*):
            An explicit data home. Defaults to `$CAI_HOME`, then `<checkout>/storage`.
    """
    chosen = home or os.environ.get("CAI_HOME") or CHECKOUT_ROOT / "storage"
    path = Path(chosen).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def db_path(home: Path) -> Path:
    return home / "cai.duckdb"


def runs_dir(home: Path) -> Path:
    return home / "runs"


def models_dir(home: Path) -> Path:
    return home / "models"
