"""llm.c's GPT-2 weight files (`gpt2_124M.bin`, `gpt2_124M_bf16.bin`), read and written.

Layout (llm.c train_gpt2.py `write_model`, train_gpt2.c `fill_in_parameter_sizes`):

    header  256 little-endian int32: [0] magic 20240326, [1] version (3: float32, 5: bfloat16), [2] block_size,
            [3] vocab_size, [4] n_layer, [5] n_head, [6] n_embd, [7] padded vocab size; the rest 0
    body    the tensors back to back, nn.Linear layout, each *kind* stacked across the layers:
            wte (Vp, C) wpe (T, C) ln1w (L, C) ln1b (L, C) qkvw (L, 3C, C) qkvb (L, 3C) attprojw (L, C, C)
            attprojb (L, C) ln2w ln2b (L, C) fcw (L, 4C, C) fcb (L, 4C) fcprojw (L, C, 4C) fcprojb (L, C) lnfw lnfb (C)

wte's rows past vocab_size are padding (zeros, so that the matmuls tile well); reading drops them and writing adds
zero rows up to the next multiple of 128, as llm.c does. llm.c's GPT-2 has biases everywhere and uses the tanh GELU,
so reading gives `bias=True, activation_function="gelu_new"`.
"""

import logging
import os

import numpy as np
import torch

from ..configuration_embgpt import EmbGPTConfig
from .common import atomic_file, check_state_dict

logger = logging.getLogger(__name__)

MAGIC = 20240326
VERSIONS = {3: "float32", 5: "bfloat16"}
HEADER_INTS = 256
HEADER_BYTES = 4 * HEADER_INTS
VOCAB_MULTIPLE = 128

# llm.c name -> EmbGPT name; "{i}" marks a kind stacked across the layers. The order is the file's.
LAYOUT = (
    ("wte", "transformer.wte.weight"),
    ("wpe", "transformer.wpe.weight"),
    ("ln1w", "transformer.h.{i}.ln_1.weight"),
    ("ln1b", "transformer.h.{i}.ln_1.bias"),
    ("qkvw", "transformer.h.{i}.attn.c_attn.weight"),
    ("qkvb", "transformer.h.{i}.attn.c_attn.bias"),
    ("attprojw", "transformer.h.{i}.attn.c_proj.weight"),
    ("attprojb", "transformer.h.{i}.attn.c_proj.bias"),
    ("ln2w", "transformer.h.{i}.ln_2.weight"),
    ("ln2b", "transformer.h.{i}.ln_2.bias"),
    ("fcw", "transformer.h.{i}.mlp.c_fc.weight"),
    ("fcb", "transformer.h.{i}.mlp.c_fc.bias"),
    ("fcprojw", "transformer.h.{i}.mlp.c_proj.weight"),
    ("fcprojb", "transformer.h.{i}.mlp.c_proj.bias"),
    ("lnfw", "transformer.ln_f.weight"),
    ("lnfb", "transformer.ln_f.bias"),
)


def _shapes(config, padded_vocab):
    """[(llm.c name, EmbGPT name, shape of one layer's tensor)] in file order."""
    C, T = config.n_embd, config.block_size
    one_layer = {
        "ln1w": (C,), "ln1b": (C,), "qkvw": (3 * C, C), "qkvb": (3 * C,), "attprojw": (C, C), "attprojb": (C,),
        "ln2w": (C,), "ln2b": (C,), "fcw": (4 * C, C), "fcb": (4 * C,), "fcprojw": (C, 4 * C), "fcprojb": (C,),
        "wte": (padded_vocab, C), "wpe": (T, C), "lnfw": (C,), "lnfb": (C,),
    }  # fmt: skip
    return [(short, name, one_layer[short]) for short, name in LAYOUT]


