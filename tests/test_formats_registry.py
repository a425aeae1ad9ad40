"""formats/registry.py's rules: what reads as a Hub repo id (against huggingface_hub's own validation), the
system's reason behind a failed write (disk full, read-only, no permission) out of torch's and safetensors' wrappers,
and what read_checkpoint and write_checkpoint refuse or write for every format."""

import errno
import os
import re

import numpy as np
import pytest
import torch
from huggingface_hub.utils import HFValidationError, validate_repo_id
from safetensors import SafetensorError
from transformers import GenerationConfig

from conftest import assert_same_tensors
from hf_embgpt import EmbGPTConfig, EmbGPTForCausalLM
from hf_embgpt.formats.provenance import PROVENANCE_FILE
from hf_embgpt.formats.registry import (
    _system_refusal,
    check_source,
    detect_format,
    existing_output,
    is_hub_id,
    read_checkpoint,
    write_checkpoint,
)


@pytest.mark.parametrize(
    "name",
    ["openai-community/gpt2", "karpathy/gpt2_124M", "a.b/c_d", "owner/model-v1.5", "/abs/gpt2", "./owner/gpt2",
     "../owner/gpt2", "owner/", "/owner", "a/b/c", "-x/y", ".x/y", "owner name/model"],
)  # fmt: skip
def test_a_hub_id_is_one_huggingface_hub_accepts_in_owner_name_form(name):
    try:
        validate_repo_id(name)
        valid = "/" in name
    except HFValidationError:
        valid = False
    assert is_hub_id(name) is valid


def test_a_bare_word_is_a_local_name_not_a_hub_id():
    """`gpt2` is a valid repo id, but on a command line a bare word is more likely a file that is missing."""
    validate_repo_id("gpt2")
    assert not is_hub_id("gpt2")


def test_the_systems_reason_is_found_behind_the_wrappers():
    disk_full = OSError(errno.ENOSPC, "No space left on device")
    assert _system_refusal(disk_full) == "No space left on device"
    try:  # torch.save's RuntimeError, raised while handling the OSError
        try:
            raise disk_full
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos") from None
    except RuntimeError as wrapped:
        assert wrapped.__cause__ is None and _system_refusal(wrapped) == "No space left on device"
    caused = RuntimeError("write failed")
    caused.__cause__ = OSError(errno.EROFS, "Read-only file system")
    assert _system_refusal(caused) == "Read-only file system"
    safetensors_says = SafetensorError("Error while serializing: I/O error: Permission denied (os error 13)")
    assert _system_refusal(safetensors_says) == "Permission denied (os error 13)"


@pytest.mark.parametrize(
    "error",
    [ValueError("bad shape"), OSError("no errno"), RuntimeError("plain"), SafetensorError("header too large")],
    ids=["value", "oserror-without-errno", "runtime", "safetensors-not-io"],
)
def test_other_failures_are_not_the_systems(error):
    assert _system_refusal(error) is None


def test_existing_output_is_what_a_write_would_replace(tmp_path):
    empty, full = tmp_path / "empty", tmp_path / "full"
    empty.mkdir()
    full.mkdir()
    (full / "config.json").write_text("{}")
    assert existing_output(empty, "embgpt") is None and existing_output(tmp_path / "missing", "gpt2") is None
    assert existing_output(full, "embgpt") == str(full)
    assert existing_output(full, "nanogpt") is None  # nanoGPT writes full/ckpt.pt, beside config.json
    (full / "ckpt.pt").write_bytes(b"")
    assert existing_output(full, "nanogpt") == str(full / "ckpt.pt")
    assert existing_output(full / "ckpt.pt", "llmc") == str(full / "ckpt.pt")


# ---- read_checkpoint and write_checkpoint: the rules every format shares


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return EmbGPTForCausalLM(EmbGPTConfig.from_preset("tiny", vocab_size=100, block_size=16)).eval()


def test_a_missing_source_is_named_unless_it_reads_as_a_hub_id(tmp_path):
    missing = tmp_path / "nothing"
    words = f"checkpoint {missing} does not exist (and is not a Hub repo id, which reads owner/name)"
    with pytest.raises(FileNotFoundError, match=f"^{re.escape(words)}$"):
        check_source(missing)
    assert check_source("owner/model") == "owner/model"  # for the Hub client to fetch


