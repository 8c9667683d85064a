"""Install the bundled constitutions and prompt sets into a store. Safe to run any number of times."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cai_engine.constitution import load_constitution
from cai_engine.home import BUNDLED_CONSTITUTIONS, BUNDLED_PROMPT_SETS
from cai_engine.prompts import import_prompt_set

if TYPE_CHECKING:
    from cai_engine.store import Store


PROMPT_SET_DESCRIPTIONS = {
    "red-team": "Red-team prompts across harm categories, written for CAI Studio.",
    "helpful": "Benign prompts, including some that only look risky, for measuring over-refusal.",
}


@dataclass
class InstallReport:
    constitutions_added: list[str] = field(default_factory=list)  # refs of new versions
    prompts_added: dict[str, int] = field(default_factory=dict)


def install_bundled(store: Store) -> InstallReport:
    """Add each bundled constitution (a new version only if its content changed) and prompt set."""
    report = InstallReport()
    for path in sorted(BUNDLED_CONSTITUTIONS.glob("*.yaml")):
        version, created = store.save_constitution(
            load_constitution(path), note=f"bundled {path.name}", source="bundled"
        )
        if created:
            report.constitutions_added.append(version.ref)
    for path in sorted(BUNDLED_PROMPT_SETS.glob("*.jsonl")):
        name = path.stem
        r = import_prompt_set(
            store, path, name, append=True, description=PROMPT_SET_DESCRIPTIONS.get(name, "")
        )
        report.prompts_added[name] = r.imported
    return report
