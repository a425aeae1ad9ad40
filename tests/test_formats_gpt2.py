"""Loading transformers GPT-2 checkpoints (every file layout) into EmbGPT, exporting back, and the errors."""

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, GPT2LMHeadModel

from conftest import gpt2_config, save_random_gpt2
from hf_embgpt import EmbGPTConfig, EmbGPTForCausalLM
from hf_embgpt.formats.gpt2 import gpt2_config_from, state_dict_to_gpt2
from hf_embgpt.modeling_embgpt import config_from_gpt2


def logits_of(model, ids):
    with torch.no_grad():
        return model.eval()(ids).logits


IDS = torch.randint(0, 50257, (2, 9), generator=torch.Generator().manual_seed(0))


def test_round_trip_gpt2_folder_to_embgpt_to_auto_to_gpt2_is_bit_exact(tmp_path, gpt2_dir):
    ref = GPT2LMHeadModel.from_pretrained(gpt2_dir)
    ours = EmbGPTForCausalLM.from_pretrained(gpt2_dir)
    ours.save_pretrained(tmp_path / "embgpt")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "embgpt")
    assert type(again) is EmbGPTForCausalLM
    for name, tensor in ours.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name
    # export back to a stock GPT-2 checkpoint
    exported = GPT2LMHeadModel(gpt2_config_from(again.config))
    exported.load_state_dict(state_dict_to_gpt2(again.state_dict()))
    exported.save_pretrained(tmp_path / "gpt2-again")
    back = GPT2LMHeadModel.from_pretrained(tmp_path / "gpt2-again")
    for name, tensor in ref.state_dict().items():
        assert torch.equal(tensor, back.state_dict()[name]), name
    assert torch.equal(logits_of(ref, IDS), logits_of(back, IDS))


def original_hub_layout(gpt2_dir, out, fmt):
    """Rewrite a save_pretrained folder as the Hub's original GPT-2 files: no `transformer.` prefix, mask buffers."""
    os.makedirs(out)
    state = load_file(os.path.join(gpt2_dir, "model.safetensors"))
    config = json.load(open(os.path.join(gpt2_dir, "config.json")))
    n_ctx = config["n_positions"]
    raw = {k.removeprefix("transformer."): v.contiguous() for k, v in state.items()}
    for i in range(config["n_layer"]):
        raw[f"h.{i}.attn.bias"] = torch.tril(torch.ones(n_ctx, n_ctx)).view(1, 1, n_ctx, n_ctx)
        raw[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    json.dump(config, open(os.path.join(out, "config.json"), "w"))
    if fmt == "bin":
        torch.save(raw, os.path.join(out, "pytorch_model.bin"))
    else:
        save_file(raw, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    return out


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_original_hub_layout_without_prefix_and_with_mask_buffers_loads_exactly(tmp_path, gpt2_dir, fmt):
    folder = original_hub_layout(gpt2_dir, tmp_path / "hub", fmt)
    ref = GPT2LMHeadModel.from_pretrained(gpt2_dir)
    ours = EmbGPTForCausalLM.from_pretrained(folder)
    assert (logits_of(ref, IDS) - logits_of(ours, IDS)).abs().max() <= 1e-5
    assert ours.lm_head.weight is ours.transformer.wte.weight


def test_sharded_checkpoint_loads_exactly(tmp_path, gpt2_dir):
    ref = GPT2LMHeadModel.from_pretrained(gpt2_dir)
    ref.save_pretrained(tmp_path / "sharded", max_shard_size="1MB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    ours = EmbGPTForCausalLM.from_pretrained(tmp_path / "sharded")
    assert (logits_of(ref, IDS) - logits_of(ours, IDS)).abs().max() <= 1e-5


def test_config_overrides_apply_when_converting(gpt2_dir):
    ours = EmbGPTForCausalLM.from_pretrained(gpt2_dir, dropout=0.2)
    assert ours.config.dropout == 0.2 and ours.config.model_type == "embgpt"


def test_dtype_and_attn_implementation_pass_through_conversion(gpt2_dir):
    ours = EmbGPTForCausalLM.from_pretrained(gpt2_dir, dtype=torch.bfloat16, attn_implementation="eager")
    assert ours.transformer.wte.weight.dtype == torch.bfloat16
    assert ours.config._attn_implementation == "eager"


# ---- bad checkpoints


def rewrite_weights(folder, change):
    path = os.path.join(folder, "model.safetensors")
    state = load_file(path)
    change(state)
    save_file(state, path, metadata={"format": "pt"})


def test_missing_tensor_is_named(gpt2_dir):
    rewrite_weights(gpt2_dir, lambda s: s.pop("transformer.h.1.ln_2.bias"))
    with pytest.raises(ValueError, match=r"missing \['transformer\.h\.1\.ln_2\.bias'\]"):
        EmbGPTForCausalLM.from_pretrained(gpt2_dir)


def test_unexpected_tensor_is_named(gpt2_dir):
    rewrite_weights(gpt2_dir, lambda s: s.update({"transformer.h.0.attn.rotary": torch.zeros(3)}))
    with pytest.raises(ValueError, match=r"unexpected \['transformer\.h\.0\.attn\.rotary'\]"):
        EmbGPTForCausalLM.from_pretrained(gpt2_dir)


def test_mis_shaped_tensor_is_named(gpt2_dir):
    rewrite_weights(gpt2_dir, lambda s: s.update({"transformer.wpe.weight": torch.zeros(64, 64)}))
    with pytest.raises(ValueError, match=r"mis-shaped \['transformer\.wpe\.weight \(64, 64\) vs \(128, 64\)'\]"):
        EmbGPTForCausalLM.from_pretrained(gpt2_dir)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
@pytest.mark.parametrize("keep", [0.5, 0.001])
@pytest.mark.parametrize("kind", ["gpt2", "embgpt"])
def test_truncated_weights_file_is_an_error_naming_the_checkpoint(tmp_path, gpt2_dir, fmt, keep, kind):
    folder = str(tmp_path / "ckpt")
    model_class = GPT2LMHeadModel if kind == "gpt2" else EmbGPTForCausalLM
    model_class.from_pretrained(gpt2_dir).save_pretrained(folder)
    path = os.path.join(folder, "model.safetensors")
    if fmt == "bin":  # transformers 5 writes only safetensors; older GPT-2 checkpoints are pickles
        torch.save(load_file(path), os.path.join(folder, "pytorch_model.bin"))
        os.remove(path)
        path = os.path.join(folder, "pytorch_model.bin")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: int(len(data) * keep)])
    with pytest.raises(OSError, match=rf"could not read the weights of {folder}: the file is truncated or corrupt"):
        EmbGPTForCausalLM.from_pretrained(folder)


def test_non_gpt2_checkpoint_is_refused_with_its_type(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4).save_pretrained(
        tmp_path
    )
    with pytest.raises(ValueError, match=r"is a 'llama' checkpoint; EmbGPT loads 'embgpt' and 'gpt2' checkpoints"):
        EmbGPTForCausalLM.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx=True"),
        (dict(n_inner=100), "n_inner=100"),
        (dict(activation_function="relu"), "activation_function='relu'"),
    ],
)
def test_gpt2_options_embgpt_cannot_reproduce_are_refused(tmp_path, overrides, message):
    folder = save_random_gpt2(tmp_path / "gpt2", **overrides)
    with pytest.raises(ValueError, match=message):
        EmbGPTForCausalLM.from_pretrained(folder)


