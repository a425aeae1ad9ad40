"""`embgpt train`'s arguments: model, data and run options beside transformers' TrainingArguments, with nanoGPT's
Shakespeare-char recipe as the defaults, plus bf16 and TF32 on a CUDA GPU that has them."""

import logging
import os
import sys
from dataclasses import dataclass, field

import torch

from ..configuration_embgpt import PRESETS

logger = logging.getLogger(__name__)

# nanoGPT's Shakespeare-char model ("baby GPT"): the default for training from scratch on a CPU.
TRAIN_PRESETS = {"baby": dict(n_layer=4, n_head=4, n_embd=128, block_size=64)}
ARCH_FIELDS = ("n_layer", "n_head", "n_embd", "dropout", "bias", "activation_function")
LORA_TARGETS = ["c_attn", "c_proj", "c_fc"]  # nn.Linear projections: peft needs no fan_in_fan_out here
# TrainingArguments defaults for this command: nanoGPT's Shakespeare-char recipe, evaluated and saved every 500 steps
TRAINING_DEFAULTS = dict(
    output_dir="out-embgpt",
    per_device_train_batch_size=12,
    per_device_eval_batch_size=64,
    learning_rate=1e-3,
    max_steps=2000,
    warmup_steps=100,
    weight_decay=0.1,
    adam_beta2=0.99,
    max_grad_norm=1.0,
    logging_steps=100,
    eval_strategy="steps",
    eval_steps=500,
    save_steps=500,
    save_total_limit=2,
    report_to="none",
    seed=1337,
    dataloader_num_workers=0,
    dataloader_pin_memory=torch.cuda.is_available(),  # pinning speeds CUDA copies; elsewhere torch warns it is unused
    optim="adamw_torch_fused",
)


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={"aliases": ["--model"], "help": "EmbGPT or GPT-2 checkpoint (folder or Hub id); none: from scratch"},
    )
    preset: str = field(
        default="baby", metadata={"help": f"from-scratch size: {', '.join([*TRAIN_PRESETS, *PRESETS])}"}
    )
    n_layer: int | None = field(default=None, metadata={"help": "override the preset's depth"})
    n_head: int | None = field(default=None, metadata={"help": "override the preset's head count"})
    n_embd: int | None = field(default=None, metadata={"help": "override the preset's width"})
    dropout: float | None = field(default=None, metadata={"help": "dropout rate (also for a loaded checkpoint)"})
    bias: bool | None = field(default=None, metadata={"help": "biases in Linear and LayerNorm layers"})
    activation_function: str | None = field(default=None, metadata={"help": "gelu_new (GPT-2) or gelu (nanoGPT)"})
    lora_r: int = field(default=0, metadata={"help": "LoRA rank on c_attn/c_proj/c_fc through peft; 0: full training"})
    lora_alpha: float | None = field(default=None, metadata={"help": "LoRA alpha (default: 2 * lora_r)"})
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA branch"})
    merge_lora: bool = field(default=False, metadata={"help": "also save the merged model as plain EmbGPT in merged/"})


@dataclass
class DataArguments:
    data: list[str] | None = field(
        default=None,
        metadata={"help": "text files (.txt .md .jsonl .json .csv) or a datasets name; none: the embedded corpus"},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "the datasets config name"})
    validation_data: list[str] | None = field(default=None, metadata={"help": "validation files"})
    text_column: str = field(default="text", metadata={"help": "column holding the text in table/datasets data"})
    streaming: bool = field(default=False, metadata={"help": "stream the data (needs max_steps)"})
    tokenizer: str = field(
        default="auto",
        metadata={"help": "auto (checkpoint's own, else char), char, bpe (trained on the data), gpt2, or a path/id"},
    )
    bpe_vocab_size: int = field(default=4096, metadata={"help": "vocabulary of the trained byte-level BPE"})
    block_size: int | None = field(
        default=None, metadata={"help": "tokens per training block (default: the model's block_size)"}
    )
    validation_fraction: float = field(default=0.1, metadata={"help": "held out when the data has no validation"})
    sampling: str = field(
        default="blocks",
        metadata={
            "help": "blocks: shuffled packed blocks (one epoch sees each token once); random: nanoGPT's windows at "
            "random offsets, block_size predictions each (needs max_steps)",
            "choices": ["blocks", "random"],
        },
    )
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "processes for tokenizing"})


