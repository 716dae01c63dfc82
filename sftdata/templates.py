"""Chat templates: the registry (built-ins, files, tokenizer directories) and rendering with spans.

A template renders a conversation to text exactly as transformers' ``apply_chat_template``
does (the same Jinja environment: transformers' own compile function is used), and reports the
character span ``[start, end)`` of every assistant turn, its end-of-turn marker included:

* templates with ``{% generation %}`` blocks (the built-ins, TRL's ``*_training`` templates): the
  spans are the blocks themselves, as transformers records them for the assistant-token mask;
* other templates: each assistant content is located in the rendered text in order, and the
  end-of-turn marker that follows it is learned by rendering the same conversation shape with
  sentinel contents (what the template writes after an answer when the conversation ends there).

``eot_start`` in a span is where the end-of-turn marker begins (``== end`` when there is none),
so ``tokenize --no-train-eot`` can leave it out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .shards import text_hash

BUILTIN_DIR = Path(__file__).resolve().parent / "templates"
BUILTINS = ("chatml", "llama3", "alpaca", "sixtoken")
# The end-of-text token a built-in appends to raw text records (task "text").
BUILTIN_EOS = {
    "chatml": "<|endoftext|>",
    "llama3": "<|end_of_text|>",
    "alpaca": "</s>",
    "sixtoken": "<EOA>",
}
# transformers passes the tokenizer's named special tokens to every template as variables.
SPECIAL_TOKEN_NAMES = (
    "bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token",
)
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")
_SENTINEL = "SFTDATASENTINEL{}X"


@lru_cache(maxsize=64)
def _has_generation_tag(text: str) -> bool:
    # asked once per rendered row: searched once per template text
    return bool(_GENERATION_TAG.search(text))


class TemplateError(ValueError):
    """A template that cannot be found, or that refuses a conversation (message for the user)."""


@dataclass(frozen=True)
class Template:
    """A chat template's source and identity. ``spec`` is how it was asked for."""

    name: str
    text: str
    spec: str
    variables: dict[str, str] = field(default_factory=dict)

    @property
    def hash(self) -> str:
        return text_hash(self.text)  # type: ignore[return-value]

    @property
    def has_generation(self) -> bool:
        return _has_generation_tag(self.text)

    @property
    def eos_token(self) -> str:
        """What raw text records end with: the tokenizer's eos, or the built-in's end of text."""
        return self.variables.get("eos_token") or BUILTIN_EOS.get(self.name, "")

    def to_json(self) -> str:
        """The `template` column: enough to find the template again and check it is the same."""
        return json.dumps(
            {"spec": self.spec, "name": self.name, "hash": self.hash},
            ensure_ascii=False, separators=(",", ":"),
        )

    def with_variables(self, extra: dict[str, str]) -> Template:
        return Template(self.name, self.text, self.spec, {**self.variables, **extra})


# --------------------------------------------------------------------------- loading


def load_template(spec: str | dict[str, Any] | Path) -> Template:
    """A template from a built-in name, a Jinja file, a tokenizer directory, or the `template`
    JSON that render-template wrote (then the hash is checked against the source found)."""
    if isinstance(spec, dict) or (isinstance(spec, str) and spec.lstrip().startswith("{")):
        return _from_column_json(spec)
    spec = str(spec)
    if spec in BUILTINS:
        return Template(spec, (BUILTIN_DIR / f"{spec}.jinja").read_text(encoding="utf-8"), spec)
    path = Path(spec)
    if path.is_dir():
        return _from_directory(path, spec)
    if path.is_file():
        return _from_file(path, spec)
    raise TemplateError(
        f"unknown template {spec!r}: not a built-in ({', '.join(BUILTINS)}), file or directory"
    )


def _from_column_json(spec: str | dict[str, Any]) -> Template:
    info = json.loads(spec) if isinstance(spec, str) else spec
    template = load_template(info["spec"])
    if info.get("hash") and info["hash"] != template.hash:
        raise TemplateError(
            f"template {info['spec']!r} changed since the records were rendered "
            f"(hash {template.hash[:12]} != {info['hash'][:12]}); render them again"
        )
    return template


