"""RL-CAI pairs (`pairs`): every two sampled answers, or a trace's initial answer against its
final revision; the pairs job and the bad configs it refuses."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

import pytest

from cai_engine import jobs
from cai_engine.errors import CaiError
from cai_engine.home import runs_dir
from cai_engine.jobs import JobConfigError
from cai_engine.models import parse_spec
from cai_engine.pairs import pair_flags, pairs_from_samples, pairs_from_traces, submit_pairs
from cai_engine.runs import RunFolder
from tests.conftest import PAIRS_PROMPTS, PAIRS_SAMPLES
from tests.runners import finish, kill_runners, runner_pids, wait_until


def generation(prompt_id: str, sample: int, text: str) -> dict:
    return {
        "prompt_set": "red-team",
        "prompt_id": prompt_id,
        "sample": sample,
        "text": text,
        "model": "hf:some/model",
        "sampling": f'{{"seed": {sample}}}',
        "seed": 100 + sample,
    }


def test_pairs_from_samples_pairs_every_two_of_k_answers():
    texts = {("p1", k): f"p1 answer {k}" for k in range(3)}
    texts |= {("p0", 0): " same ", ("p0", 1): "same", ("p0", 2): "same\n"}
    order = [("p1", 2), ("p0", 1), ("p1", 0), ("p0", 0), ("p1", 1), ("p0", 2)]  # any order
    rows = [generation(pid, k, texts[(pid, k)]) for pid, k in order]

    pairs = pairs_from_samples(rows, "pairs-1")

    assert [(p["prompt_id"], p["pair"], p["a_ref"], p["b_ref"]) for p in pairs] == [
        ("p0", 0, "sample 0", "sample 1"),
        ("p0", 1, "sample 0", "sample 2"),
        ("p0", 2, "sample 1", "sample 2"),
        ("p1", 0, "sample 0", "sample 1"),
        ("p1", 1, "sample 0", "sample 2"),
        ("p1", 2, "sample 1", "sample 2"),
    ]
    for p in pairs:
        a, b = int(p["a_ref"].split()[1]), int(p["b_ref"].split()[1])
        pid = p["prompt_id"]
        assert (p["response_a"], p["response_b"]) == (texts[(pid, a)], texts[(pid, b)])
        assert (p["seed_a"], p["seed_b"]) == (100 + a, 100 + b)
        assert (p["job_id"], p["source"], p["source_job"]) == ("pairs-1", "samples", None)
        assert (p["model"], p["sampling"]) == ("hf:some/model", f'{{"seed": {a}}}')
        assert p["flags"] == ("identical" if pid == "p0" else "")


def trace(prompt_id: str, sample: int = 0, rounds: int = 2, initial: bool = True) -> list[dict]:
    base = {
        "prompt_set": "red-team",
        "prompt_id": prompt_id,
        "sample": sample,
        "model": "hf:m",
        "sampling": "{}",
        "constitution_hash": "abc",
    }
    rows = [{**base, "round": 0, "step": "initial", "text": f"{prompt_id}/{sample} initial", "seed": 1}] if initial else []  # fmt: skip
    for r in range(1, rounds + 1):
        rows.append({**base, "round": r, "step": "critique", "text": "crit", "seed": 1})
        rows.append({**base, "round": r, "step": "revision", "text": f"{prompt_id}/{sample} rev {r}", "seed": 2})  # fmt: skip
    return rows


def test_pairs_from_traces_pairs_the_initial_answer_with_the_final_revision():
    rows = trace("p0", rounds=3) + trace("p0", sample=1, rounds=1)
    pairs = pairs_from_traces(rows[::-1], "pairs-2", "critique-1")
    assert [(p["prompt_id"], p["pair"]) for p in pairs] == [("p0", 0), ("p0", 1)]
    for p, (sample, final) in zip(pairs, [(0, 3), (1, 1)], strict=True):
        by_ref = {p["a_ref"]: p["response_a"], p["b_ref"]: p["response_b"]}
        assert by_ref == {"initial": f"p0/{sample} initial", f"revision {final}": f"p0/{sample} rev {final}"}  # fmt: skip
        assert (p["source"], p["source_job"], p["job_id"]) == ("critique", "critique-1", "pairs-2")
        assert p["constitution_hash"] == "abc" and p["flags"] == ""
        seeds = {"initial": 1, f"revision {final}": 2}
        assert (p["seed_a"], p["seed_b"]) == (seeds[p["a_ref"]], seeds[p["b_ref"]])


def test_pairs_from_traces_draws_the_sides_per_trace_seeded():
    rows = [r for i in range(40) for r in trace(f"p{i:02d}", rounds=1)]
    first = pairs_from_traces(rows, "j", "c", seed=0)
    again = pairs_from_traces(rows, "j", "c", seed=0)
    other = pairs_from_traces(rows, "j", "c", seed=1)
    sides = [p["a_ref"] for p in first]
    assert sides == [p["a_ref"] for p in again]
    # Seeded coin flips per trace: 40 traces all on one side would be a 2**-39 chance.
    assert 8 <= sides.count("initial") <= 32
    assert sides != [p["a_ref"] for p in other]


def test_pairs_from_traces_skips_incomplete_traces():
    rows = trace("done") + trace("no-revision", rounds=0) + trace("no-initial", initial=False)
    rows += [r for r in trace("cut-short", rounds=1) if r["step"] != "revision"]
    pairs = pairs_from_traces(rows, "j", "c")
    assert [p["prompt_id"] for p in pairs] == ["done"]


def test_a_pairs_job_writes_generations_and_pairs_with_lineage(pairs_job, tiny_spec):
    store, job = pairs_job
    spec = str(parse_spec(tiny_spec))
    prompts = [p.prompt_id for p in store.get_prompts("red-team", split="train", limit=12)]

    generations = store.generations(job.id)
    assert len(generations) == PAIRS_PROMPTS * PAIRS_SAMPLES
    assert {(g["prompt_id"], g["sample"]) for g in generations} == {
        (p, k) for p in prompts for k in range(PAIRS_SAMPLES)
    }
    by_key = {(g["prompt_id"], g["sample"]): g for g in generations}
    assert {g["seed"] for g in generations} == {0, 1, 2}
    assert all(g["seed"] == g["sample"] and g["model"] == spec for g in generations)

    pairs = store.pairs(job.id)
    assert len(pairs) == PAIRS_PROMPTS * 3  # 3 answers: 3 pairs per prompt
    refs = [(0, 1), (0, 2), (1, 2)]
    for p in pairs:
        a, b = refs[p["pair"]]
        assert (p["a_ref"], p["b_ref"]) == (f"sample {a}", f"sample {b}")
        ga, gb = by_key[(p["prompt_id"], a)], by_key[(p["prompt_id"], b)]
        assert (p["response_a"], p["response_b"]) == (ga["text"], gb["text"])
        assert (p["seed_a"], p["seed_b"]) == (a, b)
        assert (p["model"], p["sampling"]) == (spec, ga["sampling"])
        assert '"max_new_tokens":4' in p["sampling"].replace(" ", "")
        assert (p["job_id"], p["source"], p["prompt_set"]) == (job.id, "samples", "red-team")
        # 4 new tokens: the answers stop at the token limit, and the pair says which did
        cut = (ga["finish_reason"] == "length", gb["finish_reason"] == "length")
        assert p["flags"] == pair_flags(ga["text"], gb["text"], *cut)
        assert p["prompt_messages"] and p["category"]  # joined from the prompt set
    assert sorted({p["prompt_id"] for p in pairs}) == sorted(prompts)
    [metric] = [m for m in job.run.metrics() if "pairs" in m]
    assert metric["pairs"] == 36
    # its progress ends counting pairs, like the label job that scores them
    assert (job.done, job.total, job.unit) == (36, 36, "pairs")
    assert job.tokens > 0 and job.elapsed is not None


def critique_job_with_traces(
    store, prompts: int = 2, job_id: str = "critique-00000000-000000-made"
) -> str:
    """A finished critique job (no process behind it) whose one shard holds `prompts` traces
    of one round, each step of 5 completion tokens."""
    run = RunFolder(runs_dir(store.home) / job_id)
    run.create({})
    store.insert_job(job_id, "critique", {}, str(run.path), "made by hand")
    columns = {"job_id": job_id, "principle_id": "p1", "constitution": "harmless"}
    columns |= {"prompt_tokens": 9, "completion_tokens": 5, "latency_s": 0.1}
    columns |= {"finish_reason": "stop", "truncated_tokens": 0, "few_shots_dropped": 0}
    columns |= {"flags": ""}
    rows = [{**columns, **r} for n in range(prompts) for r in trace(f"red-team-{n:04d}", rounds=1)]
    run.write_shard("traces", rows)
    tokens = sum(r["completion_tokens"] for r in rows)
    run.write_status(
        state="succeeded", done=len(rows), total=len(rows), unit="steps", tokens=tokens
    )
    ended = datetime.now()  # 30 s after it started
    store.update_job(
        job_id, status="succeeded", started_at=ended - timedelta(seconds=30), finished_at=ended
    )
    jobs.ingest(store, jobs.get_job(store, job_id))
    return job_id


def test_a_pairs_job_from_a_critique_job_counts_its_pairs(seeded_store):
    source = critique_job_with_traces(seeded_store, prompts=2)
    job = finish(seeded_store, submit_pairs(seeded_store, {"from_critique": source}).id)
    assert job.status == "succeeded", job.error
    assert len(seeded_store.pairs(job.id)) == 2  # one per trace: initial against revision
    assert (job.done, job.total, job.unit) == (2, 2, "pairs")
    assert job.elapsed is not None


def insert_job(store, kind: str) -> str:
    """A job row with no process behind it (inputs for submit-time checks)."""
    job_id = f"{kind}-00000000-000000-test"
    store.insert_job(job_id, kind, {}, str(store.home / "runs" / job_id), None)
    return job_id


@pytest.mark.parametrize(
    "change, error, message",
    [
        ({"from_critique": "critique-x"}, JobConfigError, r"give exactly one of prompts \(sample answers\) or from_critique"),
        ({"prompts": None}, JobConfigError, r"give exactly one of prompts \(sample answers\) or from_critique"),
        ({"prompts": None, "from_critique": "SOURCE"}, CaiError, r"is a pairs job; from_critique needs a critique job"),
        ({"prompts": "no-such-set"}, CaiError, r"no prompt set named 'no-such-set'"),
        ({"samples": 1}, JobConfigError, r"invalid pairs job config: samples:"),
    ],
)  # fmt: skip
def test_submit_pairs_refuses_a_bad_job_before_any_process_starts(
    seeded_store, cai_home, change, error, message
):
    source = insert_job(seeded_store, "pairs")
    change = {k: source if v == "SOURCE" else v for k, v in change.items()}
    before = len(seeded_store.job_rows())
    with pytest.raises(error, match=message):
        submit_pairs(seeded_store, {"prompts": "red-team:train", **change})
    assert len(seeded_store.job_rows()) == before
    assert not runs_dir(cai_home).exists() or not any(runs_dir(cai_home).iterdir())
    assert runner_pids(cai_home) == []


# -- a job holds one chunk at a time ---------------------------------------------------------


def finished_critique_job(store, rows: list[dict], job_id: str) -> str:
    """A finished critique job (no process behind it) whose one shard holds `rows`."""
    run = RunFolder(runs_dir(store.home) / job_id)
    run.create({})
    store.insert_job(job_id, "critique", {}, str(run.path), "made by hand")
    columns = {"job_id": job_id, "principle_id": "p1", "constitution": "harmless"}
    columns |= {"prompt_tokens": 9, "completion_tokens": 5, "latency_s": 0.1}
    columns |= {"finish_reason": "stop", "truncated_tokens": 0, "few_shots_dropped": 0}
    run.write_shard("traces", [{**columns, "flags": "", **r} for r in rows])
    run.write_status(state="succeeded", done=len(rows), total=len(rows), unit="steps")
    store.update_job(job_id, status="succeeded", finished_at=datetime.now())
    jobs.ingest(store, jobs.get_job(store, job_id))
    return job_id


def test_a_pairs_job_reads_a_critique_job_a_page_at_a_time_and_pairs_as_in_memory(seeded_store):
    # 5 prompts x 2 samples, 1 or 2 rounds; q2 has a third trace with no revision (no pair)
    rows = [
        r for n in range(5) for s in range(2) for r in trace(f"q{n}", s, rounds=1 + (n + s) % 2)
    ]
    rows += trace("q2", sample=2, rounds=0)
    source = finished_critique_job(seeded_store, rows, "critique-00000000-000000-many")
    # pages of 3 traces split a prompt's samples between pages; the first 3 prompts only
    config = {"from_critique": source, "limit": 3, "chunk_prompts": 3, "seed": 7}
    job = finish(seeded_store, submit_pairs(seeded_store, config).id)
    assert job.status == "succeeded", job.error

    first_three = [r for r in rows if r["prompt_id"] in ("q0", "q1", "q2")]
    expected = pairs_from_traces(first_three, job.id, source, seed=7)
    assert len(expected) == 3 * 2  # one per trace with a revision: q2's third has none
    columns = ("prompt_id", "pair", "a_ref", "b_ref", "response_a", "response_b", "flags")
    got = [tuple(p[c] for c in columns) for p in seeded_store.pairs(job.id)]
    assert got == [tuple(p[c] for c in columns) for p in expected]
    assert (job.done, job.total, job.unit) == (6, 6, "pairs")


@pytest.fixture
def reap_runners(cai_home):
    """No job process started by a test outlives it, whether the test passed or not."""
    yield
    kill_runners(cai_home)


def test_a_chunked_pairs_job_cancelled_and_resumed_gives_an_uninterrupted_runs_pairs(
    seeded_store, tiny_model_dir, reap_runners
):
    # One answer per forward pass and one row per shard: the cancel lands mid-chunk.
    config = {
        "prompts": "red-team:train",
        "model": f"hf:{tiny_model_dir}?dtype=float32&batch_size=1",
        "samples": 3,
        "limit": 5,
        "chunk_prompts": 2,
        "shard_rows": 1,
        "sampling": {"max_new_tokens": 16},
    }
    whole = finish(seeded_store, submit_pairs(seeded_store, config).id, timeout=120)
    assert whole.status == "succeeded", whole.error

    job = submit_pairs(seeded_store, config)
    wait_until(
        lambda: len(job.run.shards("generations")) >= 4, "4 answers of the pairs job", timeout=120
    )
    job = jobs.cancel(seeded_store, job.id)
    assert job.status == "cancelled"
    assert len(seeded_store.pairs(job.id)) < 5 * 3, "the cancel did not land mid-run"
    jobs.resume(seeded_store, job.id)
    job = finish(seeded_store, job.id, timeout=120)
    assert job.status == "succeeded", job.error

    def comparable(rows, key):
        drop = ("job_id", "latency_s")
        return {key(r): {k: v for k, v in r.items() if k not in drop} for r in rows}

    pair_key = lambda r: (r["prompt_id"], r["pair"])  # noqa: E731
    answer_key = lambda r: (r["prompt_id"], r["sample"])  # noqa: E731
    # 5 prompts x 3 answers = 15 answers; 3 answers make 3 pairs a prompt: 15 pairs
    assert len(seeded_store.pairs(job.id)) == 15
    assert comparable(seeded_store.pairs(job.id), pair_key) == comparable(
        seeded_store.pairs(whole.id), pair_key
    )
    assert comparable(seeded_store.generations(job.id), answer_key) == comparable(
        seeded_store.generations(whole.id), answer_key
    )
    # nothing was answered or paired twice
    for table, key in (("generations", answer_key), ("pairs", pair_key)):
        written = Counter(key(r) for r in job.run.read_shard_rows(table))
        assert len(written) == 15 and max(written.values()) == 1, table
    assert (job.done, job.total, job.unit) == (15, 15, "pairs")
