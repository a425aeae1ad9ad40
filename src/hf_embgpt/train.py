"""`embgpt train`: train or fine-tune EmbGPT with transformers' Trainer, on one process or many (Accelerate).

With no arguments it trains nanoGPT's "baby GPT" (4 layers, 4 heads, 128 wide, block 64) on a character-level
tokenizer over the docstrings of Python's standard library — offline, in a few minutes on a laptop CPU — then
evaluates, prints samples and saves a folder that `AutoModelForCausalLM` / `AutoTokenizer` load.

nanoGPT's training choices are the defaults: AdamW (fused where supported) with weight decay only on >= 2-D
parameters, linear warmup then cosine decay to `min_lr` (nanoGPT's `get_lr`, exactly), gradient clipping at 1.0.
Every `TrainingArguments` field is a flag too (`--bf16`, `--gradient_checkpointing`, `--torch_compile`,
`--push_to_hub`, ...). Under `accelerate launch` / `torchrun` the same command trains with DDP, FSDP or DeepSpeed
(see scripts/accelerate/); only rank 0 writes.
"""

import gc
import json
import logging
import math
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass, field

import torch

from . import data as data_lib
from .block_size import save_tokenizer
from .configuration_embgpt import PRESETS, EmbGPTConfig
from .convert import atomic_file
from .modeling_embgpt import EmbGPTForCausalLM

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
    lr_schedule: str = field(
        default="nanogpt",
        metadata={
            "help": "nanogpt (warmup, cosine to min_lr) or trainer (--lr_scheduler_type)",
            "choices": ["nanogpt", "trainer"],
        },
    )
    min_lr: float | None = field(default=None, metadata={"help": "nanogpt schedule's floor (default learning_rate/10)"})
    lr_decay_steps: int | None = field(default=None, metadata={"help": "nanogpt schedule's length (default: all)"})
    mfu_peak_tflops: float = field(
        default=312.0, metadata={"help": "peak TFLOPS the MFU is measured against (nanoGPT: A100 bf16, 312)"}
    )
    num_samples: int = field(default=2, metadata={"help": "samples generated at the end"})
    sample_tokens: int = field(default=200, metadata={"help": "tokens per sample"})
    prompt: str = field(default="\n", metadata={"help": "prompt for the samples"})
    temperature: float = field(default=0.8, metadata={"help": "sampling temperature"})
    top_k: int = field(default=200, metadata={"help": "sample from the top_k most likely tokens"})


# ----------------------------------------------------------------------------------------------------------------
# nanoGPT's schedule and MFU


def nanogpt_lr(step, learning_rate, warmup_steps, decay_steps, min_lr):
    """nanoGPT's `get_lr`: linear warmup, cosine decay to `min_lr` at `decay_steps`, then `min_lr`."""
    if step < warmup_steps:
        return learning_rate * (step + 1) / (warmup_steps + 1)
    if step > decay_steps:
        return min_lr
    decay_ratio = (step - warmup_steps) / max(1, decay_steps - warmup_steps)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))  # 1 -> 0
    return min_lr + coeff * (learning_rate - min_lr)


def flops_per_token(config, n_params, block_size):
    """nanoGPT's estimate (PaLM appendix B): 6N + 12 * L * H * Q * T, with N the parameters less wpe."""
    head_dim = config.n_embd // config.n_head
    return 6 * n_params + 12 * config.n_layer * config.n_head * head_dim * block_size