@dataclass
class RunArguments:
    resume: bool = field(default=False, metadata={"help": "continue from the last complete checkpoint in output_dir"})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "clear a non-empty output_dir and start over (without it, it is refused)"}
    )
    lr_schedule: str = field(
        default="nanogpt",
        metadata={
            "help": "nanogpt (warmup, cosine to min_lr) or trainer (--lr_scheduler_type)",
            "choices": ["nanogpt", "trainer"],
        },
    )
    min_lr: float | None = field(default=None, metadata={"help": "nanogpt schedule's floor (default learning_rate/10)"})
    lr_decay_steps: int | None = field(default=None, metadata={"help": "nanogpt schedule's length (default: all)"})
    mfu_peak_tflops: float | None = field(
        default=None,
        metadata={
            "help": "peak TFLOP/s per device the MFU is measured against (default: the GPU's dense bf16 peak from a "
            "table of known chips; elsewhere MFU is not reported)"
        },
    )
    num_samples: int = field(default=2, metadata={"help": "samples generated at the end"})
    sample_tokens: int = field(default=200, metadata={"help": "tokens per sample"})
    prompt: str = field(default="\n", metadata={"help": "prompt for the samples"})
    temperature: float = field(default=0.8, metadata={"help": "sampling temperature"})
    top_k: int = field(default=200, metadata={"help": "sample from the top_k most likely tokens"})


def parse_args(argv=None):
    """(ModelArguments, DataArguments, RunArguments, TrainingArguments) from the command line."""
    for package in ("accelerate", "datasets", "matplotlib"):
        try:
            __import__(package)
        except ImportError as e:
            raise ImportError(f"embgpt train needs {package}: pip install 'hf_embgpt[train]'") from e
    argv = list(sys.argv[1:] if argv is None else argv)
    return build_parser(argv).parse_args_into_dataclasses(argv, look_for_args_file=False)


def build_parser(argv):
    """The command's HfArgumentParser with this command's defaults, which depend on the device `argv` trains on."""
    from transformers import HfArgumentParser, TrainingArguments

    parser = HfArgumentParser((ModelArguments, DataArguments, RunArguments, TrainingArguments), prog="embgpt train")
    parser.set_defaults(**TRAINING_DEFAULTS)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        # torchrun on CPUs: Trainer runs DDP over gloo only when told to use the CPU
        parser.set_defaults(use_cpu=True)
    asked, _ = parser.parse_known_args([a for a in argv if a not in ("-h", "--help")])
    parser.set_defaults(**gpu_defaults(use_cpu=asked.use_cpu, fp16=asked.fp16))
    return parser


def gpu_defaults(use_cpu=False, fp16=False):
    """bf16 autocast and TF32 matmuls on a CUDA GPU that runs them natively (Ampere and newer); {} elsewhere, so
    that CPU runs keep fp32. Flags given on the command line still win (`--bf16 false`, `--tf32 false`)."""
    if use_cpu or not torch.cuda.is_available():
        return {}
    defaults = {}
    if not fp16 and torch.cuda.is_bf16_supported(including_emulation=False):  # emulated bf16 is slower than fp32
        defaults["bf16"] = True
    if torch.version.cuda and torch.cuda.get_device_capability()[0] >= 8:  # TrainingArguments' rule for --tf32
        defaults["tf32"] = True
    logger.info(
        "%s: %s; add --torch_compile for the fastest step", torch.cuda.get_device_name(),
        ", ".join(f"{k} on" for k in defaults) or "fp32",
    )  # fmt: skip
    return defaults