def _from_file(path: Path, spec: str) -> Template:
    if path.suffix == ".gguf":
        return _from_gguf(path, spec)
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:  # L22: a binary file given as a template
        raise TemplateError(
            f"{spec}: not a text file (invalid UTF-8 at byte {exc.start}); a template is a Jinja "
            "file, a tokenizer directory or its tokenizer_config.json, or a built-in name "
            f"({', '.join(BUILTINS)})"
        ) from None
    if path.suffix == ".json":  # a tokenizer_config.json, or {"chat_template": ...} (mistral.rs)
        return _from_config(json.loads(raw), path.parent, spec, path.stem)
    return Template(path.stem, raw, spec)


def _from_gguf(path: Path, spec: str) -> Template:
    # the chat template and special tokens embedded in a GGUF model file (read by transformers)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)
    if not tok.chat_template:
        raise TemplateError(f"{spec}: the GGUF file carries no chat template")
    return Template(path.stem, tok.chat_template, spec, dict(tok.special_tokens_map))


def _from_directory(path: Path, spec: str) -> Template:
    config_path = path / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    return _from_config(config, path, spec, path.name)


def _from_config(config: dict[str, Any], folder: Path, spec: str, name: str) -> Template:
    variables = {
        key: _token_text(config[key]) for key in SPECIAL_TOKEN_NAMES if config.get(key) is not None
    }
    text = config.get("chat_template")
    if isinstance(text, list):  # named templates: transformers uses "default" unless told
        named = {t["name"]: t["template"] for t in text}
        text = named.get("default") or next(iter(named.values()))
    if text is None and (folder / "chat_template.jinja").is_file():
        text = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    if text is None:
        raise TemplateError(
            f"{spec}: no chat template (neither `chat_template` in tokenizer_config.json "
            "nor chat_template.jinja); pass --template with a built-in name or a .jinja file"
        )
    return Template(name, text, spec, variables)


def _token_text(value: Any) -> str:
    return value["content"] if isinstance(value, dict) else str(value)


# --------------------------------------------------------------------------- rendering


@dataclass
class Rendered:
    text: str
    spans: list[dict[str, Any]]


def template_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as transformers hands them to a template: keys with None values dropped, and
    tool calls (JSON text in our records) as the list of dicts templates expect."""
    out = []
    for m in messages:
        msg = {k: v for k, v in m.items() if v is not None}
        calls = msg.get("tool_calls")
        if isinstance(calls, str):
            try:
                msg["tool_calls"] = json.loads(calls)
            except json.JSONDecodeError:
                raise TemplateError("tool_calls is not valid JSON") from None
        out.append(msg)
    return out


def render_text(
    template: Template,
    messages: list[dict[str, Any]],
    *,
    add_generation_prompt: bool = False,
    with_generation: bool = False,
) -> tuple[str, list[tuple[int, int]]]:
    """The template's output for already-prepared messages (and its generation blocks)."""
    return _render_text(template, _UNPREPARED, messages, add_generation_prompt, with_generation)


def _render_text(
    template: Template, renderer: Any, messages: list[dict[str, Any]],
    add_generation_prompt: bool, with_generation: bool,
) -> tuple[str, list[tuple[int, int]]]:
    import jinja2

    try:
        if renderer is _UNPREPARED:
            renderer = _prepare(template)
        return _render(template, renderer, messages, add_generation_prompt, with_generation)
    except jinja2.exceptions.UndefinedError as exc:
        raise TemplateError(
            f"template {template.name!r} needs a variable: {exc.message}; pass it with "
            "--var NAME=VALUE, or give the tokenizer directory as --template"
        ) from None
    except jinja2.exceptions.TemplateError as exc:
        raise TemplateError(f"template {template.name!r} refused the conversation: {exc}") from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError,
            RecursionError) as exc:  # OverflowError: the sandbox's range() limit (L22)
        raise TemplateError(
            f"template {template.name!r} failed on the conversation: {type(exc).__name__}: "
            f"{str(exc).rstrip('.')}"
        ) from None


