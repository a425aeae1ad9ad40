"""Trainer checkpoints: only a complete one is resumed from."""

import json
import logging
import os
import re
import shutil
import zipfile

logger = logging.getLogger(__name__)


def checkpoint_is_complete(folder):
    """True when `folder` holds everything Trainer writes, each file whole: the trainer state (written last, with
    the folder's step), the weights (full, sharded with their index, adapter, or FSDP/DeepSpeed shards), the
    optimizer, the scheduler (inside DeepSpeed's shards when its config has one), the RNG state. A process killed
    mid-save leaves a folder that fails one of these.

    Nothing is unpickled: torch's files are zip archives whose directory is written last, so a cut-off file shows
    without reading the optimizer, which Trainer reads anyway when it resumes.
    """
    from safetensors import safe_open

    step = re.search(r"checkpoint-(\d+)$", folder.rstrip("/"))
    try:
        with open(os.path.join(folder, "trainer_state.json")) as f:
            state = json.load(f)
        if step is None or state.get("global_step") != int(step.group(1)):
            return False
        names = set(os.listdir(folder))
        weights = [n for n in names if n.startswith(("model", "adapter_model", "pytorch_model"))]
        # DeepSpeed keeps weights, optimizer and (when its config names one) the scheduler in global_stepN/
        deepspeed = any(n.startswith("global_step") for n in names)
        has_optimizer = deepspeed or any(n.startswith("optimizer") for n in names)
        if not (weights or deepspeed) or not has_optimizer or not (deepspeed or "scheduler.pt" in names):
            return False
        if not any(n.startswith("rng_state") for n in names):
            return False
        for name in weights:
            if name.endswith(".index.json"):  # a sharded save: every shard its index names
                with open(os.path.join(folder, name)) as f:
                    if not set(json.load(f)["weight_map"].values()) <= names:
                        return False
            if name.endswith(".safetensors"):
                with safe_open(os.path.join(folder, name), "pt") as f:
                    for key in f.keys():
                        f.get_slice(key)
        for name in names:
            if name.endswith((".pt", ".pth", ".bin")) and not _torch_file_is_whole(os.path.join(folder, name)):
                raise ValueError(f"{name} is cut short")
        return True
    except Exception as e:  # noqa: BLE001 - json, zip and safetensors raise assorted errors on truncated files
        logger.warning("checkpoint %s is incomplete or unreadable (%s: %s)", folder, type(e).__name__, e)
        return False


def _torch_file_is_whole(path):
    """Whether a `torch.save` file is all there: its zip directory reads and no entry runs past the end."""
    size = os.path.getsize(path)
    with zipfile.ZipFile(path) as archive:  # BadZipFile when the directory at the end is missing
        return all(entry.header_offset + entry.compress_size <= size for entry in archive.infolist())


def trainer_state(checkpoint):
    """The `trainer_state.json` of a checkpoint folder, as a dict."""
    with open(os.path.join(checkpoint, "trainer_state.json")) as f:
        return json.load(f)


def resume_point(output_dir, resume, overwrite_output_dir):
    """The checkpoint a run continues from (None: a fresh run), by run_clm.py's rules for `output_dir`.

    A folder that is not empty is never trained into afresh by accident: without `resume` it needs
    `overwrite_output_dir` (the caller then clears it); with `resume` it must hold a complete checkpoint, so a
    mistyped path or a run whose checkpoints are all broken stops rather than starting over. A missing or empty
    folder starts a fresh run either way, so a job script may always pass --resume.
    """
    if resume and overwrite_output_dir:
        raise ValueError("--resume continues the run in --output_dir and --overwrite_output_dir clears it: choose one")
    in_use = os.path.isdir(output_dir) and bool(os.listdir(output_dir))
    if not resume:
        if in_use and not overwrite_output_dir:
            raise FileExistsError(
                f"--output_dir {output_dir} is not empty; pass --resume to continue its run, or "
                f"--overwrite_output_dir to start over and clear it"
            )
        return None
    checkpoint = last_complete_checkpoint(output_dir)
    if checkpoint is None and in_use:
        raise FileNotFoundError(
            f"--resume: {output_dir} holds no complete checkpoint-N folder; check the path, or start over there "
            f"with --overwrite_output_dir instead of --resume"
        )
    if checkpoint is None:
        logger.info("--resume: %s is empty; starting a fresh run", output_dir)
    return checkpoint


def clear_folder(folder):
    """Remove everything inside `folder` (the folder itself stays: it may be a mount point)."""
    for entry in os.scandir(folder):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.remove(entry.path)


def last_complete_checkpoint(output_dir):
    """The newest `checkpoint-N` folder in `output_dir` that `checkpoint_is_complete`; None when there is none."""
    if not os.path.isdir(output_dir):
        return None
    found = [(int(m.group(1)), n) for n in os.listdir(output_dir) if (m := re.fullmatch(r"checkpoint-(\d+)", n))]
    for _, name in sorted(found, reverse=True):
        folder = os.path.join(output_dir, name)
        if checkpoint_is_complete(folder):
            return folder
        logger.warning("ignoring incomplete checkpoint %s", folder)
    return None


# ----------------------------------------------------------------------------------------------------------------
