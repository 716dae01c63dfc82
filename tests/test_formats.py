"""Format adapters: one source row in, canonical record dicts out (library layer, no I/O)."""

from __future__ import annotations

import json

import polars as pl
import pytest

from sftdata.formats import FORMATS, Options, RowProblem, alpaca, conll, detect, oasst, openai
from sftdata.schema import content_id

OPTS = Options(source="unit")


def roles(record):
    return [m["role"] for m in record["messages"]]


def contents(record):
    return [m["content"] for m in record["messages"]]


# ------------------------------------------------------------------ detection


@pytest.mark.parametrize(
    ("row", "fmt"),
    [
        ({"instruction": "a", "input": "", "output": "b"}, "alpaca"),
        ({"id": "s", "instruction": "a", "instances": [{"input": "", "output": "b"}]}, "alpaca"),
        ({"conversations": [{"from": "human", "value": "a"}]}, "sharegpt"),
        ({"messages": [{"role": "user", "content": "a"}]}, "openai"),
        ({"id": "x", "messages": [], "source": "s"}, "canonical"),
        ({"input": [{"role": "user", "content": "a"}], "ideal": "b"}, "openai"),
        ({"prompt": "a", "completion": "b"}, "prompt-completion"),
        ({"prompt": "a", "chosen": "b", "rejected": "c"}, "prompt-completion"),
        ({"text": "a"}, "text"),
        ({"text": "a", "label": "pos"}, "classification"),
        ({"title": "a", "description": "b", "label": "World"}, "classification"),
        ({"message_tree_id": "t", "prompt": {"message_id": "m", "replies": []}}, "oasst"),
        ({"message_id": "m", "parent_id": None, "text": "a", "role": "prompter"}, "oasst"),
        ({"tokens": ["a"], "tags": ["O"]}, "conll"),
        ("a bare prompt", "prompts"),
        ({"input_ids": [1, 2], "labels": [1, 2]}, None),
        (42, None),
    ],
)
def test_detect_by_keys(row, fmt):
    assert detect(row) == fmt


def test_every_format_has_an_adapter_interface():
    for name, module in FORMATS.items():
        assert callable(module.matches) and callable(module.to_records), name


# ------------------------------------------------------------------ alpaca


def test_alpaca_joins_instruction_and_input_and_keeps_extras_in_meta():
    (rec,) = alpaca.to_records(
        {"instruction": "Translate.", "input": "Good morning", "output": "Bonjour", "cat": "x"}, OPTS
    )
    assert contents(rec) == ["Translate.\n\nGood morning", "Bonjour"]
    assert roles(rec) == ["user", "assistant"]
    assert rec["id"] == content_id(rec["messages"])
    assert rec["source"] == "unit"
    assert json.loads(rec["meta"]) == {"cat": "x"}


def test_alpaca_system_and_history_become_earlier_turns():
    row = {"instruction": "And German?", "input": "", "output": "Guten Morgen",
           "system": "You translate.", "history": [["French: Good morning", "Bonjour"]]}
    (rec,) = alpaca.to_records(row, OPTS)
    assert roles(rec) == ["system", "user", "assistant", "user", "assistant"]
    assert contents(rec)[1:3] == ["French: Good morning", "Bonjour"]
    assert rec["meta"] is None


def test_alpaca_seed_task_gives_one_record_per_instance():
    row = {"id": "seed_task_1", "name": "add", "instruction": "Add.", "is_classification": False,
           "instances": [{"input": "2, 3", "output": "5"}, {"input": "4, 4", "output": "8"}]}
    recs = alpaca.to_records(row, OPTS)
    assert [r["id"] for r in recs] == ["seed_task_1-0", "seed_task_1-1"]
    assert {r["group"] for r in recs} == {"seed_task_1"}
    assert json.loads(recs[0]["meta"]) == {"name": "add", "is_classification": False}


