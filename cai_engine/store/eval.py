"""Store queries for evaluation jobs: answers (and their reuse), judgements and results, and
the Eval page's answers side by side, a page at a time.

The disagreement on a prompt (how much the chosen models' verdicts differ there) is defined
once, in `_PER_PROMPT`: the page's list, one prompt's detail and `report.side_by_side` all
read it from there.
"""

from __future__ import annotations

import json

from cai_engine.search import search_needle
from cai_engine.store.core import StoreCore
from cai_engine.store.records import none_for_nan, records

# Named parameters: $job, $set, $models (the chosen model specs), $reference (the model win
# rates are against) and $prompt (one prompt id, or NULL for every prompt of the set).
_PER_PROMPT = """
WITH judged AS (       -- the verdicts on the chosen models' answers (a NaN: no value)
    SELECT metric, model, prompt_id, item, rule,
           CASE WHEN isnan(value) THEN NULL ELSE value END AS value
    FROM eval_judgements
    WHERE job_id = $job AND prompt_set = $set
      AND metric IN ('harmless', 'helpful', 'refusal')
      AND list_contains($models, model)
      AND ($prompt IS NULL OR prompt_id = $prompt)
),
verdict AS (           -- per model and prompt, the judge's last verdict of each metric
    SELECT model, prompt_id,
           bool_or(metric = 'harmless') AS harmless_judged,
           arg_max_null(value, item) FILTER (WHERE metric = 'harmless') AS harmless,
           arg_max_null(value, item) FILTER (WHERE metric = 'helpful') AS helpful,
           bool_or(metric = 'refusal') AS refusal_judged,
           arg_max_null(value, item) FILTER (WHERE metric = 'refusal') AS refusal,
           arg_max_null(rule, item) FILTER (WHERE metric = 'refusal') AS judged_rule
    FROM judged
    GROUP BY model, prompt_id
),
per_model AS (         -- one row per chosen model's answer to a prompt of the set
    SELECT a.prompt_id, a.model, a.text, a.finish_reason,
           CASE WHEN a.model = $reference THEN 0.5           -- the reference against itself
                WHEN v.harmless_judged THEN v.harmless       -- harmlessness if judged, else
                ELSE v.helpful END AS win,                   -- helpfulness: P(better than ref)
           v.refusal,                                        -- the judge's P(refusal)
           coalesce(v.refusal_judged, false) AS refusal_judged,
           v.judged_rule
    FROM eval_answers a
    LEFT JOIN verdict v ON v.model = a.model AND v.prompt_id = a.prompt_id
    WHERE a.job_id = $job AND a.prompt_set = $set
      AND list_contains($models, a.model)
      AND ($prompt IS NULL OR a.prompt_id = $prompt)
),
per_prompt AS (        -- the disagreement: the larger spread (max - min) of the models' win
    SELECT prompt_id,  -- or refusal probabilities, each over the 2+ models that have one
           greatest(
               CASE WHEN count(win) >= 2 THEN max(win) - min(win) ELSE 0.0 END,
               CASE WHEN count(refusal) >= 2 THEN max(refusal) - min(refusal) ELSE 0.0 END
           ) AS disagreement,
           count(*) AS answers,
           count(*) FILTER (WHERE finish_reason = 'length') AS cut_off
    FROM per_model
    GROUP BY prompt_id
),
listed AS (            -- with the prompt's text and category
    SELECT d.*, coalesce(p.text, '') AS prompt_text, p.category
    FROM per_prompt d
    LEFT JOIN prompts p ON p.set_name = $set AND p.prompt_id = d.prompt_id
)
"""
_MATCHES = "($needle = '' OR contains(lower(prompt_text), $needle))"
_ORDER = "ORDER BY disagreement DESC, prompt_id"  # most disagreement first, then by id
_PAGE_COLUMNS = ("prompt_id", "prompt_text", "category", "disagreement", "answers", "cut_off")


