"""`embgpt <command>` (or `python -m hf_embgpt <command>`): one console script; each command is a module with its
own `main(argv)`, imported only when its command runs."""

import importlib
import sys

# command -> (module, one-line help); modules import lazily so `embgpt --help` stays instant
COMMANDS = {
    "train": ("hf_embgpt.train", "train or fine-tune with Trainer (runs offline on an embedded corpus by default)"),
    "generate": ("hf_embgpt.generate", "generate text from a checkpoint"),
    "convert": ("hf_embgpt.convert", "convert between GPT-2, EmbGPT, nanoGPT, llm.c and OpenAI TF checkpoints"),
    "push": ("hf_embgpt.hub", "push a checkpoint to the Hugging Face Hub with its code and model card"),
    "inspect": ("hf_embgpt.inspection", "report on what wte and wpe learned: neighbours, PCA, similarity plots"),
    "block-size": ("hf_embgpt.block_size", "crop or extend a checkpoint's context length (wpe rows)"),
}


def usage():
    lines = ["usage: embgpt <command> [options]", "", "commands:"]
    lines += [f"  {name:<11} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "`embgpt <command> --help` describes each command."]
    return "\n".join(lines)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"embgpt: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
