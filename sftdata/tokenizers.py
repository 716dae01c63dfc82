"""Tokenizer back ends: a Hugging Face tokenizer (directory or GGUF file) and tiktoken.

Both encode a batch of texts to numpy id arrays and map character spans to token ranges:
HF through the fast tokenizer's own offsets (``char_to_token``, as transformers does for its
assistant mask), tiktoken through the byte length of every token. Nothing is ever downloaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .shards import tokenizer_fingerprint

TIKTOKEN_URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
TIKTOKEN_NAMES = ("r50k_base", "p50k_base", "p50k_edit", "cl100k_base", "o200k_base")
Span = tuple[int, int]


class TokenizerError(ValueError):
    """A tokenizer that cannot be found or loaded offline (message says what to do)."""


@dataclass
class Encoded:
    ids: list[np.ndarray]  # int32 token ids, one array per text
    ranges: list[list[Span]]  # per text, the token range [first, stop) of every char span


class Tokenizer:
    """Common interface; ``info()`` is the `tokenizer` column (docs/pipeline.md)."""

    backend = ""
    name = ""
    eos_id: int | None = None
    pad_id: int | None = None

    def vocab(self) -> dict[Any, int]:
        raise NotImplementedError

    def encode(self, texts: Sequence[str], spans: Sequence[Sequence[Span]]) -> Encoded:
        raise NotImplementedError

    def encode_plain(self, texts: Sequence[str]) -> list[np.ndarray]:
        return self.encode(texts, [[] for _ in texts]).ids

    def decode(self, ids: Sequence[int]) -> str:
        raise NotImplementedError

    def token_id(self, token: str) -> int | None:
        return self.vocab().get(token)

    def info(self) -> dict[str, Any]:
        vocab = self.vocab()
        return {
            "backend": self.backend,
            "name": self.name,
            "vocab_size": len(vocab),
            "vocab_hash": tokenizer_fingerprint(vocab),
            "eos_id": self.eos_id,
            "pad_id": self.pad_id,
        }

    def info_json(self) -> str:
        return json.dumps(self.info(), ensure_ascii=False, separators=(",", ":"))


# --------------------------------------------------------------------------- Hugging Face


class HFTokenizer(Tokenizer):
    backend = "hf"

    def __init__(self, tok: Any, name: str) -> None:
        if not getattr(tok, "is_fast", False):
            raise TokenizerError(f"{name}: only fast (tokenizers-backed) tokenizers are supported")
        self.tok = tok
        self.name = name
        self._rust = tok.backend_tokenizer
        self._vocab: dict[str, int] | None = None
        self.eos_id = tok.eos_token_id
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def vocab(self) -> dict[str, int]:
        if self._vocab is None:  # the mapping sfttrain hashes: tokenizer.get_vocab()
            self._vocab = self.tok.get_vocab()
        return self._vocab

    def encode(self, texts: Sequence[str], spans: Sequence[Sequence[Span]]) -> Encoded:
        encodings = self._rust.encode_batch(list(texts), add_special_tokens=False)
        ids = [np.asarray(enc.ids, dtype=np.int32) for enc in encodings]
        ranges = [
            [_hf_range(enc, a, b, len(text)) for a, b in text_spans]
            for enc, text, text_spans in zip(encodings, texts, spans)
        ]
        return Encoded(ids, ranges)

    def decode(self, ids: Sequence[int]) -> str:
        return self._rust.decode(list(map(int, ids)), skip_special_tokens=False)


def _hf_range(enc: Any, start: int, end: int, length: int) -> Span:
    # transformers' assistant mask: token of the first char .. token of the last char.
    first = None
    for pos in range(start, min(end, length)):
        first = enc.char_to_token(pos)
        if first is not None:
            break
    if first is None:
        return (0, 0)
    last = None
    for pos in range(min(end, length) - 1, start - 1, -1):
        last = enc.char_to_token(pos)
        if last is not None:
            break
    return (first, (last if last is not None else first) + 1)


def load_hf(spec: str) -> HFTokenizer:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = Path(spec)
    from transformers import AutoTokenizer

    try:
        if path.is_file() and path.suffix == ".gguf":
            tok = AutoTokenizer.from_pretrained(
                str(path.parent), gguf_file=path.name, local_files_only=True
            )
        else:
            tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise TokenizerError(f"{spec}: cannot load a Hugging Face tokenizer ({exc})") from None
    return HFTokenizer(tok, path.name or spec)


# --------------------------------------------------------------------------- tiktoken


class TiktokenTokenizer(Tokenizer):
    backend = "tiktoken"

    def __init__(self, enc: Any, name: str, eos: str | None = None, pad: str | None = None):
        self.enc = enc
        self.name = name
        ranks: dict[bytes, int] = enc._mergeable_ranks
        specials: dict[str, int] = enc._special_tokens
        self._vocab: dict[Any, int] = {**ranks, **specials}
        top = max(self._vocab.values()) + 1
        # byte length of every token id: token boundaries in bytes are a cumulative sum
        self._byte_len = np.zeros(top, dtype=np.int64)
        for token, rank in ranks.items():
            self._byte_len[rank] = len(token)
        for token, rank in specials.items():
            self._byte_len[rank] = len(token.encode("utf-8"))
        self.eos_id = self._special_id(eos, "--eos") if eos else specials.get("<|endoftext|>")
        self.pad_id = self._special_id(pad, "--pad") if pad else self.eos_id

    def _special_id(self, token: str, option: str) -> int:
        if token not in self.enc._special_tokens:
            raise TokenizerError(f"{option} {token!r} is not a special token of {self.name}")
        return self.enc._special_tokens[token]

    def vocab(self) -> dict[Any, int]:
        return self._vocab

    def encode(self, texts: Sequence[str], spans: Sequence[Sequence[Span]]) -> Encoded:
        lists = self.enc.encode_batch(list(texts), allowed_special="all", disallowed_special=())
        ids = [np.asarray(x, dtype=np.int32) for x in lists]
        ranges = []
        for text, arr, text_spans in zip(texts, ids, spans):
            if not text_spans:
                ranges.append([])
                continue
            ends = np.cumsum(self._byte_len[arr])
            ranges.append([_byte_range(ends, text, a, b) for a, b in text_spans])
        return Encoded(ids, ranges)

    def encode_plain(self, texts: Sequence[str]) -> list[np.ndarray]:
        lists = self.enc.encode_batch(list(texts), allowed_special="all", disallowed_special=())
        return [np.asarray(x, dtype=np.int32) for x in lists]

    def decode(self, ids: Sequence[int]) -> str:
        return self.enc.decode(list(map(int, ids)))


def _byte_range(ends: np.ndarray, text: str, start: int, end: int) -> Span:
    if end <= start:
        return (0, 0)
    if text.isascii():
        b0, b1 = start, end
    else:
        b0 = len(text[:start].encode("utf-8"))
        b1 = b0 + len(text[start:end].encode("utf-8"))
    first = int(np.searchsorted(ends, b0, side="right"))
    last = int(np.searchsorted(ends, b1 - 1, side="right"))
    return (first, last + 1)


def parse_specials(text: str | None) -> dict[str, int]:
    """'<|im_start|>=100264,<|im_end|>=100265' -> {token: id}."""
    out: dict[str, int] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        token, sep, value = part.rpartition("=")
        if not sep or not token.strip():
            raise TokenizerError(f"--special expects TOKEN=ID pairs, got {part!r}")
        try:
            out[token.strip()] = int(value)
        except ValueError:
            raise TokenizerError(f"--special: {value!r} is not a token id (in {part!r})") from None
    return out


def _tiktoken_dirs() -> list[Path]:
    dirs = [os.environ.get("SFTDATA_TIKTOKEN_DIR"), os.environ.get("TIKTOKEN_CACHE_DIR")]
    return [Path(d) for d in dirs if d]


def find_tiktoken_file(name: str) -> Path | None:
    """A named encoding's ranks file, if it is on this machine (never downloaded)."""
    url = TIKTOKEN_URL.format(name)
    for folder in _tiktoken_dirs():
        for candidate in (folder / f"{name}.tiktoken", folder / hashlib.sha1(url.encode()).hexdigest()):
            if candidate.is_file():
                return candidate
    return None


