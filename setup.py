"""Only for the wheel: copy the contract suites of schemas/ into the package (sftdata/schemas),
so an installed (non-editable) sftdata validates without a checkout. Everything else is in
pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithSchemas(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "sftdata" / "schemas"
        target.mkdir(parents=True, exist_ok=True)
        for suite in sorted(Path(__file__).parent.joinpath("schemas").glob("*.json")):
            shutil.copy(suite, target / suite.name)


setup(cmdclass={"build_py": BuildWithSchemas})
