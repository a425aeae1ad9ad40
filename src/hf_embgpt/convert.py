"""`embgpt convert SRC DST --to FORMAT`: move GPT-2 weights between every format they come in.

Formats (each has one name table, both directions, in its own module):

    embgpt   an EmbGPT folder (`save_pretrained`: config.json with auto_map, code files, model.safetensors)
    gpt2     a transformers GPT2LMHeadModel folder (table in modeling_embgpt: four transposes)
    nanogpt  nanoGPT's `ckpt.pt` (`model_args` + `model`)                      -> convert_nanogpt.py
    llmc     llm.c's `gpt2_124M.bin` (v3 fp32) / `gpt2_124M_bf16.bin` (v5 bf16) -> convert_llmc.py
    tf       OpenAI's TensorFlow checkpoint (`model.ckpt.*` + `hparams.json`)   -> convert_tf.py

Every reader returns `(EmbGPTConfig, state_dict)` in EmbGPT's names and layout, checked against the config: a
missing, unexpected or mis-shaped tensor is an error that names the file. Every writer stages its output beside the
destination and renames it into place, so a failed conversion never leaves a half-written destination.
"""

import argparse
import contextlib
import logging
import os
import re
import shlex
import sys
import tempfile
import uuid

import torch

from .configuration_embgpt import EmbGPTConfig
from .modeling_embgpt import EmbGPTForCausalLM

logger = logging.getLogger(__name__)

FORMATS = ("embgpt", "gpt2", "nanogpt", "llmc", "tf")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name; a bare word is more likely a missing file


# ----------------------------------------------------------------------------------------------------------------
# Shared by the format modules: the expected tensors of a config, checks, building a model, atomic files.


