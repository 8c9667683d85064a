"""Build step that pyproject.toml cannot express: ship the top-level constitutions/ in the wheel.

The bundled constitutions live in `constitutions/` at the root of the checkout, where users edit
them, outside any package. A wheel holds only packages, so building copies `constitutions/*.yaml`
to `cai_engine/data/constitutions/` inside the wheel, where `cai_engine.home` finds them when no
checkout is around. An editable install copies nothing: it reads the checkout's folder directly.
Everything else about the build is declared in pyproject.toml.
"""

from __future__ import annotations

import os
from glob import glob

from setuptools import setup
from setuptools.command.build_py import build_py

SOURCE = "constitutions"
TARGET = ("cai_engine", "data", "constitutions")


class BuildPyWithConstitutions(build_py):
    def _constitutions(self) -> list[tuple[str, str]]:
        """(source, build target) for each bundled constitution."""
        target = os.path.join(self.build_lib, *TARGET)
        return [
            (src, os.path.join(target, os.path.basename(src)))
            for src in sorted(glob(f"{SOURCE}/*.yaml"))
        ]

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        pairs = self._constitutions()
        if not pairs:
            raise RuntimeError(
                f"no {SOURCE}/*.yaml to bundle (is MANIFEST.in missing from the sdist?)"
            )
        for src, dst in pairs:
            self.mkpath(os.path.dirname(dst))
            self.copy_file(src, dst)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if self.editable_mode:
            return outputs
        return outputs + [dst for _, dst in self._constitutions()]


setup(cmdclass={"build_py": BuildPyWithConstitutions})
