"""Rendering through the prepared compiled template gives what transformers' own
render_jinja_template gives: text, generation blocks and refusals (sftdata.templates)."""

from __future__ import annotations

import json

import pytest
from conftest import FIXTURES

from sftdata import templates
from sftdata.templates import (
    BUILTINS,
    Template,
    TemplateError,
    load_template,
    render,
    render_text,
    template_messages,
)

CHATS = [
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4", "reasoning_content": "two and two"},
        {"role": "user", "content": "and 3+3?"},
        {"role": "assistant", "content": "6", "thinking": "three and three"},
    ],
    [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "", "tool_calls": json.dumps(
            [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}])},
        {"role": "tool", "content": "sunny"},
        {"role": "assistant", "content": "It is sunny.", "reasoning": "the tool said so"},
    ],
]
# Uses what transformers adds to the environment (namespace, dict, tojson, raise_exception,
# loop controls), the reasoning field it aliases, variables, and {% generation %} blocks.
RICH = (
    "{{ bos_token }}{% set ns = namespace(n=0) %}"
    "{% for m in messages %}{% set ns.n = ns.n + 1 %}"
    "{% if m.role == 'tool' and m.content == 'boom' %}{{ raise_exception('no boom') }}{% endif %}"
    "<{{ m.role }}>{% if m.tool_calls %}{{ m.tool_calls | tojson }}{% endif %}"
    "{% if m.role == 'assistant' %}{% generation %}"
    "{% if m.reasoning_content %}[{{ m.reasoning_content }}|{{ m.thinking }}]{% endif %}"
    "{{ m.content }}{{ eos_token }}{% endgeneration %}"
    "{% else %}{{ m.content }}{% endif %}{% if ns.n > 9 %}{% break %}{% endif %}{% endfor %}"
    "{{ dict(turns=ns.n) | tojson }}{% if add_generation_prompt %}<assistant>{% endif %}"
)
VARIABLES = {"bos_token": "<s>", "eos_token": "</s>"}


def _templates() -> list[Template]:
    found = [load_template(name) for name in BUILTINS]
    found.append(load_template(str(FIXTURES / "tokenizers/tiny-chatml")))
    found.append(Template("rich", RICH, "rich", dict(VARIABLES)))
    return found


def _transformers(template: Template, messages, generation_prompt: bool, blocks: bool):
    from transformers.utils.chat_template_utils import render_jinja_template

    try:
        texts, indices = render_jinja_template(
            conversations=[messages], chat_template=template.text,
            add_generation_prompt=generation_prompt, return_assistant_tokens_mask=blocks,
            **template.variables,
        )
    except Exception as exc:  # noqa: BLE001 - any refusal: ours must refuse too
        return type(exc).__name__
    return texts[0], (list(indices[0]) if blocks else [])


def _ours(template: Template, messages, generation_prompt: bool, blocks: bool):
    try:
        text, indices = render_text(template, messages, add_generation_prompt=generation_prompt,
                                    with_generation=blocks)
    except TemplateError:
        return None
    return text, list(indices)


@pytest.mark.parametrize("template", _templates(), ids=lambda t: t.name)
@pytest.mark.parametrize("generation_prompt", [False, True])
@pytest.mark.parametrize("blocks", [False, True])
def test_same_text_blocks_and_refusals_as_transformers(template, generation_prompt, blocks):
    for chat in CHATS:
        messages = template_messages(chat)
        expected = _transformers(template, messages, generation_prompt, blocks)
        got = _ours(template, messages, generation_prompt, blocks)
        if isinstance(expected, str):
            assert got is None, (template.name, expected)
        else:
            assert got == expected


def test_reasoning_fields_reach_the_template_as_transformers_aliases_them():
    tmpl = Template("rich", RICH, "rich", dict(VARIABLES))
    out = render(tmpl, CHATS[1])
    assert "[two and two|two and two]4</s>" in out.text
    assert "[three and three|three and three]6</s>" in out.text
    assert "reasoning_content" not in CHATS[1][4]  # the caller's messages are not changed


def test_refusal_and_raise_exception_still_name_the_template():
    tmpl = Template("rich", RICH, "rich", dict(VARIABLES))
    chat = [{"role": "user", "content": "x"}, {"role": "tool", "content": "boom"},
            {"role": "assistant", "content": "y"}]
    with pytest.raises(TemplateError, match="template 'rich' refused the conversation: no boom"):
        render(tmpl, chat)


def test_a_list_variable_renders_like_any_other():
    tmpl = Template("rich", RICH, "rich", {**VARIABLES, "additional_special_tokens": ["<a>", "<b>"]})
    expected = _transformers(tmpl, template_messages(CHATS[0]), False, True)
    assert _ours(tmpl, template_messages(CHATS[0]), False, True) == expected


def test_a_variable_named_like_a_call_argument_is_refused_as_transformers_refuses_it():
    tmpl = Template("rich", RICH, "rich", {**VARIABLES, "messages": "x"})
    assert _transformers(tmpl, template_messages(CHATS[0]), False, False) == "TypeError"
    for _ in range(2):  # every time, not only on the first call
        with pytest.raises(TemplateError, match="failed on the conversation: TypeError"):
            render(tmpl, CHATS[0])


def test_rows_share_no_state():
    tmpl = Template("rich", RICH, "rich", dict(VARIABLES))
    first = [render(tmpl, chat).text for chat in CHATS]
    again = [render(tmpl, chat).text for chat in reversed(CHATS)][::-1]
    assert first == again
    assert [text[text.rindex("{"):] for text in first] == [f'{{"turns": {len(c)}}}' for c in CHATS]


def test_falls_back_to_transformers_when_its_internals_move(monkeypatch):
    from transformers.utils import chat_template_utils as ctu

    tmpl = Template("rich", RICH, "rich", dict(VARIABLES))
    direct = [render(tmpl, chat) for chat in CHATS]
    monkeypatch.delattr(ctu, "_REASONING_FIELDS")
    assert templates._renderer.__wrapped__(tmpl.text, tuple(tmpl.variables.items())) is None
    monkeypatch.undo()
    monkeypatch.setattr(templates, "_renderer", lambda text, variables: None)
    assert [render(tmpl, chat) for chat in CHATS] == direct


def test_a_template_that_does_not_compile_refuses_every_row_with_its_reason():
    from sftdata.ops.render_template import render_template
    from sftdata.schema import from_dicts

    df = from_dicts([{"messages": chat} for chat in CHATS[:2]])
    result = render_template(df, Template("broken", "{% if %}", "broken"), keep_going=True)
    assert result.records.height == 0 and result.rejects.height == 2
    assert all(r.startswith("template 'broken' refused the conversation:")
               for r in result.rejects["reason"].to_list())
    with pytest.raises(TemplateError, match="refused the conversation"):
        render(Template("broken", "{% if %}", "broken"), CHATS[0])
