"""Which format a path holds, and reading or writing any of them.

    embgpt   an EmbGPT folder (`save_pretrained`: config.json with auto_map, code files, model.safetensors)
    gpt2     a transformers GPT2LMHeadModel folder                                -> gpt2.py
    nanogpt  nanoGPT's `ckpt.pt` (`model_args` + `model`)                      -> nanogpt.py
    llmc     llm.c's `gpt2_124M.bin` (v3 fp32) / `gpt2_124M_bf16.bin` (v5 bf16) -> llmc.py
    tf       OpenAI's TensorFlow checkpoint (`model.ckpt.*` + `hparams.json`)   -> tf.py

Every reader returns `(EmbGPTConfig, state_dict)` in EmbGPT's names and layout, checked against the config.
"""

import os
import re

from safetensors import SafetensorError

from ..configuration_embgpt import EmbGPTConfig
from ..modeling_embgpt import EmbGPTForCausalLM
from . import gpt2, llmc, nanogpt, tf
from .common import atomic_folder, model_from_state_dict
from .provenance import write_provenance

FORMATS = ("embgpt", "gpt2", "nanogpt", "llmc", "tf")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name; a bare word is more likely a missing file


def is_hub_id(name):
    """Whether `name` reads as a Hub repo id (`owner/name`) rather than a local path."""
    return bool(_REPO_ID.match(os.fspath(name)))  # starts with a letter or digit: never "/", "./" or "../"


def check_source(name, what="checkpoint"):
    """Return `name` if it is an existing path or reads as a Hub repo id; else raise FileNotFoundError.

    A path that does not exist would otherwise reach the Hub client, which calls it an invalid repo id or a failed
    connection; this says what is wrong: the path is missing.
    """
    name = os.fspath(name)
    if os.path.exists(name) or is_hub_id(name):
        return name
    raise FileNotFoundError(f"{what} {name} does not exist (and is not a Hub repo id, which reads owner/name)")


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
        if is_hub_id(path):
            return "hub"
        raise FileNotFoundError(f"{path} does not exist")
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) >= 4 and int.from_bytes(head[:4], "little") == llmc.MAGIC:
        return "llmc"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80\x02"):  # torch.save's zip, or its legacy pickle
        return "nanogpt"
    raise ValueError(
        f"{path}: unknown checkpoint format (first bytes {head!r}); expected an llm.c .bin (magic {llmc.MAGIC}), "
        f"a nanoGPT ckpt.pt, an OpenAI TF checkpoint or a transformers folder"
    )


def read_checkpoint(path, fmt=None):
    """Read any supported checkpoint: returns (EmbGPTForCausalLM, format name)."""
    check_source(path)
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    detected = _detect_quietly(path)
    if fmt is None:
        fmt = detected or detect_format(path)  # detect_format again, for its error
    elif detected not in (None, "hub", fmt):
        raise ValueError(f"{path} holds a checkpoint in format {detected}, not {fmt}; the format is detected anyway")
    if fmt in ("embgpt", "gpt2", "hub"):
        # from_pretrained converts GPT-2 folders (and Hub ids) exactly: the core GPT-2 table
        return EmbGPTForCausalLM.from_pretrained(path).eval(), fmt
    readers = {"nanogpt": nanogpt.read_nanogpt, "llmc": llmc.read_llmc, "tf": tf.read_tf}  # the other FORMATS
    config, state_dict = readers[fmt](path)
    return model_from_state_dict(config, state_dict, source=path), fmt


def existing_output(destination, fmt):
    """What `write_checkpoint` would replace: `destination` as a folder that is not empty, or the file it would
    write (nanoGPT's ckpt.pt, llm.c's .bin); None when there is nothing."""
    destination = os.fspath(destination)
    if fmt == "nanogpt" and os.path.isdir(destination):
        destination = os.path.join(destination, "ckpt.pt")
    if os.path.isdir(destination):
        return destination if os.listdir(destination) else None
    return destination if os.path.exists(destination) else None


def _detect_quietly(path):
    try:
        return detect_format(path)
    except (OSError, ValueError):
        return None


def write_checkpoint(model, destination, fmt, tokenizer=None, provenance=None, llmc_dtype="float32", overwrite=False):
    """Write `model` to `destination` in format `fmt`; folders get the tokenizer and a provenance record.

    A destination that exists (a file, or a folder that is not empty) is refused unless `overwrite`; a folder is
    then replaced as a whole, so no file of another model stays beside the new one. A write that the disk refuses
    (full, read-only, no permission) raises an OSError naming `destination`.
    """
    try:
        _write_checkpoint(model, destination, fmt, tokenizer, provenance, llmc_dtype, overwrite)
    except (OSError, RuntimeError, SafetensorError) as error:
        reason = _system_refusal(error)
        if reason is None:
            raise
        raise OSError(f"cannot write {destination}: {reason}") from error


def _system_refusal(error):
    """Why the system refused a write (disk full, read-only, no permission, no such folder), or None.

    That is an OSError with an errno: `error` itself, the one behind torch.save's RuntimeError ("enforce fail at
    inline_container.cc") or safetensors' "I/O error: ...", which names neither the file nor an errno attribute.
    """
    if isinstance(error, SafetensorError) and "I/O error: " in str(error):
        return str(error).split("I/O error: ", 1)[1]
    while error is not None:
        if isinstance(error, OSError) and error.errno is not None:
            return error.strerror or str(error)
        error = error.__cause__ or error.__context__
    return None


def _write_checkpoint(model, destination, fmt, tokenizer, provenance, llmc_dtype, overwrite):
    config, state_dict = model.config, model.state_dict()
    if fmt in ("embgpt", "gpt2", "tf"):
        with atomic_folder(destination, "replace" if overwrite else "refuse") as staging:
            if fmt == "embgpt":
                model.save_pretrained(staging)
            elif fmt == "gpt2":
                gpt2.write_gpt2(config, state_dict, staging, model.generation_config)
            else:
                tf.write_tf(config, state_dict, staging)
            if tokenizer is not None and fmt != "tf":
                tokenizer.save_pretrained(staging)
            if provenance and fmt != "tf":
                write_provenance(staging, **provenance)
        return
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if not overwrite and (existing := existing_output(destination, fmt)):
        raise FileExistsError(f"{existing} exists; pass --overwrite (overwrite=True) to replace it")
    if fmt == "nanogpt":
        nanogpt.write_nanogpt(config, state_dict, destination)
    else:
        llmc.write_llmc(config, state_dict, destination, dtype=llmc_dtype)
