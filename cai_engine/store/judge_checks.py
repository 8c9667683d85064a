"""Store queries for judge checks: the stored checks (to reuse one, to list them), a check's gold
items, and the check a label or eval job's judge was given (`judge_check_uses`).

Rows come back as `judge_verdict.CheckSummary` (imported when asked: the store stays light).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cai_engine.store.core import StoreCore
from cai_engine.store.records import none_for_nan, records

if TYPE_CHECKING:
    from cai_engine.judge_verdict import CheckSummary

_USE_COLUMNS = """
u.job_id AS used_by, u.reused, u.calibrate, u.position_bias AS applied_bias,
u.threshold AS use_threshold, u.alpha AS use_alpha, u.qualified AS use_qualified
"""


def _summaries(frame) -> list[CheckSummary]:
    """`judge_checks` rows as summaries (not through `records`, which reads a column named
    `consistent` as a boolean: here it counts pairs)."""
    from cai_engine.judge_verdict import CheckSummary

    rows = [{k: none_for_nan(v) for k, v in r.items()} for r in frame.to_dict("records")]
    for r in rows:
        if r.get("created_at") is not None:
            r["created_at"] = r["created_at"].to_pydatetime()
    return [CheckSummary.from_row(r) for r in rows]


class JudgeCheckQueries(StoreCore):
    def find_judge_check(
        self, model: str, fingerprint: str, constitution_hash: str, gold_hash: str, settings: str
    ) -> CheckSummary | None:
        """The newest stored check of this judge (spec and fingerprint) under this constitution
        version, gold set and settings; None when there is none."""
        with self.connect() as con:
            frame = con.frame(
                """
                SELECT * FROM judge_checks
                WHERE model = ? AND fingerprint = ? AND constitution_hash = ?
                  AND gold_hash = ? AND settings = ?
                ORDER BY created_at DESC, job_id DESC
                LIMIT 1
                """,
                [model, fingerprint, constitution_hash, gold_hash, settings],
            )
        found = _summaries(frame)
        return found[0] if found else None

    def judge_check(self, job_id: str) -> CheckSummary | None:
        """The check job `job_id` ran itself (a judge-check job, or a label/eval job that ran
        one inline)."""
        with self.connect() as con:
            frame = con.frame("SELECT * FROM judge_checks WHERE job_id = ?", [job_id])
        found = _summaries(frame)
        return found[0] if found else None

    def judge_check_for_job(self, job_id: str) -> CheckSummary | None:
        """The check behind a job's judge-derived numbers: for a label or eval job the check it
        used (with its verdict under the job's threshold, whether it was reused, and any
        position calibration), for a judge-check job its own. None when the job has none."""
        with self.connect() as con:
            frame = con.frame(
                f"""
                SELECT c.*, {_USE_COLUMNS}
                FROM judge_check_uses u
                JOIN judge_checks c ON c.job_id = u.check_job
                WHERE u.job_id = ?
                """,
                [job_id],
            )
        found = _summaries(frame)
        return found[0] if found else self.judge_check(job_id)

    def judge_checks(self, limit: int = 50) -> list[CheckSummary]:
        """Stored checks, newest first."""
        with self.connect() as con:
            frame = con.frame(
                "SELECT * FROM judge_checks ORDER BY created_at DESC, job_id DESC LIMIT ?",
                [limit],
            )
        return _summaries(frame)

    def judge_check_items(self, job_id: str) -> list[dict]:
        """The gold pairs a check scored, in gold id order."""
        with self.connect() as con:
            frame = con.frame(
                "SELECT * FROM judge_check_items WHERE job_id = ? ORDER BY gold_id", [job_id]
            )
        rows = records(frame)
        for r in rows:
            r["correct"] = bool(r["correct"])
        return rows
