"""Trainer checkpoints: only a complete one is resumed from."""

import json
import logging
import os
import re

import torch

logger = logging.getLogger(__name__)


def checkpoint_is_complete(folder):
    """True when `folder` holds everything Trainer writes, each file readable: the trainer state (written last, with
    the folder's step), the weights (full, adapter, or FSDP/DeepSpeed shards), the optimizer, the scheduler, the RNG
    state. A process killed mid-save leaves a folder that fails one of these."""
    from safetensors import safe_open

    step = re.search(r"checkpoint-(\d+)$", folder.rstrip("/"))
    try:
        with open(os.path.join(folder, "trainer_state.json")) as f:
            state = json.load(f)
        if step is None or state.get("global_step") != int(step.group(1)):
            return False
        names = set(os.listdir(folder))
        weights = [n for n in names if n.startswith(("model", "adapter_model", "pytorch_model"))]
        sharded = any(n.startswith("global_step") for n in names)  # DeepSpeed keeps weights + optimizer there
        has_optimizer = sharded or any(n.startswith("optimizer") for n in names)
        if not (weights or sharded) or not has_optimizer or "scheduler.pt" not in names:
            return False
        if not any(n.startswith("rng_state") for n in names):
            return False
        for name in weights:
            if name.endswith(".safetensors"):
                with safe_open(os.path.join(folder, name), "pt") as f:
                    for key in f.keys():
                        f.get_slice(key)
        for name in ("optimizer.pt", "scheduler.pt"):
            if name in names:
                torch.load(os.path.join(folder, name), map_location="cpu", weights_only=True)
        return True
    except Exception as e:  # noqa: BLE001 - json, pickle and safetensors raise assorted errors on truncated files
        logger.warning("checkpoint %s is incomplete or unreadable (%s: %s)", folder, type(e).__name__, e)
        return False


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
