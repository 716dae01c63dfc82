"""sftdata: composable SFT data tooling. Each command is also a Python function.

Heavy modules load on first use: ``from sftdata import dedup`` imports only what dedup needs.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it ("module:attribute" when the names differ)
_EXPORTS = {
    "read_records": "sftdata.io",
    "write_table": "sftdata.io",
    "RECORD_SCHEMA": "sftdata.schema",
    "SCHEMA_VERSION": "sftdata.schema",
    "convert": "sftdata.ops.convert",
    "validate": "sftdata.ops.validate",
    "dedup": "sftdata.ops.dedup",
    "leakcheck": "sftdata.ops.leakcheck",
    "split": "sftdata.ops.split",
    "balance": "sftdata.ops.balance",
    "render_template": "sftdata.ops.render_template",
    "tokenize": "sftdata.ops.tokenize",
    "pack": "sftdata.ops.pack",
    "gold_freeze": "sftdata.ops.gold:freeze",
    "gold_verify": "sftdata.ops.gold:verify",
    "gold_score": "sftdata.ops.gold:score",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sftdata' has no attribute {name!r}")
    module, _, attr = module.partition(":")
    return getattr(importlib.import_module(module), attr or name)


__all__ = sorted(_EXPORTS)
