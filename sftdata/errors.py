"""Typed errors. The CLI turns them into ``Error: ...`` lines and exit codes (DESIGN.md)."""

from __future__ import annotations


class SftError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class DataError(SftError):
    """Bad input data: names where (file, line or row, field) and how to fix it."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        row: int | None = None,
        field: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.row = row
        self.field = field
        self.fix = fix
        super().__init__(str(self))

    def where(self) -> str:
        parts = []
        if self.file:
            parts.append(self.file)
        if self.line is not None:
            parts.append(f"line {self.line}")
        elif self.row is not None:
            parts.append(f"row {self.row}")
        return ", ".join(parts)

    def __str__(self) -> str:
        text = self.message
        if self.field:
            text = f"field '{self.field}': {text}"
        where = self.where()
        if where:
            text = f"{where}: {text}"
        if self.fix:
            text = f"{text}. Fix: {self.fix}"
        return text


class CheckFailed(SftError):
    """A gate failed (contract, leakcheck, gold verify/score); the report has already been printed."""

    exit_code = 1


class UsageProblem(SftError):
    """Bad flags or flag combinations discovered inside an op."""

    exit_code = 2


class OutputError(DataError):
    """An output could not be written (no space, permission, a reader that went away): names
    the option, the path, the cause and the fix. Exit 1: the input was fine, the write was not."""

    exit_code = 1

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message, fix=fix)


class DataPipeClosed(BrokenPipeError):
    """The reader of the data output went away (`| head`): the command ends quietly with exit 0,
    unless a check has already failed (then its exit code stands)."""


def json_problem(exc: ValueError) -> str:
    """'broken JSON (Expecting value at column 3)' from a json.JSONDecodeError (or orjson's):
    one wording everywhere, without the doubled 'at' of messages like 'Unterminated string
    starting at' (L7)."""
    msg = getattr(exc, "msg", None) or str(exc).split(": line ")[0]
    colno = getattr(exc, "colno", None)
    if colno is None:
        return f"broken JSON ({msg})"
    msg = msg[: -len(" at")] if msg.endswith(" at") else msg
    return f"broken JSON ({msg} at column {colno})"


def json_kind(value: object) -> str:
    """The JSON name of a parsed value's type: object, array, string, number, boolean, null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {dict: "object", list: "array", str: "string"}.get(type(value), type(value).__name__)
