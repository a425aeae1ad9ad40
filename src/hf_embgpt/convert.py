"""`embgpt convert SRC DST --to FORMAT`: move GPT-2 weights between every format they come in (see formats/).

Folder outputs (embgpt, gpt2) get the source's tokenizer and a provenance record; every writer stages its output
beside the destination and renames it into place, so a failed conversion never leaves a half-written destination.
"""

import argparse
import logging
import os
import shlex
import sys

from .formats.common import find_tokenizer, load_tokenizer, model_from_state_dict, slice_vocab
from .formats.provenance import read_provenance
from .formats.registry import FORMATS, check_source, existing_output, read_checkpoint, write_checkpoint

logger = logging.getLogger(__name__)


def convert(
    source, destination, to, source_format=None, vocab_size=None, tokenizer=None, llmc_dtype="float32", command=None,
    overwrite=False,
):  # fmt: skip
    """Convert `source` (format detected unless given) to `destination` in format `to`. Returns the model.

    A destination that exists (a file, or a folder that is not empty) is refused unless `overwrite`, which replaces
    it as a whole: no file of the old model (tokenizer, trainer state, results) stays beside the new one.

    Folder outputs (embgpt, gpt2) get the source's tokenizer (or `tokenizer`) and an `embgpt_provenance.json`
    naming the source and `command`, which `embgpt push` shows in the model card; a source folder that has such a
    record passes it on unchanged.
    """
    if to not in FORMATS:
        raise ValueError(f"unknown target format {to!r}; choose one of {', '.join(FORMATS)}")
    if not overwrite and (existing := existing_output(destination, to)):  # before reading a large source
        raise FileExistsError(f"{existing} exists; pass --overwrite to replace it")
    model, fmt = read_checkpoint(source, source_format)
    if vocab_size is not None:
        config, state_dict = slice_vocab(model.config, model.state_dict(), vocab_size, source)
        model = model_from_state_dict(config, state_dict, source)
    if tokenizer is None and to in ("embgpt", "gpt2"):
        tokenizer = find_tokenizer(source, fmt)
    elif isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = load_tokenizer(check_source(tokenizer, "tokenizer"))
    # a folder that already says where it came from (e.g. a training run) keeps saying so
    provenance = read_provenance(source) if os.path.isdir(source) else {}
    provenance = {k: v for k, v in provenance.items() if k not in ("hf_embgpt_version", "updated")}
    if not provenance:
        provenance = dict(kind="converted", source=os.fspath(source), source_format=fmt)
        if fmt == "hub":
            provenance["base_model"] = os.fspath(source)
        if command:
            provenance["command"] = command
    write_checkpoint(
        model, destination, to, tokenizer=tokenizer, provenance=provenance, llmc_dtype=llmc_dtype, overwrite=overwrite
    )
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
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing destination as a whole (default: refuse it)"
    )
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
        overwrite=args.overwrite,
    )
    n = sum(p.numel() for p in model.parameters())  # the tied head counts once
    print(f"wrote {args.destination} ({args.to}, {n / 1e6:.1f}M parameters)")
