"""Contrastive pairs (RLCD, Yang et al. 2023): preference pairs whose better side is known by
construction, so no judge is needed to label them.

For each prompt a principle is drawn (seeded, weighted, like the judge's). The same model
answers twice with the same sampling: once under a *positive* system prompt asking for the
answer the principle favours, once under a *negative* one asking for the answer it disfavours.
As in RLCD the two prompts differ in a few words only, so the answers differ mostly in the
direction the principle names. A principle may write its own prompts (`positive_prompt`,
`negative_prompt`); an absent one is derived from its preference question and the pair
records that it was (`prompts_derived`). Which answer is shown as A is a seeded coin per pair,
so A is not always the better one.

A label job by construction (`LabelConfig.source = "construction"`) then labels every pair
P(preferred side) = `score` without loading a model (`label_source = contrastive`). A judge
label job on the same pairs measures, for free, how often the judge agrees with the
construction (`ConstructionAgreement`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from cai_engine.errors import CaiError
from cai_engine.models.base import CUT_OFF
from cai_engine.seeding import seeded_rng

if TYPE_CHECKING:
    from cai_engine.constitution import ConstitutionVersion, Principle
    from cai_engine.labels import LabelConfig
    from cai_engine.runner import JobContext
    from cai_engine.store import Store

# The derived prompts: one word apart ("best" / "worst"), the rest the principle's own question.
POSITIVE = (
    "You will answer the user's next message. A reviewer will compare your answer with other "
    'answers by asking: "{question}" Write the answer the reviewer would pick as the best.'
)
NEGATIVE = (
    "You will answer the user's next message. A reviewer will compare your answer with other "
    'answers by asking: "{question}" Write the answer the reviewer would pick as the worst.'
)
POSITIVE_SAMPLE, NEGATIVE_SAMPLE = 0, 1  # the `generations` rows' sample numbers
REFS = {POSITIVE_SAMPLE: "positive prompt", NEGATIVE_SAMPLE: "negative prompt"}
CONSTRUCTION = "construction"  # the `model` of a label by construction
SOURCE = "contrastive"  # its `label_source`, and the `source` of a contrastive pair


class ContrastivePrompts(NamedTuple):
    positive: str
    negative: str
    derived: bool  # at least one of the two was derived from the principle's texts


def contrastive_prompts(principle: Principle) -> ContrastivePrompts:
    """The principle's positive and negative system prompts: its own where written, else
    derived from its preference question (tagged `derived`).

    Example: a principle asking "Which response is less harmful?" derives
    `You will answer ... by asking: "Which response is less harmful?" Write the answer the
    reviewer would pick as the best.` and the same ending "... as the worst.".
    """
    positive, negative = derived_prompts(principle.preference_question)
    derived = principle.positive_prompt is None or principle.negative_prompt is None
    return ContrastivePrompts(
        principle.positive_prompt or positive, principle.negative_prompt or negative, derived
    )


def derived_prompts(preference_question: str) -> tuple[str, str]:
    """The (positive, negative) system prompts derived from a preference question."""
    question = " ".join(preference_question.split())
    return POSITIVE.format(question=question), NEGATIVE.format(question=question)


def draw_principle(principles: list[Principle], prompt_id: str, seed: int) -> Principle:
    """The principle for one prompt's pair: weighted, seeded, the same on every resume."""
    rng = seeded_rng(seed, "contrastive", prompt_id)
    return rng.choices(principles, weights=[p.weight for p in principles])[0]


def positive_is_a(prompt_id: str, pair: int, seed: int) -> bool:
    """The seeded coin that decides which side of a pair the positive answer is shown on."""
    return seeded_rng(seed, "contrastive-side", prompt_id, pair).random() < 0.5


def with_system(messages: list[dict], system: str) -> list[dict]:
    """`messages` under the system prompt `system`; a conversation that has its own system
    turn keeps it, after ours."""
    if messages and messages[0]["role"] == "system":
        first = {"role": "system", "content": f"{system}\n\n{messages[0]['content']}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": system}, *messages]