@pytest.mark.parametrize(
    "overrides",
    [dict(n_inner=256), dict(activation_function="gelu_pytorch_tanh"), dict(activation_function="gelu")],
    ids=["n_inner=4*n_embd", "gelu_pytorch_tanh", "gelu"],
)
def test_gpt2_options_embgpt_reproduces_load_to_gpt2s_logits(tmp_path, overrides):
    """An explicit n_inner of 4 * n_embd (64 here) and the GELUs transformers' GPT-2 offers: same logits."""
    folder = save_random_gpt2(tmp_path / "gpt2", **overrides)
    ours = EmbGPTForCausalLM.from_pretrained(folder)
    torch.testing.assert_close(logits_of(ours, IDS), logits_of(GPT2LMHeadModel.from_pretrained(folder), IDS))


def test_every_gpt2_config_field_carries_over_and_differing_dropout_rates_are_named(caplog):
    """Each field set away from its default, so a field left out (or misnamed: configs keep unknown keywords) shows."""
    gpt2 = gpt2_config(
        vocab_size=1000, n_positions=96, n_layer=3, n_head=2, n_embd=32, layer_norm_epsilon=1e-6,
        initializer_range=0.05, bos_token_id=3, eos_token_id=4, pad_token_id=5, id2label={0: "no", 1: "yes"},
        problem_type="single_label_classification", activation_function="gelu", dropout=0.25,
    )  # fmt: skip
    with caplog.at_level("WARNING"):
        ours = config_from_gpt2(gpt2)
    assert "dropout rates differ" not in caplog.text
    pairs = {
        "vocab_size": "vocab_size", "block_size": "n_positions", "n_layer": "n_layer", "n_head": "n_head",
        "n_embd": "n_embd", "layer_norm_epsilon": "layer_norm_epsilon", "initializer_range": "initializer_range",
        "bos_token_id": "bos_token_id", "eos_token_id": "eos_token_id", "pad_token_id": "pad_token_id",
        "id2label": "id2label", "label2id": "label2id", "problem_type": "problem_type",
        "activation_function": "activation_function", "dropout": "resid_pdrop",
    }  # fmt: skip
    assert {ours_: getattr(ours, ours_) for ours_ in pairs} == {
        ours_: getattr(gpt2, theirs) for ours_, theirs in pairs.items()
    }
    assert ours.bias is True
    gpt2.attn_pdrop = 0.0
    with caplog.at_level("WARNING"):
        config_from_gpt2(gpt2)
    assert "GPT-2 dropout rates differ ([0.0, 0.25]); EmbGPT uses resid_pdrop for all three" in caplog.text


