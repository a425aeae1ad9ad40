"""Change a model's context length by cropping or growing its position embeddings (`wpe`).

`block_size` is the number of rows of `transformer.wpe`: position p of the input adds row p. Nothing else in the
model depends on it (attention masks are built per call), so changing the context length is a change of `wpe` and
of `config.block_size` (= `max_position_embeddings`).

- `crop_block_size(model, n)` keeps rows `0 … n-1`, as nanoGPT's `GPT.crop_block_size` does: the cropped model
  computes exactly what the original did on inputs of length <= n.
- `extend_block_size(model, n, method)` grows `wpe` to n rows so the model accepts longer inputs; it is a starting
  point for fine-tuning at the longer context, since the new positions were never trained. Methods:

  * ``"copy"``: rows `0 … old-1` unchanged; every new row is a copy of the last learned row `old-1`.
  * ``"tile"``: rows `0 … old-1` unchanged; new row p is row `p mod old` (the learned table repeated).
  * ``"interpolate"``: the learned table stretched over n positions by linear interpolation with aligned end
    points (`align_corners=True`): new row j is the learned table read at the fractional position
    `j * (old-1) / (n-1)`. Row 0 and row n-1 equal the old first and last rows exactly, and old row i sits exactly
    at new position `i * (n-1) / (old-1)` whenever that is an integer (for every i when `n-1` is a multiple of
    `old-1`, e.g. 128 -> 255). The model keeps the *shape* of what it learned about positions, but every position
    other than 0 moves, so outputs change even on short inputs until it is fine-tuned.

  With "copy" and "tile" the extended model computes exactly what the original did on inputs of length <= old.

  Check the last row first. A model trained from scratch on blocks of exactly block_size tokens with
  `labels = input_ids` never trains row `old-1`: the last position predicts nothing, so no gradient reaches it and
  it keeps its initial value (`embgpt inspect` shows a norm far below its neighbours'). "copy" would spread that row
  over every new position; `crop_block_size(model, old - 1)` before extending drops it.

Both replace `transformer.wpe` with a new `nn.Embedding` (same dtype, device and `requires_grad`), so build the
optimizer after changing the block size. Both update `config.block_size` and, when set,
`generation_config.max_length` (lowered to n on a crop; moved to n on an extension when it equalled the old block
size). `embgpt block-size MODEL OUT --crop N | --extend N` does the same to a saved checkpoint (EmbGPT or GPT-2
folder or Hub id) and writes an EmbGPT folder, with the tokenizer's `model_max_length` set to N.
"""

import argparse
import logging

import torch
from torch import nn
from torch.nn import functional as F

from .formats.common import save_tokenizer
from .formats.registry import check_source
from .modeling_embgpt import EmbGPTForCausalLM, EmbGPTPreTrainedModel

logger = logging.getLogger(__name__)

EXTEND_METHODS = ("interpolate", "copy", "tile")
# 2**20 positions: wpe alone is 3 GiB at GPT-2 small's width, and one layer's attention scores over such a context
# (T x T per head) would not fit in any memory; a size past it is a typo, not a plan
MAX_BLOCK_SIZE = 1 << 20


def _base_model(model):
    """The module that owns `wpe`: the EmbGPTModel itself, or the one inside an EmbGPT head model."""
    if not isinstance(model, EmbGPTPreTrainedModel):
        raise TypeError(f"expected an EmbGPT model (EmbGPTForCausalLM, EmbGPTModel, ...), got {type(model).__name__}")
    return model.base_model  # the model itself for EmbGPTModel, `model.transformer` for the head models


def _check_size(n, what):
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{what} block size must be an integer, got {n!r} ({type(n).__name__})")
    if n <= 0:
        raise ValueError(f"{what} block size must be a positive integer, got {n}")


