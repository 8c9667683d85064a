"""The `generate` job: sampled answers to a prompt set, one row per prompt and sample."""

from __future__ import annotations

from cai_engine import jobs
from cai_engine.models import parse_spec
from tests.runners import finish


def test_a_generate_job_writes_one_row_per_prompt_and_sample(seeded_store, tiny_spec):
    config = {
        "prompts": "red-team:test",
        "model": tiny_spec,
        "limit": 4,
        "samples": 2,
        "sampling": {"max_new_tokens": 4, "temperature": 0.7},
    }
    job = finish(seeded_store, jobs.submit(seeded_store, "generate", config).id, timeout=60)
    assert job.status == "succeeded", job.error

    rows = seeded_store.generations(job.id)
    assert len(rows) == 8  # 4 prompts x 2 samples
    prompt_ids = [p.prompt_id for p in seeded_store.get_prompts("red-team", split="test", limit=4)]
    assert {(r["prompt_id"], r["sample"]) for r in rows} == {
        (p, k) for p in prompt_ids for k in (0, 1)
    }
    spec = str(parse_spec(tiny_spec))
    assert {r["model"] for r in rows} == {spec}
    assert job.config["model"] == spec
    assert {(r["sample"], r["seed"]) for r in rows} == {(0, 0), (1, 1)}  # seed + k
    assert {r["prompt_set"] for r in rows} == {"red-team"}
    assert all(1 <= r["completion_tokens"] <= 4 for r in rows)
    assert (job.live["done"], job.live["total"]) == (8, 8)
    assert job.live["tokens"] == sum(r["completion_tokens"] for r in rows)
    assert "model_loaded" in [e["event"] for e in job.run.events()]