def test_bias_false_model_cannot_be_exported_to_gpt2(tiny_config):
    tiny_config.bias = False
    with pytest.raises(ValueError, match="^GPT-2 has biases everywhere; a bias=False EmbGPT model can't be exported"):
        gpt2_config_from(tiny_config)


def test_export_config_carries_every_field_and_reads_back_the_same():
    """EmbGPTConfig -> GPT2Config -> EmbGPTConfig, each field away from its default so a field left out shows."""
    ours = EmbGPTConfig(
        vocab_size=1000, block_size=96, n_layer=3, n_head=2, n_embd=32, dropout=0.25, activation_function="gelu",
        layer_norm_epsilon=1e-6, initializer_range=0.05, bos_token_id=3, eos_token_id=4, pad_token_id=5,
    )  # fmt: skip
    gpt2 = gpt2_config_from(ours)
    pairs = {
        "vocab_size": "vocab_size", "block_size": "n_positions", "n_layer": "n_layer", "n_head": "n_head",
        "n_embd": "n_embd", "dropout": "resid_pdrop", "activation_function": "activation_function",
        "layer_norm_epsilon": "layer_norm_epsilon", "initializer_range": "initializer_range",
        "bos_token_id": "bos_token_id", "eos_token_id": "eos_token_id", "pad_token_id": "pad_token_id",
    }  # fmt: skip
    assert {theirs: getattr(gpt2, theirs) for theirs in pairs.values()} == {
        theirs: getattr(ours, name) for name, theirs in pairs.items()
    }
    assert gpt2.embd_pdrop == gpt2.attn_pdrop == 0.25
    back = config_from_gpt2(gpt2)
    assert {name: getattr(back, name) for name in pairs} == {name: getattr(ours, name) for name in pairs}


def test_write_gpt2_makes_a_folder_gpt2lmheadmodel_loads_with_our_logits(tmp_path, tiny_config):
    from transformers import GenerationConfig

    from hf_embgpt.formats.gpt2 import write_gpt2

    torch.manual_seed(0)
    ours = EmbGPTForCausalLM(tiny_config).eval()
    write_gpt2(tiny_config, ours.state_dict(), tmp_path / "plain")
    write_gpt2(tiny_config, ours.state_dict(), tmp_path / "gen", generation_config=GenerationConfig(max_new_tokens=7))
    for folder in ("plain", "gen"):
        gpt2 = GPT2LMHeadModel.from_pretrained(tmp_path / folder)
        assert gpt2.lm_head.weight is gpt2.transformer.wte.weight
        torch.testing.assert_close(logits_of(gpt2, IDS), logits_of(ours, IDS))
    assert GPT2LMHeadModel.from_pretrained(tmp_path / "gen").generation_config.max_new_tokens == 7


# ---- saves are atomic


def test_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, tiny_config, monkeypatch):
    from transformers import PreTrainedModel

    model = EmbGPTForCausalLM(tiny_config)
    model.save_pretrained(tmp_path / "ckpt")
    before = {p.name: p.read_bytes() for p in (tmp_path / "ckpt").iterdir()}

    def crash_mid_write(self, directory, *args, **kwargs):
        (Path(directory) / "model.safetensors").write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(tmp_path / "ckpt")
    after = {p.name: p.read_bytes() for p in (tmp_path / "ckpt").iterdir()}
    assert after == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no staging folder left behind


def test_resave_unsharded_removes_stale_shards(tmp_path, tiny_config):
    model = EmbGPTForCausalLM(tiny_config)
    model.save_pretrained(tmp_path, max_shard_size="1MB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.glob("model*.safetensors*")) == ["model.safetensors"]
    assert torch.equal(EmbGPTForCausalLM.from_pretrained(tmp_path).transformer.wte.weight, model.transformer.wte.weight)


def test_base_model_loads_a_gpt2_checkpoint(gpt2_dir):
    from transformers import GPT2Model

    from hf_embgpt import EmbGPTModel

    ids = torch.randint(0, 50257, (1, 9))
    with torch.no_grad():
        expected = GPT2Model.from_pretrained(gpt2_dir).eval()(ids).last_hidden_state
        got = EmbGPTModel.from_pretrained(gpt2_dir).eval()(ids).last_hidden_state
    assert (expected - got).abs().max() <= 1e-5
