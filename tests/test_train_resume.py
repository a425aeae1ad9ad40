"""`embgpt train`'s output folder and resume rules: a folder in use is never trained into afresh by accident, a
finished run resumes to no step, a kill between the last checkpoint and the final save resumes to the uninterrupted
run's weights, and a checkpoint cut short (even only its RNG state) is passed over for the one before."""

import json
import logging
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import KILLED_TRAINING
from hf_embgpt import train
from hf_embgpt.training import checkpoints
from test_train import SUBPROCESS_ENV, argv, words  # noqa: F401 - `words` is a fixture

pytestmark = pytest.mark.usefixtures("one_thread")

RUN = ["--max_steps", "6", "--save_steps", "3", "--eval_strategy", "no", "--num_samples", "0",
       "--per_device_train_batch_size", "4", "--dropout", "0.0"]  # fmt: skip


def weights(folder):
    return load_file(os.path.join(folder, "model.safetensors"))


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def trainers_train_loss(results):
    """Trainer's own train loss of an uninterrupted run (its summary log entry): the mean over all its steps."""
    (loss,) = [entry["train_loss"] for entry in results["log_history"] if "train_loss" in entry]
    return loss


def folder_bytes(folder):
    return {
        os.path.relpath(os.path.join(root, name), folder): open(os.path.join(root, name), "rb").read()
        for root, _, names in os.walk(folder)
        for name in names
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory, words):  # noqa: F811
    """An uninterrupted run, and the same run killed after its last checkpoint, before the final save."""
    root = tmp_path_factory.mktemp("runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the killed subprocess and the tests' resumes: the same float sums
    try:
        whole = train.train(argv(root / "whole", words, *RUN))
    finally:
        torch.set_num_threads(threads)
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_TRAINING, *argv(root / "killed", words, *RUN)],
        env={**SUBPROCESS_ENV, "KILL_AT": "6", "KILL_ON": "on_save"}, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert not (root / "killed" / "model.safetensors").exists()
    return root, whole


def test_a_kill_before_the_final_save_resumes_to_the_uninterrupted_weights_without_a_step(runs, words, capfd, caplog):  # noqa: F811
    root, whole = runs
    caplog.set_level(logging.INFO, logger="hf_embgpt")
    killed = root / "killed-copy"
    shutil.copytree(root / "killed", killed)
    checkpoints_before = {n: folder_bytes(killed / n) for n in os.listdir(killed) if n.startswith("checkpoint-")}
    assert sorted(checkpoints_before) == ["checkpoint-3", "checkpoint-6"]

    assert train.main(argv(killed, words, *RUN, "--resume")) == 0
    out, err = capfd.readouterr()  # transformers' own logger writes to stderr; ours goes through logging
    assert f"resuming from {killed / 'checkpoint-6'} (step 6)" in caplog.text
    assert "nothing to train" in out and "missing keys" not in err + caplog.text
    assert same_weights(weights(killed), weights(root / "whole"))  # bit-identical to the uninterrupted run
    assert {n: folder_bytes(killed / n) for n in checkpoints_before} == checkpoints_before  # none rotated away

    # the finished run resumed again: no step, the weights untouched, and it says so
    final = (killed / "model.safetensors").read_bytes()
    results = train.train(argv(killed, words, *RUN, "--resume"))
    assert results["global_step"] == 6 and results["nothing_to_train"]
    assert results["train_loss"] == pytest.approx(trainers_train_loss(whole), rel=1e-6)
    assert (killed / "model.safetensors").read_bytes() == final
    assert {n: folder_bytes(killed / n) for n in checkpoints_before} == checkpoints_before
    assert results["eval_loss"] == whole["eval_loss"]


def test_a_resume_says_where_from_and_which_steps_its_train_loss_covers(runs, words, capfd, caplog):  # noqa: F811
    root, whole = runs
    caplog.set_level(logging.INFO, logger="hf_embgpt")
    killed = root / "killed-at-3"
    shutil.copytree(root / "killed", killed)
    shutil.rmtree(killed / "checkpoint-6")
    assert train.main(argv(killed, words, *RUN, "--resume")) == 0
    out, err = capfd.readouterr()
    assert f"resuming from {killed / 'checkpoint-3'} (step 3)" in caplog.text
    assert "missing keys" not in err + caplog.text
    # the train loss covers the whole run, as the uninterrupted run's Trainer computed it, and says so
    reference = trainers_train_loss(whole)
    results = json.loads((killed / "train_results_embgpt.json").read_text())
    assert results["train_loss"] == pytest.approx(reference, rel=1e-6)
    assert f"train loss {reference:.4f} (mean of steps 1-6)" in out
    assert same_weights(weights(killed), weights(root / "whole"))


def test_a_truncated_rng_state_is_passed_over_for_the_checkpoint_before(runs, monkeypatch):
    root, _ = runs
    killed = root / "killed-rng"
    shutil.copytree(root / "killed", killed)
    rng_state = killed / "checkpoint-6" / "rng_state.pth"
    rng_state.write_bytes(rng_state.read_bytes()[:-100])
    assert not checkpoints.checkpoint_is_complete(str(killed / "checkpoint-6"))
    # the check reads no torch file's contents: Trainer reads the optimizer when it resumes, once is enough
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load during the completeness check"))
    assert checkpoints.last_complete_checkpoint(str(killed)) == str(killed / "checkpoint-3")


def test_a_folder_in_use_needs_resume_or_overwrite_output_dir(tmp_path, words):  # noqa: F811
    out = tmp_path / "out"
    (out / "checkpoint-100").mkdir(parents=True)
    (out / "model.safetensors").write_bytes(b"an earlier run's")
    short = ["--max_steps", "2", "--save_strategy", "no", "--eval_strategy", "no", "--num_samples", "0"]
    with pytest.raises(
        FileExistsError, match=rf"--output_dir {out} is not empty; pass --resume .* --overwrite_output_dir"
    ):
        train.train(argv(out, words, *short))
    assert sorted(os.listdir(out)) == ["checkpoint-100", "model.safetensors"]

    results = train.train(argv(out, words, *short, "--overwrite_output_dir"))
    assert results["global_step"] == 2 and not (out / "checkpoint-100").exists()
    assert weights(out)  # the new run's model, not the old bytes

    with pytest.raises(ValueError, match="choose one"):
        train.train(argv(out, words, *short, "--overwrite_output_dir", "--resume"))


def test_resume_with_nothing_to_resume_stops_unless_the_folder_is_empty(tmp_path, words):  # noqa: F811
    short = ["--max_steps", "2", "--save_strategy", "no", "--eval_strategy", "no", "--num_samples", "0"]
    typo = tmp_path / "typo"
    typo.mkdir()
    (typo / "notes.txt").write_text("a folder that is not a run")
    broken = tmp_path / "broken"
    (broken / "checkpoint-4").mkdir(parents=True)
    (broken / "checkpoint-4" / "trainer_state.json").write_text("{")
    for folder in (typo, broken):
        with pytest.raises(FileNotFoundError, match=rf"--resume: {folder} holds no complete checkpoint"):
            train.train(argv(folder, words, *short, "--resume"))
    # a folder that does not exist yet: a job script may always pass --resume
    assert train.train(argv(tmp_path / "fresh", words, *short, "--resume"))["global_step"] == 2
