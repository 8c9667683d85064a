"""Finding the studio's shared pickers in an AppTest run (see `ui/common.py: pick_version`)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def version_box(at: AppTest, prefix: str):
    """The version select box beside the `{prefix}_constitution` picker. Its key names the
    constitution and its newest version, so it is found by its key's prefix."""
    (box,) = [s for s in at.selectbox if (s.key or "").startswith(f"{prefix}_version_")]
    return box


def version_seqs(at: AppTest, prefix: str) -> list[int]:
    """The version numbers offered, in the order shown (each option reads `name@N · …`)."""
    return [int(o.split(" · ")[0].rpartition("@")[2]) for o in version_box(at, prefix).options]
