"""Packaging beyond pyproject.toml: the wheel carries the top-level registry/ and completions/.

They stay at the top of the repository (the shipped experts are browsable there); the build copies
them into the package as t2cli/_registry and t2cli/_completions, where t2cli.resources finds them.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = {"registry": "_registry", "completions": "_completions"}  # top-level folder: name inside t2cli


class BuildPyWithShipped(build_py):
    def run(self) -> None:
        super().run()
        for folder, inside in SHIPPED.items():
            target = Path(self.build_lib) / "t2cli" / inside
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(Path(__file__).parent / folder, target)


setup(cmdclass={"build_py": BuildPyWithShipped})
