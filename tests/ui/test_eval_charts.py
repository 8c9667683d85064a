"""The Eval page's charts, read from the Vega-Lite spec that `ui.eval_charts` builds: metrics
named in words with the key in the tooltip, model labels never cut short, a 0% value drawn as
a dot and written out with its interval and n, and a revision chart whose y axis has a title."""

from __future__ import annotations

import pytest

from cai_engine import eval as evaluation
from ui.eval_charts import rate_rows, rates_chart, revision_chart, revision_rows

A = "hf:/runs/checkpoint-constitutional-run-2024-a?dtype=float32"
B = "hf:/runs/checkpoint-constitutional-run-2024-b?dtype=float32"


def result(model, metric, value, low, high, n):
    return {
        "model": model,
        "metric": metric,
        "value": value,
        "low": low,
        "high": high,
        "n": n,
        "eval_set": "red-team:test",
    }


RESULTS = [
    # as the store returns them: by model, then metric alphabetically
    result(A, "refusal_rate_rule", 0.0, 0.0, 0.561, 3),  # wilson(0, 3)
    result(B, "harmlessness_win_rate", 0.49, 0.47, 0.51, 80),
    result(B, "refusal_rate_rule", 0.25, 0.1, 0.5, 8),
    result(B, "tokens_per_answer", 6.0, 6.0, 6.0, 6),  # not a rate: not charted
    result("critique-x", "revision_round_2", 0.4, 0.2, 0.6, 10),
    result("critique-x", "revision_round_1", 0.7, 0.5, 0.8, 10),
]


def layers(spec: dict) -> list[dict]:
    return spec["spec"]["layer"] if "spec" in spec else spec["layer"]


def mark(layer: dict) -> str:
    return layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"]


def test_rate_rows_name_metrics_in_words_keep_the_key_and_come_in_metrics_order():
    labels = evaluation.model_labels([A, B])
    rows = rate_rows(RESULTS, labels)
    assert [(r["metric"], r["key"], r["model"]) for r in rows] == [
        ("Harmlessness win rate", "harmlessness_win_rate", "checkpoint-constitutional-run-2024-b"),
        ("Refusal rate (rules)", "refusal_rate_rule", "checkpoint-constitutional-run-2024-a"),
        ("Refusal rate (rules)", "refusal_rate_rule", "checkpoint-constitutional-run-2024-b"),
    ]
    assert [r["shown"] for r in rows] == [
        "49.0% [47.0%, 51.0%] (n = 80)",
        "0.0% [0.0%, 56.1%] (n = 3)",
        "25.0% [10.0%, 50.0%] (n = 8)",
    ]


def test_the_rates_chart_facets_by_name_shows_key_and_n_on_hover_and_never_truncates_labels():
    rows = rate_rows(RESULTS, evaluation.model_labels([A, B]))
    spec = rates_chart(rows).to_dict()

    row = spec["facet"]["row"]
    assert row["field"] == "metric"  # the readable name, not the key
    assert row["sort"] == ["Harmlessness win rate", "Refusal rate (rules)"]
    assert row["header"]["labelLimit"] == 0  # 0 = no limit: a long name is never cut
    for layer in layers(spec):
        y = layer["encoding"]["y"]
        assert (y["field"], y["axis"]["labelLimit"]) == ("model", 0), mark(layer)
        tips = {t["field"]: t.get("title") for t in layer["encoding"]["tooltip"]}
        assert {"model", "spec", "metric", "key", "shown", "n"} <= set(tips), mark(layer)
        assert tips["shown"] == "value [95% interval] (n)"
        assert layer["encoding"].get("color", {}).get("legend", None) is None


def test_a_zero_rate_gets_a_dot_and_its_value_written_beside_the_bar():
    spec = rates_chart(rate_rows(RESULTS, evaluation.model_labels([A, B]))).to_dict()
    by_mark = {mark(layer): layer for layer in layers(spec)}
    # a bar of value 0 has no width; the dot at x = value has a size whatever the value
    assert by_mark["point"]["encoding"]["x"]["field"] == "value"
    assert by_mark["point"]["mark"]["size"] == 60
    text = by_mark["text"]["encoding"]
    # the value, interval and n as text, at the right end of the axis for every row
    assert (text["text"]["field"], text["x"]["field"]) == ("shown", "edge")
    data = next(iter(spec["datasets"].values()))
    zero = next(d for d in data if d["value"] == 0.0)
    assert (zero["shown"], zero["edge"]) == ("0.0% [0.0%, 56.1%] (n = 3)", 1.0)


