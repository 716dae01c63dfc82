"""Answer parsers and the built-in answer scorers of `sftdata gold score` for benchmark shapes.

A model asked a multiple-choice question answers "The answer is (B)", "**C**", "b) Paris" or just
the option's text; asked a GSM8K problem it writes a worked solution ending "#### 1,234" or
"... so she pays $18.00.". Comparing those strings with the reference ("B. 4", "... #### 18")
would score almost everything wrong; the parsers pull out the answer first.

- ``choice``: the option letter (MMLU, TruthfulQA MC1, any classification record whose label is a
  letter listed as an option in the prompt). Scored 1 when the parsed letter is the label.
- ``number``: the final number (GSM8K). Scored 1 when it equals the reference's final number
  exactly as a rational number (42 == 42.0 == 42.00, 1,234 == 1234, 3/4 == 0.75).

Which scorer a gold record gets: ``meta.scorer`` when set, else ``meta.benchmark`` (mmlu,
truthfulqa -> choice; gsm8k -> number), else its shape (a classification label that is one of
the lettered options in the prompt -> choice; a reference ending in "#### N" -> number), else
the task's own metrics. ``--scorer choice|number|task`` forces one for every record.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

BUILTIN = ("choice", "number")
BENCHMARK_SCORERS = {"mmlu": "choice", "truthfulqa": "choice", "gsm8k": "number"}

# --------------------------------------------------------------------------- choice


_OPTION_LINE = re.compile(r"^\s*\(?([A-Z])[.)]\s+(\S.*?)\s*$")


def options_in(prompt: str) -> dict[str, str]:
    """Lettered options listed in a prompt, one per line ("A. text", "B) text", "(C) text"),
    as {letter: text}; only a run of consecutive letters from A counts."""
    found: dict[str, str] = {}
    for line in prompt.splitlines():
        match = _OPTION_LINE.match(line)
        if match:
            found[match.group(1)] = match.group(2)
    letters = []
    for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        if letter not in found:
            break
        letters.append(letter)
    return {k: found[k] for k in letters} if len(letters) >= 2 else {}


def _plain(text: str) -> str:
    """Case-folded words only: for comparing an answer with an option's text."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.findall(r"[^\W_]+", text))


_EMPHASIS = re.compile(r"[*`]+|\\boxed|\\text")
# the whole answer is a letter: B  b  (B)  [B]  B.  B)  {B}  "B:"
_ALONE = re.compile(r"^\s*[(\[{]?\s*([A-Za-z])\s*[)\]}]?\s*[.:)]?\s*$")
# "the answer is (B)", "Answer: B", "correct option: c.", "I choose B", "my choice is b)"
_PHRASE = re.compile(
    r"(?:answer|option|choice|choose|pick|select)(?:\s+(?:is|would\s+be|will\s+be))?"
    r"\s*(?:[:=\-]|\bis\b)?\s*(?:option\s+|choice\s+|letter\s+)?"
    r"[(\[{]?\s*([A-Za-z])\s*(?=[)\]}.,:;!\s]|$)",
    re.IGNORECASE,
)
# the answer opens with a letter and a delimiter: "B) Paris", "(B) Paris", "B. Paris", "B: Paris"
_LEADING = re.compile(r"^\s*[(\[]?\s*([A-Za-z])\s*[)\].:]\s*")
_NOT_NOUNS = {"or", "and", "nor", "is", "was", "would", "could", "seems", "looks", "because",
              "since", "vs", "versus", "also", "too", "then", "but"}
_LONE_UPPER = re.compile(r"(?<![\w'])([A-Z])(?![\w'])")


