"""sfttrain merge of several runs: the merged model keeps most of two toy tasks, the adapter loads
in peft, the arithmetic of each method, and the refusals with their exit codes and messages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sfttrain_helpers import encode_chat, load_tokenizer, train, write_shards

from sfttrain.cli import cli
from sfttrain.merge_adapters import combine, factor, load_adapter, merge_runs

WORDS = ["red", "blue", "green", "cat", "dog", "sun", "moon", "tree", "fish", "bird"]


def fixed_task(n: int, seed: int, prefix: str, verb: str, answer: str) -> list[dict]:
    """Prompts '<verb>: <random words>' all answered with one fixed word pattern."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        words = " ".join(WORDS[j] for j in rng.integers(0, 10, size=int(rng.integers(2, 5))))
        records.append({"id": f"{prefix}{i}", "messages": [
            {"role": "user", "content": f"{verb}: {words}"},
            {"role": "assistant", "content": answer}]})
    return records


TASK_A = fixed_task(48, 1, "a", "colour", "red green blue red green blue")
TASK_B = fixed_task(48, 2, "b", "animal", "cat dog fish cat dog fish")


def derived_base(tiny: Path, out: Path, seed: int | None = None) -> Path:
    """The tiny Llama with a 10x output layer (LoRA leaves lm_head alone, and at its 0.02 init
    no logit can rise above ~1.3, so no adapter gets a loss below ~5.6 on any task) and a
    generation EOS that is not the trained <|im_end|> (3), so the merge must add it."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if seed is None:
        model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    else:
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tiny))
    with torch.no_grad():
        model.lm_head.weight.mul_(10.0)
    model.generation_config.eos_token_id = 0
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tiny / name, out / name)
    return out


@pytest.fixture(scope="module")
def runs(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("merge")
    base = derived_base(tiny, root / "base")
    shards_a = write_shards(root / "sa", {"train": TASK_A[:40], "val": TASK_A[40:]})
    shards_b = write_shards(root / "sb", {"train": TASK_B[:40], "val": TASK_B[40:]})
    common = ("micro_batch=4", "lr=0.02", "eval_every=0")
    train(shards_a, base, root / "a", "max_steps=40", *common)
    train(shards_b, base, root / "b", "max_steps=40", *common)
    train(shards_b, base, root / "r4", "max_steps=5", "lora_r=4", "lora_alpha=4", *common)
    train(shards_b, base, root / "qv", "max_steps=5", "lora_targets=q_proj,v_proj", *common)
    return {"root": root, "base": base, "a": root / "a", "b": root / "b", "r4": root / "r4",
            "qv": root / "qv"}


def task_loss(model, records: list[dict]) -> float:
    """Mean loss over the supervised tokens (assistant answer and <|im_end|>)."""
    tokenizer = load_tokenizer()
    total = count = 0.0
    model.eval()
    with torch.no_grad():
        for record in records:
            ids, labels = encode_chat(tokenizer, record["messages"])
            out = model(input_ids=torch.tensor(ids[None], dtype=torch.long),
                        labels=torch.tensor(labels[None], dtype=torch.long))
            n = int((labels[1:] != -100).sum())  # the loss is over shifted labels
            total, count = total + out.loss.item() * n, count + n
    return total / count


def load_full(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def logits(model, ids=(2, 88, 99, 120, 3, 2, 45, 46, 47)):
    model.eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor([list(ids)])).logits


# --------------------------------------------------------------------------- the merged model


def test_merged_model_keeps_most_of_both_tasks(runs, tmp_path):
    """Retained = (base loss - merged loss) / (base loss - own fine-tune's loss), per task.
    Measured (CPU, torch 2.13): base 7.71 / 7.83; A alone 0.09 (9.34 on B), B alone 0.02
    (8.81 on A); linear 0.5,0.5: 0.22 / 1.23 (retained 0.98 / 0.85); ties density 0.5:
    0.34 / 1.58 (0.97 / 0.80)."""
    from sfttrain.merge import load_adapted

    val_a, val_b = TASK_A[40:], TASK_B[40:]
    base = load_full(runs["base"])
    base_a, base_b = task_loss(base, val_a), task_loss(base, val_b)
    own_a = task_loss(load_adapted(runs["a"], for_merge=True)[0], val_a)
    own_b = task_loss(load_adapted(runs["b"], for_merge=True)[0], val_b)
    # each fine-tune alone is no better than the base on the other task: the merge must carry both
    assert task_loss(load_adapted(runs["a"], for_merge=True)[0], val_b) > base_b
    assert task_loss(load_adapted(runs["b"], for_merge=True)[0], val_a) > base_a
    floors = {"linear": 0.8, "ties": 0.7}
    for method, floor in floors.items():
        out = tmp_path / method
        merge_runs([runs["a"], runs["b"]], out, method, [0.5, 0.5],
                   density=None if method == "linear" else 0.5, full=True, dtype="fp32")
        merged = load_full(out)
        loss_a, loss_b = task_loss(merged, val_a), task_loss(merged, val_b)
        kept_a = (base_a - loss_a) / (base_a - own_a)
        kept_b = (base_b - loss_b) / (base_b - own_b)
        assert kept_a > floor and kept_b > floor, (method, loss_a, loss_b, kept_a, kept_b)
        assert loss_a < base_a / 4 and loss_b < base_b / 4
        gen = json.loads((out / "generation_config.json").read_text())
        assert gen["eos_token_id"] == [0, 3]  # the base's, then the trained end-of-turn token
        assert json.loads((out / "merge.json").read_text())["method"] == method


def test_linear_adapter_is_exact_and_loads_in_peft(runs, tmp_path):
    """The linear adapter (factors side by side, rank 8 + 4) computes the --full model exactly,
    with runs of different ranks; plain peft loads it, and its generation config stops at the
    trained end-of-turn token."""
    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import GenerationConfig

    from sfttrain.merge import load_adapted, nf4_round_trip

    result = merge_runs([runs["a"], runs["r4"]], tmp_path / "ad", "linear", [0.7, 0.3])
    assert (result.rank, result.exact, result.ranks) == (12, True, [8, 4])
    merge_runs([runs["a"], runs["r4"]], tmp_path / "full", "linear", [0.7, 0.3], full=True,
               dtype="fp32")
    want = logits(load_full(tmp_path / "full"))
    adapted, info = load_adapted(tmp_path / "ad", for_merge=True)  # as `sfttrain merge ad` does
    torch.testing.assert_close(logits(adapted), want, rtol=1e-4, atol=1e-4)
    assert info["merge"]["runs"] == [str(runs["a"]), str(runs["r4"])]
    # plain peft on the NF4-rounded base (the runs are QLoRA runs)
    base = load_full(runs["base"])
    nf4_round_trip(base)
    plain = PeftModel.from_pretrained(base, tmp_path / "ad" / "adapter")
    torch.testing.assert_close(logits(plain), want, rtol=1e-4, atol=1e-4)
    auto = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "ad" / "adapter")
    assert (logits(auto) - logits(load_full(runs["base"]))).abs().max() > 1e-2
    gen = GenerationConfig.from_pretrained(tmp_path / "ad" / "adapter")
    assert gen.eos_token_id == [0, 3]


def test_deltas_are_what_peft_merges(runs):
    """Adapter.delta (scaling * B @ A) equals peft's own merge: merged weight - base weight."""
    from peft import PeftModel

    base = load_full(runs["base"])
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    merged = PeftModel.from_pretrained(base, runs["a"] / "adapter").merge_and_unload()
    weights = dict(merged.named_parameters())
    adapter = load_adapter(runs["a"])
    assert len(adapter.modules) == 14
    for module in adapter.modules:
        name = f"{module}.weight"
        torch.testing.assert_close(adapter.delta(module), weights[name] - before[name],
                                   rtol=1e-4, atol=1e-6)


def test_ties_adapter_is_an_svd_of_the_merged_delta(runs, tmp_path):
    result = merge_runs([runs["a"], runs["b"]], tmp_path / "t", "ties", [0.5, 0.5], density=0.5)
    assert result.rank == 16 and not result.exact
    assert 0.5 < result.kept_min <= result.kept_overall < 1.0  # measured 0.886 / 0.911
    run = json.loads((tmp_path / "t" / "run.json").read_text())
    assert run["config"]["lora_r"] == 16 and run["merge"]["density"] == 0.5


def test_dare_is_seeded(runs, tmp_path):
    def merged(seed, name):
        merge_runs([runs["a"], runs["b"]], tmp_path / name, "dare_ties", density=0.3, seed=seed)
        return (tmp_path / name / "adapter" / "adapter_model.safetensors").read_bytes()

    assert merged(1, "s1") == merged(1, "s1b") != merged(2, "s2")


# --------------------------------------------------------------------------- the arithmetic


def test_combine_linear_and_ties_by_hand():
    one = torch.tensor([3.0, -1.0, 2.0, 0.1])
    two = torch.tensor([1.0, 2.0, -4.0, 0.2])
    torch.testing.assert_close(combine([one, two], [0.5, 2.0], "linear", 1.0),
                               torch.tensor([3.5, 3.5, -7.0, 0.45]))
    # sign per entry from the weighted sum; the agreeing entries averaged, weighted
    torch.testing.assert_close(combine([one, two], [1.0, 1.0], "ties", 1.0),
                               torch.tensor([2.0, 2.0, -4.0, 0.15]))
    torch.testing.assert_close(combine([one, two], [3.0, 1.0], "ties", 1.0),
                               torch.tensor([2.5, -1.0, 2.0, 0.125]))
    # trim to the top half by magnitude first: [3, 0, 2, 0] and [0, 2, -4, 0]
    torch.testing.assert_close(combine([one, two], [1.0, 1.0], "ties", 0.5),
                               torch.tensor([3.0, 2.0, -4.0, 0.0]))


def test_dare_keeps_the_expected_delta_and_drops_the_rest():
    ones = torch.ones(200, 500)
    out = combine([ones, 2 * ones], [0.5, 0.5], "dare_linear", 0.25,
                  torch.Generator().manual_seed(0))
    # each entry is 0, 2, 4 or 6 (0.5/0.25 per survivor of run one, 1/0.25 of run two)
    assert set(out.unique().tolist()) == {0.0, 2.0, 4.0, 6.0}
    assert abs(out.mean().item() - 1.5) < 0.02  # E = 0.5 * 1 + 0.5 * 2
    assert abs((out == 0).float().mean().item() - 0.75**2) < 0.01


def test_factor_is_exact_for_a_low_rank_delta_and_reports_what_truncation_keeps():
    gen = torch.Generator().manual_seed(0)
    low = torch.randn(30, 3, generator=gen) @ torch.randn(3, 20, generator=gen)
    b, a, kept = factor(low, 5)
    assert b.shape == (30, 5) and a.shape == (5, 20) and kept == pytest.approx(1.0)
    torch.testing.assert_close(b @ a, low, rtol=1e-4, atol=1e-4)
    full = torch.randn(30, 20, generator=gen)
    b, a, kept = factor(full, 4)
    lost = (full - b @ a).pow(2).sum() / full.pow(2).sum()
    assert kept == pytest.approx(1 - lost.item(), abs=1e-4) and 0 < kept < 1


# --------------------------------------------------------------------------- the CLI


def sfttrain(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_cli_merges_then_generate_and_merge_take_the_result(runs, tmp_path):
    out = tmp_path / "both"
    result = sfttrain("merge", runs["a"], runs["b"], "--method", "ties", "--weights", "0.5,0.5",
                      "--out", out)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == (
        f"sfttrain merge: ties of 2 runs (weights 0.5,0.5) -> adapter of rank 16 in {out}")
    assert result.output.splitlines()[1].startswith(
        "sfttrain merge: the rank-16 adapter keeps ")
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "run.json", "tokenizer"]
    records = tmp_path / "gold.jsonl"
    records.write_text("".join(json.dumps(r) + "\n" for r in TASK_A[40:43] + TASK_B[40:43]))
    preds = tmp_path / "preds.jsonl"
    result = sfttrain("generate", out, "--records", records, "--max-new-tokens", "8",
                      "--device", "cpu", "-o", preds)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a40", "a41", "a42", "b40", "b41", "b42"]
    result = sfttrain("merge", out, "--out", tmp_path / "full")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "full" / "model.safetensors").is_file()


