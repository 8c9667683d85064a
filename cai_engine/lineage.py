"""A model's lineage as a reviewer reads it: which base, which data job, which constitution
version, in a few short rows instead of the raw JSON stored with the model.

`lineage_rows(store, spec)` follows a trained model back through its bases (a DPO model trained
on an SFT model shows both), resolving each constitution hash to its `name@N` version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cai_engine import jobs
from cai_engine.constitution import pinned_ref
from cai_engine.errors import CaiError
from cai_engine.eval.report import model_lineage
from cai_engine.models import parse_spec

if TYPE_CHECKING:
    from cai_engine.store import Store

MAX_DEPTH = 8  # bases followed back (a chain longer than this is cut, and says so)


@dataclass
class LineageRow:
    model: str  # the model this row is about, as a spec
    what: str  # "trained by", "base model", "data", "constitution", "feedback model"
    value: str  # what a reviewer reads
    job: str | None = None  # the job this row names, for a link to its page


def constitution_text(store: Store, name: str | None, content_hash: str | None) -> str:
    """`harmless@2 (1a2b3c4d5e6f)`: the version a hash is, as the pickers show it."""
    if not content_hash:
        return "none recorded"
    if name:
        try:
            version = store.get_version(pinned_ref(name, content_hash))
        except CaiError:
            return f"{name} ({content_hash[:12]}, not in this store)"
        return f"{version.ref} ({version.short_hash})"
    return f"version {content_hash[:12]}"


def _data_text(facts: dict) -> str:
    kind = {"sft": "SFT examples", "prefs": "preference pairs"}.get(facts.get("data_kind"), "")
    examples = facts.get("examples")
    what = f"{examples} {kind or 'examples'}" if examples is not None else kind
    source = facts.get("data") or "unknown"
    return f"{source} ({what})" if what else str(source)


def _is_job(store: Store, name) -> bool:
    try:
        return bool(name) and jobs.get_job(store, str(name)) is not None
    except CaiError:
        return False


def lineage_rows(store: Store, spec: str) -> list[LineageRow]:
    """Rows for `spec`, then for each trained base it came from (a DPO model's SFT base, and
    so on), nearest first; the chain ends at a model not trained here."""
    rows: list[LineageRow] = []
    for _ in range(MAX_DEPTH):
        facts = model_lineage(store, spec)
        if parse_spec(spec).kind != "trained" or "job" not in facts:
            note = f" ({facts['note']})" if facts.get("note") else ""
            if not rows or note:  # else the row before ("base model") already names it
                rows.append(LineageRow(spec, "model", f"{spec}{note}"))
            return rows
        rows.append(
            LineageRow(spec, "trained by", f"{facts['kind']} job {facts['job']}", facts["job"])
        )
        data = facts.get("data")
        rows.append(
            LineageRow(spec, "data", _data_text(facts), data if _is_job(store, data) else None)
        )
        if facts.get("constitution_hash"):
            text = constitution_text(store, facts.get("constitution"), facts["constitution_hash"])
            rows.append(LineageRow(spec, "constitution", text))
        if facts.get("feedback_model") == "construction":  # contrastive pairs (RLCD)
            text = "none: contrastive pairs labelled by construction"
            rows.append(LineageRow(spec, "feedback model", text))
        elif str(facts.get("feedback_model") or "").startswith("dataset"):  # `cai import`
            text = "none: labels imported with the pairs (the dataset's own)"
            rows.append(LineageRow(spec, "feedback model", text))
        elif facts.get("feedback_model"):
            rows.append(LineageRow(spec, "feedback model", str(facts["feedback_model"])))
        if not facts.get("base_model"):
            return rows
        rows.append(LineageRow(spec, "base model", str(facts["base_model"])))
        spec = str(facts["base_model"])
    rows.append(LineageRow(spec, "note", f"lineage cut after {MAX_DEPTH} models"))
    return rows


class VersionNames:
    """Readable names for the constitution references jobs keep: `harmless@1a2b3c4d5e6f` (the
    pinned form) reads `harmless@2 (1a2b3c4d5e6f)`. Loads every version once, so a page can name
    the versions of a few hundred jobs without a query each."""

    def __init__(self, store: Store):
        self._store = store
        self._versions = [
            v for c in store.list_constitutions() for v in store.list_versions(c.name)
        ]

    def __call__(self, ref: str | None) -> str:
        if not ref:
            return "no constitution"
        name, _, selector = str(ref).partition("@")
        mine = [v for v in self._versions if v.name == name]
        if not selector or selector == "latest":
            match = mine[-1:]
        elif selector.removeprefix("v").isdigit() and len(selector.removeprefix("v")) < 4:
            match = [v for v in mine if v.seq == int(selector.removeprefix("v"))]
        else:
            match = [v for v in mine if v.hash.startswith(selector)]
        return f"{match[0].ref} ({match[0].short_hash})" if len(match) == 1 else str(ref)