_UNPREPARED = object()  # not prepared yet, or its preparation failed: prepared on every call


def _prepare(template: Template) -> _Renderer | None:
    key = tuple(template.variables.items())
    try:
        hash(key)
        prepare = _renderer
    except TypeError:  # a variable that is not hashable (a list of tokens): prepared uncached
        prepare = _renderer.__wrapped__
    return prepare(template.text, key)


def _render(
    template: Template, renderer: _Renderer | None, messages: list[dict[str, Any]],
    add_generation_prompt: bool, with_generation: bool,
) -> tuple[str, list[tuple[int, int]]]:
    """What transformers' render_jinja_template does for one conversation, without its per-call
    work that gives the same result every time: the same compiled template, sandbox, generation
    tracker and variables, so the text is the same (tests compare with apply_chat_template on
    real templates). Falls back to render_jinja_template if the internals moved."""
    if renderer is None:
        from transformers.utils import chat_template_utils as ctu

        rendered, indices = ctu.render_jinja_template(
            conversations=[messages], chat_template=template.text,
            add_generation_prompt=add_generation_prompt,
            return_assistant_tokens_mask=with_generation, **template.variables,
        )
        return rendered[0], (indices[0] if with_generation else [])
    return renderer.render(messages, add_generation_prompt, with_generation)


class _Renderer:
    """One compiled template and the variables it is called with, prepared once.

    transformers' render_jinja_template, per conversation, converts the variables to plain data
    (they are strings: the same every time), copies every message as plain data (ours are plain
    already: strings, numbers, booleans and json.loads output), and Jinja's ``render`` merges
    the template's globals (a ChainMap) into a new dict. Here the globals and variables are
    merged once, in the same order and with the same precedence (variables over globals, as in
    Jinja's ``dict(globals, **vars)``); each call copies that dict, sets ``messages`` and
    ``add_generation_prompt`` and runs the compiled root function, as ``Template.render`` does.
    """

    def __init__(self, compiled: Any, base: dict[str, Any], alias: Any, reasoning: tuple) -> None:
        self.compiled = compiled
        self.base = base
        self.globals = dict(compiled.globals)  # same keys as the ChainMap, for Context.globals_keys
        self.alias = alias
        self.reasoning = frozenset(reasoning)

    def render(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool, with_generation: bool
    ) -> tuple[str, list[tuple[int, int]]]:
        from jinja2.runtime import new_context

        # transformers' aliasing of reasoning fields, only where a message has one of them
        if any(type(m) is not dict or not self.reasoning.isdisjoint(m) for m in messages):
            messages = self.alias(messages)
        compiled = self.compiled
        parent = self.base.copy()
        parent["messages"] = messages
        parent["add_generation_prompt"] = add_generation_prompt
        context = new_context(compiled.environment, compiled.name, compiled.blocks, parent,
                              True, self.globals)
        try:
            if not with_generation:
                return compiled.environment.concat(compiled.root_render_func(context)), []
            blocks: list[str] = []
            indices: list[tuple[int, int]] = []
            with compiled.environment.activate_tracker(blocks, indices):
                for block in compiled.root_render_func(context):
                    blocks.append(block)
                return "".join(blocks), indices
        except Exception:
            compiled.environment.handle_exception()  # re-raises, as Template.render does
            raise


def _keywords(**kwargs: Any) -> dict[str, Any]:
    return kwargs


@lru_cache(maxsize=64)
def _renderer(text: str, variables: tuple[tuple[str, str], ...]) -> _Renderer | None:
    from transformers.utils import chat_template_utils as ctu

    internals = ("_compile_jinja_template", "_plain_template_data", "_alias_reasoning_fields",
                 "_REASONING_FIELDS")
    if not all(hasattr(ctu, name) for name in internals):
        return None
    compiled = ctu._compile_jinja_template(text)
    if not all(hasattr(compiled, name) for name in ("root_render_func", "blocks", "globals")):
        return None
    # the keyword arguments transformers passes, in its order; a variable named like one of
    # them is a TypeError there as here (raised on every call: errors are not cached)
    call = _keywords(messages=None, tools=None, documents=None, add_generation_prompt=False,
                     **ctu._plain_template_data(dict(variables)))
    return _Renderer(compiled, dict(compiled.globals, **call), ctu._alias_reasoning_fields,
                     ctu._REASONING_FIELDS)


