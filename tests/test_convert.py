"""`embgpt convert`: format detection, every pair of formats bit-exact, the CLI, and safe failure."""

import json
import os
import shutil

import pytest
import torch
from transformers import AutoTokenizer, GPT2LMHeadModel

from hf_embgpt import EmbGPTConfig, EmbGPTForCausalLM
from hf_embgpt.cli import main as cli
from hf_embgpt.convert import convert
from hf_embgpt.formats.common import expected_shapes, model_from_state_dict
from hf_embgpt.formats.provenance import read_provenance
from hf_embgpt.formats.registry import FORMATS, detect_format, read_checkpoint, write_checkpoint

DESTINATIONS = {"embgpt": "embgpt", "gpt2": "gpt2", "nanogpt": "ckpt.pt", "llmc": "model.bin", "tf": "tf"}
CORE = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "bias", "activation_function")


def random_model(name="tiny", seed=0, **overrides):
    config = EmbGPTConfig.from_preset(
        name, **{"vocab_size": 300, "bos_token_id": None, "eos_token_id": None, **overrides}
    )
    generator = torch.Generator().manual_seed(seed)
    state_dict = {n: torch.randn(shape, generator=generator) for n, shape in expected_shapes(config).items()}
    state_dict["lm_head.weight"] = state_dict["transformer.wte.weight"]
    return model_from_state_dict(config, state_dict)


def assert_same_model(a, b):
    assert {k: getattr(a.config, k) for k in CORE} == {k: getattr(b.config, k) for k in CORE}
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for name in sa:
        assert sa[name].dtype == sb[name].dtype and torch.equal(sa[name], sb[name]), name


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The same tiny model written once in every format: {format: path}."""
    root = tmp_path_factory.mktemp("formats")
    model = random_model()
    paths = {fmt: str(root / name) for fmt, name in DESTINATIONS.items()}
    for fmt, path in paths.items():
        write_checkpoint(model, path, fmt)
    return model, paths


def test_detect_format(written):
    _, paths = written
    for fmt, path in paths.items():
        assert detect_format(path) == fmt
    assert detect_format(os.path.join(paths["tf"], "model.ckpt")) == "tf"
    assert detect_format(os.path.join(paths["tf"], "model.ckpt.index")) == "tf"
    assert detect_format("openai-community/gpt2") == "hub"


@pytest.mark.parametrize("source", FORMATS)
@pytest.mark.parametrize("target", FORMATS)
def test_every_pair_is_bit_exact(tmp_path, written, source, target):
    model, paths = written
    destination = str(tmp_path / DESTINATIONS[target])
    convert(paths[source], destination, target)
    back, fmt = read_checkpoint(destination)
    assert fmt == target
    assert_same_model(model, back)


def test_unknown_and_missing_sources(tmp_path):
    (tmp_path / "noise.bin").write_bytes(b"\x01\x02\x03\x04 not a checkpoint")
    with pytest.raises(ValueError, match="unknown checkpoint format") as info:
        detect_format(str(tmp_path / "noise.bin"))
    assert "noise.bin" in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="unknown checkpoint format") as info:
        detect_format(str(tmp_path / "empty"))
    assert "empty" in str(info.value)
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="describes a 'llama' model"):
        detect_format(str(tmp_path / "llama"))
    with pytest.raises(FileNotFoundError, match="nowhere.bin does not exist"):
        detect_format(str(tmp_path / "nowhere.bin"))
    with pytest.raises(FileNotFoundError, match="gpt2_124M.bin does not exist"):
        detect_format("gpt2_124M.bin")  # relative, and no owner/name: a missing file, not a Hub id
    with pytest.raises(ValueError, match="unknown target format 'onnx'"):
        convert(str(tmp_path / "noise.bin"), str(tmp_path / "out"), "onnx")


def test_failed_conversion_leaves_destination_untouched(tmp_path, written):
    _, paths = written
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(open(paths["llmc"], "rb").read()[:-10])
    for target in ("embgpt", "llmc"):
        destination = tmp_path / f"dst-{target}"
        destination.mkdir()
        (destination / "keep.txt").write_text("previous")
        with pytest.raises(ValueError, match="truncated.bin is truncated"):
            convert(str(truncated), str(destination), target, overwrite=True)
        assert os.listdir(destination) == ["keep.txt"]
    # the writer fails inside its staging folder: GPT-2 can't hold a bias=False model
    no_bias = random_model(bias=False)
    destination = tmp_path / "dst-gpt2"
    destination.mkdir()
    (destination / "keep.txt").write_text("previous")
    with pytest.raises(ValueError, match="bias=False"):
        write_checkpoint(no_bias, str(destination), "gpt2", overwrite=True)
    assert os.listdir(destination) == ["keep.txt"]
    assert sorted(p for p in os.listdir(tmp_path) if p.startswith(".")) == []  # no staging left behind


def test_gpt2_export_is_a_stock_transformers_folder(tmp_path, make_pair):
    ref, ours = make_pair()
    write_checkpoint(ours, str(tmp_path / "gpt2"), "gpt2")
    loaded = GPT2LMHeadModel.from_pretrained(tmp_path / "gpt2").eval()
    x = torch.randint(0, 50257, (2, 10))
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, ref(x).logits)


def test_cli_carries_tokenizer_and_records_provenance(tmp_path, gpt2_dir, gpt2_tokenizer_dir, capsys):
    for name in os.listdir(gpt2_tokenizer_dir):
        shutil.copy(os.path.join(gpt2_tokenizer_dir, name), gpt2_dir)
    destination = str(tmp_path / "embgpt")
    assert cli(["convert", gpt2_dir, destination, "--to", "embgpt"]) == 0
    assert "wrote" in capsys.readouterr().out
    tok = AutoTokenizer.from_pretrained(destination)
    assert tok("Hello world").input_ids == [15496, 995]
    record = read_provenance(destination)
    assert record["kind"] == "converted" and record["source_format"] == "gpt2" and record["source"] == gpt2_dir
    assert record["command"] == f"embgpt convert {gpt2_dir} {destination} --to embgpt"
    # and on to llm.c bf16, with the vocabulary cut (only the first rows kept)
    assert cli(["convert", destination, str(tmp_path / "m.bin"), "--to", "llmc", "--llmc-dtype", "bfloat16"]) == 0
    assert cli(["convert", destination, str(tmp_path / "small"), "--to", "embgpt", "--vocab-size", "1000"]) == 0
    small, _ = read_checkpoint(str(tmp_path / "small"))
    full, _ = read_checkpoint(destination)
    assert small.config.vocab_size == 1000
    assert torch.equal(small.transformer.wte.weight, full.transformer.wte.weight[:1000])


def test_cli_rejects_unknown_target(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        cli(["convert", str(tmp_path), str(tmp_path / "x"), "--to", "onnx"])
    assert info.value.code == 2 and "invalid choice: 'onnx'" in capsys.readouterr().err


@pytest.mark.slow
def test_124m_transformers_gpt2_and_embgpt(tmp_path):
    model = random_model("gpt2", vocab_size=50257)
    write_checkpoint(model, str(tmp_path / "gpt2"), "gpt2")
    convert(str(tmp_path / "gpt2"), str(tmp_path / "embgpt"), "embgpt")
    back, fmt = read_checkpoint(str(tmp_path / "embgpt"))
    assert fmt == "embgpt"
    assert_same_model(model, back)
    assert isinstance(back, EmbGPTForCausalLM)