def non_embedding_params(model):
    """Trainable-or-not parameter count without wpe, as nanoGPT's `get_num_params(non_embedding=True)`: the N of the
    FLOP estimate, and the weights one decode step streams."""
    seen, total = set(), 0
    for name, p in model.named_parameters():
        if id(p) in seen or name.endswith("wpe.weight"):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def _trainer_class():
    from transformers import Trainer, TrainerCallback

    class EmbGPTTrainer(Trainer):
        """Trainer with nanoGPT's optimizer groups and LR schedule, perplexity on eval, MFU in the logs."""

        def __init__(self, *args, run_args=None, flops_per_token=None, block_size=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.run_args = run_args or RunArguments()
            self.flops_per_token = flops_per_token
            self.block_size = block_size
            self._mfu_mark = None
            trainer = self

            class Mark(TrainerCallback):
                def on_train_begin(self, args, state, control, **kwargs):
                    trainer._mfu_mark = (time.perf_counter(), state.global_step)

            self.add_callback(Mark())

        def create_optimizer(self, model=None):
            if self.optimizer is not None or self.args.optim not in ("adamw_torch", "adamw_torch_fused"):
                return super().create_optimizer(model)
            opt_model = self.model if model is None else model
            params = [p for p in opt_model.parameters() if p.requires_grad]  # tied wte/lm_head appear once
            groups = [
                # nanoGPT: matrices and embeddings decay; biases and LayerNorm gains don't
                {"params": [p for p in params if p.dim() >= 2], "weight_decay": self.args.weight_decay},
                {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
            ]
            fused = self.args.optim == "adamw_torch_fused" and all(
                p.device.type in ("cuda", "cpu", "xpu", "mps") and p.dtype.is_floating_point for p in params
            )
            self.optimizer = torch.optim.AdamW(
                groups,
                lr=self.args.learning_rate,
                betas=(self.args.adam_beta1, self.args.adam_beta2),
                eps=self.args.adam_epsilon,
                fused=fused,
            )
            return self.optimizer

        def create_scheduler(self, num_training_steps, optimizer=None):
            if self.lr_scheduler is not None or self.run_args.lr_schedule != "nanogpt":
                return super().create_scheduler(num_training_steps, optimizer)
            lr = self.args.learning_rate
            min_lr = self.run_args.min_lr if self.run_args.min_lr is not None else lr / 10
            decay = self.run_args.lr_decay_steps or num_training_steps
            warmup = self.args.get_warmup_steps(num_training_steps)
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer or self.optimizer, lambda step: nanogpt_lr(step, lr, warmup, decay, min_lr) / lr
            )
            return self.lr_scheduler

        def log(self, logs, *args, **kwargs):
            if "eval_loss" in logs:
                logs["eval_perplexity"] = math.exp(min(logs["eval_loss"], 50.0))
            if "loss" in logs and self._mfu_mark is not None and self.flops_per_token:
                now, step = time.perf_counter(), self.state.global_step
                then, then_step = self._mfu_mark
                self._mfu_mark = (now, step)
                if step > then_step and now > then:
                    tokens = (step - then_step) * self.args.train_batch_size * self.args.gradient_accumulation_steps
                    tokens *= self.args.world_size * self.block_size
                    logs["tokens_per_second"] = round(tokens / (now - then), 1)
                    peak = self.run_args.mfu_peak_tflops * 1e12 * self.args.world_size
                    logs["mfu_percent"] = 100 * self.flops_per_token * tokens / (now - then) / peak
            return super().log(logs, *args, **kwargs)

    return EmbGPTTrainer


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints: only a complete one is resumed from


def checkpoint_is_complete(folder):
    """True when `folder` holds everything Trainer writes, each file readable: the trainer state (written last, with
    the folder's step), the weights (full, adapter, or FSDP/DeepSpeed shards), the optimizer, the scheduler, the RNG
    state. A process killed mid-save leaves a folder that fails one of these."""
    from safetensors import safe_open

    step = re.search(r"checkpoint-(\d+)$", folder.rstrip("/"))
    try:
        with open(os.path.join(folder, "trainer_state.json")) as f:
            state = json.load(f)
        if step is None or state.get("global_step") != int(step.group(1)):
            return False
        names = set(os.listdir(folder))
        weights = [n for n in names if n.startswith(("model", "adapter_model", "pytorch_model"))]
        sharded = any(n.startswith("global_step") for n in names)  # DeepSpeed keeps weights + optimizer there
        has_optimizer = sharded or any(n.startswith("optimizer") for n in names)
        if not (weights or sharded) or not has_optimizer or "scheduler.pt" not in names:
            return False
        if not any(n.startswith("rng_state") for n in names):
            return False
        for name in weights:
            if name.endswith(".safetensors"):
                with safe_open(os.path.join(folder, name), "pt") as f:
                    for key in f.keys():
                        f.get_slice(key)
        for name in ("optimizer.pt", "scheduler.pt"):
            if name in names:
                torch.load(os.path.join(folder, name), map_location="cpu", weights_only=True)
        return True
    except Exception as e:  # noqa: BLE001 - json, pickle and safetensors raise assorted errors on truncated files
        logger.warning("checkpoint %s is incomplete or unreadable (%s: %s)", folder, type(e).__name__, e)
        return False


def last_complete_checkpoint(output_dir):
    """The newest `checkpoint-N` folder in `output_dir` that `checkpoint_is_complete`; None when there is none."""
    if not os.path.isdir(output_dir):
        return None
    found = [(int(m.group(1)), n) for n in os.listdir(output_dir) if (m := re.fullmatch(r"checkpoint-(\d+)", n))]
    for _, name in sorted(found, reverse=True):
        folder = os.path.join(output_dir, name)
        if checkpoint_is_complete(folder):
            return folder
        logger.warning("ignoring incomplete checkpoint %s", folder)
    return None


# ----------------------------------------------------------------------------------------------------------------
# Model, samples, plot


def build_model(model_args, vocab_size, block_size, tokenizer):
    """A checkpoint (EmbGPT or GPT-2) or a fresh model from a preset with overrides; validates sizes."""
    overrides = {k: getattr(model_args, k) for k in ARCH_FIELDS if getattr(model_args, k) is not None}
    bos = tokenizer.eos_token_id if tokenizer.bos_token_id is None else tokenizer.bos_token_id  # id 0 is a real id
    special = dict(eos_token_id=tokenizer.eos_token_id, bos_token_id=bos)
    if model_args.model_name_or_path is None:
        preset = model_args.preset
        if preset in TRAIN_PRESETS:
            values = dict(TRAIN_PRESETS[preset])
        elif preset in PRESETS:
            values = dict(PRESETS[preset])
        else:
            raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join([*TRAIN_PRESETS, *PRESETS])}")
        values.update(overrides, vocab_size=vocab_size, **special)
        if block_size is not None:
            values["block_size"] = block_size
        return EmbGPTForCausalLM(EmbGPTConfig(**values))
    unsupported = set(overrides) - {"dropout"}
    if unsupported:
        raise ValueError(
            f"{', '.join(sorted(unsupported))} can't change a loaded checkpoint's architecture; only dropout can"
        )
    model = EmbGPTForCausalLM.from_pretrained(model_args.model_name_or_path, **overrides)
    if block_size is not None and block_size > model.config.block_size:
        raise ValueError(
            f"block_size {block_size} is larger than the model's block_size {model.config.block_size} "
            f"({model_args.model_name_or_path})"
        )
    if vocab_size > model.config.vocab_size:
        raise ValueError(
            f"the tokenizer has {vocab_size} tokens but the model's vocab_size is {model.config.vocab_size}; "
            f"use the checkpoint's own tokenizer (--tokenizer auto)"
        )
    return model