class EvalQueries(StoreCore):
    def eval_answer_page(
        self,
        job_id: str,
        models: list[str],
        prompt_set: str,
        *,
        reference: str,
        search: str | None = None,
        offset: int = 0,
        limit: int | None = 50,
    ) -> tuple[list[dict], int]:
        """One page of an eval set's prompts that the chosen `models` answered, those where
        they disagree most first (then by prompt id), and how many match in all.

        Args:
            reference (`str`):
                The model win rates are against: its P(better than the reference) is 0.5.
            search (`str`, *optional*):
                A phrase the prompt's text contains, as plain text (no character is a
                pattern), at most `SEARCH_MAX` characters (else a CaiError).
            limit (`int` or `None`, *optional*, defaults to `50`):
                `None`: every matching prompt (for `report.side_by_side`, not for a page).

        Each row: prompt_id, prompt_text, category, disagreement, answers (how many of the
        models answered it) and cut_off (how many of those answers hit the token limit).
        """
        needle = search_needle(search, "search the prompts")
        if not models:
            return [], 0
        params = self._answer_params(job_id, models, prompt_set, reference) | {"needle": needle}
        with self.connect() as con:
            rows = con.rows(  # the count of all that match rides along (a window)
                f"{_PER_PROMPT} SELECT {', '.join(_PAGE_COLUMNS)}, count(*) OVER ()"
                f" FROM listed WHERE {_MATCHES} {_ORDER} LIMIT $limit OFFSET $offset",
                params | {"limit": limit, "offset": max(0, int(offset))},
            )
            if rows:
                total = rows[0][-1]
            else:  # past the end (or nothing matches): count on its own
                total = con.scalar(
                    f"{_PER_PROMPT} SELECT count(*) FROM listed WHERE {_MATCHES}", params
                )
        page = [dict(zip(_PAGE_COLUMNS, r[:-1], strict=True)) for r in rows]
        for r in page:
            r["answers"], r["cut_off"] = int(r["answers"]), int(r["cut_off"])
        return page, int(total)

    def eval_prompt_count(self, job_id: str, models: list[str], prompt_set: str) -> int:
        """How many prompts of the set at least one of `models` answered."""
        if not models:
            return 0
        with self.connect() as con:
            return int(
                con.scalar(
                    "SELECT count(DISTINCT prompt_id) FROM eval_answers"
                    " WHERE job_id = ? AND prompt_set = ? AND list_contains(?, model)",
                    [job_id, prompt_set, models],
                )
            )

    def eval_prompt_detail(
        self, job_id: str, prompt_set: str, prompt_id: str, models: list[str], *, reference: str
    ) -> dict | None:
        """One prompt of an eval set as the chosen models answered it (None: none did)."""
        found = self.eval_prompt_details(
            job_id, prompt_set, models, reference=reference, prompt_id=prompt_id
        )
        return found.get(prompt_id)

    def eval_prompt_details(
        self,
        job_id: str,
        prompt_set: str,
        models: list[str],
        *,
        reference: str,
        prompt_id: str | None = None,
    ) -> dict[str, dict]:
        """Prompt id -> the prompt (prompt_text, category, disagreement) and, under `models`,
        each chosen model's answer in model order: text, finish_reason, cut_off, win (P(better
        than the reference)), refusal (the judge's P(refusal)), refusal_judged and judged_rule
        (the refusal rule the judge's verdict recorded). Every prompt of the set, or only
        `prompt_id`: a page asks for one."""
        if not models:
            return {}
        params = self._answer_params(job_id, models, prompt_set, reference, prompt_id)
        with self.connect() as con:
            rows = con.rows(
                f"{_PER_PROMPT}"
                " SELECT l.prompt_id, l.prompt_text, l.category, l.disagreement,"
                "        m.model, m.text, m.finish_reason, m.win, m.refusal,"
                "        m.refusal_judged, m.judged_rule"
                " FROM listed l JOIN per_model m USING (prompt_id)"
                " ORDER BY l.prompt_id, m.model",
                params,
            )
        out: dict[str, dict] = {}
        for (
            pid,
            text,
            category,
            disagreement,
            model,
            answer,
            finish,
            win,
            refusal,
            judged,
            rule,
        ) in rows:
            prompt = out.setdefault(
                pid,
                {
                    "prompt_id": pid,
                    "prompt_text": text,
                    "category": category,
                    "disagreement": disagreement,
                    "models": {},
                },
            )
            prompt["models"][model] = {
                "text": answer,
                "finish_reason": finish,
                "cut_off": finish == "length",
                "win": none_for_nan(win),
                "refusal": none_for_nan(refusal),
                "refusal_judged": bool(judged),
                "judged_rule": rule,
            }
        return out

    @staticmethod
    def _answer_params(
        job_id: str, models: list[str], prompt_set: str, reference: str, prompt_id=None
    ) -> dict:
        return {
            "job": job_id,
            "set": prompt_set,
            "models": list(models),
            "reference": reference,
            "prompt": prompt_id,
        }

    def eval_answers(self, job_id: str) -> list[dict]:
        """An eval job's answers, each with its prompt's text and messages."""
        with self.connect() as con:
            frame = con.frame(
                """
                SELECT a.*, p.text AS prompt_text, p.messages AS prompt_messages, p.category
                FROM eval_answers a
                LEFT JOIN prompts p ON p.set_name = a.prompt_set AND p.prompt_id = a.prompt_id
                WHERE a.job_id = ?
                ORDER BY a.prompt_set, a.prompt_id, a.model
                """,
                [job_id],
            )
        return records(frame)

    def reusable_answers(
        self,
        model: str,
        fingerprint: str,
        sampling: str,
        prompt_set: str,
        job_id: str,
        prompt_ids: list[str] | None = None,
    ) -> list[dict]:
        """Answers other eval jobs already have for this model (the same weights), prompt set
        and sampling (with its seed): the earliest answer per prompt, of the prompts
        `prompt_ids` only when given (a job asks a chunk of prompts at a time)."""
        chosen = "" if prompt_ids is None else " AND prompt_id IN (SELECT unnest(?::VARCHAR[]))"
        with self.connect() as con:
            frame = con.frame(
                f"""
                SELECT * FROM eval_answers
                WHERE model = ? AND fingerprint = ? AND sampling = ? AND prompt_set = ?
                  AND job_id <> ?{chosen}
                QUALIFY row_number() OVER (PARTITION BY prompt_id ORDER BY job_id) = 1
                """,
                [model, fingerprint, sampling, prompt_set, job_id]
                + ([] if prompt_ids is None else [list(prompt_ids)]),
            )
        return records(frame)

    def count_revision_pairs(self, job_id: str) -> int:
        """How many (round k-1 answer, round k revision) pairs a critique job's traces give
        (what an eval's revision progress judges; see `eval.revisions.revision_pairs`)."""
        with self.connect() as con:
            return int(
                con.scalar(
                    """
                    WITH answers AS (
                        SELECT DISTINCT prompt_id, sample, round FROM traces
                        WHERE job_id = ? AND step IN ('initial', 'revision')
                    )
                    SELECT count(*) FROM answers a
                    JOIN answers b ON b.prompt_id = a.prompt_id AND b.sample = a.sample
                                  AND b.round = a.round - 1
                    WHERE a.round >= 1
                    """,
                    [job_id],
                )
            )

    def eval_judgements(self, job_id: str) -> list[dict]:
        with self.connect() as con:
            frame = con.frame(
                "SELECT * FROM eval_judgements WHERE job_id = ?"
                " ORDER BY metric, model, prompt_set, prompt_id, item",
                [job_id],
            )
        rows = records(frame)
        for r in rows:
            r["item"] = int(r["item"])
        return rows

    def eval_results(self, job_id: str | None = None) -> list[dict]:
        """Summary metrics of one eval job, or of all of them (newest job first)."""
        with self.connect() as con:
            frame = con.frame(
                "SELECT r.* FROM eval_results r JOIN jobs j ON j.id = r.job_id"
                " WHERE (? IS NULL OR r.job_id = ?)"
                " ORDER BY j.created_at DESC, r.job_id, r.model, r.metric",
                [job_id, job_id],
            )
        rows = records(frame)
        for r in rows:
            r["n"] = int(r["n"])
            r["detail"] = json.loads(r["detail"])
        return rows
