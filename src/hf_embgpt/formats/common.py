"""What every checkpoint format shares: the tensors a config expects, checks that name the file, a model built from
a state dict, GPT-2's special tokens, tokenizers that travel with checkpoints, and atomic file writes."""

import contextlib
import os
import tempfile
import uuid

import torch

from ..configuration_embgpt import EmbGPTConfig
from ..modeling_embgpt import SAVE_LOCK_TIMEOUT, EmbGPTForCausalLM, _atomic_folder, _folder_lock

TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")


def expected_shapes(config):
    """{name: shape} of every tensor in an EmbGPTForCausalLM state dict for `config` (built on the meta device)."""
    with torch.device("meta"):
        model = EmbGPTForCausalLM(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def check_state_dict(state_dict, config, source):
    """Raise a ValueError naming `source` if tensors are missing, unexpected or mis-shaped; fill the tied head.

    `lm_head.weight` may be absent (it is `wte`); when present it must equal `transformer.wte.weight`.
    """
    expected = expected_shapes(config)
    state_dict = dict(state_dict)
    wte = state_dict.get("transformer.wte.weight")
    head = state_dict.pop("lm_head.weight", None)
    if head is not None and wte is not None and head is not wte and not torch.equal(head, wte):
        raise ValueError(f"{source}: lm_head.weight differs from transformer.wte.weight, but EmbGPT ties them")
    missing = [name for name in expected if name not in state_dict and name != "lm_head.weight"]
    unexpected = [name for name in state_dict if name not in expected]
    misshaped = [
        f"{name} {tuple(t.shape)} (expected {expected[name]})"
        for name, t in state_dict.items()
        if name in expected and tuple(t.shape) != expected[name]
    ]
    problems = []
    if missing:
        problems.append(f"checkpoint is missing {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors {', '.join(unexpected)}")
    if misshaped:
        problems.append(f"tensors shaped unlike the config: {', '.join(misshaped)}")
    if problems:
        raise ValueError(f"{source}: {'; '.join(problems)}")
    if wte is not None and "lm_head.weight" in expected:
        state_dict["lm_head.weight"] = wte
    return state_dict


def model_from_state_dict(config, state_dict, source="state dict"):
    """An EmbGPTForCausalLM holding `state_dict`'s tensors themselves (no random init, no copy)."""
    state_dict = check_state_dict(state_dict, config, source)
    with torch.device("meta"):
        model = EmbGPTForCausalLM(config)
    model.load_state_dict({name: t.contiguous() for name, t in state_dict.items()}, strict=True, assign=True)
    model.tie_weights()
    return model.eval()


def slice_vocab(config, state_dict, vocab_size, source="checkpoint"):
    """Keep the first `vocab_size` rows of `wte` (e.g. drop nanoGPT's or llm.c's padding rows)."""
    if vocab_size is None or vocab_size == config.vocab_size:
        return config, state_dict
    if not isinstance(vocab_size, int) or not 0 < vocab_size <= config.vocab_size:
        raise ValueError(f"{source}: vocab_size {vocab_size!r} must be an integer in [1, {config.vocab_size}]")
    state_dict = dict(state_dict)
    wte = state_dict["transformer.wte.weight"][:vocab_size].clone()
    state_dict["transformer.wte.weight"] = wte
    if "lm_head.weight" in state_dict:
        state_dict["lm_head.weight"] = wte
    values = {**config.to_diff_dict(), "vocab_size": vocab_size}
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):  # ids past the new vocabulary no longer exist
        if isinstance(values.get(name), int) and values[name] >= vocab_size:
            values[name] = None
    config = EmbGPTConfig(**values)
    return config, state_dict


@contextlib.contextmanager
def atomic_file(path):
    """Yield a temporary path beside `path`; on success it replaces `path`, on failure it is removed."""
    path = os.path.abspath(os.fspath(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # a fresh name, not mkstemp: the writer creates the file, so it gets the user's umask rather than mode 0600
    temp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield temp
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


def atomic_folder(path, existing="merge"):
    """Stage a folder beside `path` and swap it in whole, under the folder's lock (no reader ever sees a mix).

    existing: "merge" keeps the folder's other files (a model saved beside its tokenizer), "replace" drops them,
    "refuse" raises FileExistsError when the folder is not empty. The machinery is the model file's own, so that
    remote-code users get it too.
    """
    return _atomic_folder(path, existing)


def folder_lock(path):
    """Keep other processes from saving into folder `path` (they wait) while several writes go in one by one."""
    path = os.path.realpath(os.fspath(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return _folder_lock(path, SAVE_LOCK_TIMEOUT)


def load_tokenizer(path):
    """A tokenizer from a folder or Hub id; a bare GPT-2 BPE folder (vocab.json + merges.txt) works too."""
    from transformers import AutoTokenizer, GPT2TokenizerFast

    path = os.fspath(path)
    bare = os.path.isdir(path) and not any(
        os.path.isfile(os.path.join(path, name)) for name in ("tokenizer.json", "tokenizer_config.json")
    )
    if bare and all(os.path.isfile(os.path.join(path, name)) for name in ("vocab.json", "merges.txt")):
        return GPT2TokenizerFast.from_pretrained(path, model_max_length=1024)
    return AutoTokenizer.from_pretrained(path)


def find_tokenizer(path, fmt=None):
    """The tokenizer that came with a checkpoint, or None: transformers tokenizer files, or OpenAI's BPE files."""
    path = os.fspath(path)
    if fmt == "hub":
        try:
            return load_tokenizer(path)
        except (OSError, ValueError):
            return None
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    if any(os.path.isfile(os.path.join(folder, name)) for name in TOKENIZER_FILES):
        return load_tokenizer(folder)
    encoder, bpe = os.path.join(folder, "encoder.json"), os.path.join(folder, "vocab.bpe")
    if os.path.isfile(encoder) and os.path.isfile(bpe):  # OpenAI's release: the same files under other names
        import shutil

        with tempfile.TemporaryDirectory() as staging:
            shutil.copy(encoder, os.path.join(staging, "vocab.json"))
            shutil.copy(bpe, os.path.join(staging, "merges.txt"))
            return load_tokenizer(staging)
    return None


def save_tokenizer(tokenizer, directory):
    """`tokenizer.save_pretrained(directory)`, swapped in whole beside the folder's other files (see atomic_folder)."""
    with atomic_folder(directory) as staging:
        tokenizer.save_pretrained(staging)
