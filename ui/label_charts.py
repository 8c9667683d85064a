"""The Labels page's charts, built apart from the page so tests can read their specs."""

from __future__ import annotations

import altair as alt
import pandas as pd


def calibration_frame(calibration: list[dict]) -> pd.DataFrame:
    """The calibration bins with what a perfectly calibrated judge would score in each (the
    bin's mid confidence as a win probability) and the agreement as text, `–` for no reviews."""
    calib = pd.DataFrame(calibration)
    calib["expected"] = (1 + (calib["low"] + calib["high"]) / 2) / 2
    calib["agreement"] = pd.to_numeric(calib["agreement"], errors="coerce")
    calib["agreement shown"] = [
        "– (no decisive verdicts)" if n == 0 else f"{a:.0%} of {n}"
        for a, n in zip(calib["agreement"], calib["reviewed"], strict=True)
    ]
    return calib


def soft_label_frame(bins: list[dict]) -> pd.DataFrame:
    """The soft-label histogram (`Agreement.soft_label_bins`) as a bar chart's frame: labels
    per bin, indexed by the bin's range."""
    return pd.DataFrame({"labels": [b["labels"] for b in bins]}, index=[b["bin"] for b in bins])


def calibration_chart(calib: pd.DataFrame) -> alt.LayerChart:
    """Observed agreement per confidence bin as points joined by a line (a bin alone still
    shows), against the dashed line of a perfectly calibrated judge."""
    base = alt.Chart(calib).encode(
        x=alt.X("confidence:N", title="AI confidence", sort=None, axis=alt.Axis(labelAngle=0))
    )
    expected = base.mark_line(strokeDash=[4, 4], color="gray").encode(
        y=alt.Y("expected:Q", title="human agreement", scale=alt.Scale(domain=[0, 1]),
                axis=alt.Axis(format="%")),
        tooltip=[alt.Tooltip("expected:Q", title="calibrated", format=".0%")],
    )  # fmt: skip
    observed = (
        base.transform_filter("datum.reviewed > 0")
        .mark_line(point=alt.OverlayMarkDef(size=80))
        .encode(
            y=alt.Y("agreement:Q"),
            tooltip=[
                "confidence:N",
                alt.Tooltip("agreement:Q", format=".0%"),
                alt.Tooltip("reviewed:Q", title="n"),
            ],
        )
    )
    return alt.layer(expected, observed).properties(height=260)
