"""training/checkpoints.py: only a checkpoint folder holding every file Trainer writes, each whole, is resumed from;
in the layouts Trainer writes (safetensors, `.bin`, sharded, LoRA adapters, DeepSpeed)."""

import json
import os
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from hf_embgpt.training.checkpoints import (
    checkpoint_is_complete,
    clear_folder,
    last_complete_checkpoint,
    resume_point,
    trainer_state,
)

SAVES = {  # what Trainer.save_model writes, by setup
    "safetensors": {"model.safetensors": lambda p: save_file({"w": torch.zeros(2)}, p)},
    "bin": {"pytorch_model.bin": lambda p: torch.save({"w": torch.zeros(2)}, p)},  # save_safetensors=False
    "sharded": {
        "model-00001-of-00002.safetensors": lambda p: save_file({"w": torch.zeros(2)}, p),
        "model-00002-of-00002.safetensors": lambda p: save_file({"v": torch.zeros(2)}, p),
        "model.safetensors.index.json": lambda p: Path(p).write_text(
            json.dumps(
                {"weight_map": {"w": "model-00001-of-00002.safetensors", "v": "model-00002-of-00002.safetensors"}}
            )
        ),
    },
    "lora": {
        "adapter_model.safetensors": lambda p: save_file({"lora_A": torch.zeros(2)}, p),
        "adapter_config.json": lambda p: Path(p).write_text("{}"),
    },
}


def fake_checkpoint(output_dir, step, drop=(), state_step=None, save="safetensors"):
    """A folder with what Trainer writes at a save, minus the files named in `drop`."""
    folder = os.path.join(output_dir, f"checkpoint-{step}")
    os.makedirs(folder)
    files = {
        **SAVES[save],
        "optimizer.pt": lambda p: torch.save({"state": {}}, p),
        "scheduler.pt": lambda p: torch.save({"last_epoch": step}, p),
        "rng_state.pth": lambda p: torch.save({"python": 0}, p),
        "trainer_state.json": lambda p: Path(p).write_text(json.dumps({"global_step": state_step or step})),
    }
    for name, write in files.items():
        if name not in drop:
            write(os.path.join(folder, name))
    return folder


def deepspeed_checkpoint(output_dir, step, drop=()):
    """DeepSpeed's layout (ZeRO-3, no gathered weights; its own scheduler): weights and optimizer shards in
    global_stepN/, no model or optimizer file beside them, no scheduler.pt."""
    folder = fake_checkpoint(output_dir, step, drop=["model.safetensors", "optimizer.pt", "scheduler.pt", *drop])
    if "global_step" not in drop:
        os.makedirs(os.path.join(folder, f"global_step{step}"))
        torch.save({"module": {}}, os.path.join(folder, f"global_step{step}", "mp_rank_00_model_states.pt"))
    Path(folder, "latest").write_text(f"global_step{step}")
    return folder


def cut_in_half(path):
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("save", SAVES)
def test_a_complete_checkpoint_is_complete_in_every_layout_trainer_writes(tmp_path, save):
    folder = fake_checkpoint(tmp_path, 4, save=save)
    assert checkpoint_is_complete(folder)
    assert checkpoint_is_complete(folder + os.sep)  # as a shell completes a folder's name


@pytest.mark.parametrize("save", SAVES)
def test_a_checkpoint_without_its_weights_or_with_weights_cut_short_is_incomplete(tmp_path, save):
    weights = [name for name in SAVES[save] if not name.endswith(".json")]
    assert not checkpoint_is_complete(fake_checkpoint(tmp_path / "dropped", 4, drop=weights, save=save))
    assert not checkpoint_is_complete(fake_checkpoint(tmp_path / "one_dropped", 4, drop=weights[-1:], save=save))
    folder = fake_checkpoint(tmp_path / "cut", 4, save=save)
    cut_in_half(os.path.join(folder, weights[-1]))
    assert not checkpoint_is_complete(folder)


@pytest.mark.parametrize(
    "drop", ["trainer_state.json", "model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"]
)
def test_a_checkpoint_missing_any_file_is_incomplete(tmp_path, drop):
    assert not checkpoint_is_complete(fake_checkpoint(tmp_path, 4, drop=[drop]))


def test_a_checkpoint_whose_state_names_another_step_is_incomplete(tmp_path):
    assert not checkpoint_is_complete(fake_checkpoint(tmp_path, 4, state_step=3))
    folder = fake_checkpoint(tmp_path, 5)
    renamed = os.path.join(tmp_path, "best")  # not a checkpoint-N folder: no step to check the state against
    os.rename(folder, renamed)
    assert not checkpoint_is_complete(renamed)


