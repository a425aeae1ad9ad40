"""Benchmark: nanoGPT's Shakespeare-char CPU recipe, trained through `embgpt train` (Trainer), against nanoGPT.

Recipe (nanoGPT README, "I only have a macbook"): character-level tokenizer on tinyshakespeare, 90/10 split, 4 layers,
4 heads, 128 wide, block 64, batch 12, 2000 iterations, AdamW lr 1e-3 with 100 warmup steps then cosine to 1e-4
(nanoGPT's get_lr, lr_decay_iters 2000), beta2 0.99, weight decay 0.1 on >= 2-D parameters, grad clip 1.0,
dropout 0, no biases, exact (erf) GELU.

Training samples are nanoGPT's: 65-character windows at random offsets of the first 90% of the text, 64 predictions
each (`--sampling random`; `--sampling blocks` trains on the shuffled packed blocks instead). Differences from
nanoGPT's train.py: the validation loss is the mean over the whole held-out 10% in 64-token blocks (nanoGPT averages
`eval_iters` random batches), and the vocabulary has one extra token (EOS).

    python scripts/bench_shakespeare.py [--data ../shared/data/tinyshakespeare/input.txt] [--json out.json]

Prints a table and writes JSON. Reference, nanoGPT's own train.py on a quiet 2-core CPU machine of this kind:
val loss 1.886, 90.1 s wall, 36.8 ms/iteration median.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch
from transformers import TrainerCallback

from hf_embgpt.train import train, write_json

NANOGPT = {"val_loss": 1.886, "wall_seconds": 90.1, "ms_per_iter_median": 36.8}
TARGET_VAL_LOSS = 1.88
DEFAULT_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "tinyshakespeare", "input.txt")


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step (what nanoGPT's `dt` measures)."""

    def __init__(self):
        self.times, self.last = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self.last = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self.last)


def plain_loop_ms(text, iters, seed=1337):
    """Median ms/iteration of nanoGPT's training loop (random windows, AdamW, get_lr, clip) on the same model, run
    here and now: the machine is shared, so this is the fair yardstick for Trainer's overhead."""
    from hf_embgpt import EmbGPTConfig, EmbGPTForCausalLM
    from hf_embgpt.training.recipe import nanogpt_lr

    torch.manual_seed(seed)
    chars = sorted(set(text))
    ids = torch.tensor([chars.index(c) for c in text[: len(text) * 9 // 10]], dtype=torch.long)
    config = EmbGPTConfig(
        vocab_size=len(chars) + 1, block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=False,
        activation_function="gelu", bos_token_id=len(chars), eos_token_id=len(chars),
    )  # fmt: skip
    model = EmbGPTForCausalLM(config).train()
    params = [p for p in model.parameters()]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]  # fmt: skip
    optimizer = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.99), fused=True)
    times = []
    for it in range(iters):
        t0 = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = nanogpt_lr(it, 1e-3, 100, 2000, 1e-4)
        ix = torch.randint(len(ids) - 65, (12,))
        x = torch.stack([ids[i : i + 64] for i in ix])
        y = torch.stack([ids[i + 1 : i + 65] for i in ix])
        logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # nanoGPT syncs on the loss every iteration too
        times.append(time.perf_counter() - t0)
    return statistics.median(t * 1000 for t in times[10:])


