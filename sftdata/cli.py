"""The `sftdata` Click group. Commands live one per module in sftdata/commands/ and are imported
only when used, so `sftdata --help` stays instant and no command pays for another's imports."""

from __future__ import annotations

import importlib
import importlib.util

import click

# name -> "module:attribute"; the module is imported on first use.
COMMANDS = {
    "convert": "sftdata.commands.convert:convert",
    "validate": "sftdata.commands.validate:validate",
    "dedup": "sftdata.commands.dedup:dedup",
    "leakcheck": "sftdata.commands.leakcheck:leakcheck",
    "split": "sftdata.commands.split:split",
    "balance": "sftdata.commands.balance:balance",
    "gold": "sftdata.commands.gold:gold",
    "render-template": "sftdata.commands.render_template:render_template",
    "tokenize": "sftdata.commands.tokenize:tokenize",
    "pack": "sftdata.commands.pack:pack",
    "inspect": "sftdata.commands.inspect:inspect",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self._available(name)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # command not built yet
                return None
            raise
        return getattr(module, attr)

    @staticmethod
    def _available(name: str) -> bool:
        module_name = COMMANDS[name].split(":")[0]
        return importlib.util.find_spec(module_name) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sftdata")
def cli() -> None:
    """Composable SFT data commands over JSONL, Parquet and Arrow.

    \b
    Example:
      sftdata convert raw.json | sftdata dedup | sftdata split -o splits/
    """


if __name__ == "__main__":
    cli()