def render(
    template: Template,
    messages: list[dict[str, Any]],
    *,
    generation_prompt: bool = False,
    task: str | None = None,
) -> Rendered:
    """Render one conversation; spans of every assistant turn (none with generation_prompt)."""
    return renderer_for(template)(messages, generation_prompt=generation_prompt, task=task)


def renderer_for(template: Template) -> Callable[..., Rendered]:
    """:func:`render` for one template, its per-template work done once: for many rows."""
    try:
        prepared: Any = _prepare(template)
    except Exception:  # noqa: BLE001 - raised again, as a TemplateError, for every row
        prepared = _UNPREPARED
    has_generation = template.has_generation

    def render_one(
        messages: list[dict[str, Any]], *, generation_prompt: bool = False, task: str | None = None
    ) -> Rendered:
        if task == "text":
            return _render_raw_text(template, messages)
        prepared_messages = template_messages(messages)
        if generation_prompt:
            if prepared_messages and prepared_messages[-1].get("role") == "assistant":
                prepared_messages = prepared_messages[:-1]
            text, _ = _render_text(template, prepared, prepared_messages, True, False)
            return Rendered(text, [])
        if has_generation:
            text, blocks = _render_text(template, prepared, prepared_messages, False, True)
            return Rendered(text, _spans_from_blocks(text, prepared_messages, blocks))
        text, _ = _render_text(template, prepared, prepared_messages, False, False)
        return Rendered(text, _spans_by_search(template, text, prepared_messages))

    return render_one


def _render_raw_text(template: Template, messages: list[dict[str, Any]]) -> Rendered:
    # Continued pretraining: the text itself plus end-of-text, all of it trained.
    bodies = [m for m in messages if m.get("role") == "assistant"] or list(messages)
    if len(bodies) != 1:
        raise TemplateError("a `text` task record must hold exactly one message")
    content = bodies[0].get("content") or ""
    text = content + template.eos_token
    turn = list(messages).index(bodies[0])
    return Rendered(text, [_span(0, len(text), len(content), turn, bodies[0])])


def _span(start: int, end: int, eot_start: int, turn: int, message: dict[str, Any]) -> dict:
    return {
        "start": start,
        "end": end,
        "turn": turn,
        "train": message.get("train"),
        "weight": message.get("weight"),
        "eot_start": eot_start,
    }


def _assistant_turns(messages: list[dict[str, Any]]) -> list[int]:
    return [i for i, m in enumerate(messages) if m.get("role") == "assistant"]


def _spans_from_blocks(
    text: str, messages: list[dict[str, Any]], blocks: list[tuple[int, int]]
) -> list[dict[str, Any]]:
    """One span per generation block. Templates may split a turn into several blocks
    (thinking, answer, end-of-turn marker): then every block keeps its own span, so the mask
    equals transformers' exactly, and all of them carry the turn's index."""
    turns = _assistant_turns(messages)
    owners = turns if len(blocks) == len(turns) else _block_owners(text, messages, blocks)
    spans = []
    content_seen: set[int] = set()
    for (start, end), turn in zip(blocks, owners, strict=True):
        content = messages[turn].get("content") or ""
        eot = _content_end(text, content, start, end)
        if eot is None:  # no answer in this block: a marker after it, or thinking before it
            eot = start if turn in content_seen else end
        else:
            content_seen.add(turn)
        spans.append(_span(start, end, eot, turn, messages[turn]))
    return spans