class Plan:
    """What a contrastive pairs job asks the model: per prompt, the principle drawn and the
    two conversations (sample 0 under the positive prompt, sample 1 under the negative)."""

    def __init__(self, version: ConstitutionVersion, principles: list[Principle], seed: int):
        self.version = version
        self.principles = principles
        self.seed = seed

    @classmethod
    def of(cls, version: ConstitutionVersion, seed: int) -> Plan:
        constitution = version.constitution
        principles = constitution.enabled_principles
        if not principles:
            raise CaiError(
                f"constitution '{constitution.name}' has every principle disabled; "
                "enable at least one"
            )
        return cls(version, principles, seed)

    def principle(self, prompt_id: str) -> Principle:
        return draw_principle(self.principles, prompt_id, self.seed)

    def conversation(self, prompt, sample: int) -> list[dict]:
        prompts = contrastive_prompts(self.principle(prompt.prompt_id))
        system = prompts.positive if sample == POSITIVE_SAMPLE else prompts.negative
        return with_system(prompt.messages, system)

    def pairs(self, rows: list[dict], job_id: str) -> list[dict]:
        """One pair per prompt from its two answers (`generations` rows of samples 0 and 1),
        the positive one shown as A or B by the seeded coin."""
        by_prompt: dict[str, dict[int, dict]] = {}
        for r in rows:
            by_prompt.setdefault(r["prompt_id"], {})[int(r["sample"])] = r
        out = []
        for prompt_id in sorted(by_prompt):
            answers = by_prompt[prompt_id]
            if set(answers) != {POSITIVE_SAMPLE, NEGATIVE_SAMPLE}:
                continue  # not both answered yet (never written: the job waits for both)
            principle = self.principle(prompt_id)
            sides = [answers[POSITIVE_SAMPLE], answers[NEGATIVE_SAMPLE]]
            positive_a = positive_is_a(prompt_id, 0, self.seed)
            if not positive_a:
                sides.reverse()
            a, b = sides
            out.append(
                {
                    "job_id": job_id,
                    "prompt_set": a["prompt_set"],
                    "prompt_id": prompt_id,
                    "pair": 0,
                    "source": SOURCE,
                    "source_job": None,
                    "a_ref": REFS[int(a["sample"])],
                    "b_ref": REFS[int(b["sample"])],
                    "response_a": a["text"],
                    "response_b": b["text"],
                    "model": a["model"],
                    "sampling": a["sampling"],
                    "seed_a": a["seed"],
                    "seed_b": b["seed"],
                    "constitution_hash": self.version.hash,
                    "flags": _flags(a, b),
                    "preferred": "A" if positive_a else "B",
                    "principle_id": principle.id,
                    "prompts_derived": contrastive_prompts(principle).derived,
                }
            )
        return out


def _flags(a: dict, b: dict) -> str:
    from cai_engine.pairs import pair_flags

    return pair_flags(
        a["text"], b["text"], a.get("finish_reason") == CUT_OFF, b.get("finish_reason") == CUT_OFF
    )


# -- labels by construction -----------------------------------------------------------------


def construction_label(pair: dict, score: float, constitution: str, *, job_id: str = "") -> dict:
    """A label row for a contrastive pair: P(preferred side) = `score`, no model read it.

    Identical answers are a tie (0.5, flagged), as a judge would have to call them."""
    preferred = pair.get("preferred")
    if preferred not in ("A", "B"):
        raise CaiError(
            f"pair {pair['prompt_id']}/{pair['pair']} of pairs job {pair['job_id']} has no "
            "preferred side: only contrastive pairs can be labelled by construction"
        )
    flags = [f for f in (pair.get("flags") or "").split(",") if f in ("identical", "empty")]
    p_a = 0.5 if "identical" in flags else score if preferred == "A" else 1.0 - score
    from cai_engine.labels import given_label_row

    return given_label_row(
        pair,
        p_a,
        job_id=job_id,
        model=CONSTRUCTION,
        source=SOURCE,
        mode=CONSTRUCTION,
        principle_id=pair.get("principle_id") or "",
        constitution=constitution,
        constitution_hash=pair.get("constitution_hash") or "",
        flags=",".join(flags),
    )


def construction_labels(
    pairs: Iterable[dict], score: float, constitution: str, *, job_id: str = ""
) -> Iterator[dict]:
    for pair in pairs:
        yield construction_label(pair, score, constitution, job_id=job_id)


def check_contrastive_source(store: Store, pairs_job) -> str:
    """The pinned constitution of a contrastive pairs job; refuses any other pairs job."""
    if pairs_job.kind != "pairs":
        raise CaiError(f"job {pairs_job.id} is a {pairs_job.kind} job; --pairs needs a pairs job")
    if not pairs_job.config.get("contrastive"):
        raise CaiError(
            f"pairs job {pairs_job.id} is not contrastive: its pairs have no preferred side by "
            "construction. Label them with a judge (leave out --from-construction), or make "
            "contrastive pairs with `cai pairs --contrastive --constitution NAME`"
        )
    return pairs_job.config["constitution"]