def _set_wpe(model, base, weight):
    """Swap in a new `wpe` (keeping dtype, device and requires_grad) and record its size in every config."""
    old = base.wpe
    new = nn.Embedding(weight.shape[0], weight.shape[1], device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
    new.weight.requires_grad_(old.weight.requires_grad)
    base.wpe = new
    old_size, n = old.num_embeddings, weight.shape[0]
    for config in {id(model.config): model.config, id(base.config): base.config}.values():
        config.block_size = n
    generation_config = getattr(model, "generation_config", None)
    max_length = getattr(generation_config, "max_length", None)
    if max_length is not None and (max_length > n or max_length == old_size):
        logger.info(f"generation_config.max_length {max_length} -> {n}")
        generation_config.max_length = n
    return model


def crop_block_size(model, n, cache=None):
    """Keep positions `0 … n-1` of `wpe` (nanoGPT's `crop_block_size`); returns the same model, changed in place.

    Args:
        model: an EmbGPT model (any head).
        n: the new block size, `1 <= n <= config.block_size`.
        cache: a KV cache (`transformers.Cache`) about to be used with the cropped model; cropping below the number
            of positions it holds raises, since those positions would no longer exist.
    """
    base = _base_model(model)
    _check_size(n, "cropped")
    old = base.wpe.num_embeddings
    if n > old:
        raise ValueError(f"cannot crop block_size {old} to {n}, which is larger; use extend_block_size to grow it")
    if cache is not None:
        if not hasattr(cache, "get_seq_length"):
            raise TypeError(
                f"cache must be a transformers Cache (DynamicCache, StaticCache, ...), got {type(cache).__name__}"
            )
        held = cache.get_seq_length()
        if held > n:
            raise ValueError(f"cannot crop block_size to {n}: the cache in use holds {held} positions")
    with torch.no_grad():
        weight = base.wpe.weight[:n].clone()
    logger.info(f"cropped block_size {old} -> {n}")
    return _set_wpe(model, base, weight)


def extended_wpe(weight, n, method="interpolate"):
    """The (n, C) position table grown from the (old, C) table `weight` by `method` (see the module docstring)."""
    _check_size(n, "extended")
    if n > MAX_BLOCK_SIZE:
        gib = n * weight.shape[1] * weight.element_size() / 2**30
        raise ValueError(
            f"extended block size {n:,} is past the limit of {MAX_BLOCK_SIZE:,} positions "
            f"(its wpe alone would take {gib:,.1f} GiB)"
        )
    if method not in EXTEND_METHODS:
        raise ValueError(f"unknown extension method {method!r}; choose one of {', '.join(EXTEND_METHODS)}")
    old = weight.shape[0]
    if n < old:
        raise ValueError(f"cannot extend block_size {old} to {n}, which is smaller; use crop_block_size to shrink it")
    if method == "copy":
        return torch.cat([weight, weight[-1:].expand(n - old, -1)])
    if method == "tile":
        return weight[torch.arange(n, device=weight.device) % old]
    # interpolate in float32 whatever the storage dtype; (old, C) -> (1, C, old) is the layout F.interpolate wants
    stretched = F.interpolate(weight.float().t()[None], size=n, mode="linear", align_corners=True)
    return stretched[0].t().to(weight.dtype).contiguous()


def extend_block_size(model, n, method="interpolate"):
    """Grow `wpe` to n rows by `"interpolate"`, `"copy"` or `"tile"`; returns the same model, changed in place.

    See the module docstring for where each method puts the learned rows. `n` equal to the current block size
    leaves the model unchanged.
    """
    base = _base_model(model)
    _check_size(n, "extended")
    old = base.wpe.num_embeddings
    with torch.no_grad():
        weight = extended_wpe(base.wpe.weight.detach(), n, method)
    if n == old:
        return model
    logger.info(f"extended block_size {old} -> {n} ({method})")
    return _set_wpe(model, base, weight)


# ----------------------------------------------------------------------------------------------------------------
# `embgpt block-size MODEL OUT --crop N | --extend N [--method M]`


def build_parser():
    parser = argparse.ArgumentParser(
        prog="embgpt block-size",
        description="Crop or extend a checkpoint's context length (the rows of wpe) and save it as an EmbGPT folder.",
    )
    parser.add_argument("model", help="EmbGPT or GPT-2 checkpoint: folder or Hub id")
    parser.add_argument("out", help="folder to write the changed checkpoint (and the tokenizer, if MODEL has one)")
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--crop", type=int, metavar="N", help="keep positions 0..N-1 (exact on inputs up to N)")
    size.add_argument("--extend", type=int, metavar="N", help="grow wpe to N positions")
    parser.add_argument(
        "--method",
        choices=EXTEND_METHODS,
        default="interpolate",
        help="how --extend fills the new rows (default: interpolate; copy and tile keep rows 0..old-1 exactly)",
    )
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    from transformers import AutoTokenizer

    if args.extend is not None and args.extend > MAX_BLOCK_SIZE:  # before loading anything
        build_parser().error(f"--extend {args.extend} is past the limit of {MAX_BLOCK_SIZE:,} positions")
    model = EmbGPTForCausalLM.from_pretrained(check_source(args.model, "model"))
    old = model.config.block_size
    if args.crop is not None:
        crop_block_size(model, args.crop)
    else:
        extend_block_size(model, args.extend, method=args.method)
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.model)
    except (OSError, ValueError, TypeError) as error:
        tokenizer = None
        logger.info(f"{args.model} has no tokenizer to copy ({error})")
    model.save_pretrained(args.out)
    if tokenizer is not None:
        tokenizer.model_max_length = model.config.block_size  # so the tokenizer's truncation matches the model
        save_tokenizer(tokenizer, args.out)
    how = "cropped" if args.crop is not None else f"extended ({args.method})"
    print(f"{how} block_size {old} -> {model.config.block_size}; saved to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
