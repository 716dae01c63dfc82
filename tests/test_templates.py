"""Template registry and rendering with spans (sftdata.templates)."""

from __future__ import annotations

import json

import pytest
from conftest import FIXTURES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sftdata.templates import BUILTINS, Template, TemplateError, load_template, render

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4"},
]
END_OF_TURN = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>", "alpaca": "</s>", "sixtoken": "<EOA>"}


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_spans_hold_the_answer_then_its_end_of_turn_marker(name):
    out = render(load_template(name), CHAT)
    assert [s["turn"] for s in out.spans] == [2, 4]
    for span in out.spans:
        assert out.text[span["start"] : span["eot_start"]] == CHAT[span["turn"]]["content"]
        assert out.text[span["eot_start"] : span["end"]] == END_OF_TURN[name]


def test_sixtoken_wraps_every_turn_in_its_own_tokens():
    out = render(load_template("sixtoken"), CHAT)
    assert out.text == "<SOT>Be brief.<EOT><SOU>Hi there<EOU><SOA>Hello!<EOA><SOU>2+2?<EOU><SOA>4<EOA>"


def test_sixtoken_refuses_a_tool_turn():
    with pytest.raises(TemplateError, match="the sixtoken template has no tool role"):
        render(load_template("sixtoken"), [{"role": "tool", "content": "x"}, *CHAT[1:3]])


def test_generation_prompt_drops_the_last_answer_and_has_no_spans():
    out = render(load_template("chatml"), CHAT, generation_prompt=True)
    assert out.text.endswith("<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n")
    assert out.spans == []


def test_text_task_renders_raw_text_plus_end_of_text_all_trained():
    out = render(load_template("chatml"), [{"role": "assistant", "content": "Once upon"}], task="text")
    assert out.text == "Once upon<|endoftext|>"
    assert out.spans[0] | {} == {"start": 0, "end": 22, "turn": 0, "train": None, "weight": None, "eot_start": 9}


def test_directory_template_without_generation_blocks_finds_its_markers():
    tmpl = load_template(str(FIXTURES / "tokenizers/tiny-chatml"))
    assert tmpl.variables["eos_token"] == "<|im_end|>" and not tmpl.has_generation
    out = render(tmpl, CHAT)
    assert out.text == render(load_template("chatml"), CHAT).text
    markers = [out.text[s["eot_start"] : s["end"]] for s in out.spans]
    assert markers == ["<|im_end|>", "<|im_end|>"]  # the newline after it is layout


def test_answer_quoted_in_the_prompt_is_not_mistaken_for_the_answer():
    chat = [{"role": "user", "content": "Say: yes"}, {"role": "assistant", "content": "yes"}]
    tmpl = load_template(str(FIXTURES / "tokenizers/tiny-chatml"))
    out = render(tmpl, chat)
    span = out.spans[0]
    assert out.text[span["start"] : span["end"]] == "yes<|im_end|>"
    assert span["start"] > out.text.index("Say: yes")


def test_template_json_round_trip_and_changed_source(tmp_path):
    path = tmp_path / "mine.jinja"
    path.write_text((FIXTURES / "../sftdata/templates/chatml.jinja").resolve().read_text())
    tmpl = load_template(str(path))
    again = load_template(tmpl.to_json())
    assert (again.name, again.text, again.hash) == (tmpl.name, tmpl.text, tmpl.hash)
    assert json.loads(tmpl.to_json()) == {"spec": str(path), "name": "mine", "hash": tmpl.hash}
    path.write_text(tmpl.text + " ")
    with pytest.raises(TemplateError, match="changed since the records were rendered"):
        load_template(tmpl.to_json())


def test_unknown_template_and_missing_variable_are_explained(tmp_path):
    with pytest.raises(TemplateError, match="unknown template 'nope'"):
        load_template("nope")
    path = tmp_path / "bos.jinja"
    path.write_text("{{ bos_token + '' }}{% for m in messages %}{{ m.content }}|{% endfor %}")
    with pytest.raises(TemplateError, match="needs a variable: 'bos_token' is undefined; pass it with --var"):
        render(load_template(str(path)), CHAT[1:3])
    assert render(load_template(str(path)).with_variables({"bos_token": "<s>"}), CHAT[1:3]).text == "<s>Hi there|Hello!|"


def test_tool_calls_json_text_reaches_the_template_as_objects(tmp_path):
    path = tmp_path / "calls.jinja"
    path.write_text("{% for m in messages %}{{ m.tool_calls[0].function.name if m.tool_calls else m.content }}|{% endfor %}")
    calls = json.dumps([{"type": "function", "function": {"name": "get_weather", "arguments": {}}}])
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "", "tool_calls": calls}]
    assert render(Template("calls", path.read_text(), str(path)), chat[:1]).text == "hi|"
    from sftdata.templates import render_text, template_messages

    assert render_text(load_template(str(path)), template_messages(chat))[0] == "hi|get_weather|"


texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=30)
texts = texts.filter(lambda t: t.strip() == t and t.strip() != "")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(texts, texts), min_size=1, max_size=4), st.sampled_from(["builtin", "dir"]))
def test_spans_always_cover_each_answer_in_order(pairs, kind):
    chat = [m for u, a in pairs for m in ({"role": "user", "content": u}, {"role": "assistant", "content": a})]
    tmpl = load_template("chatml" if kind == "builtin" else str(FIXTURES / "tokenizers/tiny-chatml"))
    out = render(tmpl, chat)
    assert [s["turn"] for s in out.spans] == list(range(1, len(chat), 2))
    previous = 0
    for span in out.spans:
        assert previous <= span["start"] <= span["eot_start"] <= span["end"]
        assert out.text[span["start"] : span["eot_start"]] == chat[span["turn"]]["content"]
        assert out.text[span["eot_start"] : span["end"]].startswith("<|im_end|>")
        previous = span["end"]