def edited_copy(run: Path, to: Path, **changes) -> Path:
    """A copy of a run whose run.json has `changes` (dotted keys: 'tokenizer.vocab_hash')."""
    shutil.copytree(run, to)
    info = json.loads((to / "run.json").read_text())
    for key, value in changes.items():
        *parents, leaf = key.split("__")
        node = info
        for p in parents:
            node = node[p]
        node[leaf] = value
    (to / "run.json").write_text(json.dumps(info))
    return to


def test_refuses_another_base_but_not_a_copy_of_the_same(runs, tiny, tmp_path):
    other = derived_base(tiny, tmp_path / "other", seed=7)
    moved = edited_copy(runs["b"], tmp_path / "b2", model=str(other), model_dir=str(other))
    result = sfttrain("merge", runs["a"], moved, "--out", tmp_path / "m")
    assert result.exit_code == 1
    assert result.output == (
        f"Error: cannot merge: base model (run.json model) differs: {runs['a']}: "
        f"{runs['base']}; {moved}: {other}. Fix: fine-tune every run from the same --model: "
        "each adapter is a change to its own base\n")
    assert not (tmp_path / "m").exists()
    copy = shutil.copytree(runs["base"], tmp_path / "copy")
    moved = edited_copy(runs["b"], tmp_path / "b3", model=str(copy), model_dir=str(copy))
    result = sfttrain("merge", runs["a"], moved, "--out", tmp_path / "m")
    assert result.exit_code == 0, result.output