@contextlib.contextmanager
def _local_ranks(path: Path) -> Iterator[None]:
    # tiktoken's constructors fetch their ranks by URL; point that fetch at the local file.
    import tiktoken.load
    import tiktoken_ext.openai_public as public

    real = tiktoken.load.load_tiktoken_bpe

    def local(_url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        return real(str(path), expected_hash=expected_hash)

    public.load_tiktoken_bpe = local
    try:
        yield
    finally:
        public.load_tiktoken_bpe = real


def load_tiktoken(
    spec: str, specials: dict[str, int] | None = None, eos: str | None = None, pad: str | None = None
) -> TiktokenTokenizer:
    import tiktoken
    import tiktoken_ext.openai_public as public

    path = Path(spec)
    name = path.stem if path.is_file() else spec
    if not path.is_file():
        if spec not in TIKTOKEN_NAMES:
            raise TokenizerError(f"{spec}: not a file, directory or tiktoken encoding name")
        found = find_tiktoken_file(spec)
        if found is None:
            raise TokenizerError(
                f"tiktoken encoding {spec!r} is not on this machine (never downloaded); put "
                f"{spec}.tiktoken in $TIKTOKEN_CACHE_DIR or pass the .tiktoken file path"
            )
        path = found
    if name in TIKTOKEN_NAMES:
        try:
            with _local_ranks(path):
                params = getattr(public, name)()
        except ValueError as exc:  # tiktoken checks the file's hash
            raise TokenizerError(f"{path}: not the {name} ranks file ({exc})") from None
    else:
        from tiktoken.load import load_tiktoken_bpe

        try:
            ranks = load_tiktoken_bpe(str(path))
        except (ValueError, IndexError) as exc:
            raise TokenizerError(f"{path}: not a tiktoken ranks file ({exc})") from None
        params = {"name": name, "pat_str": _CL100K_PATTERN, "mergeable_ranks": ranks,
                  "special_tokens": {}}
    params["special_tokens"] = {**params["special_tokens"], **(specials or {})}
    taken = set(params["mergeable_ranks"].values())
    clash = [t for t, i in params["special_tokens"].items() if i in taken]
    if clash:
        raise TokenizerError(f"--special: id of {clash[0]!r} is already an ordinary token")
    enc = tiktoken.Encoding(
        params["name"], pat_str=params["pat_str"], mergeable_ranks=params["mergeable_ranks"],
        special_tokens=params["special_tokens"],
    )
    return TiktokenTokenizer(enc, name, eos=eos, pad=pad)


# cl100k's split pattern: the default for a ranks file of unknown origin
_CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)


# --------------------------------------------------------------------------- choosing


def load_tokenizer(
    spec: str,
    backend: str = "auto",
    specials: dict[str, int] | None = None,
    eos: str | None = None,
    pad: str | None = None,
) -> Tokenizer:
    """DIR or FILE.gguf -> Hugging Face; FILE.tiktoken / other file / encoding name -> tiktoken."""
    path = Path(spec)
    if backend == "auto":
        is_hf = path.is_dir() or (path.is_file() and path.suffix == ".gguf")
        backend = "hf" if is_hf else "tiktoken"
    if backend == "hf":
        if not path.exists():
            raise TokenizerError(f"{spec}: no such tokenizer directory or GGUF file")
        tok = load_hf(spec)
        if eos:
            tok.eos_id = _hf_id(tok, eos, "--eos")
        if pad:
            tok.pad_id = _hf_id(tok, pad, "--pad")
        return tok
    return load_tiktoken(spec, specials, eos=eos, pad=pad)


def _hf_id(tok: HFTokenizer, token: str, option: str) -> int:
    found = tok.token_id(token)
    if found is None:
        raise TokenizerError(f"{option} {token!r} is not in the vocabulary of {tok.name}")
    return found