def test_alpaca_seed_classification_task_keeps_the_label():
    row = {"id": "s", "instruction": "Sentiment?", "is_classification": True,
           "instances": [{"input": "Great!", "output": "positive"}]}
    (rec,) = alpaca.to_records(row, OPTS)
    assert (rec["id"], rec["task"], rec["label"]) == ("s", "classification", "positive")


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ({"instruction": "a", "input": ""}, "output", "missing (alpaca rows need it)"),
        ({"instruction": "a", "output": "  "}, "output", "empty assistant turn"),
        ({"instruction": ["x"], "output": "b"}, "instruction", "must be a string, got list"),
        ({"instruction": "a", "output": "b", "history": [["q"]]}, "history[0]",
         "must be a [user, assistant] pair"),
    ],
)
def test_alpaca_bad_rows_name_the_field(row, field, message):
    with pytest.raises(RowProblem) as err:
        alpaca.to_records(row, OPTS)
    assert (err.value.field, err.value.message) == (field, message)


# ------------------------------------------------------------------ sharegpt


def test_sharegpt_function_call_and_observation_become_tool_turns():
    row = {"conversations": [
        {"from": "human", "value": "2 + 3?"},
        {"from": "function_call", "value": '{"name": "add", "arguments": {"a": 2, "b": 3}}'},
        {"from": "observation", "value": '{"result": 5}'},
        {"from": "gpt", "value": "5"},
    ], "tools": '[{"name": "add"}]'}
    (rec,) = FORMATS["sharegpt"].to_records(row, OPTS)
    assert roles(rec) == ["user", "assistant", "tool", "assistant"]
    calls = json.loads(rec["messages"][1]["tool_calls"])
    assert calls == [{"type": "function",
                      "function": {"name": "add", "arguments": '{"a":2,"b":3}'}}]
    assert json.loads(rec["meta"]) == {"tools": [{"name": "add"}]}


def test_sharegpt_preference_row_trains_on_chosen_and_keeps_rejected():
    row = {"conversations": [{"from": "human", "value": "Hi"}],
           "chosen": {"from": "gpt", "value": "Hello!"}, "rejected": {"from": "gpt", "value": "Go."}}
    (rec,) = FORMATS["sharegpt"].to_records(row, OPTS)
    assert contents(rec) == ["Hi", "Hello!"]
    assert json.loads(rec["meta"]) == {"rejected": {"from": "gpt", "value": "Go."}}


def test_sharegpt_unknown_role_and_custom_role_map():
    row = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "robot", "value": "Beep"}]}
    with pytest.raises(RowProblem) as err:
        FORMATS["sharegpt"].to_records(row, OPTS)
    assert err.value.field == "conversations[1].from"
    assert err.value.message == "unknown role 'robot'"
    (rec,) = FORMATS["sharegpt"].to_records(row, Options(roles={"robot": "assistant"}))
    assert roles(rec) == ["user", "assistant"]


# ------------------------------------------------------------------ openai


def test_openai_weight_tool_calls_and_unknown_message_fields():
    row = {"messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "name": "w", "content": "sunny"},
        {"role": "assistant", "content": "Sunny.", "weight": 0, "mood": "calm"},
    ]}
    (rec,) = openai.to_records(row, OPTS)
    m = rec["messages"]
    assert m[1]["content"] == "" and json.loads(m[1]["tool_calls"])[0]["id"] == "c1"
    assert (m[2]["tool_call_id"], m[2]["name"]) == ("c1", "w")
    assert (m[3]["weight"], m[3]["train"]) == (0.0, False)
    assert json.loads(rec["meta"]) == {"message_fields": {"3": {"mood": "calm"}}}


def test_openai_typed_parts_reasoning_and_tool_call_parts():
    row = {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "6 x 7?"}]},
        {"role": "assistant", "loss_weight": 1.0, "content": [
            {"type": "reasoning", "value": "six sevens"},
            {"type": "tool_call", "value": '{"name": "mul", "arguments": {"a": 6}}'},
            {"type": "text", "value": "42"}]},
    ]}
    (rec,) = openai.to_records(row, OPTS)
    assert contents(rec) == ["6 x 7?", "<think>\nsix sevens\n</think>\n\n42"]
    assert json.loads(rec["messages"][1]["tool_calls"])[0]["function"]["name"] == "mul"
    assert rec["messages"][1]["train"] is True