def test_refuses_another_tokenizer_template_and_quant_naming_each(runs, tmp_path):
    info = json.loads((runs["a"] / "run.json").read_text())
    vocab, template = info["tokenizer"]["vocab_hash"], info["template"]["hash"]
    tok = edited_copy(runs["b"], tmp_path / "tok", tokenizer__vocab_hash="0123456789abcdef")
    result = sfttrain("merge", runs["a"], tok, "--out", tmp_path / "m")
    assert result.exit_code == 1
    assert result.output == (
        f"Error: cannot merge: tokenizer (run.json tokenizer.vocab_hash) differs: {runs['a']}: "
        f"{vocab[:12]}; {tok}: 0123456789ab. Fix: tokenize every run's data with the same "
        "tokenizer: the same id means another piece of text otherwise\n")
    tpl = edited_copy(runs["b"], tmp_path / "tpl", template__name="llama3",
                      template__hash="feedfacefeedface")
    result = sfttrain("merge", runs["a"], runs["b"], tpl, "--out", tmp_path / "m")
    assert result.exit_code == 1
    assert result.output == (
        f"Error: cannot merge: chat template (run.json template.hash) differs: {runs['a']}, "
        f"{runs['b']}: chatml {template[:12]}; {tpl}: llama3 feedfacefeed. Fix: render every "
        "run's data with the same template: the merged model would learn two formats\n")
    every = edited_copy(tok, tmp_path / "every", template__hash="feedfacefeedface",
                        eos_id=4, config__quant="none")
    result = sfttrain("merge", runs["a"], every, "--out", tmp_path / "m")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == "Error: cannot merge: the runs differ in 4 ways:"
    assert [line.split(" (")[0].strip() for line in lines[1:]] == [
        "tokenizer", "chat template", "end-of-turn token", "quantization"]
    assert lines[4] == (
        f"  quantization (run.json config.quant) differs: {runs['a']}: nf4; {every}: none. Fix: "
        "train every run with the same --quant: a QLoRA adapter learned against NF4-rounded "
        "weights, a LoRA adapter against the original ones")