@pytest.mark.parametrize(
    "truncated", ["model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"]
)
def test_a_truncated_file_makes_a_checkpoint_incomplete(tmp_path, truncated):
    folder = fake_checkpoint(tmp_path, 4)
    cut_in_half(os.path.join(folder, truncated))
    assert not checkpoint_is_complete(folder)


def test_a_torch_file_whose_entries_run_past_its_end_is_incomplete(tmp_path, caplog):
    """The zip directory reads but names more bytes than the file holds (an entry overwritten short)."""
    folder = fake_checkpoint(tmp_path, 4)
    path = Path(folder, "optimizer.pt")
    data = bytearray(path.read_bytes())
    entry = data.rindex(b"PK\x01\x02")  # the last central-directory entry; its compressed size is at offset 20
    struct.pack_into("<I", data, entry + 20, len(data))
    path.write_bytes(bytes(data))
    assert not checkpoint_is_complete(folder)
    assert f"checkpoint {folder} is incomplete or unreadable (ValueError: optimizer.pt is cut short)" in caplog.text


def test_a_deepspeed_checkpoint_is_complete_without_model_optimizer_or_scheduler_files(tmp_path):
    assert checkpoint_is_complete(deepspeed_checkpoint(tmp_path / "whole", 4))
    assert not checkpoint_is_complete(deepspeed_checkpoint(tmp_path / "no_shards", 4, drop=["global_step"]))
    assert not checkpoint_is_complete(deepspeed_checkpoint(tmp_path / "no_rng", 4, drop=["rng_state.pth"]))


def test_the_newest_complete_checkpoint_is_chosen_by_number(tmp_path, caplog):
    assert last_complete_checkpoint(str(tmp_path / "missing")) is None
    assert last_complete_checkpoint(str(tmp_path)) is None
    fake_checkpoint(tmp_path, 9)
    newest = fake_checkpoint(tmp_path, 10)  # 10 > 9 although "10" < "9" as text
    fake_checkpoint(tmp_path, 11, drop=["optimizer.pt"])  # cut short by a kill
    os.makedirs(tmp_path / "checkpoint-12-extra")  # not a Trainer checkpoint name
    assert last_complete_checkpoint(str(tmp_path)) == newest
    assert f"ignoring incomplete checkpoint {tmp_path / 'checkpoint-11'}" in caplog.text


def test_resume_point_follows_run_clms_rules_for_the_output_folder(tmp_path, caplog):
    missing, empty, used = tmp_path / "missing", tmp_path / "empty", tmp_path / "used"
    empty.mkdir()
    used.mkdir()
    (used / "notes.txt").write_text("a run's files")
    with pytest.raises(ValueError, match="--resume continues .* --overwrite_output_dir clears it: choose one"):
        resume_point(str(used), resume=True, overwrite_output_dir=True)
    for folder in (missing, empty):  # a fresh run, with or without --resume (a job script may always pass it)
        assert resume_point(str(folder), resume=False, overwrite_output_dir=False) is None
        with caplog.at_level("INFO", logger="hf_embgpt.training.checkpoints"):
            assert resume_point(str(folder), resume=True, overwrite_output_dir=False) is None
        assert f"--resume: {folder} is empty; starting a fresh run" in caplog.text
    with pytest.raises(
        FileExistsError, match=f"--output_dir {used} is not empty; pass --resume .* --overwrite_output_dir"
    ):
        resume_point(str(used), resume=False, overwrite_output_dir=False)
    assert resume_point(str(used), resume=False, overwrite_output_dir=True) is None
    with pytest.raises(FileNotFoundError, match=f"--resume: {used} holds no complete checkpoint-N folder"):
        resume_point(str(used), resume=True, overwrite_output_dir=False)
    checkpoint = fake_checkpoint(used, 3)
    assert resume_point(str(used), resume=True, overwrite_output_dir=False) == checkpoint
    assert trainer_state(checkpoint) == {"global_step": 3}


def test_clear_folder_empties_the_folder_and_keeps_it_and_what_links_point_to(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # what clear_folder(None) would empty: it must not be the checkout
    folder, outside = tmp_path / "run", tmp_path / "elsewhere"
    (folder / "checkpoint-1").mkdir(parents=True)
    (folder / "checkpoint-1" / "model.safetensors").write_text("w")
    (folder / "log.txt").write_text("l")
    outside.mkdir()
    (outside / "kept.txt").write_text("k")
    (folder / "link").symlink_to(outside, target_is_directory=True)
    clear_folder(folder)
    assert folder.is_dir() and not list(folder.iterdir())
    assert (outside / "kept.txt").read_text() == "k"
