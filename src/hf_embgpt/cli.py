"""`embgpt <command>` (or `python -m hf_embgpt <command>`): one console script; each command is a module with its
own `main(argv)`, imported only when its command runs, so `embgpt --help` needs neither torch nor transformers.

Expected errors end the command with one line, `embgpt <command>: error: <message>`, and exit status 1 (argparse's
usage errors keep their status 2). Expected means what a user's input causes:

- `ValueError` (bad values, corrupt or truncated files, wrong formats; `UnicodeDecodeError` and JSON errors too),
- `OSError` (missing or unreadable paths, full or read-only disks, Hub downloads; transformers reports a missing
  checkpoint as one), and
- `ImportError` (a missing extra: the message names the `pip install`).

Anything else (`TypeError`, `KeyError`, `AttributeError`, ...) is a bug in this package or a library: its traceback
is shown. The command line cannot produce our own API `TypeError`s (argparse converts every value), so a `TypeError`
here is a bug, like the list that was once passed to `datasets.load_dataset`. `embgpt --debug <command>` or
`EMBGPT_DEBUG=1` shows the traceback of expected errors as well.
"""

import importlib
import os
import sys

from . import register_auto_classes

# command -> (module, one-line help)
COMMANDS = {
    "train": ("hf_embgpt.train", "train or fine-tune with Trainer (runs offline on an embedded corpus by default)"),
    "generate": ("hf_embgpt.generate", "generate text from a checkpoint"),
    "convert": ("hf_embgpt.convert", "convert between GPT-2, EmbGPT, nanoGPT, llm.c and OpenAI TF checkpoints"),
    "push": ("hf_embgpt.hub", "push a checkpoint to the Hugging Face Hub with its code and model card"),
    "inspect": ("hf_embgpt.inspection", "report on what wte and wpe learned: neighbours, PCA, similarity plots"),
    "block-size": ("hf_embgpt.block_size", "crop or extend a checkpoint's context length (wpe rows)"),
}
EXPECTED_ERRORS = (ValueError, OSError, ImportError)
DEBUG_ENV = "EMBGPT_DEBUG"


def usage():
    lines = ["usage: embgpt [--debug] <command> [options]", "", "commands:"]
    lines += [f"  {name:<11} {text}" for name, (_, text) in COMMANDS.items()]
    lines += [
        "",
        "`embgpt <command> --help` describes each command. --debug (or EMBGPT_DEBUG=1) shows the Python traceback",
        "of an error instead of its one-line message.",
    ]
    return "\n".join(lines)


def error_line(error):
    """An exception as one line: its message with line breaks folded (transformers' Hub errors span several)."""
    message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return message or type(error).__name__


def quiet_weight_progress_bars():
    """Turn off transformers' "Loading weights" / "Writing model shards" bars, which only flash past for the models
    these commands handle; Hub download bars stay unless the user turned them off (HF_HUB_DISABLE_PROGRESS_BARS)."""
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars
    from transformers.utils import logging as transformers_logging

    downloads_quiet = are_progress_bars_disabled()
    transformers_logging.disable_progress_bar()
    if not downloads_quiet:
        enable_progress_bars()


def run(name, argv, debug=False):
    """Run command `name` with `argv`; returns its exit status, printing expected errors as one line."""
    prog = f"embgpt {name}"
    try:
        module = importlib.import_module(COMMANDS[name][0])
        register_auto_classes()  # what `import hf_embgpt` does everywhere but here (see hf_embgpt/__init__.py)
        quiet_weight_progress_bars()
        return module.main(argv) or 0
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except EXPECTED_ERRORS as error:
        if debug:
            raise
        print(f"{prog}: error: {error_line(error)}", file=sys.stderr)
        return 1


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes")
    if argv and argv[0] == "--debug":
        debug, argv = True, argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"{usage()}\n\nembgpt: error: unknown command {name!r}; choose one of {', '.join(COMMANDS)}",
              file=sys.stderr)  # fmt: skip
        return 2
    return run(name, rest, debug)


if __name__ == "__main__":
    sys.exit(main())