def test_refuses_other_targets_and_full_fine_tunes(runs, tmp_path):
    result = sfttrain("merge", runs["a"], runs["qv"], "--out", tmp_path / "m")
    assert result.exit_code == 1
    assert result.output == (
        "Error: cannot merge: LoRA target modules (adapter/adapter_config.json target_modules) "
        f"differs: {runs['a']}: 14 modules (down_proj,gate_proj,k_proj,o_proj,q_proj,up_proj,"
        f"v_proj); {runs['qv']}: 4 modules (q_proj,v_proj). Fix: train every run with the same "
        "lora_targets\n")
    full = edited_copy(runs["b"], tmp_path / "full", config__full=True)
    result = sfttrain("merge", runs["a"], full, "--out", tmp_path / "m")
    assert result.exit_code == 1
    assert result.output == (f"Error: {full}: a full fine-tune, not an adapter. Fix: merge LoRA "
                             "runs (`sfttrain run` without --full)\n")


@pytest.mark.parametrize(("extra", "message"), [
    (["--weights", "0.5"], "--weights has 1 number(s) for 2 runs; give one per run, in the order "
     "of the runs, e.g. --weights 0.5,0.5"),
    (["--weights", "0.5,x"], "--weights: 'x' is not a number; give one number per run, "
     "comma-separated, e.g. --weights 0.5,0.5"),
    (["--method", "ties", "--density", "0"], "--density must be in (0, 1], got 0: the fraction "
     "of each run's delta entries kept, e.g. 0.5"),
    (["--density", "0.5"], "--density applies to ties, dare_linear and dare_ties; linear keeps "
     "every entry (drop --density or choose one of those methods)"),
    (["--method", "ties", "--weights", "1,-1"], "--weights must be > 0 for ties: it averages the "
     "entries that agree in sign, weighted; use linear for negative (subtracted) task vectors"),
    (["--rank", "4", "--full"], "--rank sets the merged adapter's rank; --full adds the merged "
     "deltas to the base exactly (drop one of them)"),
])
def test_usage_errors_exit_2(runs, tmp_path, extra, message):
    result = sfttrain("merge", runs["a"], runs["b"], "--out", tmp_path / "m", *extra)
    assert result.exit_code == 2
    assert result.output == f"Error: {message}\n"


def test_usage_errors_of_runs_and_out(runs, tmp_path):
    result = sfttrain("merge", runs["a"], runs["a"], "--out", tmp_path / "m")
    assert result.exit_code == 2
    assert result.output == (f"Error: RUN {runs['a']} is given twice (as {runs['a']} before); "
                             "give each run once and weigh it with --weights\n")
    result = sfttrain("merge", runs["a"], runs["b"], "--out", runs["b"] / "merged")
    assert result.exit_code == 2
    assert result.output == (f"Error: --out {runs['b'] / 'merged'} is inside the run directory: "
                             "the merged model's files would mix with the run's; give --out a "
                             "directory of its own, e.g. merged/\n")
    result = sfttrain("merge", runs["a"], "--method", "ties", "--out", tmp_path / "m")
    assert result.exit_code == 2
    assert result.output.endswith(
        "Error: --method: for merging several runs; one run's adapter is merged into its base as "
        "it is (pass more runs, or drop the option)\n")
