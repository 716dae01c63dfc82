"""Tokenizer back ends: a Hugging Face tokenizer (directory or GGUF file) and tiktoken.

Both encode a batch of texts to numpy id arrays and map character spans to token ranges:
HF through the fast tokenizer's own offsets (``char_to_token``, as transformers does for its
assistant mask), tiktoken through the byte length of every token. Nothing is ever downloaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
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
    """A batch as flat arrays: row i's ids are ``ids[offsets[i]:offsets[i+1]]``, and
    ``ranges[k]`` is the token range [first, stop) of the k-th char span (rows in order),
    counted from the start of its row."""

    ids: np.ndarray  # int32, all rows concatenated
    offsets: np.ndarray  # int64, len(texts) + 1
    ranges: np.ndarray  # int64, (number of spans, 2)

    def row(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]


def _flatten(lists: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    sizes = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    offsets = np.zeros(len(lists) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    flat = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int32, count=int(offsets[-1]))
    return flat, offsets


def _ranges(pairs: list[Span]) -> np.ndarray:
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


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
        encoded = self.encode(texts, [[] for _ in texts])
        return [encoded.row(i) for i in range(len(texts))]

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
            "vocab_hash": self.vocab_hash(),
            "eos_id": self.eos_id,
            "pad_id": self.pad_id,
        }

    def vocab_hash(self) -> str:
        # hashing a 150k vocabulary takes a second or two: once per tokenizer object
        cached = self.__dict__.get("_vocab_hash")
        if cached is None:
            cached = self.__dict__["_vocab_hash"] = tokenizer_fingerprint(self.vocab())
        return cached

    def max_token_chars(self) -> int:
        """The most characters of text one token can stand for (its longest vocabulary entry,
        in bytes or byte-level characters: never fewer than the characters it covers)."""
        cached = self.__dict__.get("_max_token_chars")
        if cached is None:
            cached = max((len(t) for t in self.vocab()), default=1)
            cached = self.__dict__["_max_token_chars"] = max(cached, 1)
        return cached

    def info_json(self) -> str:
        return json.dumps(self.info(), ensure_ascii=False, separators=(",", ":"))


# --------------------------------------------------------------------------- Hugging Face


class HFTokenizer(Tokenizer):
    backend = "hf"
    spec = ""  # the directory or .gguf file it was loaded from

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
        ids, offsets = _flatten([enc.ids for enc in encodings])
        pairs = [
            _hf_range(enc, a, b, len(text))
            for enc, text, text_spans in zip(encodings, texts, spans, strict=True)
            for a, b in text_spans
        ]
        return Encoded(ids, offsets, _ranges(pairs))

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
    loaded = HFTokenizer(tok, path.name or spec)
    loaded.spec = spec
    return loaded


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
        # encode_to_numpy hands back a buffer, not a list of Python ints; threads as in
        # tiktoken's own encode_batch (the Rust encoder releases the GIL)
        arrays = _thread_map(self._encode_one, texts)
        offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
        np.cumsum([a.size for a in arrays], out=offsets[1:])
        ids = np.concatenate(arrays).astype(np.int32) if arrays else np.zeros(0, np.int32)
        # token boundaries in bytes, for all rows at once; a row's bytes start at its base
        ends = np.cumsum(self._byte_len[ids])
        starts = np.concatenate([[0], ends])[offsets[:-1]]
        targets = [
            (row, *_byte_span(text, a, b))
            for row, (text, text_spans) in enumerate(zip(texts, spans, strict=True))
            for a, b in text_spans
        ]
        if not targets:
            return Encoded(ids, offsets, _ranges([]))
        rows, first, last = (np.asarray(x, dtype=np.int64) for x in zip(*targets, strict=True))
        base = starts[rows]
        tok_first = np.searchsorted(ends, base + first, side="right")
        tok_stop = np.searchsorted(ends, base + last - 1, side="right") + 1
        local = offsets[rows]
        ranges = np.stack([tok_first - local, tok_stop - local], axis=1)
        ranges[last <= first] = 0
        return Encoded(ids, offsets, ranges)

    def _encode_one(self, text: str) -> np.ndarray:
        return self.enc.encode_to_numpy(text, allowed_special="all", disallowed_special=())

    def decode(self, ids: Sequence[int]) -> str:
        return self.enc.decode(list(map(int, ids)))


def _thread_map(fn: Any, items: Sequence[str], threads: int = 8) -> list[Any]:
    if len(items) < 64:
        return [fn(x) for x in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fn, items))


def _byte_span(text: str, start: int, end: int) -> tuple[int, int]:
    if text.isascii():
        return start, end
    first = len(text[:start].encode("utf-8"))
    return first, first + len(text[start:end].encode("utf-8"))


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
    if path.is_dir():  # L24: it is a directory, so say what tiktoken reads instead
        raise TokenizerError(
            f"{spec}: a directory; tiktoken reads a .tiktoken ranks file or an encoding name "
            f"({', '.join(TIKTOKEN_NAMES)}); read a tokenizer directory with --backend hf or auto"
        )
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