def parse_choice(text: str | None, options: Sequence[str] | dict[str, str]) -> str | None:
    """The option letter a free-text answer picks, or None when it picks none (or several).

    ``options`` is the option texts in letter order (or {letter: text}). In order: the answer
    is just a letter; an explicit phrase ("the answer is (B)", the last one wins); a leading
    "B)" / "B." ; the text of exactly one option (or the longest one when it contains the other
    matches); a single stand-alone capital letter of an option ("I'd go with C"), where an "A"
    opening a sentence before a lower-case word is the article, not the option.
    """
    if not text:
        return None
    if isinstance(options, dict):
        letters, texts = list(options), list(options.values())
    else:
        texts = list(options)
        letters = [chr(ord("A") + i) for i in range(len(texts))]
    valid = set(letters)
    clean = _EMPHASIS.sub("", unicodedata.normalize("NFKC", text)).strip()
    if not clean:
        return None

    def pick(letter: str | None) -> str | None:
        letter = letter.upper() if letter else None
        return letter if letter in valid else None

    alone = _ALONE.match(clean)
    if alone:
        return pick(alone.group(1))
    # a lower-case letter counts in a phrase only when it cannot be a word ("the answer is a
    # bird" is not option A): it must be followed by punctuation or the end
    for match in reversed(list(_PHRASE.finditer(clean))):
        letter, end = match.group(1), match.end()
        if letter.islower() and end < len(clean) and clean[end].isspace():
            rest = clean[end:].lstrip()
            if rest and rest[0].isalpha():
                continue
        if pick(letter):
            return pick(letter)
    leading = _LEADING.match(clean)
    if leading and pick(leading.group(1)):
        letter = leading.group(1)
        # "A. lesion" is option A; "I. e." or "a: " in prose is not, so a lower-case lead
        # needs ")" or "." right after it
        if letter.isupper() or clean[leading.start(1) + 1 : leading.start(1) + 2] in ").":
            return pick(letter)
    by_text = _by_option_text(clean, letters, texts)
    if by_text:
        return by_text
    lone = set()
    for match in _LONE_UPPER.finditer(clean):
        letter = match.group(1)
        after = re.match(r"\s+([a-z]+)", clean[match.end() :])
        if letter == "A" and after and after.group(1) not in _NOT_NOUNS:
            continue  # the article ("A cat"), not option A ("A or C", "A is wrong")
        if letter == "I":
            continue  # the pronoun
        if letter in valid:
            lone.add(letter)
    return lone.pop() if len(lone) == 1 else None


def _by_option_text(text: str, letters: list[str], texts: list[str]) -> str | None:
    answer = _plain(text)
    if not answer:
        return None
    plain = [_plain(t) for t in texts]
    exact = [letter for letter, p in zip(letters, plain, strict=True) if p and p == answer]
    if len(exact) == 1:
        return exact[0]
    padded = f" {answer} "
    inside = [(letter, p) for letter, p in zip(letters, plain, strict=True)
              if p and f" {p} " in padded]
    if not inside:
        return None
    longest = max(inside, key=lambda lp: len(lp[1]))
    if all(f" {p} " in f" {longest[1]} " for _, p in inside):
        return longest[0]
    return None


# --------------------------------------------------------------------------- number

_NUMBER = re.compile(
    r"(?<![\w.])(-|\u2212)?\s?\$?\s?"
    r"(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:/\d+(?:\.\d+)?)?|\.\d+)"
    r"(?![\d])"
)
_FINAL = re.compile(r"####\s*(.*)$", re.DOTALL)
_ANSWER_IS = re.compile(r"(?:answer|result|total)\s*(?:is|=|:)", re.IGNORECASE)


def _to_fraction(sign: str | None, digits: str) -> Fraction | None:
    digits = digits.replace(",", "")
    try:
        if "/" in digits:
            num, den = digits.split("/", 1)
            if Fraction(den) == 0:
                return None
            value = Fraction(num) / Fraction(den)
        else:
            value = Fraction(digits)
    except (ValueError, ZeroDivisionError):
        return None
    return -value if sign else value


def _numbers(text: str) -> list[Fraction]:
    out = []
    for match in _NUMBER.finditer(text):
        value = _to_fraction(match.group(1), match.group(2))
        if value is not None:
            out.append(value)
    return out