def test_openai_image_parts_are_refused():
    row = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]}
    with pytest.raises(RowProblem) as err:
        openai.to_records(row, OPTS)
    assert err.value.field == "messages[0].content[0].type"


def test_openai_evals_sample_gets_the_ideal_answer():
    row = {"input": [{"role": "user", "content": "Y or N?"}], "ideal": ["Y", "Yes"]}
    (rec,) = openai.to_records(row, OPTS)
    assert contents(rec) == ["Y or N?", "Y"] and rec["task"] == "qa"
    assert json.loads(rec["meta"]) == {"ideal": ["Y", "Yes"]}


def test_canonical_record_passes_through_unchanged():
    row = {"id": "r1", "messages": [{"role": "user", "content": "a"},
                                    {"role": "assistant", "content": "b"}],
           "source": "orig", "task": "qa", "label": "L", "group": "g", "split": "train",
           "meta": '{"k":1}'}
    (rec,) = openai.to_records(row, OPTS)
    assert {k: rec[k] for k in row if k != "messages"} == {k: v for k, v in row.items()
                                                          if k != "messages"}


def test_kto_boolean_label_becomes_text():
    row = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
           "label": False}
    assert openai.to_records(row, OPTS)[0]["label"] == "false"


# ------------------------------------------------------------------ oasst


def _tree():
    return {"message_tree_id": "t1", "prompt": {
        "message_id": "m1", "text": "Q", "role": "prompter", "replies": [
            {"message_id": "m2", "text": "A2", "role": "assistant", "rank": 1, "replies": [
                {"message_id": "m4", "text": "Q2", "role": "prompter", "replies": [
                    {"message_id": "m5", "text": "A5", "role": "assistant", "replies": []}]}]},
            {"message_id": "m3", "text": "A3", "role": "assistant", "rank": 0, "replies": [
                {"message_id": "m6", "text": "thanks", "role": "prompter", "replies": []}]},
            {"message_id": "m7", "text": "spam", "role": "assistant", "deleted": True},
        ]}}


def test_oasst_every_path_is_a_conversation_sharing_the_tree_group():
    recs = oasst.to_records(_tree(), OPTS)
    assert [r["id"] for r in recs] == ["m5", "m3"]  # m6 (trailing prompter) cut, m7 deleted
    assert contents(recs[0]) == ["Q", "A2", "Q2", "A5"]
    assert {r["group"] for r in recs} == {"t1"}
    assert json.loads(recs[1]["meta"])["message_ids"] == ["m1", "m3"]


def test_oasst_best_follows_rank_zero():
    (rec,) = oasst.to_records(_tree(), Options(oasst_best=True))
    assert rec["id"] == "m3" and contents(rec) == ["Q", "A3"]


def test_oasst_flat_table_is_rebuilt_into_trees():
    rows = [
        {"message_id": "a", "parent_id": None, "text": "Q", "role": "prompter"},
        {"message_id": "b", "parent_id": "a", "text": "A", "role": "assistant"},
        {"message_id": "c", "parent_id": "a", "text": "B", "role": "assistant"},
        {"message_id": "z", "parent_id": "missing", "text": "?", "role": "prompter"},
    ]
    assert oasst.orphans(rows) == [3]
    recs = oasst.flat_to_records(rows[:3], OPTS)
    assert [r["id"] for r in recs] == ["b", "c"] and {r["group"] for r in recs} == {"a"}


# ------------------------------------------------------------------ tables, text, conll


