"""The Constitutions page in a real Chromium: problems listed below the edits they are about,
the per-principle form saving a new version, and the version diff coloured and wrapped.

Set CAI_SHOTS to a folder to keep a screenshot of each step there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cai_engine.bundled import install_bundled
from cai_engine.constitution import Constitution
from cai_engine.store import Store
from tests.ui.studio import browser_page, require_chromium, running_studio, wait_for_app
from tests.ui.test_pages import PAYLOAD

pytestmark = pytest.mark.browser


@pytest.fixture
def studio(cai_home):
    require_chromium()
    install_bundled(Store(cai_home))
    with running_studio(cai_home) as url:
        yield url


def shot(page, name: str) -> None:
    """Keep a screenshot of the whole page when CAI_SHOTS names a folder."""
    folder = os.environ.get("CAI_SHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"))


def open_page(page, studio: str) -> None:
    # Tall enough that the table, the form and the problems fit in one screenshot.
    page.set_viewport_size({"width": 1400, "height": 1800})
    page.goto(f"{studio}/constitutions")
    page.locator("[data-testid=stDataFrame]").first.wait_for()
    wait_for_app(page)


def visible(locator):
    return locator.locator("visible=true").first


def id_cell(grid, row: int) -> tuple[float, float]:
    """The centre of the id cell of `row` (0-based): a ~33 px row-marker column comes first,
    then the 150 px id column; rows are 35 px below a 35 px header."""
    box = grid.bounding_box()
    return box["x"] + 33 + 75, box["y"] + 35 + 35 * row + 17


def type_in_cell(page, grid, row: int, text: str) -> None:
    """Open the id cell's editor, replace its text (empty clears it) and commit with Enter."""
    page.mouse.dblclick(*id_cell(grid, row))
    editor = page.locator("#portal textarea, .gdg-input textarea, textarea.gdg-input").first
    editor.wait_for()
    editor.press("ControlOrMeta+a")
    editor.press("Backspace")
    if text:
        editor.fill(text)
    editor.press("Enter")
    wait_for_app(page)


def test_every_problem_is_listed_below_the_table_and_the_edits_stay(studio, cai_home):
    with browser_page() as page:
        open_page(page, studio)
        grid = page.locator("[data-testid=stDataFrame]").first
        # Row 2 ("autonomy"): clear the id. Row 3 ("non-maleficence"): give it row 1's id.
        type_in_cell(page, grid, 1, "")
        type_in_cell(page, grid, 2, "beneficence")
        visible(page.get_by_role("button", name="Save as new version")).click()
        wait_for_app(page)
        alert = page.locator("[data-testid=stAlert]").filter(has_text="Not saved")
        alert.wait_for()
        shot(page, "problems")

        # Four problems: the cleared id, the duplicate, and the two few-shots (one critique, one
        # comparison; both #3) that named "autonomy". The renamed row 3 takes its own two
        # references along (the box is ticked by default), so they are no problem.
        assert "Not saved: 4 problem(s)" in alert.inner_text()
        items = page.locator("[data-testid=stMarkdownContainer] li")
        texts = [t.strip() for t in items.all_inner_texts()]
        assert texts[:2] == [
            "row 2, id: missing required key 'id'",
            "row 3, id: duplicate principle id 'beneficence' (also used by row 1); ids must be "
            "unique",
        ]
        assert [t.split(",")[0] for t in texts[2:4]] == [
            "critique few-shot #3 (Few-shots tab)",
            "comparison few-shot #3 (Few-shots tab)",
        ]
        assert all("the id cleared in row 2" in t for t in texts[2:4])
        # The message says the edits are above; they are.
        assert "edits are still in the table and the form above" in alert.inner_text()
        below = alert.bounding_box()["y"]
        assert grid.bounding_box()["y"] + grid.bounding_box()["height"] < below
        assert visible(page.get_by_label("Critique request")).bounding_box()["y"] < below
        # Nothing saved, nothing lost: the table still holds row 3's new id, whose references
        # the page still offers to rename.
        rename = page.get_by_text("Also rename the 2 few-shot reference(s)")
        assert rename.is_visible()
        assert rename.bounding_box()["y"] < below
    assert len(Store(cai_home).list_versions("default")) == 1


