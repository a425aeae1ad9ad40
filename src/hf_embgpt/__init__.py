"""hf_embgpt: nanoGPT's GPT-2 as a transformers model.

Importing the package registers EmbGPT with transformers' Auto classes, so `AutoModelForCausalLM.from_pretrained`
loads EmbGPT folders without `trust_remote_code`. The public names below are imported on first use.

The one exception is the `embgpt` command (and `python -m hf_embgpt`): it registers only when a subcommand runs, so
that `embgpt --help` and usage errors answer without importing torch or transformers. Registration cannot itself be
lazy: transformers' Auto mappings take the model classes, which need torch and transformers' modeling code, and
registering from an import hook would run while those modules are half-initialised.
"""

import importlib
import os
import sys

__version__ = "0.1.0"

# public name -> the module that defines it
_PUBLIC = {
    "PRESETS": "configuration_embgpt",
    "EmbGPTConfig": "configuration_embgpt",
    "EmbGPTPreTrainedModel": "modeling_embgpt",
    "EmbGPTModel": "modeling_embgpt",
    "EmbGPTForCausalLM": "modeling_embgpt",
    "EmbGPTForSequenceClassification": "modeling_embgpt",
    "crop_block_size": "block_size",
    "extend_block_size": "block_size",
}
__all__ = list(_PUBLIC)


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted({*globals(), *_PUBLIC})


def register_auto_classes():
    """Register EmbGPT with AutoConfig, AutoModel, AutoModelForCausalLM and AutoModelForSequenceClassification."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    from .configuration_embgpt import EmbGPTConfig
    from .modeling_embgpt import EmbGPTForCausalLM, EmbGPTForSequenceClassification, EmbGPTModel

    AutoConfig.register(EmbGPTConfig.model_type, EmbGPTConfig, exist_ok=True)
    AutoModel.register(EmbGPTConfig, EmbGPTModel, exist_ok=True)
    AutoModelForCausalLM.register(EmbGPTConfig, EmbGPTForCausalLM, exist_ok=True)
    AutoModelForSequenceClassification.register(EmbGPTConfig, EmbGPTForSequenceClassification, exist_ok=True)


def _imported_by_the_embgpt_command():
    """True while the `embgpt` console script or `python -m hf_embgpt` imports the package (cli.run registers)."""
    argv = getattr(sys, "argv", None) or [""]  # embedded interpreters may have no argv
    program = os.path.basename(argv[0])
    return program in ("embgpt", "embgpt.exe") or program == "-m" and _running_module() == __name__


def _running_module():
    """The module `python -m` is starting, read from the interpreter's own command line (argv[0] is '-m' then)."""
    args = getattr(sys, "orig_argv", [])
    return next((args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "-m"), None)


if not _imported_by_the_embgpt_command():
    register_auto_classes()
