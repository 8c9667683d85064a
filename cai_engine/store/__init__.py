"""The store: one DuckDB file under the data home, opened per unit of work.

All SQL lives in this package, as parameterised queries in one module per stage, named as the
stage is everywhere else (`traces`, `pairs`, `labels`, `review`, `models`, `eval`, …).
"""

from __future__ import annotations

from cai_engine.errors import StoreLockedError
from cai_engine.store.constitutions import ConstitutionQueries, ConstitutionSummary
from cai_engine.store.core import DEFAULT_LOCK_TIMEOUT, StoreCore, StoreError
from cai_engine.store.eval import EvalQueries
from cai_engine.store.exports import ExportQueries
from cai_engine.store.generations import GenerationQueries
from cai_engine.store.imports import ImportQueries
from cai_engine.store.jobs import JobQueries
from cai_engine.store.judge_checks import JudgeCheckQueries
from cai_engine.store.labels import LabelQueries
from cai_engine.store.models import ModelQueries
from cai_engine.store.pairs import PairQueries
from cai_engine.store.prompts import PromptQueries, PromptSetSummary
from cai_engine.store.review import ReviewQueries
from cai_engine.store.traces import TraceQueries


class Store(
    ConstitutionQueries,
    PromptQueries,
    JobQueries,
    GenerationQueries,
    TraceQueries,
    PairQueries,
    LabelQueries,
    ReviewQueries,
    ModelQueries,
    EvalQueries,
    JudgeCheckQueries,
    ExportQueries,
    ImportQueries,
    StoreCore,
):
    """The data home's DuckDB store. Safe to share between threads; holds no open connection."""

    def counts(self) -> dict[str, int]:
        """Headline counts for the Home page."""
        with self.connect() as con:
            row = con.one(
                """
                SELECT (SELECT count(DISTINCT name) FROM constitution_versions),
                       (SELECT count(*) FROM constitution_versions),
                       (SELECT count(*) FROM prompt_sets),
                       (SELECT count(*) FROM prompts),
                       (SELECT count(*) FROM jobs)
                """
            )
        keys = ("constitutions", "versions", "prompt_sets", "prompts", "jobs")
        return dict(zip(keys, row, strict=True))


__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "ConstitutionSummary",
    "PromptSetSummary",
    "Store",
    "StoreError",
    "StoreLockedError",
]
