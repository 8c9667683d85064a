"""The Eval page's charts, built from eval result rows as Altair specs (tested by their spec).

Every chart names its metrics in words (the store's key is in the tooltip), labels every model
in full, marks a value of 0 so it cannot vanish, and shows each rate with its interval and n.
When the judge did not qualify (`distrust`), what it measured is drawn in grey, after what the
rules counted, and each such panel's title says so.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from cai_engine import eval as evaluation
from cai_engine.judge_verdict import is_judge_metric

WIDTH = 420  # px per facet; the value labels go to the right of it
GREY = "#b8b8b8"  # an unqualified judge's numbers
UNQUALIFIED = " · judge NOT qualified"


def rate_rows(results: list[dict], labels: dict[str, str], distrust: bool = False) -> list[dict]:
    """One row per (model, rate metric) with a value, in `METRICS` order then the models'
    order: what `rates_chart` draws. With `distrust`, the judge's metrics come after the rest,
    marked `untrusted`, their names saying the judge did not qualify."""
    order = {m: i for i, m in enumerate(evaluation.METRICS)}
    models = list(labels)

    def untrusted(key: str) -> bool:
        return distrust and is_judge_metric(key)

    rows = [
        {
            "model": labels[r["model"]],
            "spec": r["model"],
            "metric": evaluation.metric_name(r["metric"])
            + (UNQUALIFIED if untrusted(r["metric"]) else ""),
            "untrusted": untrusted(r["metric"]),
            "key": r["metric"],
            "value": r["value"],
            "low": r["low"],
            "high": r["high"],
            "n": r["n"],
            "shown": evaluation.format_result(r),
            "edge": 1.0,  # where the value labels start: the right end of the 0-100% axis
        }
        for r in results
        if r["model"] in labels
        and r["metric"] in evaluation.RATE_METRICS
        and r["value"] is not None
    ]
    return sorted(rows, key=lambda r: (r["untrusted"], order[r["key"]], models.index(r["spec"])))


def _tooltip(*first) -> list:
    return [*first, alt.Tooltip("shown:N", title="value [95% interval] (n)"), "n:Q"]


def rates_chart(rows: list[dict]) -> alt.FacetChart:
    """Per rate metric, one bar per model with its 95% interval, a dot at the value (visible at
    0%) and the value, interval and n written beside it."""
    data = pd.DataFrame(rows)
    tooltip = _tooltip(
        alt.Tooltip("model:N", title="model"),
        alt.Tooltip("spec:N", title="spec"),
        alt.Tooltip("metric:N", title="metric"),
        alt.Tooltip("key:N", title="key"),
    )
    model = alt.Y("model:N", title=None, axis=alt.Axis(labelLimit=0))  # never cut a name short
    x = alt.X(
        "value:Q", title=None, axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1], clamp=True)
    )
    colour = alt.condition("datum.untrusted", alt.value(GREY), alt.Color("model:N", legend=None))
    base = alt.Chart().encode(y=model, tooltip=tooltip)
    bars = base.mark_bar(opacity=0.75).encode(x=x, color=colour)
    whiskers = base.mark_rule(color="#333").encode(x="low:Q", x2="high:Q")
    dots = base.mark_point(filled=True, size=60, opacity=1).encode(
        x="value:Q", color=colour, stroke=alt.value("#333"), strokeWidth=alt.value(1)
    )
    values = base.mark_text(align="left", dx=8).encode(
        x="edge:Q",
        text="shown:N",
        color=alt.condition("datum.untrusted", alt.value("#888"), alt.value("#222")),
    )
    return (
        alt.layer(bars, whiskers, dots, values, data=data)
        .properties(width=WIDTH)
        .facet(
            row=alt.Row(
                "metric:N",
                title=None,
                sort=list(dict.fromkeys(r["metric"] for r in rows)),
                header=alt.Header(labelAngle=0, labelAlign="left", labelLimit=0, labelFontSize=13),
            )
        )
        .resolve_scale(y="independent")
    )


def revision_rows(results: list[dict]) -> list[dict]:
    """The revision-progress rows (one per critique round), in round order."""
    rows = [
        {
            "round": int(r["metric"].rsplit("_", 1)[1]),
            "metric": evaluation.metric_name(r["metric"]),
            "key": r["metric"],
            "preferred": r["value"],
            "low": r["low"],
            "high": r["high"],
            "n": r["n"],
            "shown": evaluation.format_result(r),
        }
        for r in results
        if r["metric"].startswith("revision_round_") and r["value"] is not None
    ]
    return sorted(rows, key=lambda r: r["round"])


def revision_chart(rows: list[dict], distrust: bool = False) -> alt.LayerChart:
    """Per critique round, the share of revisions the judge preferred to the answer before it,
    with its interval band, a 50% line (no change), and the value and n at each point; all in
    grey, under a title that says so, when the judge did not qualify (`distrust`)."""
    data = pd.DataFrame(rows)
    tooltip = _tooltip(
        alt.Tooltip("round:O", title="round"),
        alt.Tooltip("metric:N", title="metric"),
        alt.Tooltip("key:N", title="key"),
    )
    # every layer names the y axis the same: Vega-Lite joins differing titles with commas
    title = "Preferred share"
    ink = {"color": GREY} if distrust else {}
    share = {"title": title, "axis": alt.Axis(format="%"), "scale": alt.Scale(domain=[0, 1])}
    x = alt.X(
        "round:O",
        title="Critique round k (its revision against round k-1's answer)",
        axis=alt.Axis(labelAngle=0),
    )
    base = alt.Chart(data).encode(x=x, tooltip=tooltip)
    band = base.mark_area(opacity=0.2, **ink).encode(y=alt.Y("low:Q", **share), y2="high:Q")
    line = base.mark_line(point=alt.OverlayMarkDef(size=60, **ink), **ink).encode(
        y=alt.Y("preferred:Q", **share)
    )
    values = base.mark_text(dy=-12, **ink).encode(y=alt.Y("preferred:Q", **share), text="shown:N")
    even = (
        alt.Chart(pd.DataFrame({"even": [0.5]}))
        .mark_rule(strokeDash=[4, 4], color="#888")
        .encode(y=alt.Y("even:Q", **share))
    )
    chart = alt.layer(band, even, line, values).properties(width=WIDTH + 160, height=260)
    if distrust:
        chart = chart.properties(
            title=alt.TitleParams("Judge NOT qualified: these shares are noise", color="#888")
        )
    return chart
