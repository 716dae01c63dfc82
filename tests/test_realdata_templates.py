"""render-template against transformers' apply_chat_template on real templates and real chats.

Every real chat template in realdata (tokenizer configs of Qwen2.5, Qwen3, Phi-3/4, Gemma,
SmolLM3, TRL's templates, chujiezheng's templates) renders real conversations (OpenAI, ShareGPT
and OASST files) byte for byte as transformers does, or refuses the same conversations.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FIXTURES

from sftdata.templates import Template, TemplateError, load_template, render

TEMPLATE_DIRS = [
    "tokenizers/qwen2.5", "tokenizers/qwen3", "tokenizers/phi-3-mini", "tokenizers/phi-3",
    "tokenizers/phi-4-mini", "tokenizers/phi-4-base", "tokenizers/smollm3",
    "tokenizers/qwen2_vocab_merges", "tokenizers/gemma/tokenizer_config_gemma_torchtune.json",
]
TEMPLATE_GLOBS = ["chat_templates_trl/*.jinja", "chat_templates_repo/chat_templates/*.jinja"]
# File templates carry no tokenizer: both sides get the same special tokens.
FILE_VARIABLES = {"bos_token": "<s>", "eos_token": "</s>"}


def openai_chats(root: Path) -> list[list[dict]]:
    path = root / "datasets/messages_format/openai_toy_chat_fine_tuning.jsonl"
    return [json.loads(line)["messages"] for line in path.read_text().splitlines() if line.strip()]


def sharegpt_chats(root: Path, limit: int = 8) -> list[list[dict]]:
    rows = json.loads((root / "datasets/sharegpt_format/fastchat_dummy_conversation.json").read_text())
    roles = {"human": "user", "gpt": "assistant", "system": "system"}
    chats = [[{"role": roles[t["from"]], "content": t["value"]} for t in r["conversations"]] for r in rows]
    return [c for c in chats if len(c) >= 4][:limit]


def oasst_chats(root: Path, limit: int = 5) -> list[list[dict]]:
    """The best-ranked path through each OASST tree, as user/assistant turns."""
    chats = []
    for line in (root / "datasets/oasst_trees/oasst_en_100_tree.jsonl").read_text().splitlines()[:limit]:
        node, chat = json.loads(line)["prompt"], []
        while node:
            chat.append({"role": "user" if node["role"] == "prompter" else "assistant",
                         "content": node["text"]})
            replies = sorted(node.get("replies") or [], key=lambda r: (r.get("rank") is None, r.get("rank")))
            node = replies[0] if replies else None
        chats.append(chat)
    return chats


def real_templates(root: Path) -> list[Template]:
    found = [load_template(str(root / d)) for d in TEMPLATE_DIRS]
    for pattern in TEMPLATE_GLOBS:
        found += [load_template(str(p)).with_variables(FILE_VARIABLES) for p in sorted(root.glob(pattern))]
    return found


@pytest.fixture(scope="module")
def hf_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(FIXTURES / "tokenizers/tiny-chatml"))


def test_every_real_template_matches_transformers(realdata, hf_tokenizer):
    chats = openai_chats(realdata) + sharegpt_chats(realdata) + oasst_chats(realdata)
    templates = real_templates(realdata)
    assert len(templates) >= 60 and len(chats) >= 20
    compared = refused = 0
    problems = []
    for tmpl in templates:
        # transformers adds the tokenizer's special tokens; give ours the same variables
        tmpl = tmpl.with_variables({**hf_tokenizer.special_tokens_map, **tmpl.variables})
        for n, chat in enumerate(chats):
            try:
                expected = hf_tokenizer.apply_chat_template(
                    chat, chat_template=tmpl.text, tokenize=False, **tmpl.variables
                )
            except Exception:  # the template refuses this shape: ours must refuse it too
                with pytest.raises(TemplateError):
                    render(tmpl, chat)
                refused += 1
                continue
            if not _shows_every_answer(chat, expected):
                # e.g. multimodal templates that read content as a list of parts: this shape is
                # not accepted; ours may refuse it, but if it renders, it renders the same
                try:
                    assert render(tmpl, chat).text == expected
                except TemplateError:
                    pass
                refused += 1
                continue
            try:
                got = render(tmpl, chat)
            except TemplateError as exc:
                problems.append(f"{tmpl.spec} chat {n}: {exc}")
                continue
            compared += 1
            if got.text != expected:
                problems.append(f"{tmpl.spec} chat {n}: text differs")
                continue
            problems += _span_problems(tmpl, n, chat, got)
    assert not problems, "\n".join(problems[:20])
    assert compared > 800


def _shows_every_answer(chat: list[dict], text: str) -> bool:
    answers = [m["content"].strip().split("\n")[0] for m in chat if m["role"] == "assistant"]
    return all(a in text for a in answers)


def _span_problems(tmpl: Template, n: int, chat: list[dict], got) -> list[str]:
    turns = [i for i, m in enumerate(chat) if m["role"] == "assistant"]
    span_turns = sorted({s["turn"] for s in got.spans})
    if span_turns != turns:
        return [f"{tmpl.spec} chat {n}: span turns {span_turns} != {turns}"]
    out = []
    previous_end = 0
    for span in got.spans:
        if not (previous_end <= span["start"] <= span["eot_start"] <= span["end"]):
            out.append(f"{tmpl.spec} chat {n}: span out of order {span}")
        previous_end = span["end"]
    for turn in turns:
        content = chat[turn]["content"].strip().split("\n")[0]
        inside = [got.text[s["start"] : s["end"]] for s in got.spans if s["turn"] == turn]
        if not any(content in part for part in inside):
            out.append(f"{tmpl.spec} chat {n}: turn {turn} content not inside its span")
    return out


def test_generation_prompt_matches_transformers(realdata, hf_tokenizer):
    chat = openai_chats(realdata)[1]
    for spec in ["tokenizers/qwen2.5", "tokenizers/phi-3-mini", "chat_templates_trl/llama3.jinja"]:
        tmpl = load_template(str(realdata / spec)).with_variables(FILE_VARIABLES)
        tmpl = tmpl.with_variables({**hf_tokenizer.special_tokens_map, **tmpl.variables})
        expected = hf_tokenizer.apply_chat_template(
            chat[:-1], chat_template=tmpl.text, tokenize=False, add_generation_prompt=True,
            **tmpl.variables,
        )
        got = render(tmpl, chat, generation_prompt=True)
        assert got.text == expected and got.spans == []


def test_eot_marker_found_without_generation_blocks(realdata):
    chat = openai_chats(realdata)[1]
    got = render(load_template(str(realdata / "tokenizers/qwen2.5")), chat)
    markers = {got.text[s["eot_start"] : s["end"]] for s in got.spans}
    assert markers == {"<|im_end|>"}
    got = render(load_template(str(realdata / "tokenizers/phi-3-mini")), chat)
    middle = [got.text[s["eot_start"] : s["end"]] for s in got.spans[:-1]]
    assert set(middle) == {"<|end|>"}  # never half of the next turn's <|user|>, no layout newline
