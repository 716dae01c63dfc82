"""CoNLL token/tag files (NER): one sentence per record, task "extraction".

io.read_conll gives rows {tokens, tags, columns, doc}: the tag is the last column, the other
columns (e.g. POS and chunk tags) are kept in meta. The user turn is the prompt template with
``{text}`` (the tokens joined by spaces); the assistant lists the entities one per line as
``TYPE: words`` (or ``none``). ``label`` holds the tag sequence, ``group`` the document (SOURCE#doc-N), so all
sentences of one document stay in one split.
"""

from __future__ import annotations

from typing import Any

from ..errors import UsageProblem
from ._base import Options, RowProblem, make_message, record

NAME = "conll"
DEFAULT_TEMPLATE = (
    "Extract the named entities from the text. Answer one per line as TYPE: words, "
    "or none if there are none.\n\n{text}"
)

TEXT_ONLY = ("--template {template!r} has no {{text}}, so every sentence would get the same prompt; "
             "CoNLL templates fill {{text}} (the sentence) and nothing else")


def matches(row: Any) -> bool:
    return isinstance(row, dict) and isinstance(row.get("tokens"), list) and "tags" in row


def entities(tokens: list[str], tags: list[str]) -> list[tuple[str, str]]:
    """Spans from BIO tags (IOB1 too: an I- tag after O or another type starts an entity)."""
    spans: list[tuple[str, list[str]]] = []
    current = None
    for token, tag in zip(tokens, tags, strict=True):
        if tag == "O" or "-" not in tag:
            current = None
            continue
        prefix, kind = tag.split("-", 1)
        if prefix == "B" or current is None or current[0] != kind:
            current = (kind, [])
            spans.append(current)
        current[1].append(token)
    return [(kind, " ".join(words)) for kind, words in spans]


def to_records(row: dict[str, Any], opts: Options) -> list[dict[str, Any]]:
    tokens, tags = row.get("tokens"), row.get("tags")
    if not tokens or not isinstance(tags, list) or len(tags) != len(tokens):
        raise RowProblem("tags", "every token needs a tag",
                         "give each token line at least two columns: token ... tag")
    text = " ".join(tokens)
    found = entities(tokens, tags)
    answer = "\n".join(f"{kind}: {words}" for kind, words in found) or "none"
    template = opts.template or DEFAULT_TEMPLATE
    if "{text}" not in template:  # the format was detected after the flags were checked (L14)
        raise UsageProblem(TEXT_ONLY.format(template=template) + ".")
    prompt = template.replace("{text}", text)
    messages = [make_message("user", prompt, "tokens"), make_message("assistant", answer, "tags")]
    extras = {"tokens": tokens, "columns": row.get("columns") or None}
    return [record(messages, opts, extras=extras, task="extraction", label=" ".join(tags),
                   group=f"{opts.source}#doc-{row.get('doc', 0)}")]
