"""`embgpt train`: train or fine-tune EmbGPT with transformers' Trainer, on one process or many (Accelerate).

With no arguments it trains nanoGPT's "baby GPT" (4 layers, 4 heads, 128 wide, block 64) on a character-level
tokenizer over the docstrings of Python's standard library — offline, in a few minutes on a laptop CPU — then
evaluates, prints samples and saves a folder that `AutoModelForCausalLM` / `AutoTokenizer` load.

nanoGPT's training choices are the defaults: AdamW (fused where supported) with weight decay only on >= 2-D
parameters, linear warmup then cosine decay to `min_lr` (nanoGPT's `get_lr`, exactly), gradient clipping at 1.0.
On a CUDA GPU from Ampere on, bf16 autocast and TF32 matmuls are the defaults too, and `--torch_compile` is the fast
path; MFU is logged against the GPU's own peak (training/recipe.py) or `--mfu_peak_tflops`, else not at all.
Every `TrainingArguments` field is a flag too (`--bf16`, `--gradient_checkpointing`, `--torch_compile`,
`--push_to_hub`, ...). Under `accelerate launch` / `torchrun` the same command trains with DDP, FSDP or DeepSpeed
(see scripts/accelerate/); only rank 0 writes.
"""

import contextlib
import gc
import json
import logging
import os
import shlex
import sys
import time

import torch

from .configuration_embgpt import PRESETS
from .formats.common import atomic_file, folder_lock, save_tokenizer
from .formats.provenance import write_provenance
from .hub import push_to_hub
from .kernels import optimize
from .training import data as data_lib
from .training.arguments import TRAIN_PRESETS, parse_args
from .training.checkpoints import clear_folder, resume_point, trainer_state
from .training.recipe import add_lora, build_model, flops_per_token, non_embedding_params, trainer_class

logger = logging.getLogger(__name__)


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


def train(argv=None, callbacks=None):
    """Run `embgpt train` with `argv`; returns a results dict (losses, perplexity, samples, timings)."""
    from transformers import AutoTokenizer, TrainerState, set_seed

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

    checkpoint = resume_point(args.output_dir, run_args.resume, run_args.overwrite_output_dir)
    if run_args.overwrite_output_dir and os.path.isdir(args.output_dir):
        with args.main_process_first(local=False, desc="clearing output_dir"):
            if args.process_index == 0:
                clear_folder(args.output_dir)
    finished = False
    if checkpoint is not None:
        state = trainer_state(checkpoint)
        # a run that reached max_steps has nothing left to train: Trainer would still take a step
        finished = state["global_step"] >= (args.max_steps if args.max_steps > 0 else state["max_steps"])
        logger.info("resuming from %s (step %d)", checkpoint, state["global_step"])

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
        if args.device.type == "cpu" and not args.torch_compile:  # CPU kernels chosen by measurement; saves stay plain
            optimize(model)
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

    trainer = trainer_class()(
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
    if finished:
        logger.info(
            "%s already reached max_steps (step %d): nothing to train; its weights are evaluated and saved",
            checkpoint, state["global_step"],
        )  # fmt: skip
        trainer._load_from_checkpoint(checkpoint)  # what train(resume_from_checkpoint=...) loads the weights with
        trainer.state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))
        train_loss = None
    else:
        train_loss = trainer.train(resume_from_checkpoint=checkpoint).training_loss
    train_seconds = time.perf_counter() - started
    metrics = trainer.evaluate()
    # Trainer's own train loss covers only the steps since a resume; the run's logs cover all of it
    logged_loss, last_logged = whole_run_train_loss(trainer.state.log_history)
    results = {
        "train_loss": train_loss if logged_loss is None else logged_loss,
        "train_loss_steps": [1, trainer.state.global_step if logged_loss is None else last_logged],
        "nothing_to_train": finished,
        "eval_loss": metrics["eval_loss"],
        "eval_perplexity": metrics["eval_perplexity"],
        "train_seconds": train_seconds,
        "global_step": trainer.state.global_step,
        "resumed_from": checkpoint,
        "main_process": trainer.is_world_process_zero(),
        "log_history": trainer.state.log_history,
    }
    # another process saving into output_dir waits until the model, tokenizer, state and results are all in
    with folder_lock(args.output_dir) if trainer.is_world_process_zero() else contextlib.nullcontext():
        save_final(trainer, tokenizer, args, model_args, data_args, run_args, argv, results)
    if args.push_to_hub:
        push_trained(trainer, args, results.get("merged_dir"))
    return results


def whole_run_train_loss(log_history):
    """(mean train loss over the run's logged steps, the last of them), resumed or not; (None, None) without logs.

    Each logged loss is the mean over the steps since the one before, so they weigh by those steps.
    """
    total, previous = 0.0, 0
    for entry in log_history:
        if "loss" in entry and entry["step"] > previous:
            total, previous = total + entry["loss"] * (entry["step"] - previous), entry["step"]
    return (total / previous, previous) if previous else (None, None)


def save_final(trainer, tokenizer, args, model_args, data_args, run_args, argv, results):
    """The finished run's folder: model (or adapter), tokenizer, samples, loss curve, results, state, provenance."""
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


def _hub_token():
    import huggingface_hub

    return huggingface_hub.get_token()


def record_provenance(output_dir, model_args, data_args, argv, merged_dir=None):
    """What the model card says of this run: the base model, the data and the command."""

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
        first, last = results["train_loss_steps"]
        trained = f"train loss {results['train_loss'] or float('nan'):.4f} (mean of steps {first}-{last})"
        if results["nothing_to_train"]:
            trained = f"nothing to train: {results['resumed_from']} had reached max_steps | {trained}"
        print(f"\n{trained} | eval loss {results['eval_loss']:.4f} | perplexity {results['eval_perplexity']:.2f} | "
              f"{results['global_step']} steps in {results['train_seconds']:.1f} s")  # fmt: skip
        for i, text in enumerate(results.get("samples", [])):
            print(f"\n--- sample {i + 1} ---\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
