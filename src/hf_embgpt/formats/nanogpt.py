"""nanoGPT's `ckpt.pt`, read and written.

nanoGPT's train.py saves `{"model": state_dict, "model_args": {n_layer, n_head, n_embd, block_size, bias,
vocab_size, dropout}, "optimizer": ..., "iter_num": ..., "best_val_loss": ..., "config": ...}`. Its parameter names
and nn.Linear layout are EmbGPT's own, so the table is the identity, except:

- `torch.compile` prefixes every name with `_orig_mod.`: stripped on read;
- `attn.bias` is a causal-mask buffer (nanoGPT without flash attention): dropped;
- `bias=False` models have no bias tensors at all: EmbGPTConfig(bias=False) has none either;
- nanoGPT trains with the exact (erf) GELU: reading sets `activation_function="gelu"`;
- from-scratch runs pad the vocabulary to 50304. Reading keeps the padded size as the model's `vocab_size`
  (the logits have the checkpoint's width); `vocab_size=50257` keeps only the first 50257 rows of `wte`.

The checkpoint is loaded with `torch.load(weights_only=True)`: no code runs from the file. Writing adds an `embgpt`
entry with the settings `model_args` can't hold (activation, LayerNorm epsilon); nanoGPT ignores it.
"""

import logging
import os
import pickle
import re

import torch

from ..configuration_embgpt import EmbGPTConfig
from ..modeling_embgpt import GPT2_MASK_BUFFER
from .common import atomic_file, check_state_dict, slice_vocab

logger = logging.getLogger(__name__)

MODEL_ARGS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size", "dropout")
COMPILE_PREFIX = "_orig_mod."
EXTRA_KEY = "embgpt"
NANOGPT_ACTIVATION = "gelu"  # nn.GELU() in nanoGPT's model.py
NANOGPT_EPS = 1e-5  # F.layer_norm(..., 1e-5) in nanoGPT's LayerNorm


def read_nanogpt(path, vocab_size=None):
    """Read a nanoGPT checkpoint (a ckpt.pt, or the out_dir holding one): returns (EmbGPTConfig, state_dict)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "ckpt.pt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"global ([\w.]+)", str(e), re.IGNORECASE)  # torch names it: "GLOBAL module.Class"
        if found:  # a well-formed pickle of more than tensors: it names the class it would have to import
            raise ValueError(_refused_pickle(path, found.group(1))) from None
        raise _unreadable(path, e) from e
    except (RuntimeError, EOFError, OSError) as e:
        raise _unreadable(path, e) from e
    if not isinstance(checkpoint, dict) or "model_args" not in checkpoint:
        keys = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(
            f"{path} has no 'model_args', so it is not a nanoGPT checkpoint (found {keys}); "
            f"for a transformers GPT-2 or EmbGPT checkpoint, convert its folder instead"
        )
    if not isinstance(checkpoint.get("model"), dict):
        raise ValueError(f"{path} has 'model_args' but no 'model' state dict")
    args = checkpoint["model_args"]
    missing = [name for name in MODEL_ARGS if name not in args]
    if missing:
        raise ValueError(f"{path}: model_args is missing {', '.join(missing)}")
    extra = checkpoint.get(EXTRA_KEY) or {}
    try:
        config = EmbGPTConfig(
            **{name: args[name] for name in MODEL_ARGS},
            activation_function=extra.get("activation_function", NANOGPT_ACTIVATION),
            layer_norm_epsilon=extra.get("layer_norm_epsilon", NANOGPT_EPS),
        )
    except ValueError as e:
        raise ValueError(f"{path}: model_args describe an impossible model: {e}") from e

    state_dict = {}
    for name, tensor in checkpoint["model"].items():
        name = name.removeprefix(COMPILE_PREFIX)
        if not GPT2_MASK_BUFFER.search(name):
            state_dict[name] = tensor
    state_dict = check_state_dict(state_dict, config, path)
    return slice_vocab(config, state_dict, vocab_size, path)


def _unreadable(path, error):
    """The first line of torch's reason; for its weights-only unpickler, the line after its advice to load the file
    with weights_only=False (which would not help a corrupt file, and would run code from a hostile one)."""
    message = str(error).partition("WeightsUnpickler error:")[2] or str(error)
    reason = message.strip().splitlines()[0] if message.strip() else type(error).__name__
    return ValueError(f"{path} is not a readable torch checkpoint (truncated or corrupt?): {reason}")


def _refused_pickle(path, global_name):
    """Why torch.load(weights_only=True) refused a file, without torch's advice to load it with weights_only=False."""
    return (
        f"{path} holds Python objects other than tensors and plain containers ({global_name}); it is refused, since "
        f"unpickling them could run code from the file (nanoGPT checkpoints hold only tensors, numbers and strings)"
    )


def write_nanogpt(config, state_dict, path):
    """Write `ckpt.pt` as nanoGPT's train.py does (`model` + `model_args`), loadable by its sample.py."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "ckpt.pt")
    if config.activation_function != NANOGPT_ACTIVATION:
        logger.warning(
            "nanoGPT's model.py computes the exact GELU; this model uses %r, so nanoGPT's logits will differ "
            "slightly (EmbGPT reads the activation back from the checkpoint)",
            config.activation_function,
        )
    if config.layer_norm_epsilon != NANOGPT_EPS:
        logger.warning("nanoGPT's LayerNorm uses eps 1e-5; this model uses %s", config.layer_norm_epsilon)
    state_dict = check_state_dict(state_dict, config, "model")
    state_dict = {name: t.detach().cpu() for name, t in state_dict.items()}
    state_dict["lm_head.weight"] = state_dict["transformer.wte.weight"]  # nanoGPT saves both, sharing storage
    checkpoint = {
        "model": state_dict,
        "model_args": {name: getattr(config, name) for name in MODEL_ARGS},
        "iter_num": 0,
        "best_val_loss": float("inf"),
        "config": {},
        EXTRA_KEY: {
            "activation_function": config.activation_function,
            "layer_norm_epsilon": config.layer_norm_epsilon,
        },
    }
    # through a Python file, so a full or read-only disk surfaces as an OSError rather than torch's "enforce fail"
    with atomic_file(path) as temp, open(temp, "wb") as f:
        torch.save(checkpoint, f)
    logger.info("wrote %s (nanoGPT)", path)


__all__ = ["MODEL_ARGS", "read_nanogpt", "write_nanogpt"]