def test_classification_template_names_columns():
    row = {"title": "Stocks rally", "description": "Markets up.", "label": "Business"}
    (rec,) = FORMATS["classification"].to_records(row, OPTS)
    assert contents(rec) == [
        "Classify the following text.\n\nTitle: Stocks rally\nDescription: Markets up.", "Business"]
    assert (rec["task"], rec["label"]) == ("classification", "Business")
    opts = Options(template="Topic of: {title}?")
    (rec,) = FORMATS["classification"].to_records(row, opts)
    assert contents(rec)[0] == "Topic of: Stocks rally?"
    assert json.loads(rec["meta"]) == {"description": "Markets up."}


def test_classification_template_with_unknown_column():
    with pytest.raises(RowProblem) as err:
        FORMATS["classification"].to_records({"text": "a", "label": "b"}, Options(template="{body}"))
    assert err.value.field == "body"


def test_text_record_is_one_assistant_turn():
    (rec,) = FORMATS["text"].to_records({"text": "Once upon a time.", "url": "u"}, OPTS)
    assert roles(rec) == ["assistant"] and rec["task"] == "text"
    assert json.loads(rec["meta"]) == {"url": "u"}


def test_prompt_completion_and_bare_prompts():
    (rec,) = FORMATS["prompt-completion"].to_records({"prompt": "2+2=", "completion": "4"}, OPTS)
    assert roles(rec) == ["user", "assistant"] and rec["task"] == "completion"
    (rec,) = FORMATS["prompts"].to_records("Tell me a joke.", OPTS)
    assert roles(rec) == ["user"]


def test_conll_entities_from_iob1_and_bio_tags():
    tokens = ["EU", "rejects", "German", "call", "Peter", "Blackburn", "New", "York", "Paris"]
    tags = ["I-ORG", "O", "B-MISC", "O", "I-PER", "I-PER", "B-LOC", "I-LOC", "B-LOC"]
    assert conll.entities(tokens, tags) == [
        ("ORG", "EU"), ("MISC", "German"), ("PER", "Peter Blackburn"), ("LOC", "New York"),
        ("LOC", "Paris")]
    (rec,) = conll.to_records({"tokens": tokens[:2], "tags": tags[:2], "doc": 3}, OPTS)
    assert contents(rec)[1] == "ORG: EU" and rec["label"] == "I-ORG O"
    assert (rec["task"], rec["group"]) == ("extraction", "unit#doc-3")
    (rec,) = conll.to_records({"tokens": ["hi"], "tags": ["O"]}, OPTS)
    assert contents(rec)[1] == "none"


# ------------------------------------------------------------------ fast paths


FAST_FRAMES = {
    "alpaca": pl.DataFrame({
        "instruction": ["Say hi", "Add", "Ünïcode \"quotes\"\n\ttab"],
        "input": ["", "1+1", "\u2028 \\ back"],
        "output": ["hi", "2", "ok é"],
        "extra": ["a", "b", "c"],
    }),
    "text": pl.DataFrame({"text": ["one", "two \"x\""], "id": [None, "given"]}),
    "openai": pl.DataFrame({"messages": [
        [{"role": "user", "content": "a", "weight": None},
         {"role": "assistant", "content": "b", "weight": 1.0}],
        [{"role": "system", "content": "s", "weight": None}, {"role": "user", "content": "q",
         "weight": 0.0}, {"role": "assistant", "content": "r", "weight": None}],
    ]}),
}


@pytest.mark.parametrize("fmt", sorted(FAST_FRAMES))
def test_fast_path_equals_row_path(fmt):
    frame = FAST_FRAMES[fmt]
    module = FORMATS[fmt]
    fast = module.fast(frame, OPTS)
    assert fast is not None
    rows = [r for row in frame.iter_rows(named=True) for r in module.to_records(row, OPTS)]
    slow = pl.DataFrame(rows, schema=fast.schema)
    assert fast.to_dicts() == slow.to_dicts()


def test_fast_path_declines_rows_the_row_path_must_report():
    frame = pl.DataFrame({"instruction": ["a"], "input": [""], "output": [" "]})
    assert alpaca.fast(frame, OPTS) is None