def expected_shapes(config):
    """{name: shape} of every tensor in an EmbGPTForCausalLM state dict for `config` (built on the meta device)."""
    with torch.device("meta"):
        model = EmbGPTForCausalLM(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def gpt2_special_tokens(vocab_size):
    """GPT-2's <|endoftext|> (50256) as bos/eos when the vocabulary has it; none for other vocabularies."""
    eot = 50256 if isinstance(vocab_size, int) and vocab_size > 50256 else None
    return {"bos_token_id": eot, "eos_token_id": eot}


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


def atomic_folder(path):
    """Stage a folder beside `path` and move its files in on success (no half-written destination)."""
    from .modeling_embgpt import _atomic_folder

    return _atomic_folder(path)


# ----------------------------------------------------------------------------------------------------------------
# Detection, reading and writing any format.


def detect_format(path):
    """Name the format of `path` (one of FORMATS, or "hub" for a Hub repo id); ValueError when unrecognised."""
    path = os.fspath(path)
    if os.path.isdir(path):
        config_file = os.path.join(path, "config.json")
        if os.path.isfile(config_file):
            model_type = EmbGPTConfig.get_config_dict(path)[0].get("model_type")
            if model_type in ("embgpt", "gpt2"):
                return model_type
            raise ValueError(f"{config_file} describes a {model_type!r} model; only 'embgpt' and 'gpt2' convert")
        names = os.listdir(path)
        if "hparams.json" in names or any(name.endswith(".index") for name in names):
            return "tf"
        if "ckpt.pt" in names:
            return "nanogpt"
        raise ValueError(
            f"{path}: unknown checkpoint format; expected a folder with config.json (EmbGPT or GPT-2), "
            f"hparams.json + model.ckpt.index (OpenAI TF) or ckpt.pt (nanoGPT)"
        )
    if path.endswith(".index") and os.path.isfile(path) or os.path.isfile(path + ".index"):
        return "tf"
    if not os.path.isfile(path):
        if _REPO_ID.match(path) and not os.path.isabs(path) and not path.startswith("."):
            return "hub"
        raise FileNotFoundError(f"{path} does not exist")
    with open(path, "rb") as f:
        head = f.read(8)
    from .convert_llmc import MAGIC

    if len(head) >= 4 and int.from_bytes(head[:4], "little") == MAGIC:
        return "llmc"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80\x02"):  # torch.save's zip, or its legacy pickle
        return "nanogpt"
    raise ValueError(
        f"{path}: unknown checkpoint format (first bytes {head!r}); expected an llm.c .bin (magic {MAGIC}), "
        f"a nanoGPT ckpt.pt, an OpenAI TF checkpoint or a transformers folder"
    )


def read_checkpoint(path, fmt=None):
    """Read any supported checkpoint: returns (EmbGPTForCausalLM, format name)."""
    fmt = fmt or detect_format(path)
    if fmt in ("embgpt", "gpt2", "hub"):
        # from_pretrained converts GPT-2 folders (and Hub ids) exactly: the core GPT-2 table
        return EmbGPTForCausalLM.from_pretrained(path).eval(), fmt
    if fmt == "nanogpt":
        from .convert_nanogpt import read_nanogpt as reader
    elif fmt == "llmc":
        from .convert_llmc import read_llmc as reader
    elif fmt == "tf":
        from .convert_tf import read_tf as reader
    else:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    config, state_dict = reader(path)
    return model_from_state_dict(config, state_dict, source=path), fmt


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


def write_checkpoint(model, destination, fmt, tokenizer=None, provenance=None, llmc_dtype="float32"):
    """Write `model` to `destination` in format `fmt`; folders get the tokenizer and a provenance record."""
    config, state_dict = model.config, model.state_dict()
    if fmt in ("embgpt", "gpt2"):
        from .hub import write_provenance

        with atomic_folder(destination) as staging:
            if fmt == "embgpt":
                model.save_pretrained(staging)
            else:
                _save_gpt2(config, state_dict, staging, model.generation_config)
            if tokenizer is not None:
                tokenizer.save_pretrained(staging)
            if provenance:
                write_provenance(staging, **provenance)
    elif fmt == "nanogpt":
        from .convert_nanogpt import write_nanogpt

        write_nanogpt(config, state_dict, destination)
    elif fmt == "llmc":
        from .convert_llmc import write_llmc

        write_llmc(config, state_dict, destination, dtype=llmc_dtype)
    elif fmt == "tf":
        from .convert_tf import write_tf

        write_tf(config, state_dict, destination)
    else:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _save_gpt2(config, state_dict, folder, generation_config=None):
    """A stock transformers GPT2LMHeadModel folder, through the core GPT-2 table."""
    from transformers import GPT2LMHeadModel

    from .modeling_embgpt import gpt2_config_from, state_dict_to_gpt2

    with torch.device("meta"):
        gpt2 = GPT2LMHeadModel(gpt2_config_from(config))
    gpt2_state_dict = {name: t.contiguous() for name, t in state_dict_to_gpt2(state_dict).items()}  # transposed
    gpt2.load_state_dict(gpt2_state_dict, strict=True, assign=True)
    gpt2.tie_weights()
    if generation_config is not None:
        gpt2.generation_config = generation_config
    gpt2.save_pretrained(folder)


def convert(
    source, destination, to, source_format=None, vocab_size=None, tokenizer=None, llmc_dtype="float32", command=None
):
    """Convert `source` (format detected unless given) to `destination` in format `to`. Returns the model.

    Folder outputs (embgpt, gpt2) get the source's tokenizer (or `tokenizer`) and an `embgpt_provenance.json`
    naming the source and `command`, which `embgpt push` shows in the model card; a source folder that has such a
    record passes it on unchanged.
    """
    if to not in FORMATS:
        raise ValueError(f"unknown target format {to!r}; choose one of {', '.join(FORMATS)}")
    model, fmt = read_checkpoint(source, source_format)
    if vocab_size is not None:
        config, state_dict = slice_vocab(model.config, model.state_dict(), vocab_size, source)
        model = model_from_state_dict(config, state_dict, source)
    if tokenizer is None and to in ("embgpt", "gpt2"):
        tokenizer = find_tokenizer(source, fmt)
    elif isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = load_tokenizer(tokenizer)
    from .hub import read_provenance

    # a folder that already says where it came from (e.g. a training run) keeps saying so
    provenance = read_provenance(source) if os.path.isdir(source) else {}
    provenance = {k: v for k, v in provenance.items() if k not in ("hf_embgpt_version", "updated")}
    if not provenance:
        provenance = dict(kind="converted", source=os.fspath(source), source_format=fmt)
        if fmt == "hub":
            provenance["base_model"] = os.fspath(source)
        if command:
            provenance["command"] = command
    write_checkpoint(model, destination, to, tokenizer=tokenizer, provenance=provenance, llmc_dtype=llmc_dtype)
    logger.info("converted %s (%s) to %s (%s)", source, fmt, destination, to)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="embgpt convert",
        description="Convert GPT-2 weights between EmbGPT, transformers GPT-2, nanoGPT, llm.c and OpenAI TF formats. "
        "The source format is detected.",
    )
    parser.add_argument("source", help="checkpoint folder or file, or a Hub repo id (GPT-2 or EmbGPT)")
    parser.add_argument("destination", help="folder (embgpt, gpt2, tf) or file (nanogpt ckpt.pt, llmc .bin)")
    parser.add_argument("--to", required=True, choices=FORMATS, help="format to write")
    parser.add_argument("--from", dest="source_format", choices=FORMATS, help="source format (default: detected)")
    parser.add_argument(
        "--vocab-size", type=int, help="keep only the first N token rows (e.g. 50257 to drop nanoGPT's padding)"
    )
    parser.add_argument("--llmc-dtype", choices=("float32", "bfloat16"), default="float32", help="llm.c v3 or v5")
    parser.add_argument("--tokenizer", help="tokenizer folder or Hub id to save with embgpt/gpt2 outputs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    command = "embgpt convert " + " ".join(shlex.quote(a) for a in (sys.argv[2:] if argv is None else argv))
    model = convert(
        args.source,
        args.destination,
        args.to,
        source_format=args.source_format,
        vocab_size=args.vocab_size,
        tokenizer=args.tokenizer,
        llmc_dtype=args.llmc_dtype,
        command=command,
    )
    n = sum(p.numel() for p in model.parameters())  # the tied head counts once
    print(f"wrote {args.destination} ({args.to}, {n / 1e6:.1f}M parameters)")
    return 0


__all__ = [
    "FORMATS",
    "detect_format",
    "read_checkpoint",
    "write_checkpoint",
    "find_tokenizer",
    "load_tokenizer",
    "convert",
    "expected_shapes",
    "check_state_dict",
    "model_from_state_dict",
    "slice_vocab",
    "atomic_file",
]