def add_lora(model, model_args):
    """Wrap `model` with LoRA adapters on c_attn, c_proj and c_fc (peft); only the adapters train."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:
        raise ImportError("--lora_r needs peft: pip install 'hf_embgpt[peft]'") from e
    if model_args.lora_r < 0:
        raise ValueError(f"lora_r ({model_args.lora_r}) must be a positive integer (or 0 for full training)")
    config = LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha or 2 * model_args.lora_r,
        lora_dropout=model_args.lora_dropout,
        target_modules=LORA_TARGETS,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


@torch.no_grad()
def sample(model, tokenizer, prompt="\n", num_samples=2, max_new_tokens=200, temperature=0.8, top_k=200, seed=0):
    """nanoGPT's sampling loop: the context is cropped to block_size, so samples may be longer than the block."""
    config = model.config
    block_size = config.block_size
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    ids = tokenizer(prompt or tokenizer.eos_token, add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id]
    generator = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.tensor([ids] * num_samples, dtype=torch.long, device=device)
    for _ in range(max_new_tokens):
        logits = model(input_ids=x[:, -block_size:], use_cache=False).logits[:, -1, :].float().cpu()
        logits = logits / max(temperature, 1e-5)
        if top_k:
            v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
            logits[logits < v[:, [-1]]] = -float("inf")
        nxt = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).to(device)
        x = torch.cat([x, nxt], dim=1)
    model.train(was_training)
    return [tokenizer.decode(row.tolist()) for row in x]