def test_the_revision_chart_titles_its_y_axis_preferred_share_in_every_layer():
    rows = revision_rows(RESULTS)
    assert [(r["round"], r["metric"], r["shown"]) for r in rows] == [
        (1, "Revision round 1 over round 0", "70.0% [50.0%, 80.0%] (n = 10)"),
        (2, "Revision round 2 over round 1", "40.0% [20.0%, 60.0%] (n = 10)"),
    ]
    spec = revision_chart(rows).to_dict()
    # Vega-Lite joins the layers' differing y titles with commas ("low, high, preferred"):
    # every layer must carry the same explicit one
    titles = {layer["encoding"]["y"].get("title") for layer in spec["layer"]}
    assert titles == {"Preferred share"}
    tips = [
        {t["field"] for t in layer["encoding"]["tooltip"]}
        for layer in spec["layer"]
        if "tooltip" in layer["encoding"]
    ]
    assert tips and all({"shown", "n", "key"} <= t for t in tips)


@pytest.mark.parametrize(
    ("specs", "want"),
    [
        # look-alike long names stay whole: the chart, not the label, must not cut them
        (
            [A, B],
            ["checkpoint-constitutional-run-2024-a", "checkpoint-constitutional-run-2024-b"],
        ),
        # the same last folder: as many folders as it takes to tell them apart
        (
            ["hf:/x/run-a/checkpoint-500", "hf:/x/run-b/checkpoint-500", "model:sft-1"],
            ["run-a/checkpoint-500", "run-b/checkpoint-500", "model:sft-1"],
        ),
        # the same path with other options: only the whole spec tells them apart
        (
            ["hf:/m/tiny?dtype=float32", "hf:/m/tiny?dtype=bfloat16", "smollm2-135m-instruct"],
            ["hf:/m/tiny?dtype=float32", "hf:/m/tiny?dtype=bfloat16", "smollm2-135m-instruct"],
        ),
        # a folder named like another model's spec does not take its label
        (
            ["hf:/models/smollm2-135m-instruct", "smollm2-135m-instruct"],
            ["models/smollm2-135m-instruct", "smollm2-135m-instruct"],
        ),
    ],
)
def test_model_labels_tell_every_model_apart(specs, want):
    labels = evaluation.model_labels(specs)
    assert [labels[s] for s in specs] == want
    assert len(set(labels.values())) == len(specs)


def test_metric_names_are_words_for_every_metric_and_revision_round():
    assert set(evaluation.METRIC_NAMES) == set(evaluation.METRICS)
    assert evaluation.metric_name("over_refusal_rate_judge") == "Over-refusal rate (judge)"
    assert evaluation.metric_name("revision_round_3") == "Revision round 3 over round 2"
    assert evaluation.metric_name("something_new") == "something_new"  # unknown: as it is


def test_an_unqualified_judges_rates_come_after_the_rules_greyed_and_named_so():
    labels = evaluation.model_labels([A, B])
    trusted = rate_rows(RESULTS, labels)
    assert not any(r["untrusted"] for r in trusted)  # a qualified (or unchecked) judge: as is
    rows = rate_rows(RESULTS, labels, distrust=True)
    assert [(r["metric"], r["untrusted"]) for r in rows] == [
        ("Refusal rate (rules)", False),
        ("Refusal rate (rules)", False),
        ("Harmlessness win rate · judge NOT qualified", True),
    ]
    spec = rates_chart(rows).to_dict()
    assert spec["facet"]["row"]["sort"] == [
        "Refusal rate (rules)",
        "Harmlessness win rate · judge NOT qualified",
    ]
    by_mark = {mark(layer): layer for layer in layers(spec)}
    for name in ("bar", "point"):  # the bar and the dot: grey where untrusted, else by model
        colour = by_mark[name]["encoding"]["color"]
        assert colour["condition"] == {"test": "datum.untrusted", "value": "#b8b8b8"}, name
        assert colour["field"] == "model", name
    assert by_mark["text"]["encoding"]["color"]["condition"]["test"] == "datum.untrusted"


def test_an_unqualified_judges_revision_progress_is_grey_and_titled_so():
    spec = revision_chart(revision_rows(RESULTS), distrust=True).to_dict()
    assert spec["title"]["text"] == "Judge NOT qualified: these shares are noise"
    drawn = [layer for layer in spec["layer"] if "tooltip" in layer["encoding"]]
    assert drawn and all(layer["mark"]["color"] == "#b8b8b8" for layer in drawn)
    plain = revision_chart(revision_rows(RESULTS)).to_dict()
    assert "title" not in plain
    assert not any(
        isinstance(layer["mark"], dict) and "color" in layer["mark"] for layer in plain["layer"][2:]
    )
