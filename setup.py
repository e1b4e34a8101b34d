"""Build hook: the wheel carries the example config, the systemd unit and the docs.

They live at the top of the repository (config/, systemd/, docs/, README.md, CHANGELOG.md),
which stays their only copy; building copies them into the package as ``mailhook/data/``, where
``mailhook install-files`` finds them. Everything else about the project is in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# What goes into mailhook/data/: folders whole, single files by name.
DATA_FOLDERS = ("config", "systemd", "docs")
DATA_FILES = ("README.md", "CHANGELOG.md")


class BuildWithData(build_py):
    """build_py, then the data files copied into the built package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads them from the source tree itself
        target = Path(self.build_lib) / "mailhook" / "data"
        shutil.rmtree(target, ignore_errors=True)
        for folder in DATA_FOLDERS:
            shutil.copytree(ROOT / folder, target / folder)
        for name in DATA_FILES:
            shutil.copy2(ROOT / name, target / name)


setup(cmdclass={"build_py": BuildWithData})
