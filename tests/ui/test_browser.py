"""Browser tests: real Chromium against a real `streamlit run`, for what AppTest cannot do."""

from __future__ import annotations

import pytest
import yaml

from cai_engine.bundled import install_bundled
from cai_engine.store import Store
from tests.conftest import ROOT
from tests.ui.studio import browser_page, require_chromium, running_studio, wait_for_app

pytestmark = pytest.mark.browser


@pytest.fixture
def studio(cai_home):
    require_chromium()
    install_bundled(Store(cai_home))
    with running_studio(cai_home) as url:
        yield url


def visible(locator):
    return locator.locator("visible=true").first


def test_editing_a_principle_in_the_table_saves_a_new_version_shown_in_history(studio, cai_home):
    with browser_page() as page:
        page.goto(f"{studio}/constitutions")
        grid = page.locator("[data-testid=stDataFrame]").first
        grid.wait_for()
        wait_for_app(page)
        box = grid.bounding_box()
        # Row-marker column (~33 px), then the id column (150 px); the title column is 180 px.
        # Rows are 35 px below a 35 px header. Row 0 is "beneficence".
        x = box["x"] + 33 + 150 + 90
        y = box["y"] + 35 + 17
        page.mouse.dblclick(x, y)
        editor = page.locator("#portal textarea, .gdg-input textarea, textarea.gdg-input").first
        editor.wait_for()
        editor.press("ControlOrMeta+a")
        editor.fill("Do good, carefully")
        editor.press("Enter")
        wait_for_app(page)
        note = visible(page.get_by_label("Note for the new version"))
        note.fill("retitled in the browser")
        note.press("Enter")
        wait_for_app(page)
        visible(page.get_by_role("button", name="Save as new version")).click()
        page.get_by_text("Saved default@2").wait_for()

        page.get_by_role("tab", name="History").click()
        history = visible(page.locator("[data-testid=stDataFrame]"))
        history.wait_for()
        diff = visible(page.locator("[data-testid=stCode]"))
        assert "Do good, carefully" in diff.inner_text()
        assert "~ principle 'beneficence'" in diff.inner_text()

    store = Store(cai_home)
    v2 = store.get_version("default@2")
    assert v2.note == "retitled in the browser"
    assert v2.parent_hash == store.get_version("default@1").hash
    assert v2.constitution.principles[0].title == "Do good, carefully"
    assert store.get_version("default@1").constitution.principles[0].title != "Do good, carefully"


def test_uploading_a_constitution_file_imports_it(studio, cai_home, tmp_path):
    data = yaml.safe_load((ROOT / "constitutions" / "default.yaml").read_text())
    data["name"] = "uploaded"
    data["description"] = "Came in through the browser."
    path = tmp_path / "uploaded.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))

    with browser_page() as page:
        page.goto(f"{studio}/constitutions")
        wait_for_app(page)
        page.locator("[data-testid=stFileUploader] input[type=file]").set_input_files(str(path))
        wait_for_app(page)
        page.get_by_role("button", name="Import", exact=True).click()
        page.get_by_text("Saved uploaded@1").wait_for()

    version = Store(cai_home).get_version("uploaded")
    assert version.source == "import:yaml"
    assert version.constitution.description == "Came in through the browser."
    assert len(version.constitution.principles) == 5