def read_llmc(path):
    """Read an llm.c .bin: returns (EmbGPTConfig, state_dict) with float32 tensors and the padding rows dropped."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder; an llm.c checkpoint is one .bin file (e.g. gpt2_124M.bin)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist")
    size = os.path.getsize(path)
    if size < HEADER_BYTES:
        raise ValueError(f"{path} is truncated: {size} bytes, shorter than llm.c's {HEADER_BYTES}-byte header")
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    magic, version, block_size, vocab_size, n_layer, n_head, n_embd, padded_vocab = (int(v) for v in header[:8])
    if magic != MAGIC:
        raise ValueError(f"{path} has magic {magic}, not llm.c's GPT-2 model magic {MAGIC}")
    if version not in VERSIONS:
        raise ValueError(f"{path} has llm.c version {version}; supported: 3 (float32) and 5 (bfloat16)")
    if padded_vocab < vocab_size:
        raise ValueError(f"{path}: header's padded vocab size {padded_vocab} is smaller than vocab_size {vocab_size}")
    try:
        config = EmbGPTConfig(
            vocab_size=vocab_size,
            block_size=block_size,
            n_layer=n_layer,
            n_head=n_head,
            n_embd=n_embd,
        )
    except ValueError as e:
        raise ValueError(f"{path}: header describes an impossible model: {e}") from e
    layout = _shapes(config, padded_vocab)
    counts = [(n_layer if "{i}" in name else 1) * int(np.prod(shape)) for _, name, shape in layout]
    itemsize = 4 if version == 3 else 2
    expected = HEADER_BYTES + sum(counts) * itemsize
    if size < expected:
        raise ValueError(
            f"{path} is truncated: the header (L={n_layer}, C={n_embd}, T={block_size}, Vp={padded_vocab}, "
            f"{VERSIONS[version]}) needs {expected} bytes but the file has {size}"
        )
    if size > expected:
        raise ValueError(
            f"{path} has {size - expected} bytes more than its header (L={n_layer}, C={n_embd}, T={block_size}, "
            f"Vp={padded_vocab}, {VERSIONS[version]}) describes: shapes inconsistent with the header"
        )
    raw = np.fromfile(path, dtype="<f4" if version == 3 else "<u2", offset=HEADER_BYTES)
    if version == 5:  # bfloat16 is the top half of a float32: widen exactly
        raw = (raw.astype(np.uint32) << 16).view(np.float32)
    values = torch.from_numpy(raw.astype(np.float32, copy=False))

    state_dict, start = {}, 0
    for (_, name, shape), count in zip(layout, counts, strict=True):
        block = values[start : start + count]
        start += count
        if "{i}" in name:
            for i, tensor in enumerate(block.view(n_layer, *shape)):
                state_dict[name.format(i=i)] = tensor
        else:
            state_dict[name] = block.view(*shape)
    state_dict["transformer.wte.weight"] = state_dict["transformer.wte.weight"][:vocab_size]
    return config, check_state_dict(state_dict, config, path)


def write_llmc(config, state_dict, path, dtype="float32"):
    """Write an llm.c .bin: version 3 (`dtype="float32"`) or 5 (`"bfloat16"`, rounded to nearest even)."""
    path = os.fspath(path)
    versions = {name: version for version, name in VERSIONS.items()}
    if dtype not in versions:
        raise ValueError(f"llm.c dtype {dtype!r} is not supported; choose float32 (v3) or bfloat16 (v5)")
    if not config.bias:
        raise ValueError("llm.c's GPT-2 has biases everywhere; a bias=False model can't be written in llm.c format")
    if config.activation_function != "gelu_new":
        logger.warning(
            "llm.c computes the tanh GELU; this model uses %r, so llm.c's logits will differ slightly",
            config.activation_function,
        )
    state_dict = check_state_dict(state_dict, config, "model")
    padded_vocab = -(-config.vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    header = np.zeros(HEADER_INTS, dtype="<i4")
    fields = (config.block_size, config.vocab_size, config.n_layer, config.n_head, config.n_embd, padded_vocab)
    header[:8] = (MAGIC, versions[dtype], *fields)
    torch_dtype = torch.float32 if dtype == "float32" else torch.bfloat16
    with atomic_file(path) as temp, open(temp, "wb") as f:
        f.write(header.tobytes())
        for short, name, _ in _shapes(config, padded_vocab):
            if "{i}" in name:
                tensor = torch.stack([state_dict[name.format(i=i)] for i in range(config.n_layer)])
            else:
                tensor = state_dict[name]
            if short == "wte" and padded_vocab > config.vocab_size:
                pad = tensor.new_zeros(padded_vocab - config.vocab_size, config.n_embd)
                tensor = torch.cat([tensor, pad])
            tensor = tensor.detach().to("cpu", torch_dtype).contiguous()
            if torch_dtype == torch.bfloat16:
                tensor = tensor.view(torch.int16)
            f.write(tensor.numpy().astype("<f4" if dtype == "float32" else "<i2", copy=False).tobytes())
    logger.info("wrote %s (llm.c v%d, %s)", path, versions[dtype], dtype)


__all__ = ["MAGIC", "VERSIONS", "LAYOUT", "read_llmc", "write_llmc"]
