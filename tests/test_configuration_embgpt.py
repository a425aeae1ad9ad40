"""EmbGPTConfig: presets, standard attribute names, validation whose errors name the value."""

import pytest

from hf_embgpt import PRESETS, EmbGPTConfig


def test_defaults_are_gpt2_small():
    config = EmbGPTConfig()
    assert (config.vocab_size, config.block_size, config.n_layer, config.n_head, config.n_embd) == (
        50257, 1024, 12, 12, 768,
    )  # fmt: skip
    assert config.activation_function == "gelu_new" and config.layer_norm_epsilon == 1e-5 and config.bias


def test_attribute_map_exposes_the_standard_names():
    config = EmbGPTConfig.from_preset("gpt2-medium")
    assert config.hidden_size == config.n_embd == 1024
    assert config.num_hidden_layers == config.n_layer == 24
    assert config.num_attention_heads == config.n_head == 16
    assert config.max_position_embeddings == config.block_size == 1024


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_and_round_trips(tmp_path, name):
    config = EmbGPTConfig.from_preset(name, dropout=0.1)
    config.save_pretrained(tmp_path)
    again = EmbGPTConfig.from_pretrained(tmp_path)
    assert again.to_dict() == config.to_dict()
    assert again.n_embd == PRESETS[name]["n_embd"] and again.dropout == 0.1


@pytest.mark.parametrize("name", ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"])
def test_gpt2_presets_have_gpt2s_parameter_count(name):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from hf_embgpt import EmbGPTForCausalLM

    preset = PRESETS[name]
    with torch.device("meta"):  # shapes only: no memory, no init time
        ours = EmbGPTForCausalLM(EmbGPTConfig.from_preset(name))
        ref = GPT2LMHeadModel(GPT2Config(n_layer=preset["n_layer"], n_head=preset["n_head"], n_embd=preset["n_embd"]))
    assert ours.num_parameters() == ref.num_parameters()


def test_unknown_preset_is_named_with_every_preset():
    with pytest.raises(ValueError, match=rf"unknown preset 'gpt5'; choose one of {', '.join(PRESETS)}$"):
        EmbGPTConfig.from_preset("gpt5")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_embd=770), r"n_embd \(770\) must be divisible by n_head \(12\)"),
        (dict(n_layer=0), r"n_layer \(0\) must be a positive integer"),
        (dict(vocab_size=-5), r"vocab_size \(-5\) must be a positive integer"),
        (dict(block_size=10.5), r"block_size \(10.5\) must be a positive integer"),
        (dict(dropout=1.0), r"dropout \(1.0\) must be a number in \[0, 1\)"),
        (dict(bias="yes"), r"bias \('yes'\) must be True or False"),
        (dict(activation_function="relu"), r"activation_function \('relu'\) must be one of gelu_new, gelu"),
        (dict(layer_norm_epsilon=0), r"layer_norm_epsilon \(0\) must be a positive number"),
    ],
)
def test_invalid_values_raise_and_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EmbGPTConfig(**kwargs)


def test_invalid_config_json_is_rejected_on_load(tmp_path):
    import json

    EmbGPTConfig.from_preset("tiny").save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    data = json.loads(path.read_text())
    data["n_head"] = 3
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"n_embd \(64\) must be divisible by n_head \(3\)"):
        EmbGPTConfig.from_pretrained(tmp_path)


# ---- special-token ids inside a small vocabulary (issue 14.6)


@pytest.fixture
def transformers_warnings():
    """What transformers logs (its logger does not propagate to pytest's caplog)."""
    import logging

    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)


def test_small_vocabulary_gets_special_tokens_inside_it_and_no_warning(transformers_warnings, tmp_path):
    from transformers import GPT2Config

    from hf_embgpt import EmbGPTForCausalLM

    GPT2Config(vocab_size=101)  # the reference: GPT-2's fixed 50256 outside a small vocabulary is warned about
    assert any("bos_token_id must be" in m and "got 50256" in m for m in transformers_warnings)
    transformers_warnings.clear()

    for config in (EmbGPTConfig(vocab_size=100), EmbGPTConfig.from_preset("tiny", vocab_size=65)):
        assert config.bos_token_id is None and config.eos_token_id is None
        EmbGPTForCausalLM(config)  # nor when a model is built from it
        config.save_pretrained(tmp_path)
        assert EmbGPTConfig.from_pretrained(tmp_path).eos_token_id is None
    assert not [m for m in transformers_warnings if "token_id" in m]
    assert EmbGPTConfig().eos_token_id == EmbGPTConfig(vocab_size=50304).bos_token_id == 50256  # GPT-2's, nanoGPT's


def test_explicit_special_tokens_are_kept_and_out_of_range_ones_get_transformers_warning(transformers_warnings):
    assert EmbGPTConfig(vocab_size=100, eos_token_id=7).eos_token_id == 7
    config = EmbGPTConfig(vocab_size=100, bos_token_id=5123, eos_token_id=None)
    assert config.bos_token_id == 5123 and config.eos_token_id is None
    assert any("bos_token_id must be" in m and "got 5123" in m for m in transformers_warnings)


def test_config_defaults_are_gpt2configs():
    from transformers import GPT2Config

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
    config = EmbGPTConfig(vocab_size=1, block_size=1, n_layer=1, n_head=1, n_embd=1, initializer_range=0)
    assert (config.vocab_size, config.block_size, config.n_layer, config.n_head, config.n_embd) == (1, 1, 1, 1, 1)


@pytest.mark.parametrize("value", ["0.02", -0.01, None])
def test_initializer_range_must_be_a_non_negative_number(value):
    with pytest.raises(ValueError, match=rf"initializer_range \({value!r}\) must be a non-negative number"):
        EmbGPTConfig(initializer_range=value)
