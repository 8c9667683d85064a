"""The engine must stay importable without the studio: `import cai_engine` never loads streamlit."""

from __future__ import annotations

import subprocess
import sys

ENGINE_MODULES = [
    "cai_engine",
    "cai_engine.cli",
    "cai_engine.constitution",
    "cai_engine.prompts",
    "cai_engine.peer_formats",
    "cai_engine.store",
    "cai_engine.bundled",
]


def loaded_after(imports: list[str]) -> set[str]:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in imports)
        + "print('\\n'.join(sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def test_importing_the_engine_does_not_load_streamlit():
    modules = loaded_after(ENGINE_MODULES)
    assert not {m for m in modules if m == "streamlit" or m.startswith("streamlit.")}


def test_no_engine_source_file_imports_streamlit():
    from pathlib import Path

    import cai_engine

    offenders = [
        str(path)
        for path in Path(cai_engine.__file__).parent.rglob("*.py")
        if "import streamlit" in path.read_text() or "from streamlit" in path.read_text()
    ]
    assert offenders == []


def test_no_ui_file_holds_sql_or_model_code():
    import re
    from pathlib import Path

    ui = Path(__file__).resolve().parent.parent / "ui"
    sql = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE)\b\s+\S+.*\b(FROM|INTO|SET)\b")
    offenders = []
    for path in ui.rglob("*.py"):
        text = path.read_text()
        if sql.search(text) or re.search(
            r"^\s*(import|from) (duckdb|torch|transformers|trl)\b", text, re.M
        ):
            offenders.append(str(path))
    assert offenders == []