def _block_owners(
    text: str, messages: list[dict[str, Any]], blocks: list[tuple[int, int]]
) -> list[int]:
    """The assistant turn of every block: the one between the prompts that surround it."""
    prompts: list[tuple[int, int]] = []  # (position in text, message index) of prompt turns
    cursor = 0
    for i, m in enumerate(messages):
        if m.get("role") == "assistant":
            continue
        found = _find_content(text, m.get("content") or "", cursor)
        if found is not None:
            prompts.append((found[0], i))
            cursor = found[1]
    owners = []
    for start, _end in blocks:
        before = [i for pos, i in prompts if pos < start]
        after = [i for pos, i in prompts if pos >= start]
        lo = before[-1] if before else -1
        hi = after[0] if after else len(messages)
        candidates = [i for i in range(lo + 1, hi) if messages[i].get("role") == "assistant"]
        if not candidates:
            raise TemplateError("a {% generation %} block lies outside every assistant turn")
        owners.append(candidates[0] if len(candidates) == 1 else _by_content(text, messages, candidates, start))
    return owners


def _by_content(text: str, messages: list[dict[str, Any]], candidates: list[int], start: int) -> int:
    # consecutive assistant turns: the first whose answer is not yet behind the block
    for i in candidates:
        found = _find_content(text, messages[i].get("content") or "", 0)
        if found is not None and found[1] > start:
            return i
    return candidates[-1]


def _content_end(text: str, content: str, start: int, end: int) -> int | None:
    # An answer that opens the block is taken there: searching from the end would find a short
    # answer such as "_" inside the block's own end-of-turn marker ("<|im_end|>").
    for needle in (content, content.strip()):
        if needle and text.startswith(needle, start) and start + len(needle) <= end:
            return start + len(needle)
    # Otherwise (thinking before the answer) the answer is the last occurrence in the block.
    for needle in (content, content.strip()):
        if needle:
            pos = text.rfind(needle, start, end)
            if pos >= 0:
                return pos + len(needle)
    return None


