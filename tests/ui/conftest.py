"""Fixtures for every studio test: a fresh store per test, and no job process left behind."""

from __future__ import annotations

import pytest
import streamlit as st

from tests.runners import kill_runners


@pytest.fixture(autouse=True)
def fresh_store_cache():
    """`get_store` is an `st.cache_resource`; each test has its own CAI_HOME, so drop the old store."""
    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


@pytest.fixture(autouse=True)
def reap_runners(cai_home):
    """No job process started by a test (or by the page) outlives it."""
    yield
    kill_runners(cai_home)