def plot_loss_curve(log_history, path):
    """Train and eval loss against step, written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss")
    if evals:
        ax.plot(*zip(*evals, strict=True), "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        with atomic_file(path) as temp:
            fig.savefig(temp, dpi=100, format="png")
    finally:
        plt.close(fig)


def write_json(obj, path):
    with atomic_file(path) as temp, open(temp, "w") as f:
        json.dump(obj, f, indent=2)


# ----------------------------------------------------------------------------------------------------------------
# The command


def parse_args(argv=None):
    """(ModelArguments, DataArguments, RunArguments, TrainingArguments) from the command line."""
    for package in ("accelerate", "datasets", "matplotlib"):
        try:
            __import__(package)
        except ImportError as e:
            raise ImportError(f"embgpt train needs {package}: pip install 'hf_embgpt[train]'") from e
    from transformers import HfArgumentParser, TrainingArguments

    parser = HfArgumentParser((ModelArguments, DataArguments, RunArguments, TrainingArguments), prog="embgpt train")
    parser.set_defaults(**TRAINING_DEFAULTS)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        # torchrun on CPUs: Trainer runs DDP over gloo only when told to use the CPU
        parser.set_defaults(use_cpu=True)
    argv = list(sys.argv[1:] if argv is None else argv)
    return parser.parse_args_into_dataclasses(argv, look_for_args_file=False)


def train(argv=None, callbacks=None):
    """Run `embgpt train` with `argv`; returns a results dict (losses, perplexity, samples, timings)."""
    from transformers import AutoTokenizer, set_seed

    model_args, data_args, run_args, args = parse_args(argv)
    if not args.should_log:  # ranks other than 0 report only problems
        logging.getLogger("hf_embgpt").setLevel(logging.WARNING)
    if model_args.model_name_or_path is None and model_args.preset not in {**TRAIN_PRESETS, **PRESETS}:
        raise ValueError(f"unknown preset {model_args.preset!r}; choose one of {', '.join([*TRAIN_PRESETS, *PRESETS])}")
    if data_args.block_size is not None and data_args.block_size <= 0:
        raise ValueError(f"block_size ({data_args.block_size}) must be a positive integer")
    if args.push_to_hub and not (args.hub_token or _hub_token()):
        raise ValueError("--push_to_hub needs a Hugging Face token: run `hf auth login` or set HF_TOKEN first")
    set_seed(args.seed)

    checkpoint = last_complete_checkpoint(args.output_dir) if run_args.resume else None
    if run_args.resume and checkpoint is None:
        logger.warning("--resume: no complete checkpoint in %s; starting from scratch", args.output_dir)

    with args.main_process_first(desc="data"):
        raw = data_lib.load_text(
            data_args.data, data_args.dataset_config, data_args.validation_data, data_args.text_column,
            data_args.streaming,
        )  # fmt: skip
        if checkpoint is not None:
            tokenizer = AutoTokenizer.from_pretrained(checkpoint)  # the run's own tokenizer, never rebuilt
        else:
            tokenizer = data_lib.make_tokenizer(
                data_args.tokenizer, raw, model_args.model_name_or_path, data_args.bpe_vocab_size
            )
        block_size = data_args.block_size
        model = build_model(model_args, len(tokenizer), block_size, tokenizer)
        block_size = block_size or model.config.block_size
        train_set, eval_set = data_lib.build_datasets(
            raw, tokenizer, block_size, data_args.validation_fraction, data_args.preprocessing_num_workers
        )
    if data_args.sampling == "random":
        if args.max_steps <= 0 or data_args.streaming:
            raise ValueError("--sampling random needs --max_steps and in-memory (not streamed) data")
        n = args.max_steps * args.train_batch_size * args.gradient_accumulation_steps * args.world_size
        train_set = data_lib.random_windows(train_set, block_size, n, seed=args.seed)
    if model_args.lora_r:
        model = add_lora(model, model_args)
    base = model.get_base_model() if model_args.lora_r else model
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info(
        "model: %d layers, %d heads, %d wide, block %d, vocab %d; %.2fM parameters (%.2fM trainable); %s blocks",
        base.config.n_layer, base.config.n_head, base.config.n_embd, block_size, base.config.vocab_size,
        non_embedding_params(base) / 1e6, n_trainable / 1e6,
        len(train_set) if hasattr(train_set, "__len__") else "streamed",
    )  # fmt: skip

    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=data_lib.collate,
        processing_class=tokenizer,
        callbacks=callbacks,
        run_args=run_args,
        flops_per_token=flops_per_token(base.config, non_embedding_params(base), block_size),
        block_size=block_size,
    )
    started = time.perf_counter()
    train_output = trainer.train(resume_from_checkpoint=checkpoint)
    train_seconds = time.perf_counter() - started
    metrics = trainer.evaluate()
    results = {
        "train_loss": train_output.training_loss,
        "eval_loss": metrics["eval_loss"],
        "eval_perplexity": metrics["eval_perplexity"],
        "train_seconds": train_seconds,
        "global_step": trainer.state.global_step,
        "resumed_from": checkpoint,
        "main_process": trainer.is_world_process_zero(),
        "log_history": trainer.state.log_history,
    }
    trainer.save_model(args.output_dir)  # model (or adapter) + tokenizer, rank 0 only
    # sharded weights (FSDP, DeepSpeed) would need every rank in each forward: sample only from whole models
    sharded = getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False)
    if trainer.is_world_process_zero():
        unwrapped = trainer.accelerator.unwrap_model(trainer.model)
        if run_args.num_samples > 0 and not sharded:
            results["samples"] = sample(
                unwrapped, tokenizer, run_args.prompt, run_args.num_samples, run_args.sample_tokens,
                run_args.temperature, run_args.top_k, seed=args.seed,
            )  # fmt: skip
        if model_args.lora_r and model_args.merge_lora:
            merged_dir = os.path.join(args.output_dir, "merged")
            unwrapped.merge_and_unload().save_pretrained(merged_dir)
            save_tokenizer(tokenizer, merged_dir)
            results["merged_dir"] = merged_dir
        plot_loss_curve(trainer.state.log_history, os.path.join(args.output_dir, "loss_curve.png"))
        write_json({k: v for k, v in results.items()}, os.path.join(args.output_dir, "train_results_embgpt.json"))
        trainer.save_state()  # trainer_state.json: the model card's metrics come from it
        record_provenance(args.output_dir, model_args, data_args, argv, results.get("merged_dir"))
    if args.push_to_hub:
        push_trained(trainer, args, results.get("merged_dir"))
    return results


def _hub_token():
    import huggingface_hub

    return huggingface_hub.get_token()


def record_provenance(output_dir, model_args, data_args, argv, merged_dir=None):
    """What the model card says of this run: the base model, the data and the command."""
    from .hub import write_provenance

    def shown(arg):  # the card is public: local paths by their last component only
        return os.path.basename(os.path.normpath(arg)) if os.path.isabs(arg) or os.path.exists(arg) else arg

    argv = sys.argv[1:] if argv is None else list(argv)
    info = dict(
        kind="trained",
        datasets=[shown(d) for d in data_args.data or ["embedded corpus: docstrings of the Python standard library"]],
        command="embgpt train " + shlex.join(shown(arg) for arg in argv),
    )
    if model_args.model_name_or_path:
        info["base_model"] = model_args.model_name_or_path
    for folder in filter(None, (output_dir, merged_dir)):
        write_provenance(folder, **info)


def push_trained(trainer, args, merged_dir=None):
    """Full models go up through hf_embgpt.hub (code, tokenizer, model card); a LoRA adapter through Trainer."""
    if not trainer.is_world_process_zero():
        return
    base = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(base, "peft_config") and merged_dir is None:
        trainer.push_to_hub()
        return
    from .hub import push_to_hub

    push_to_hub(
        merged_dir or args.output_dir,
        args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir)),
        private=bool(args.hub_private_repo),
        revision=getattr(args, "hub_revision", None),
        token=args.hub_token,
    )


def end_distributed():
    """Shut a torchrun / `accelerate launch` run's process group down in order, once every rank is done.

    The finished Trainer is a reference cycle that holds DDP and, through it, the process group: it is collected
    first, so that destroy_process_group stops gloo's threads. Left running into interpreter exit, they abort a rank
    ("terminate called without an active exception"). Rank 0 may still be writing, so all ranks meet first.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        gc.collect()
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def main(argv=None):
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", level=logging.INFO)
    results = train(argv)
    end_distributed()
    if results["main_process"]:
        print(f"\ntrain loss {results['train_loss']:.4f} | eval loss {results['eval_loss']:.4f} | "
              f"perplexity {results['eval_perplexity']:.2f} | {results['global_step']} steps in "
              f"{results['train_seconds']:.1f} s")  # fmt: skip
        for i, text in enumerate(results.get("samples", [])):
            print(f"\n--- sample {i + 1} ---\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
