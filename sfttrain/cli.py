"""sfttrain: QLoRA training from packed shards, with plan, merge and generate.

Heavy modules (torch, transformers, peft, bitsandbytes) load inside the commands, so
`sfttrain --help` stays instant. Never imports Polars or Great Expectations.
"""

from __future__ import annotations

import os

# torch's OpenMP (libgomp) keeps waiting threads spinning. On a CPU shared with other work the
# spinning threads of one step starve each other: a SmolLM2 step took 34 s with 2 threads against
# 6.5 s with passive waiting, at load 5 on 2 cores (docs/sfttrain.md). Read when torch loads,
# so it is set here, before any command imports torch; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import click  # noqa: E402

from sftdata.commands._common import handle_errors, progress, say, verdict, warn


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Train (QLoRA by default), plan memory, merge adapters and generate from packed shards."""


def _config_options(f):
    f = click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")(f)
    f = click.option("--config", "config_file", type=click.Path(dir_okay=False),
                     help="TOML or YAML config; KEY=VALUE arguments override it.")(f)
    f = click.option("--quant", type=click.Choice(["auto", "nf4", "none"]), default=None,
                     help="auto (default): NF4 only where the unquantized run does not fit; "
                     "nf4 = QLoRA; none = LoRA on the unquantized base.")(f)
    f = click.option("--full", is_flag=True, default=False,
                     help="Full fine-tuning (implies --quant none).")(f)
    f = click.option("--model", "model_path", required=True,
                     help="Local Hugging Face model directory or .gguf file.")(f)
    f = click.argument("shards", type=click.Path(exists=True, file_okay=False))(f)
    return f


def _build(config_file, overrides, quant, full):
    from .config import build_config

    extra = list(overrides)
    if full:
        extra += ["full=true", "quant=none"]
        if quant == "nf4":
            raise click.UsageError("--full trains every weight; it cannot be combined with --quant nf4.")
    elif quant:
        extra.append(f"quant={quant}")
    return build_config(config_file, extra)


@cli.command()
@_config_options
@click.option("-o", "--out", "out_dir", default="runs/latest", show_default=True,
              help="Run directory: checkpoints, metrics.jsonl, loss.png, adapter/.")
@click.option("--no-resume", is_flag=True, help="Start over even if OUT has checkpoints.")
@handle_errors
def run(shards, model_path, full, quant, config_file, overrides, out_dir, no_resume):
    """Fine-tune on packed shards (LoRA, NF4 if needed); resumes from OUT.

    \b
    Example:
      sftdata pack tokens.parquet -o shards/ && sfttrain run shards/ --model smol.gguf lr=1e-4 max_steps=200 -o runs/a
    """
    config = _build(config_file, overrides, quant, full)
    from sftdata.outputs import Spec, check

    # a file in the way, or a directory that cannot be made: said before the model loads
    check([], [Spec("-o", out_dir, is_dir=True)])
    from .train import run as train_run

    _quiet_transformers()
    train_run(shards, model_path, config, out_dir, resume=not no_resume, say=say, warn=warn,
              progress=progress)


@cli.command()
@_config_options
@click.option("--gpu-mem", default=None, help="GPU memory to fit in, e.g. 24GiB or 80GB.")
@click.option("--act-bytes", type=click.Choice(["2", "4"]), default="2", show_default=True,
              help="Bytes per activation: 2 for bf16/fp16 on a GPU, 4 for fp32 (CPU).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@handle_errors
def plan(shards, model_path, full, quant, config_file, overrides, gpu_mem, act_bytes, as_json):
    """Predict peak training memory and whether the run fits a GPU.

    \b
    Example:
      sfttrain plan shards/ --model llama-8b/ --gpu-mem 24GiB micro_batch=4 && sfttrain run shards/ --model llama-8b/ micro_batch=4
    """
    import json

    from sftdata.shards import ShardReader

    from . import plan as P

    config = _build(config_file, overrides, quant, full)
    budget = P.parse_size(gpu_mem) if gpu_mem else None
    lengths = ShardReader(shards, "train").lengths().tolist()
    # the same refusal `run` gives, before planning memory for data the model cannot read
    from sftdata.shards import read_manifest

    from .model import check_tokenizer, tokenizer_of

    tokenizer = tokenizer_of(model_path)
    if tokenizer is not None:  # a bare config.json plans too (a model not downloaded yet)
        check_tokenizer(read_manifest(shards), tokenizer, shards, model_path)
    result = P.plan_for(P.model_shape(model_path), config, lengths, budget, int(act_bytes))
    from sftdata.errors import CheckFailed

    # the verdict before the plan is printed: `sfttrain plan ... | head` must not turn it into 0
    failure = verdict(CheckFailed("the run does not fit; see the suggestion above")
                      if result.fits is False else None)
    click.echo(json.dumps(result.as_dict(), indent=2) if as_json else P.render(result))
    if failure:
        raise failure


@cli.command("lr-find")
@_config_options
@click.option("--plot", "plot_path", metavar="FILE", default=None,
              help="Write the loss and smoothed loss against lr here as PNG.")
@click.option("--json", "as_json", is_flag=True,
              help="Print every step (lr, loss, smoothed loss) and the suggestion as JSON.")
@handle_errors
def lr_find(shards, model_path, full, quant, config_file, overrides, plot_path, as_json):
    """Learning-rate range test from a fresh adapter; prints a suggested lr (writes no run).

    The lr grows exponentially from lr_find_min to lr_find_max over lr_find_steps optimizer
    steps of the run's effective batch. After each step the same lr_find_probe sequences (val,
    else train) are scored; the test stops when their smoothed loss passes 4x its minimum.
    Suggested lr: the lr of the lowest smoothed probe loss / 10. `run lr=auto` does the same.

    \b
    Example:
      sfttrain lr-find shards/ --model smol.gguf --plot lr.png && sfttrain run shards/ --model smol.gguf lr=auto
    """
    import json

    if plot_path is not None and not plot_path.lower().endswith(".png"):
        raise click.UsageError("--plot writes a PNG; give a file name ending in .png.")
    config = _build(config_file, overrides, quant, full)
    from sftdata.errors import CheckFailed
    from sftdata.outputs import Spec, atomic_path, check

    check([], [Spec("--plot", plot_path)] if plot_path else [])
    from .lr_find import find, plot

    _quiet_transformers()
    result = find(shards, model_path, config, say=say, warn=warn)
    for line in result.lines():
        say(f"sfttrain lr-find: {line}")
    if plot_path:
        with atomic_path(plot_path, "--plot") as tmp:
            plot(result, tmp)
    failure = verdict(CheckFailed("no learning rate to suggest; see the lines above")
                      if result.suggestion is None else None)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    elif result.suggestion is not None:
        click.echo(f"lr={result.suggestion:.3g}")  # stdout: ready for `sfttrain run ... $(...)`
    if failure:
        raise failure


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN...",
                type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for the merged model (one run, or --full) or adapter run.")
@click.option("--method", type=click.Choice(["linear", "ties", "dare_linear", "dare_ties"]),
              default=None, help="How several runs combine (default linear); docs/merging.md.")
@click.option("--weights", default=None, help="One number per run, e.g. 0.5,0.5 (default 1/N each).")
@click.option("--density", type=float, default=None,
              help="ties/dare: share of each run's delta entries kept, in (0, 1] (default 0.5).")
@click.option("--rank", type=int, default=None,
              help="Rank of the merged adapter (default: the runs' ranks summed).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (DARE's drop).")
@click.option("--full", is_flag=True, help="Several runs: write the merged full model, not an adapter.")
@click.option("--dtype", type=click.Choice(["bf16", "fp16", "fp32"]), default=None,
              help="Weight dtype saved [default: bf16 for a model, fp32 for an adapter].")
@handle_errors
def merge(run_dirs, out_dir, method, weights, density, rank, seed, full, dtype):
    """Merge a run's adapter into its base, or several runs' adapters into one.

    \b
    Example:
      sfttrain merge runs/a --out merged/ && sfttrain generate merged/ --records gold.jsonl > preds.jsonl
      sfttrain merge runs/code runs/chat --method ties --weights 0.5,0.5 --out runs/both && sfttrain generate runs/both --records gold.jsonl > preds.jsonl
    """
    if len(run_dirs) == 1:
        given = [name for name, value in (("--method", method), ("--weights", weights),
                 ("--density", density), ("--rank", rank)) if value is not None]
        if given:
            raise click.UsageError(f"{', '.join(given)}: for merging several runs; one run's "
                                   "adapter is merged into its base as it is (pass more runs, "
                                   "or drop the option)")
        from .merge import merge_run

        _quiet_transformers()
        path = merge_run(run_dirs[0], out_dir, dtype or "bf16")
        say(f"sfttrain merge: wrote {path}")
        return
    from .merge_adapters import merge_runs, parse_weights

    _quiet_transformers()
    result = merge_runs(run_dirs, out_dir, method or "linear", parse_weights(weights), density,
                        seed, full, dtype, rank)
    what = "model" if full else f"adapter of rank {result.rank}"
    say(f"sfttrain merge: {result.method} of {len(run_dirs)} runs (weights "
        f"{','.join(f'{w:g}' for w in result.weights)}) -> {what} in {out_dir}")
    if not full and not result.exact:
        say(f"sfttrain merge: the rank-{result.rank} adapter keeps {result.kept_overall:.1%} of "
            f"the merged delta (least in one module: {result.kept_min:.1%}); --full keeps all")


@cli.command()
@click.argument("model_path", metavar="MODEL")
@click.option("--records", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Canonical records, JSONL or Parquet; the last assistant turn is dropped.")
@click.option("-o", "--output", default="-", show_default=True, help="Predictions JSONL.")
@click.option("--template", "template_from", default=None,
              help="Shard dir or run dir whose manifest template to use (default: MODEL's).")
@click.option("--max-new-tokens", type=int, default=128, show_default=True)
@click.option("--temperature", type=float, default=0.0, show_default=True,
              help="0 = greedy decoding.")
@click.option("--top-p", type=float, default=1.0, show_default=True)
@click.option("--top-k", type=int, default=0, show_default=True, help="0 = off.")
@click.option("--repetition-penalty", type=float, default=1.0, show_default=True)
@click.option("--stop", "stops", multiple=True, help="Stop string (repeatable); cut from output.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto")
@handle_errors
def generate(model_path, records, output, template_from, max_new_tokens, temperature, top_p,
             top_k, repetition_penalty, stops, batch_size, seed, device):
    """Generate answers with the training chat template; write predictions JSONL.

    \b
    Example:
      sfttrain generate runs/a --records gold.jsonl --max-new-tokens 64 > preds.jsonl && sftdata gold score gold.jsonl preds.jsonl
    """
    from .generate import Decoding, generate_file

    if temperature < 0:
        raise click.UsageError("--temperature must be >= 0 (0 = greedy).")
    if not 0 < top_p <= 1:
        raise click.UsageError("--top-p must be in (0, 1].")
    if max_new_tokens < 1 or batch_size < 1:
        raise click.UsageError("--max-new-tokens and --batch-size must be at least 1.")
    _quiet_transformers()
    decoding = Decoding(max_new_tokens, temperature, top_p, top_k, repetition_penalty,
                        list(stops), seed)
    count = generate_file(model_path, records, output, decoding, batch_size, template_from, device)
    say(f"sfttrain generate: {count} prediction(s)")


@cli.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--plot", "plot_path", metavar="FILE", default=None,
              help="Where to write the PNG (loss, lr, grad norm, the findings' steps marked); "
              "default RUN/report.png.")
@handle_errors
def report(run_dir, as_json, plot_path):
    """Read a run's curves: healthy, over/underfitting, lr too high/low, noisy; what to change.

    \b
    Example:
      sfttrain run shards/ --model smol.gguf -o runs/a && sfttrain report runs/a --json | jq .verdict
    """
    import json
    import os

    from sftdata.commands._common import check_paths
    from sftdata.outputs import atomic_path

    from .report import report_run
    from .report_plot import plot_report

    plot_path = plot_path or os.path.join(run_dir, "report.png")
    if not plot_path.lower().endswith(".png"):
        raise click.UsageError("--plot writes a PNG; give a file name ending in .png.")
    check_paths([("RUN", os.path.join(run_dir, "metrics.jsonl"))], [("--plot", plot_path)])
    result = report_run(run_dir)
    with atomic_path(plot_path, "--plot") as tmp:
        plot_report(result, tmp)
    click.echo(json.dumps(result.as_dict(), indent=2) if as_json else result.render())
    say(f"sfttrain report: wrote {plot_path}")


def _quiet_transformers() -> None:
    from transformers.utils import logging

    from .model import quiet_warnings

    quiet_warnings()

    logging.disable_progress_bar()
    logging.set_verbosity_error()


if __name__ == "__main__":
    cli()