@torch.no_grad()
def nanogpt_val_loss(output_dir, data_path, eval_iters=200, batch_size=12, block_size=64, seed=1337):
    """nanoGPT's estimate_loss on the saved model: mean of `eval_iters` batches of random windows of the last 10%."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(output_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    with open(data_path, encoding="utf-8") as f:
        text = f.read()
    val = torch.tensor(tokenizer(text[int(0.9 * len(text)) :], add_special_tokens=False)["input_ids"])
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(eval_iters):
        ix = torch.randint(len(val) - block_size, (batch_size,), generator=generator)
        x = torch.stack([val[i : i + block_size] for i in ix])
        y = torch.stack([val[i + 1 : i + 1 + block_size] for i in ix])
        logits = model(input_ids=x).logits
        losses.append(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1)).item())
    return sum(losses) / len(losses)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.path.normpath(DEFAULT_DATA), help="tinyshakespeare input.txt")
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--output_dir", default=None, help="where the model goes (default: a temp folder)")
    parser.add_argument("--sampling", default="random", choices=["random", "blocks"], help="training samples")
    parser.add_argument("--seed", type=int, default=1337, help="nanoGPT's seed")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (nanoGPT: every core)")
    parser.add_argument("--baseline_iters", type=int, default=300, help="plain-loop iterations timed first (0: off)")
    parser.add_argument("--json", default="bench_shakespeare.json", help="results file")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.data):
        raise FileNotFoundError(f"tinyshakespeare not found at {args.data}; pass --data")
    torch.set_num_threads(args.threads)
    output_dir = args.output_dir or tempfile.mkdtemp(prefix="bench-shakespeare-")
    recipe = [
        "--data", args.data, "--tokenizer", "char", "--output_dir", output_dir, "--sampling", args.sampling,
        "--n_layer", "4", "--n_head", "4", "--n_embd", "128", "--block_size", "64",
        "--dropout", "0.0", "--bias", "false", "--activation_function", "gelu",
        "--per_device_train_batch_size", "12", "--per_device_eval_batch_size", "256", "--max_steps", str(args.iters),
        "--learning_rate", "1e-3", "--min_lr", "1e-4", "--lr_decay_steps", str(args.iters), "--warmup_steps", "100",
        "--adam_beta2", "0.99", "--weight_decay", "0.1", "--max_grad_norm", "1.0", "--seed", str(args.seed),
        # keep Trainer's own work off the hot path: no evaluation or checkpoint during training, logs every 100
        "--eval_strategy", "no", "--save_strategy", "no", "--logging_steps", "100", "--disable_tqdm", "true",
        "--dataloader_pin_memory", "false", "--use_cpu", "true",
        "--num_samples", "1", "--sample_tokens", "300", "--prompt", "\n", "--report_to", "none",
    ]  # fmt: skip
    baseline = None
    if args.baseline_iters:
        with open(args.data, encoding="utf-8") as f:
            baseline = plain_loop_ms(f.read(), args.baseline_iters)
    timer = StepTimer()
    started = time.perf_counter()
    results = train(recipe, callbacks=[timer])
    total = time.perf_counter() - started
    nanogpt_style = nanogpt_val_loss(output_dir, args.data)
    ms = [t * 1000 for t in timer.times]
    row = {
        "val_loss": results["eval_loss"],
        "val_loss_nanogpt_estimate": nanogpt_style,
        "train_loss_mean": results["train_loss"],
        "train_seconds": results["train_seconds"],
        "wall_seconds": total,
        "ms_per_iter_median": statistics.median(ms),
        "ms_per_iter_p90": sorted(ms)[int(0.9 * len(ms))],
        "iters": len(ms),
        "threads": torch.get_num_threads(),
        "sampling": args.sampling,
        "seed": args.seed,
        "plain_loop_ms_per_iter_median": baseline,
    }
    rows = [
        ("val loss (full val split)", f"{row['val_loss']:.4f}", "", f"<= {TARGET_VAL_LOSS}"),
        ("val loss (nanoGPT's estimate: 200 random batches)", f"{nanogpt_style:.4f}", f"{NANOGPT['val_loss']:.3f}", ""),
        ("train wall time, s", f"{row['train_seconds']:.1f}", f"{NANOGPT['wall_seconds']:.1f}", "<= 90.1"),
        ("whole run (data, eval, save), s", f"{total:.1f}", "", ""),
        ("ms/iteration, median", f"{row['ms_per_iter_median']:.1f}", f"{NANOGPT['ms_per_iter_median']:.1f}", ""),
        ("ms/iteration, p90", f"{row['ms_per_iter_p90']:.1f}", "", ""),
    ]
    if baseline is not None:
        rows.append(("plain nanoGPT-style loop here and now, ms/iteration", f"{baseline:.1f}", "", ""))
    print("\n| measure | embgpt train (Trainer) | nanoGPT train.py | target |\n|---|---|---|---|")
    for name, ours, ref, target in rows:
        print(f"| {name} | {ours} | {ref} | {target} |")
    ratio = row["train_seconds"] / NANOGPT["wall_seconds"]
    print(f"\ntrain time / nanoGPT's reference time: {ratio:.2f}x")
    if baseline is not None:
        print(
            f"Trainer ms/iteration / plain loop's, same machine and moment: {row['ms_per_iter_median'] / baseline:.2f}x"
        )
    print(f"sample:\n{results['samples'][0]}")
    write_json({**row, "nanogpt_reference": NANOGPT, "sample": results["samples"][0]}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
