"""Text a user types or pastes into the studio: kept byte for byte, and shown as text.

Markup (HTML, markdown links), emoji, right-to-left text with a U+202E override, invisible
characters and a huge paste go through the store and come back identical; the Constitutions
and Prompts pages show them through text elements (or escaped markdown), never as markup.
A static check makes sure nothing under ui/ opts into raw HTML.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import AlertBase, HeadingBase, Markdown, Widget

from cai_engine.constitution import MAX_TEXT, constitution_from_data, parse_constitution, to_yaml
from cai_engine.prompts import import_prompt_set
from tests.reliability.bad_inputs.support import good_constitution

UI = Path(__file__).resolve().parents[3] / "ui"

PAYLOADS = {
    "script-tag": "<script>alert(1)</script>",
    "img-onerror": '<img src=x onerror="alert(1)">',
    "markdown-javascript-link": "[click](javascript:alert(1))",
    "markdown-image-beacon": "![x](http://127.0.0.1:9/beacon.png) **bold** _it_",
    "html-entities": "&lt;b&gt; &amp; &#60;script&#62; &nbsp;",
    "emoji": "Be kind 🙂 👩🏽‍💻 🏳️‍🌈 🇯🇵 ❤️‍🔥",
    "arabic-hebrew-rtl-override": "مرحبا بالعالم \u202egnp.exe\u202c שלום עולם",
    "invisible-characters": "zero\u200bwidth\u200djoiner\ufeffbom\u00a0nbsp\u2060",
    "crlf-tabs-and-edges": "  a\r\nb\tc\rd  ",
    "control-and-ansi-escapes": "ding\x07 \x1b[31mred\x1b[0m nul\x00 del\x7f",
}
# Any of these in a string handed to the markdown renderer means user markup was not escaped.
UNSAFE_MARKDOWN = re.compile(
    r"(?<!\\)<\s*(?:script|img)|(?<!\\)\]\((?:javascript|http)|(?<!\\)\*\*bold", re.IGNORECASE
)
HUGE_PASTE = ("A pasted wall of text, line after line.\n" * 600)[:MAX_TEXT]
# Everything at once, for the pages. st.text strips a text's outer whitespace (Streamlit's
# clean_text), so this one starts and ends with a visible character.
PAGE_PAYLOAD = " | ".join(PAYLOADS.values()) + " | end"


def revised(payload: str) -> str:
    return "revised: " + payload[: MAX_TEXT - len("revised: ")]


def constitution_with(payload: str, name: str = "markup"):
    """The test constitution with `payload` in every kind of text field a user can edit."""
    data = good_constitution().model_dump(mode="json", exclude_defaults=True)
    data["name"] = name
    data["description"] = payload
    first = data["principles"][0]
    first["title"] = payload[:200]
    first["critique_request"] = first["revision_request"] = payload
    first["preference_question"] = payload
    data["few_shots"] = [
        {
            "principle": first["id"],
            "conversation": [
                {"role": "user", "content": payload},
                {"role": "assistant", "content": payload},
            ],
            "critique": payload,
            "revision": revised(payload),
        }
    ]
    return constitution_from_data(data, "studio")


def text_fields(c) -> list[str]:
    p, shot = c.principles[0], c.few_shots[0]
    return [
        c.description,
        p.title,
        p.critique_request,
        p.revision_request,
        p.preference_question,
        *(m.content for m in shot.conversation),
        shot.critique,
        shot.revision,
    ]


# -- the store keeps it byte for byte ----------------------------------------------------


@pytest.mark.parametrize(
    "payload", [*PAYLOADS.values(), HUGE_PASTE], ids=[*PAYLOADS, "huge-paste-20000-chars"]
)
def test_text_round_trips_through_the_store_byte_for_byte(user_store, payload):
    c = constitution_with(payload)
    version, created = user_store.save_constitution(c, note=payload, source="studio")
    assert created

    stored = user_store.get_version(version.ref)
    assert stored.note.encode("utf-8") == payload.encode("utf-8")
    assert [t.encode("utf-8") for t in text_fields(stored.constitution)] == [
        t.encode("utf-8") for t in text_fields(c)
    ]
    assert stored.hash == c.hash
    # Saving what was read back is "no change", not a new version with altered text.
    again, created = user_store.save_constitution(stored.constitution, note="again")
    assert (created, again.ref) == (False, version.ref)


@pytest.mark.parametrize(
    "payload", [*PAYLOADS.values(), HUGE_PASTE], ids=[*PAYLOADS, "huge-paste-20000-chars"]
)
def test_the_yaml_the_studio_shows_saves_back_unchanged(payload):
    # The YAML tab shows to_yaml(version); saving it untouched must give the same text.
    c = constitution_with(payload)
    assert parse_constitution(to_yaml(c), "YAML").hash == c.hash


def test_a_next_line_character_survives_the_yaml_round_trip():
    c = constitution_with("first\x85second")
    assert parse_constitution(to_yaml(c), "YAML").description == "first\x85second"


def test_prompt_text_round_trips_through_an_import_byte_for_byte(user_store):
    texts = [*PAYLOADS.values(), HUGE_PASTE]
    body = "".join(json.dumps({"prompt": t}, ensure_ascii=False) + "\n" for t in texts)
    import_prompt_set(user_store, ("pasted.jsonl", body.encode("utf-8")), "pasted")
    stored = sorted(p.text.encode("utf-8") for p in user_store.get_prompts("pasted"))
    assert stored == sorted(t.encode("utf-8") for t in texts)


# -- the studio shows it as text ---------------------------------------------------------


@pytest.fixture
def fresh_studio_cache():
    """The studio caches its store per process; each test has its own data home."""
    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


def rendered_as_markdown(at: AppTest) -> list[str]:
    """Every string the page hands to the markdown renderer: bodies, alerts, labels."""
    found: list[str] = []

    def walk(node) -> None:
        label = getattr(getattr(node, "proto", None), "label", None)
        if isinstance(label, str):
            found.append(label)
        if hasattr(node, "children"):
            for child in node.children.values():
                walk(child)
        elif isinstance(node, Markdown | AlertBase | HeadingBase):
            found.append(node.proto.body)
        elif isinstance(node, Widget):
            found.append(node.proto.label)

    walk(at.main)
    walk(at.sidebar)
    return found


def assert_no_markup_rendered(at: AppTest) -> None:
    markdown = rendered_as_markdown(at)
    assert markdown, "expected some markdown on the page"
    assert [s for s in markdown if UNSAFE_MARKDOWN.search(s)] == []
    assert all(not m.proto.allow_html for m in [*at.markdown, *at.caption])
    assert len(at.get("html")) == 0


def test_the_constitutions_page_shows_markup_as_text(user_store, fresh_studio_cache):
    payload = PAGE_PAYLOAD
    version, _ = user_store.save_constitution(constitution_with(payload), note=payload)

    at = AppTest.from_file(str(UI / "app_pages" / "constitutions.py"), default_timeout=30)
    at.run()
    at.selectbox(key="con_name").select("markup").run()
    assert not at.exception, at.exception

    tag = version.short_hash
    assert at.text_area(key=f"desc_{tag}").value == payload
    assert parse_constitution(at.text_area(key=f"yaml_{tag}").value, "YAML").hash == version.hash
    shown_as_text = [t.value for t in at.text]
    assert payload in shown_as_text  # the few-shot conversation and critique
    assert revised(payload) in shown_as_text
    assert_no_markup_rendered(at)


def test_the_prompts_page_shows_a_pasted_prompt_as_text(user_store, fresh_studio_cache):
    payload = PAGE_PAYLOAD
    body = json.dumps({"prompt": payload, "category": PAYLOADS["script-tag"]}) + "\n"
    import_prompt_set(user_store, ("x.jsonl", body.encode()), "markup", description=payload)

    at = AppTest.from_file(str(UI / "app_pages" / "prompts.py"), default_timeout=30)
    at.run()
    at.selectbox(key="prompt_set").select("markup").run()
    at.session_state["prompt_table"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    assert not at.exception, at.exception

    assert payload in [t.value for t in at.text]
    assert_no_markup_rendered(at)


# -- nothing under ui/ opts into raw HTML --------------------------------------------------

RAW_HTML_CALLS = {"html", "iframe"}  # st.html, st.components.v1.html / iframe


def raw_html_uses(source: str, filename: str = "<source>") -> list[str]:
    """Places in `source` that could render raw HTML: unsafe_allow_html set to anything but a
    literal False, or a call to an html/iframe component."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        for kw in node.keywords:
            if kw.arg == "unsafe_allow_html" and not (
                isinstance(kw.value, ast.Constant) and kw.value.value is False
            ):
                found.append(f"{filename}:{node.lineno}: unsafe_allow_html={ast.unparse(kw.value)}")
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in RAW_HTML_CALLS:
            found.append(f"{filename}:{node.lineno}: {ast.unparse(func)}()")
    return found


def test_the_raw_html_check_catches_what_it_looks_for():
    sample = (
        "import streamlit as st\n"
        "st.markdown(x, unsafe_allow_html=True)\n"
        "st.caption(y, unsafe_allow_html=flag)\n"
        "st.html('<b>')\n"
        "components.html(page)\n"
        "st.markdown(z, unsafe_allow_html=False)\n"
    )
    assert raw_html_uses(sample) == [
        "<source>:2: unsafe_allow_html=True",
        "<source>:3: unsafe_allow_html=flag",
        "<source>:4: st.html()",
        "<source>:5: components.html()",
    ]


def test_no_studio_code_renders_raw_html():
    files = sorted(UI.rglob("*.py"))
    assert len(files) >= 5, files  # app.py, common.py and the pages
    found = [hit for f in files for hit in raw_html_uses(f.read_text(encoding="utf-8"), str(f))]
    assert found == []
