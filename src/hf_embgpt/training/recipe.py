"""nanoGPT's training recipe on transformers' Trainer: the model to train, optimizer groups, the LR schedule, FLOPs
per token for MFU, LoRA."""

import logging
import math
import re
import time

import torch

from ..configuration_embgpt import PRESETS, EmbGPTConfig
from ..modeling_embgpt import EmbGPTForCausalLM
from .arguments import ARCH_FIELDS, LORA_TARGETS, TRAIN_PRESETS, RunArguments

logger = logging.getLogger(__name__)


def nanogpt_lr(step, learning_rate, warmup_steps, decay_steps, min_lr):
    """nanoGPT's `get_lr`: linear warmup, cosine decay to `min_lr` at `decay_steps`, then `min_lr`."""
    if step < warmup_steps:
        return learning_rate * (step + 1) / (warmup_steps + 1)
    if step > decay_steps:
        return min_lr
    decay_ratio = (step - warmup_steps) / max(1, decay_steps - warmup_steps)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))  # 1 -> 0
    return min_lr + coeff * (learning_rate - min_lr)


# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from NVIDIA's data sheets, for the MFU. A chip matches when its
# name is a word of torch.cuda.get_device_name() ("NVIDIA H100 80GB HBM3" is the SXM part); variants come first.
GPU_BF16_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("H200 NVL", 835.0),
    ("H200", 989.0),
    ("GH200", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10", 125.0),
)


def gpu_peak_tflops(device_name):
    """The dense bf16 peak of the GPU called `device_name`, or None for a chip not in GPU_BF16_PEAK_TFLOPS."""
    for chip, tflops in GPU_BF16_PEAK_TFLOPS:
        if re.search(rf"\b{re.escape(chip)}\b", device_name, flags=re.IGNORECASE):
            return tflops
    return None


def mfu_peak_tflops(device, override=None):
    """Peak TFLOP/s of one `device` for the MFU: `override` (--mfu_peak_tflops), else a known GPU's from the table;
    None where the peak is unknown (CPUs, other GPUs): an MFU against another chip's peak would mislead."""
    if override is not None:
        if not override > 0:
            raise ValueError(f"mfu_peak_tflops ({override}) must be a positive number of TFLOP/s")
        return override
    device = torch.device(device)
    if device.type == "cuda":
        return gpu_peak_tflops(torch.cuda.get_device_name(device))
    return None


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


def trainer_class():
    from transformers import Trainer, TrainerCallback

    class EmbGPTTrainer(Trainer):
        """Trainer with nanoGPT's optimizer groups and LR schedule, perplexity on eval, MFU in the logs."""

        def __init__(self, *args, run_args=None, flops_per_token=None, block_size=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.run_args = run_args or RunArguments()
            self.flops_per_token = flops_per_token
            self.block_size = block_size
            self._mfu_mark = None
            self.peak_tflops = mfu_peak_tflops(self.args.device, self.run_args.mfu_peak_tflops)
            if self.peak_tflops is None:
                logger.info("MFU not reported: no known peak for %s; set --mfu_peak_tflops", self.args.device)
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
            if "loss" in logs and self._mfu_mark is not None and self.block_size:
                now, step = time.perf_counter(), self.state.global_step
                then, then_step = self._mfu_mark
                self._mfu_mark = (now, step)
                if step > then_step and now > then:
                    tokens = (step - then_step) * self.args.train_batch_size * self.args.gradient_accumulation_steps
                    tokens *= self.args.world_size * self.block_size
                    logs["tokens_per_second"] = round(tokens / (now - then), 1)
                    if self.peak_tflops and self.flops_per_token:
                        peak = self.peak_tflops * 1e12 * self.args.world_size
                        logs["mfu_percent"] = 100 * self.flops_per_token * tokens / (now - then) / peak
            return super().log(logs, *args, **kwargs)

        def _issue_warnings_after_load(self, load_result):
            # the tied head is saved once, as transformer.wte.weight: not a missing key on resume
            load_result.missing_keys[:] = [k for k in load_result.missing_keys if not k.endswith("lm_head.weight")]
            super()._issue_warnings_after_load(load_result)

    return EmbGPTTrainer


# ----------------------------------------------------------------------------------------------------------------


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