def _spans_by_search(
    template: Template, text: str, messages: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    layout = _layout(template, _shape(messages))
    try:
        return _spans_in_order(text, messages, layout.markers, layout.literals)
    except TemplateError:
        # the template rewrites contents (e.g. Falcon folds blank lines): walk its literal text
        spans = _spans_between_literals(text, messages, layout)
        if spans is None:
            raise
        return spans


def _spans_in_order(
    text: str,
    messages: list[dict[str, Any]],
    markers: dict[int, str],
    literals: tuple[str, ...] | None = None,
) -> list[dict[str, Any]]:
    spans = []
    cursor = 0
    anchored = literals is not None and len(literals) == len(messages) + 1
    for i, m in enumerate(messages):
        content = m.get("content") or ""
        # Where the template's own text before this turn ends, the content must begin: a short
        # answer such as "_" would otherwise be "found" inside "<|im_end|>".
        found = _content_at(text, content, cursor, literals[i]) if anchored else None
        if found is None:
            found = _find_content(text, content, cursor)
        if m.get("role") != "assistant":
            if found is not None:  # templates may drop or rewrite a system prompt: then skip it
                cursor = found[1]
            continue
        if found is None:
            raise TemplateError(
                f"assistant turn {i}: its content does not appear in the rendered text "
                "(the template rewrites it); use a template with {% generation %} blocks"
            )
        start, content_end = found
        marker = markers.get(i, "")
        end = content_end + len(marker) if text.startswith(marker, content_end) else content_end
        spans.append(_span(start, end, content_end, i, m))
        cursor = end
    return spans


def _content_at(text: str, content: str, cursor: int, before: str) -> tuple[int, int] | None:
    """The content right after the literal text the template writes before it, if it is there."""
    if not text.startswith(before, cursor):
        return None
    start = cursor + len(before)
    for needle in (content, content.strip()):
        if text.startswith(needle, start):
            return start, start + len(needle)
    return None


def _find_content(text: str, content: str, cursor: int) -> tuple[int, int] | None:
    for needle in (content, content.strip()):
        if needle:
            pos = text.find(needle, cursor)
            if pos >= 0:
                return pos, pos + len(needle)
    return None


def _shape(messages: list[dict[str, Any]]) -> tuple[tuple[str, bool], ...]:
    return tuple((str(m.get("role")), bool(m.get("tool_calls"))) for m in messages)


@dataclass(frozen=True)
class _Layout:
    """What a template writes around contents, learned from a render with sentinel contents."""

    markers: dict[int, str]  # assistant turn -> its end-of-turn marker
    literals: tuple[str, ...] | None  # text between contents, in order (None: not in order)


def _layout(template: Template, shape: tuple[tuple[str, bool], ...]) -> _Layout:
    return _layout_cached(template.text, tuple(sorted(template.variables.items())), shape)


@lru_cache(maxsize=4096)
def _layout_cached(
    text: str, variables: tuple[tuple[str, str], ...], shape: tuple[tuple[str, bool], ...]
) -> _Layout:
    """The marker of turn i is what follows its sentinel both in the whole conversation and in
    the conversation cut after turn i (where nothing else can follow), so the next turn's
    header is never mistaken for it."""
    template = Template("sentinel", text, "sentinel", dict(variables))
    sentinels = [_sentinel_message(i, role, has_calls) for i, (role, has_calls) in enumerate(shape)]
    try:
        full, _ = render_text(template, sentinels)
    except TemplateError:
        return _Layout({}, None)
    markers = {}
    for i, (role, _calls) in enumerate(shape):
        if role != "assistant":
            continue
        after_full = _after_sentinel(full, i, len(shape))
        try:
            cut, _ = render_text(template, sentinels[: i + 1])
        except TemplateError:
            cut = ""
        after_cut = _after_sentinel(cut, i, i + 1)
        marker = _marker(after_full, after_cut)
        # Whitespace after the end-of-turn token is layout, not answer (ChatML's "\n" after
        # <|im_end|>): training it teaches nothing, and the trained turn must end on the token
        # itself, as TRL's {% generation %} templates mark it. A marker of whitespace alone stays.
        markers[i] = marker.rstrip() or marker
    parts = re.split(r"SFTDATASENTINEL(\d+)X", full)
    order = [int(x) for x in parts[1::2]]
    literals = tuple(parts[0::2]) if order == list(range(len(shape))) else None
    return _Layout(markers, literals)


def _spans_between_literals(
    text: str, messages: list[dict[str, Any]], layout: _Layout
) -> list[dict[str, Any]] | None:
    """Contents are whatever lies between the template's literal pieces, in order."""
    lits = layout.literals
    if lits is None or not text.startswith(lits[0]) or not text.endswith(lits[-1]):
        return None
    pos = len(lits[0])
    spans = []
    for i, m in enumerate(messages):
        following = lits[i + 1]
        if i == len(messages) - 1:
            stop = len(text) - len(following)
        elif following:
            stop = text.find(following, pos)
        else:
            return None
        if stop < pos:
            return None
        if m.get("role") == "assistant":
            marker = layout.markers.get(i, "")
            end = stop + len(marker) if text.startswith(marker, stop) else stop
            spans.append(_span(pos, end, stop, i, m))
        pos = stop + len(following)
    return spans


def _sentinel_message(i: int, role: str, has_calls: bool) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": role, "content": _SENTINEL.format(i)}
    if has_calls:
        msg["tool_calls"] = []
    return msg


def _after_sentinel(text: str, i: int, count: int) -> str:
    mark = _SENTINEL.format(i)
    pos = text.find(mark)
    if pos < 0:
        return ""
    rest = text[pos + len(mark):]
    following = [rest.find(_SENTINEL.format(j)) for j in range(i + 1, count)]
    following = [p for p in following if p >= 0]
    return rest[: min(following)] if following else rest


def _marker(after_full: str, after_cut: str) -> str:
    """The common start of both continuations; where they part inside a token (Phi-3's
    ``<|end|>\n<|user|>`` against ``<|end|>\n<|endoftext|>``), back to a whitespace or a
    closing bracket, so the marker never ends halfway through a special token."""
    n = 0
    for x, y in zip(after_full, after_cut, strict=False):
        if x != y:
            break
        n += 1
    if n in (len(after_full), len(after_cut)):
        return after_full[:n]
    while n and not (after_full[n - 1].isspace() or after_full[n - 1] in ">]})"):
        n -= 1
    return after_full[:n]