def test_the_form_edits_one_principle_and_saves_a_new_version(studio, cai_home):
    text = "Name every claim in the answer that overstates what is known.\n\nThen say why."
    with browser_page() as page:
        open_page(page, studio)
        page.get_by_label("Principle", exact=True).click()
        page.get_by_role("option", name="transparency", exact=True).click()
        wait_for_app(page)
        box = visible(page.get_by_label("Critique request"))
        box.fill(text)
        box.press("ControlOrMeta+Enter")  # commit the text area, as a user would by leaving it
        wait_for_app(page)
        note = visible(page.get_by_label("Note for the new version"))
        note.fill("sharper transparency critique")
        note.press("Enter")
        wait_for_app(page)
        # The pick stays on the edited principle, and the form shows the edit.
        assert page.get_by_label("Principle", exact=True).input_value() == "transparency"
        assert visible(page.get_by_label("Critique request")).input_value() == text
        shot(page, "form")
        visible(page.get_by_role("button", name="Save as new version")).click()
        page.get_by_text("Saved default@2").wait_for()
        wait_for_app(page)
        shot(page, "form-saved")
        # The new version opens on the same principle, showing the saved text.
        assert page.get_by_label("Principle", exact=True).input_value() == "transparency"
        assert visible(page.get_by_label("Critique request")).input_value() == text

    store = Store(cai_home)
    v1, v2 = store.list_versions("default")
    assert v2.constitution.principles[3].critique_request == text
    assert (v2.note, v2.parent_hash) == ("sharper transparency critique", v1.hash)
    assert v1.constitution.principles[3].critique_request != text  # v1 never changes
    unchanged = [p for i, p in enumerate(v2.constitution.principles) if i != 3]
    assert unchanged == [p for i, p in enumerate(v1.constitution.principles) if i != 3]


def _rgb(css: str) -> tuple[int, ...]:
    return tuple(int(x) for x in css[css.index("(") + 1 : css.index(")")].split(",")[:3])


def test_the_diff_is_coloured_wrapped_and_shows_user_text_as_text(cai_home):
    require_chromium()
    store = Store(cai_home)
    install_bundled(store)
    v1 = store.get_version("default")
    data = v1.constitution.model_dump()
    first = data["principles"][0]
    long_sentence = " ".join(["and then a very long sentence that goes on"] * 12)
    first["critique_request"] = (
        first["critique_request"].replace("genuinely useful", "truly useful")
        + f" {long_sentence} {PAYLOAD} {'x' * 300}"
    )
    store.save_constitution(Constitution.model_validate(data), note="longer", parent_hash=v1.hash)

    with running_studio(cai_home) as studio, browser_page() as page:
        open_page(page, studio)
        page.get_by_role("tab", name="History").click()
        wait_for_app(page)
        diff = page.locator("[data-testid=stMarkdownContainer]").filter(has_text="critique_request")
        diff.wait_for()
        shot(page, "diff")

        removed = diff.locator("del", has_text="genuinely")
        added = diff.locator("span.stMarkdownColoredBackground", has_text="truly")
        red = _rgb(removed.evaluate("e => getComputedStyle(e.closest('span')).color"))
        red_bg = _rgb(removed.evaluate("e => getComputedStyle(e.parentElement.parentElement)"
                                       ".backgroundColor"))  # fmt: skip
        green = _rgb(added.evaluate("e => getComputedStyle(e.firstElementChild).color"))
        green_bg = _rgb(added.evaluate("e => getComputedStyle(e).backgroundColor"))
        assert red[0] > red[1] and red_bg[0] > red_bg[1]  # more red than green
        assert green[1] > green[0] and green_bg[1] > green_bg[0]  # more green than red

        # The payload shows as text: nothing it names became an element.
        assert PAYLOAD in diff.inner_text()
        assert diff.locator("script, img, strong:has-text('bold')").count() == 0
        # Wrapped: neither the coloured diff nor the plain-text block scrolls sideways, even
        # with a 300-character word in it.
        for element in (diff, visible(page.locator("[data-testid=stCode] pre"))):
            width = element.evaluate("e => [e.scrollWidth, e.clientWidth]")
            assert width[0] <= width[1], width
