"""Fast checks of the core modules' small rules, so mutation testing (scripts/mutation.sh) reaches them in seconds
rather than through a training run: checkpoint completeness (training/checkpoints.py), and the configuration rules
that survived a mutation run of configuration_embgpt.py (defaults against GPT2Config, validation bounds)."""

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from hf_embgpt.training.checkpoints import checkpoint_is_complete, last_complete_checkpoint


def fake_checkpoint(output_dir, step, drop=(), state_step=None):
    """A folder with what Trainer writes at a save, minus the files named in `drop`."""
    folder = os.path.join(output_dir, f"checkpoint-{step}")
    os.makedirs(folder)
    files = {
        "trainer_state.json": lambda p: Path(p).write_text(json.dumps({"global_step": state_step or step})),
        "model.safetensors": lambda p: save_file({"w": torch.zeros(2)}, p),
        "optimizer.pt": lambda p: torch.save({"state": {}}, p),
        "scheduler.pt": lambda p: torch.save({"last_epoch": step}, p),
        "rng_state.pth": lambda p: torch.save({"python": 0}, p),
    }
    for name, write in files.items():
        if name not in drop:
            write(os.path.join(folder, name))
    return folder


def test_a_complete_checkpoint_is_complete(tmp_path):
    assert checkpoint_is_complete(fake_checkpoint(tmp_path, 4))


@pytest.mark.parametrize(
    "drop", ["trainer_state.json", "model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"]
)
def test_a_checkpoint_missing_any_file_is_incomplete(tmp_path, drop):
    assert not checkpoint_is_complete(fake_checkpoint(tmp_path, 4, drop=[drop]))


def test_a_checkpoint_whose_state_names_another_step_is_incomplete(tmp_path):
    assert not checkpoint_is_complete(fake_checkpoint(tmp_path, 4, state_step=3))


@pytest.mark.parametrize("truncated", ["model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json"])
def test_a_truncated_file_makes_a_checkpoint_incomplete(tmp_path, truncated):
    folder = fake_checkpoint(tmp_path, 4)
    path = Path(folder, truncated)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    assert not checkpoint_is_complete(folder)


def test_the_newest_complete_checkpoint_is_chosen_by_number(tmp_path):
    assert last_complete_checkpoint(str(tmp_path / "missing")) is None
    assert last_complete_checkpoint(str(tmp_path)) is None
    fake_checkpoint(tmp_path, 9)
    newest = fake_checkpoint(tmp_path, 10)  # 10 > 9 although "10" < "9" as text
    fake_checkpoint(tmp_path, 11, drop=["optimizer.pt"])  # cut short by a kill
    os.makedirs(tmp_path / "checkpoint-12-extra")  # not a Trainer checkpoint name
    assert last_complete_checkpoint(str(tmp_path)) == newest


# ---- configuration_embgpt.py: the survivors of a mutation run, each pinned to transformers' GPT2Config or a rule


def test_config_defaults_are_gpt2configs():
    from transformers import GPT2Config

    from hf_embgpt import EmbGPTConfig

    ours, gpt2 = EmbGPTConfig(), GPT2Config()
    pairs = {
        "vocab_size": "vocab_size", "block_size": "n_positions", "n_layer": "n_layer", "n_head": "n_head",
        "n_embd": "n_embd", "layer_norm_epsilon": "layer_norm_epsilon", "initializer_range": "initializer_range",
        "use_cache": "use_cache", "bos_token_id": "bos_token_id", "eos_token_id": "eos_token_id",
    }  # fmt: skip
    assert {name: getattr(ours, name) for name in pairs} == {
        name: getattr(gpt2, theirs) for name, theirs in pairs.items()
    }


def test_the_smallest_sizes_are_valid():
    from hf_embgpt import EmbGPTConfig

    config = EmbGPTConfig(vocab_size=1, block_size=1, n_layer=1, n_head=1, n_embd=1, initializer_range=0)
    assert (config.vocab_size, config.block_size, config.n_layer, config.n_head, config.n_embd) == (1, 1, 1, 1, 1)


@pytest.mark.parametrize("value", ["0.02", -0.01, None])
def test_initializer_range_must_be_a_non_negative_number(value):
    from hf_embgpt import EmbGPTConfig

    with pytest.raises(ValueError, match=rf"initializer_range \({value!r}\) must be a non-negative number"):
        EmbGPTConfig(initializer_range=value)


def test_unknown_preset_lists_every_preset():
    from hf_embgpt import PRESETS, EmbGPTConfig

    with pytest.raises(ValueError, match=rf"unknown preset 'gpt5'; choose one of {', '.join(PRESETS)}$"):
        EmbGPTConfig.from_preset("gpt5")
