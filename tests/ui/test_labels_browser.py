"""The Labels page in a real Chromium against a real `streamlit run`: a reviewer types a name,
then reviews three pairs with the keyboard alone (A, B, T), and the agreement numbers on the
page follow the verdicts; the "All labels" table then keeps the pairs that reviewer judged.
AppTest cannot press keys, so only a browser can check shortcuts."""

from __future__ import annotations

import re

import pytest

from cai_engine import review
from cai_engine.bundled import install_bundled
from cai_engine.judge_verdict import badge
from cai_engine.labels import submit_labels
from cai_engine.pairs import submit_pairs
from cai_engine.store import Store
from tests.runners import finish
from tests.test_jobs import kill_runners
from tests.ui.studio import browser_page, require_chromium, running_studio, wait_for_app

pytestmark = pytest.mark.browser


@pytest.fixture
def labelled(cai_home, tiny_spec):
    """A finished tiny pairs job (4 pairs) and a finished label job on it."""
    require_chromium()
    store = Store(cai_home)
    install_bundled(store)
    pairs = submit_pairs(
        store,
        {
            "prompts": "red-team:train",
            "model": tiny_spec,
            "limit": 4,
            "sampling": {"max_new_tokens": 8},
        },
    )
    assert finish(store, pairs.id).status == "succeeded"
    label = submit_labels(
        store, {"pairs": pairs.id, "constitution": "harmless", "model": tiny_spec}
    )
    assert finish(store, label.id).status == "succeeded"
    try:
        with running_studio(cai_home) as url:
            yield url, store, label.id
    finally:
        kill_runners(cai_home)


def metric(page, label: str) -> str:
    box = page.locator("[data-testid=stMetric]").filter(has_text=label).first
    return box.locator("[data-testid=stMetricValue]").inner_text().strip()


def test_three_pairs_reviewed_with_the_keyboard_update_the_agreement(labelled):
    url, store, label_id = labelled
    with browser_page() as page:
        page.goto(f"{url}/labels")
        wait_for_app(page)
        page.get_by_text("Type your name above").wait_for()
        # the feedback model and its verdict on the gold set, above every number it produced
        verdict = badge(store.judge_check_for_job(label_id))
        alert = page.get_by_role("alert").filter(has_text="NOT qualified")
        assert verdict.split(": ", 1)[1] in alert.inner_text()
        name = page.get_by_role("textbox", name="Reviewer")
        name.fill("kim")
        name.press("Enter")
        wait_for_app(page)
        page.get_by_role("button", name=re.compile("A is better")).wait_for()
        assert metric(page, "Reviewed") == "0 of 4"
        assert page.get_by_text("The AI gave").count() == 0  # hidden before the verdict

        page.locator("h1").click()  # focus out of the text field, so keys reach the page
        for n, key in enumerate(["a", "b", "t"], start=1):
            page.keyboard.press(key)
            page.get_by_text(f"{n} of 4").wait_for()
            wait_for_app(page)
            # the AI's label is revealed after each verdict
            page.get_by_text("The AI gave").wait_for()

        reviews = [r for r in store.reviews(label_id) if r["reviewer"] == "kim"]
        assert [r["verdict"] for r in reviews] == [
            review.to_stored(v, r["display_order"]) for v, r in zip("AB", reviews, strict=False)
        ] + ["tie"]
        expected = review.agreement(store.labels(label_id), store.reviews(label_id))
        assert expected.decisive == 2
        assert metric(page, "Decisive verdicts") == "2"
        assert metric(page, "Agreement with AI") == f"{expected.rate:.0%}"
        kappa = "–" if expected.kappa is None else f"{expected.kappa:.2f}"
        assert metric(page, "Cohen's κ") == kappa

        # the paged table of every label, narrowed to the pairs kim gave a verdict
        page.get_by_role("tab", name="All labels").click()
        page.get_by_text("Labels 1–4 of 4", exact=True).wait_for()
        page.get_by_role("combobox", name="Reviewed").click()
        page.get_by_role("option", name="reviewed by me", exact=True).click()
        wait_for_app(page)
        page.get_by_text("Labels 1–3 of 3 (filtered from 4)", exact=True).wait_for()