def parse_number(text: str | None) -> Fraction | None:
    """The final numeric answer of a free-text solution, as an exact rational number.

    In order: the number after the last "####" (GSM8K's own answer line); the first number
    after the last "answer is" / "answer:" / "total is"; the last number in the text. Thousands
    commas, a $ sign, a trailing % or unit, a minus sign and decimals are understood
    (42.0 == 42, "1,234" == 1234, "-3", "$5.50", "3/4"); None when there is no number.
    """
    if not text:
        return None
    text = unicodedata.normalize("NFKC", text).replace("\u2212", "-")
    final = _FINAL.search(text)
    if final:
        numbers = _numbers(final.group(1))
        if numbers:
            return numbers[0]
    phrases = list(_ANSWER_IS.finditer(text))
    if phrases:
        numbers = _numbers(text[phrases[-1].end() :])
        if numbers:
            return numbers[0]
    numbers = _numbers(text)
    return numbers[-1] if numbers else None


def format_number(value: Fraction | None) -> str | None:
    if value is None:
        return None
    if value.denominator == 1:
        return str(value.numerator)
    decimal = value.numerator / value.denominator
    return f"{decimal:g}" if Fraction(decimal).limit_denominator() == value else str(value)


# --------------------------------------------------------------------------- choosing a scorer


def meta_of(record: dict[str, Any]) -> dict[str, Any]:
    raw = record.get("meta")
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def last_user(messages: list[dict] | None) -> str:
    for m in reversed(messages or []):
        if m.get("role") == "user":
            return m.get("content") or ""
    return ""


def auto_scorer(record: dict[str, Any], task: str, reference: str | None) -> str | None:
    """The built-in scorer a gold record's metadata or shape calls for, or None (task metrics)."""
    meta = meta_of(record)
    named = meta.get("scorer")
    if isinstance(named, str) and named in BUILTIN:
        return named
    bench = meta.get("benchmark")
    if isinstance(bench, str) and bench in BENCHMARK_SCORERS:
        return BENCHMARK_SCORERS[bench]
    label = record.get("label")
    if task == "classification" and isinstance(label, str) and len(label.strip()) == 1:
        if label.strip() in options_in(last_user(record.get("messages"))):
            return "choice"
    if reference and re.search(r"####\s*[-$\d.,\u2212]+[^\n]*$", reference.strip()):
        return "number" if parse_number(reference) is not None else None
    return None


def group_name(record: dict[str, Any], task: str, scorer: str | None) -> str:
    """Where a record's metrics are reported: its benchmark (mmlu, gsm8k) or the scorer's name
    for a built-in scorer, else its task."""
    if scorer is None:
        return task
    bench = meta_of(record).get("benchmark")
    return bench if isinstance(bench, str) and bench else scorer


# --------------------------------------------------------------------------- scoring


def choice_reference(record: dict[str, Any], reference: str) -> tuple[str | None, dict[str, str]]:
    """(the correct letter, the options) of a multiple-choice gold record."""
    meta = meta_of(record)
    choices = meta.get("choices")
    if isinstance(choices, list) and choices and all(isinstance(c, str) for c in choices):
        options = {chr(ord("A") + i): c for i, c in enumerate(choices)}
    else:
        options = options_in(last_user(record.get("messages")))
    label = record.get("label")
    letter = label.strip().upper() if isinstance(label, str) and len(label.strip()) == 1 else None
    if letter is None:
        letter = parse_choice(reference, options)
    return letter, options


def score_one(scorer: str, prediction: str, reference: str, record: dict[str, Any]) -> dict[str, Any]:
    """One example: {score 0/1, parsed answer (None when unparsed), expected answer}; expected
    None means the gold record itself has no answer this scorer can read."""
    if scorer == "choice":
        expected, options = choice_reference(record, reference)
        parsed = parse_choice(prediction, options) if options else None
        if not options:
            expected = None
    elif scorer == "number":
        expected_n, parsed_n = parse_number(reference), parse_number(prediction)
        expected, parsed = format_number(expected_n), format_number(parsed_n)
        if expected_n is not None and parsed_n is not None:
            return {"score": float(parsed_n == expected_n), "parsed": parsed, "expected": expected}
    else:
        raise ValueError(f"unknown scorer {scorer!r}")
    ok = expected is not None and parsed == expected
    return {"score": float(ok), "parsed": parsed, "expected": expected}
