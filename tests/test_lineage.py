"""A model's lineage in words: the rows the Training and Eval pages show, followed back through
trained bases, with constitution hashes named as the versions they are."""

from __future__ import annotations

from cai_engine.bundled import install_bundled
from cai_engine.lineage import VersionNames, constitution_text, lineage_rows
from cai_engine.store import Store


def _register(store: Store, name: str, kind: str, base: str, manifest: dict) -> None:
    lineage = {
        "name": name,
        "kind": kind,
        "job": f"{kind}-job",
        "base_model": base,
        "data": manifest.get("job"),
        "data_manifest": manifest,
        "constitution_hash": manifest.get("constitution_hash"),
    }
    store.register_model(name, kind, f"{kind}-job", f"/models/{name}", lineage)


def test_a_dpo_model_reads_back_through_its_sft_base_to_the_embedded_model(tmp_path):
    store = Store(tmp_path / "home")
    install_bundled(store)
    v1 = store.get_version("harmless@1")
    v2, _ = store.save_constitution(
        v1.constitution.model_copy(update={"description": "v2"}), parent_hash=v1.hash, note="v2"
    )
    _register(
        store, "sft-1", "sft", "smollm2-135m-instruct",
        {"job": "critique-a", "kind": "sft", "counts": {"examples": 64},
         "constitution": "harmless", "constitution_hash": v1.hash},
    )  # fmt: skip
    _register(
        store, "dpo-1", "dpo", "model:sft-1",
        {"job": "label-b", "kind": "prefs", "counts": {"examples": 32},
         "constitution": "harmless", "constitution_hash": v2.hash, "feedback_model": "hf:/judge"},
    )  # fmt: skip

    rows = [(r.model, r.what, r.value) for r in lineage_rows(store, "model:dpo-1")]
    assert rows == [
        ("model:dpo-1", "trained by", "dpo job dpo-job"),
        ("model:dpo-1", "data", "label-b (32 preference pairs)"),
        ("model:dpo-1", "constitution", f"harmless@2 ({v2.short_hash})"),
        ("model:dpo-1", "feedback model", "hf:/judge"),
        ("model:dpo-1", "base model", "model:sft-1"),
        ("model:sft-1", "trained by", "sft job sft-job"),
        ("model:sft-1", "data", "critique-a (64 SFT examples)"),
        ("model:sft-1", "constitution", f"harmless@1 ({v1.short_hash})"),
        ("model:sft-1", "base model", "smollm2-135m-instruct"),
    ]
    # none of these jobs is in this store, so no row links to one
    assert all(r.job is None for r in lineage_rows(store, "model:dpo-1") if r.what == "data")


def test_models_not_trained_here_and_unknown_versions_say_so(tmp_path):
    store = Store(tmp_path / "home")
    install_bundled(store)
    assert [(r.what, r.value) for r in lineage_rows(store, "smollm2-135m-instruct")] == [
        ("model", "smollm2-135m-instruct")
    ]
    (row,) = lineage_rows(store, "model:ghost")
    assert row.value == "model:ghost (not registered in this store)"
    assert constitution_text(store, "harmless", "f" * 64) == (
        "harmless (ffffffffffff, not in this store)"
    )
    assert constitution_text(store, None, None) == "none recorded"


def test_version_names_read_pinned_and_numbered_references(tmp_path):
    store = Store(tmp_path / "home")
    install_bundled(store)
    v1 = store.get_version("harmless@1")
    names = VersionNames(store)
    assert names(v1.pinned) == names("harmless@1") == f"harmless@1 ({v1.short_hash})"
    assert names("harmless") == f"harmless@1 ({v1.short_hash})"  # the newest
    assert names("harmless@9") == "harmless@9"  # unknown: shown as written
    assert names(None) == "no constitution"