def submit_construction_labels(store: Store, cfg: LabelConfig, config: dict, label=None):
    """Check a label-by-construction config and submit it, pinning the pairs job's
    constitution (a constitution given must be that one)."""
    from cai_engine import jobs

    source = jobs.get_job(store, cfg.pairs)
    version = store.get_version(check_contrastive_source(store, source))
    if cfg.constitution and store.get_version(cfg.constitution).hash != version.hash:
        raise CaiError(
            f"constitution {cfg.constitution} is not the one pairs job {source.id} drew its "
            f"principles from ({version.ref}); leave --constitution out"
        )
    return jobs.submit(store, "label", {**config, "constitution": version.pinned}, label=label)


def run_construction_labels(ctx: JobContext, config: LabelConfig) -> None:
    """The label job by construction: every pair of a contrastive pairs job, labelled from
    its preferred side; no model is loaded. Streams and resumes like a judge's label job."""
    from cai_engine import jobs
    from cai_engine.labels import _pending_pairs

    version = ctx.store.get_version(config.constitution)
    source = jobs.get_job(ctx.store, config.pairs)
    check_contrastive_source(ctx.store, source)
    jobs.ingest(ctx.store, source)
    n_pairs = ctx.store.count_pairs(source.id)
    if not n_pairs:
        raise CaiError(f"pairs job {source.id} has no pairs ({source.status})")
    if source.status != "succeeded":
        ctx.event("pairs_job_unfinished", job=source.id, status=source.status, pairs=n_pairs)
    total = min(n_pairs, config.limit) if config.limit else n_pairs
    ctx.event("constitution", ref=version.ref, hash=version.hash)
    with ctx.resume_index("labels", key=("prompt_id", "pair"), total=total, unit="pairs") as done:
        if done.keys >= total:
            return
        ctx.phase("labelling the pairs by construction")
        pending = _pending_pairs(ctx.store, source.id, total, done, config.batch_pairs)
        with ctx.writer("labels", flush_rows=config.batch_pairs, done=done.keys) as out:
            batch: list[dict] = []
            for row in construction_labels(
                pending, config.score, version.constitution.name, job_id=ctx.job_id
            ):
                batch.append(row)
                if len(batch) >= config.batch_pairs:
                    out.add(batch)
                    batch = []
                    ctx.check_cancelled()
            out.add(batch)
    with ctx.resume_index("labels", key=("prompt_id", "pair")) as written:
        labels, ties = written.aggregate("count(*), count(*) FILTER (WHERE winner = 'tie')")
    ctx.metric(labels=int(labels), score=config.score, ties=int(ties))


# -- the judge against the construction -----------------------------------------------------


@dataclass(frozen=True)
class ConstructionAgreement:
    """How often a judge's label agrees with the construction on contrastive pairs."""

    pairs: int  # contrastive pairs the judge scored
    decisive: int  # of those, where the judge named a winner (not a tie)
    agree: int  # ... and it was the preferred side
    source: str = SOURCE  # the pairs' source: contrastive, or dataset (imported, `cai import`)

    @property
    def reference(self) -> str:
        """What the judge is compared with, in words."""
        return "the dataset's label" if self.source == "dataset" else "the construction"

    @property
    def kind(self) -> str:
        return "imported" if self.source == "dataset" else "contrastive"

    @property
    def rate(self):
        from cai_engine.eval.stats import wilson

        return wilson(self.agree, self.decisive)

    def describe(self) -> str:
        """E.g. "the judge agrees with the construction on 71% [62%, 79%] of 120 contrastive
        pairs (Wilson 95% interval)"."""
        if not self.decisive:
            return (
                f"the judge named no winner on any of its {self.pairs} {self.kind} pairs: no "
                f"agreement with {self.reference} to measure"
            )
        r = self.rate
        ties = self.pairs - self.decisive
        return (
            f"the judge agrees with {self.reference} on {r.value:.0%} [{r.low:.0%}, "
            f"{r.high:.0%}] of {self.decisive} {self.kind} pairs (Wilson 95% interval)"
            + (f"; {ties} judge ties left out" if ties else "")
        )
