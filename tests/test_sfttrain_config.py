"""Config validation: every problem listed at once, with suggestions; files and overrides."""

from __future__ import annotations

import pytest

from sfttrain.config import ConfigError, TrainConfig, build_config


def test_defaults_are_lora_with_quant_auto():
    config = build_config()
    assert config == TrainConfig()
    assert config.quant == "auto" and not config.full and config.lora_targets == "all-linear"


def test_overrides_convert_types():
    config = build_config(None, ["lr=1e-4", "micro_batch=4", "rslora=true", "lora_targets=q_proj,v_proj"])
    assert config.lr == 1e-4 and config.micro_batch == 4 and config.rslora is True
    assert config.lora_targets == "q_proj,v_proj"


def test_all_problems_reported_together():
    with pytest.raises(ConfigError) as err:
        build_config(None, ["learning_rate=1", "micro_batch=zero", "lora_dropout=1.5",
                            "scheduler=step", "noequals"])
    problems = err.value.problems
    assert problems == [
        "override 'noequals': write key=value, e.g. lr=1e-4",
        "unknown key 'learning_rate'; did you mean 'lr'?",
        "micro_batch: expected an integer, got 'zero'",
        "scheduler: 'step' is not one of cosine, linear, constant",
        "lora_dropout: 1.5 is out of range (must be >= 0.0 and <= 1.0)",
    ]
    assert err.value.exit_code == 2
    assert str(err.value).startswith("5 config problem(s):\n  - ")


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError) as err:
        build_config(None, ["grad_acum=4"])
    assert err.value.problems == ["unknown key 'grad_acum'; did you mean 'grad_accum'?"]


def test_toml_file_with_sections_and_override(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('lr = 0.001\nscheduler = "linear"\n[lora]\nr = 8\nalpha = 16\n')
    config = build_config(path, ["lora_r=4"])
    assert (config.lr, config.scheduler, config.lora_alpha, config.lora_r) == (0.001, "linear", 16, 4)


def test_yaml_file_bad_types(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: fast\nepochs: 2.5\nfull: true\nquant: nf4\n")
    with pytest.raises(ConfigError) as err:
        build_config(path)
    assert err.value.problems == [
        "lr: expected a number or auto, got 'fast'",
        "epochs: expected an integer, got 2.5",
        "full: full fine-tuning needs quant=none (a 4-bit base cannot be trained)",
    ]


def test_missing_and_wrong_suffix_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        build_config(tmp_path / "nope.toml")
    other = tmp_path / "c.ini"
    other.write_text("x=1")
    with pytest.raises(ConfigError, match="use a .toml, .yaml or .yml config file"):
        build_config(other)
