"""formats/registry.py's small rules: what reads as a Hub repo id (against huggingface_hub's own validation), and
the system's reason behind a failed write (disk full, read-only, no permission) out of torch's and safetensors'
wrappers."""

import errno

import pytest
from huggingface_hub.utils import HFValidationError, validate_repo_id
from safetensors import SafetensorError

from hf_embgpt.formats.registry import _system_refusal, is_hub_id


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
    from hf_embgpt.formats.registry import existing_output

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