def test_an_unknown_format_is_named_with_the_choices(tmp_path):
    tiny_model().save_pretrained(tmp_path / "model")
    words = "unknown format 'safetensors'; choose one of embgpt, gpt2, nanogpt, llmc, tf"
    with pytest.raises(ValueError, match=f"^{re.escape(words)}$"):
        read_checkpoint(tmp_path / "model", "safetensors")
    with pytest.raises(ValueError, match=f"^{re.escape(words)}$"):
        write_checkpoint(tiny_model(), tmp_path / "out", "safetensors")
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_in_no_known_format_gets_detections_error(tmp_path):
    (tmp_path / "weights.npz").write_bytes(b"PK\x05\x06")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(tmp_path))}: unknown checkpoint format; expected a folder"):
        read_checkpoint(tmp_path)


def test_a_format_given_must_be_the_one_detected(tmp_path):
    write_checkpoint(tiny_model(), tmp_path / "ckpt.pt", "nanogpt")
    words = f"{tmp_path / 'ckpt.pt'} holds a checkpoint in format nanogpt, not llmc; the format is detected anyway"
    with pytest.raises(ValueError, match=f"^{re.escape(words)}$"):
        read_checkpoint(tmp_path / "ckpt.pt", "llmc")
    model, fmt = read_checkpoint(tmp_path / "ckpt.pt", "nanogpt")
    assert fmt == "nanogpt" and read_checkpoint(tmp_path / "ckpt.pt")[1] == "nanogpt"


@pytest.mark.parametrize("fmt", ["embgpt", "gpt2", "tf"])
def test_a_folder_output_that_holds_files_is_refused_unless_overwrite(tmp_path, fmt):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "notes.txt").write_text("another model's")
    with pytest.raises(FileExistsError, match=rf"^{re.escape(str(folder))} is not empty; pass --overwrite"):
        write_checkpoint(tiny_model(), folder, fmt)
    assert os.listdir(folder) == ["notes.txt"]
    write_checkpoint(tiny_model(1), folder, fmt, overwrite=True)
    assert "notes.txt" not in os.listdir(folder)  # replaced as a whole
    assert_same_tensors(read_checkpoint(folder)[0].state_dict(), tiny_model(1).state_dict())


def test_a_write_the_system_refuses_names_the_destination_and_the_reason(tmp_path):
    (tmp_path / "file").write_text("")
    destination = tmp_path / "file" / "model"  # its parent is a file: no folder can be made there
    reasons = "|".join(os.strerror(e) for e in (errno.EEXIST, errno.ENOTDIR))  # os.makedirs' or the kernel's word
    with pytest.raises(OSError, match=rf"^cannot write {re.escape(str(destination))}: ({reasons})$"):
        write_checkpoint(tiny_model(), destination, "embgpt")


def test_each_format_gets_what_belongs_to_it(tmp_path, gpt2_tokenizer):
    """Folders in transformers' formats get the tokenizer and the provenance record; an OpenAI TF folder holds only
    OpenAI's files; a GPT-2 folder keeps the model's generation config; llm.c writes the dtype asked for."""
    model = tiny_model()
    model.generation_config.max_new_tokens = 7
    extra = dict(tokenizer=gpt2_tokenizer, provenance={"source": "test", "kind": "converted"})
    for fmt in ("gpt2", "tf"):
        write_checkpoint(model, tmp_path / fmt, fmt, **extra)
    assert "tokenizer.json" in os.listdir(tmp_path / "gpt2") and PROVENANCE_FILE in os.listdir(tmp_path / "gpt2")
    assert sorted(os.listdir(tmp_path / "tf")) == sorted(
        ["checkpoint", "hparams.json", "model.ckpt.index", "model.ckpt.data-00000-of-00001"]
    )
    assert GenerationConfig.from_pretrained(tmp_path / "gpt2").max_new_tokens == 7
    write_checkpoint(model, tmp_path / "model.bin", "llmc", llmc_dtype="bfloat16")
    assert int(np.fromfile(tmp_path / "model.bin", dtype="<i4", count=2)[1]) == 5  # llm.c's bfloat16 version


def test_a_tf_folder_is_known_by_either_of_its_files_and_a_legacy_torch_save_is_nanogpts(tmp_path):
    """Detection decides whose error the user sees: a TF folder missing hparams.json is a TF checkpoint missing a file,
    not an unknown format; torch.save's pre-1.6 pickle (nanoGPT's oldest ckpt.pt files) is nanoGPT's."""
    for name in ("hparams.json", "model.ckpt.index"):
        (tmp_path / name).mkdir()
        (tmp_path / name / name).write_text("")
        assert detect_format(tmp_path / name) == "tf"
    torch.save({"model": {}}, tmp_path / "ckpt.pt", _use_new_zipfile_serialization=False)
    assert detect_format(tmp_path / "ckpt.pt") == "nanogpt"
