"""`sftdata inspect`: a shard directory's manifest, and one sequence with its trained tokens."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import UsageProblem
from ._common import handle_errors, warn

if TYPE_CHECKING:
    from ..shards import ShardReader


@click.command()
@click.argument("shard_dir", type=click.Path(file_okay=False))
@click.option("--split", default=None, help="Split to read (default: the first in the manifest).")
@click.option(
    "-i", "--index", type=int, default=None,
    help="Decode sequence I of the split, documents separated, trained tokens marked.",
)
@click.option(
    "--tokenizer", type=click.Path(exists=True), default=None,
    help="Tokenizer to decode with: a directory or tokenizer.json, or a .tiktoken ranks file. "
    "Without it token ids are shown.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout.")
@click.option("--verify", is_flag=True, help="Check every shard file's sha256 against the manifest.")
@click.option(
    "--color/--no-color", default=None,
    help="Colour trained tokens instead of [[ ]] (default: when stdout is a terminal).",
)
@handle_errors
def inspect(
    shard_dir: str,
    split: str | None,
    index: int | None,
    tokenizer: str | None,
    as_json: bool,
    verify: bool,
    color: bool | None,
) -> None:
    """Show a shard directory's manifest and which tokens of a sequence are trained.

    \b
    Example:
      sftdata pack tokens.jsonl -o shards/ && sftdata inspect shards/ --index 0 --tokenizer tok/
    """
    from ..ops.inspect import format_sequence, format_summary, sequence_view, summary
    from ..shards import read_manifest

    if tokenizer is not None and index is None:
        raise click.UsageError("--tokenizer is only used with --index.")
    if as_json and color is not None:
        raise click.UsageError("--color and --no-color cannot be used with --json.")
    manifest = read_manifest(shard_dir)  # a ShardFormatError is a DataError naming file and fix
    names = list(manifest.get("splits", {}))
    if split is not None and split not in names:
        raise UsageProblem(f"--split {split}: no such split in {shard_dir} (have: {', '.join(names)})")
    info = summary(manifest)
    if verify:
        for name in names:
            _reader(shard_dir, name, verify=True)
        info["verified"] = True

    sequence = None
    if index is not None:
        name = split or names[0]
        reader = _reader(shard_dir, name)
        if not -len(reader) <= index < len(reader):
            raise UsageProblem(
                f"--index {index}: split {name!r} has {len(reader)} sequences (0..{len(reader) - 1})"
            )
        decode = None
        if tokenizer is not None:
            decode, backend, vocab_hash = _load_decoder(tokenizer)
            made_with = manifest.get("tokenizer") or {}
            expected = made_with.get("vocab_hash")
            if made_with.get("backend") not in (None, backend):
                warn(
                    f"{tokenizer} is a {backend} tokenizer; these shards were made with a "
                    f"{made_with['backend']} one ({made_with.get('name')}); the text may be wrong"
                )
            elif vocab_hash is not None and expected and vocab_hash != expected:
                warn(
                    f"{tokenizer} is not the tokenizer these shards were made with "
                    f"(vocab hash {vocab_hash[:12]}, manifest {expected[:12]}); the text may be wrong"
                )
        row = reader[index]
        sequence = {"split": name, "index": index, **sequence_view(row, decode)}

    if as_json:
        out = {"summary": info} if sequence is None else {"summary": info, "sequence": sequence}
        click.echo(json.dumps(out, indent=2, ensure_ascii=False))
        return
    click.echo(format_summary(info, shard_dir))
    if info.get("verified"):
        click.echo("checksums  every file matches the manifest")
    if sequence is not None:
        use_color = sys.stdout.isatty() if color is None else color
        title = f"\n{sequence['split']}[{index}]"
        click.echo(format_sequence(sequence, title, color=use_color), color=use_color)


def _reader(shard_dir: str, split: str, verify: bool = False) -> ShardReader:
    from ..shards import ShardReader

    return ShardReader(shard_dir, split, verify=verify)


def _load_decoder(path: str) -> tuple[Callable[[list[int]], str], str, str | None]:
    """(ids -> text, backend, vocab hash or None) for a tokenizer directory, a tokenizer.json or a
    .tiktoken ranks file."""
    from ..shards import tokenizer_fingerprint

    p = Path(path)
    file = p / "tokenizer.json" if p.is_dir() else p
    if not file.is_file():
        raise UsageProblem(f"--tokenizer {path}: no tokenizer.json in that directory")
    if file.suffix == ".json":
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(str(file))
        except Exception as exc:  # the tokenizers library raises plain Exceptions
            raise UsageProblem(f"--tokenizer {path}: cannot load ({exc})") from None
        vocab_hash = tokenizer_fingerprint(tok.get_vocab(with_added_tokens=True))
        return (lambda ids: tok.decode(ids, skip_special_tokens=False)), "hf", vocab_hash
    # a tiktoken ranks file: "base64(token bytes) rank" per line; special tokens are not in it,
    # so they show as <|id|> and the vocabulary hash cannot be checked
    tokens: dict[int, bytes] = {}
    try:
        for line in file.read_bytes().splitlines():
            if line.strip():
                token, rank = line.split()
                tokens[int(rank)] = base64.b64decode(token)
    except ValueError:
        raise UsageProblem(
            f"--tokenizer {path}: neither a tokenizer.json nor a .tiktoken ranks file"
        ) from None

    def decode(ids: list[int]) -> str:
        raw = b"".join(tokens.get(i, f"<|{i}|>".encode()) for i in ids)
        return raw.decode("utf-8", errors="replace")

    return decode, "tiktoken", None
