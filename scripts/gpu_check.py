"""EmbGPT against nanoGPT's model and transformers' GPT2LMHeadModel on one GPU, side by side in one process.

At GPT-2 124M, batch 12 x 1024 (nanoGPT's bench.py shape), bf16 autocast, TF32, fused AdamW:
- a training step (nanoGPT's train.py inner loop: forward with the loss, backward, clip at 1.0, AdamW step) for
  nanoGPT's `GPT` (scripts/nanogpt_reference_loop.py, as nanoGPT trains GPT-2 124M: no biases, vocabulary padded
  to 50304), GPT2LMHeadModel (sdpa) and EmbGPT (GPT-2's biases and 50257 tokens, so that GPT-2 checkpoints load),
  each eager and `torch.compile`d: ms/step, tokens/s, MFU against the GPU's dense bf16 peak, peak memory;
- EmbGPT with `fused_loss=True` (Liger-Kernel's fused linear cross-entropy), where liger_kernel and the option exist;
- batch-1 greedy decoding with the static cache, bf16 weights, ms per new token (GPT2LMHeadModel and EmbGPT);
- a short `embgpt train --torch_compile` run at the same size, its steady tokens/s against the compiled raw step.
Every variant runs on its own: a failure (a compile error, out of memory) is recorded in its entry and the next one
runs. Results go to one JSON file, written after each variant, and a table with the ratios is printed at the end.

    python scripts/gpu_check.py --out gpu_check.json      # on a GPU (run through scripts/gpu_check.sh)
    python scripts/gpu_check.py --dry-run --out dry.json  # tiny model on the CPU, a few steps: checks the script
"""

import argparse
import contextlib
import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time

import torch
from transformers import GPT2LMHeadModel, TrainerCallback

from hf_embgpt import EmbGPTConfig, EmbGPTForCausalLM
from hf_embgpt.formats.common import save_tokenizer
from hf_embgpt.formats.gpt2 import gpt2_config_from
from hf_embgpt.train import train as embgpt_train
from hf_embgpt.training.data import char_tokenizer
from hf_embgpt.training.recipe import flops_per_token, gpu_peak_tflops, non_embedding_params

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nanogpt_reference_loop import GPT as NanoGPT  # noqa: E402

MODELS = {"nanogpt": "nanoGPT GPT", "gpt2": "GPT2LMHeadModel", "embgpt": "EmbGPT", "embgpt_fused_loss": "EmbGPT fused"}
# nanoGPT's train.py defaults for GPT-2 124M from scratch: no biases, vocabulary padded to a multiple of 64
NANOGPT = dict(bias=False, vocab_size=50304)
TRAIN_VARIANTS = [f"{m}_{mode}" for mode in ("eager", "compiled") for m in MODELS]
DECODE_VARIANTS = ["gpt2_static_cache", "embgpt_static_cache"]
TRAIN_FIELDS = ("ms_per_step", "tokens_per_s", "mfu", "peak_memory_gib", "warmup_s")
DECODE_FIELDS = ("ms_per_token", "tokens_per_s", "peak_memory_gib", "warmup_s")
EMBGPT_TRAIN_FIELDS = ("tokens_per_s", "raw_loop_tokens_per_s", "vs_raw_loop", "steps", "peak_memory_gib", "warmup_s")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="tiny model on the CPU, a few steps: a check of the script")
    p.add_argument("--device", default=None, help="default: cuda, cpu with --dry-run")
    p.add_argument("--out", default="gpu_check.json", help="the JSON file to write")
    p.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor; eager in dry run)")
    p.add_argument("--budget-s", type=float, default=280.0, help="variants that would start later are skipped")
    p.add_argument("--only", default=None, help="comma-separated variants to run (e.g. embgpt_compiled); default all")
    args = p.parse_args(argv)
    everything = [*TRAIN_VARIANTS, *DECODE_VARIANTS, "embgpt_train"]
    args.only = everything if args.only is None else args.only.split(",")
    unknown = sorted(set(args.only) - set(everything))
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(everything)}")
    args.device = torch.device(args.device or ("cpu" if args.dry_run else "cuda"))
    args.compile_backend = args.compile_backend or ("eager" if args.dry_run else "inductor")
    return args


def sizes(dry_run):
    if dry_run:
        return dict(preset="tiny", batch=2, seq=64, warmup=1, steps=2, prompt=8, new=4, train_steps=6, train_log=2)
    return dict(preset="gpt2", batch=12, seq=1024, warmup=3, steps=25, prompt=32, new=64, train_steps=40, train_log=10)


class Check:
    """The run's settings, the device's helpers, and the results written after every variant."""

    def __init__(self, args):
        self.args, self.device, self.size = args, args.device, sizes(args.dry_run)
        self.cuda = self.device.type == "cuda"
        # bf16 where the device runs it natively; a CPU dry run stays in fp32, as `embgpt train` does there
        self.dtype = torch.bfloat16 if self.cuda and torch.cuda.is_bf16_supported(including_emulation=False) else None
        self.config = EmbGPTConfig.from_preset(self.size["preset"], block_size=max(self.size["seq"], 128))
        name = torch.cuda.get_device_name(self.device) if self.cuda else "cpu"
        self.peak_tflops = gpu_peak_tflops(name) if self.cuda else None
        self.started = time.perf_counter()
        self.results = {
            "device": name,
            "dry_run": args.dry_run,
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "preset": self.size["preset"],
            "batch": self.size["batch"],
            "seq": self.size["seq"],
            "dtype": "bfloat16" if self.dtype else "float32",
            "compile_backend": args.compile_backend,
            "peak_tflops": self.peak_tflops,
            "nanogpt": NANOGPT,
            "train": {},
            "decode": {},
            "embgpt_train": {},
            "ratios": {},
        }

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def fresh_memory(self):
        gc.collect()
        torch.compiler.reset()  # compiled graphs of earlier variants: no recompile limits, no memory held
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory_gib(self):
        return torch.cuda.max_memory_allocated(self.device) / 2**30 if self.cuda else None

    def measure(self, group, name, fields, fn):
        """Run one variant: its fields (None where not measured), status ok / skipped / error, and the JSON saved."""
        entry = dict.fromkeys(fields)
        spent = time.perf_counter() - self.started
        try:
            if name not in self.args.only:
                raise SkipVariant("not selected (--only)")
            if spent > self.args.budget_s:
                raise SkipVariant(f"time budget of {self.args.budget_s:.0f} s spent ({spent:.0f} s)")
            self.fresh_memory()
            entry.update(fn(), status="ok", detail=None)
        except SkipVariant as e:
            entry.update(status="skipped", detail=str(e))
        except Exception as e:  # a compile error or an OOM in one variant must not hide the others
            entry.update(status="error", detail=f"{type(e).__name__}: {str(e)[:500]}")
        self.results[group][name] = entry
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in entry.items() if v is not None}
        print(f"{group}/{name}: {shown}", flush=True)
        self.save()
        return entry

    def save(self):
        self.results["elapsed_s"] = time.perf_counter() - self.started
        tmp = self.args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.results, f, indent=2)
        os.replace(tmp, self.args.out)


class SkipVariant(Exception):
    """A variant that cannot run here (a missing optional package, the time budget)."""


# ----------------------------------------------------------------------------------------------------------------
# Models: GPT-2 124M's shape three times, random weights (speed does not depend on their values).


def build(check, kind):
    config = check.config
    torch.manual_seed(0)
    if kind == "nanogpt":
        v, bias = NANOGPT["vocab_size"], NANOGPT["bias"]
        model = NanoGPT(v, config.block_size, config.n_layer, config.n_head, config.n_embd, bias=bias)
    elif kind == "gpt2":
        model = GPT2LMHeadModel._from_config(gpt2_config_from(config), attn_implementation="sdpa")
    elif kind == "embgpt":
        model = EmbGPTForCausalLM._from_config(config, attn_implementation="sdpa")
    elif kind == "embgpt_fused_loss":
        try:
            import liger_kernel  # noqa: F401
        except ImportError as e:
            raise SkipVariant("liger_kernel is not installed (pip install liger-kernel)") from e
        if not hasattr(config, "fused_loss"):
            raise SkipVariant("this EmbGPTConfig has no fused_loss option")
        fused = EmbGPTConfig.from_dict({**config.to_dict(), "fused_loss": True})
        model = EmbGPTForCausalLM._from_config(fused, attn_implementation="sdpa")
    else:
        raise ValueError(f"unknown model {kind!r}; choose one of {', '.join(MODELS)}")
    return model.to(check.device)


def train_step(check, kind, model, compiled):
    """nanoGPT's train.py inner loop for `model`; returns step() and the batch it trains on."""
    b, t = check.size["batch"], check.size["seq"]
    data = torch.randint(0, check.config.vocab_size, (b, t + 1), device=check.device)
    x, y = data[:, :-1].contiguous(), data[:, 1:].contiguous()  # as nanoGPT's get_batch stacks them
    fused = check.cuda  # fused AdamW on the GPU; CPUs keep torch's default (foreach) in the dry run
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=fused)
    forward = torch.compile(model, backend=check.args.compile_backend) if compiled else model

    def step():
        with check.autocast():
            if kind == "nanogpt":
                _, loss = forward(x, y)
            else:
                loss = forward(input_ids=x, labels=x).loss  # the model shifts the labels, as `embgpt train` feeds it
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def time_steps(check, step, warmup, steps):
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    check.sync()
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    check.sync()
    return (time.perf_counter() - t0) / steps, warmup_s


def training_variant(check, kind, compiled):
    def run():
        model = build(check, kind).train()
        step = train_step(check, kind, model, compiled)
        seconds, warmup_s = time_steps(check, step, check.size["warmup"], check.size["steps"])
        tokens = check.size["batch"] * check.size["seq"]
        flops = flops_per_token(check.config, non_embedding_params(model), check.size["seq"]) * tokens
        mfu = flops / seconds / (check.peak_tflops * 1e12) if check.peak_tflops else None
        return dict(ms_per_step=1000 * seconds, tokens_per_s=tokens / seconds, mfu=mfu,
                    peak_memory_gib=check.peak_memory_gib(), warmup_s=warmup_s)  # fmt: skip

    return run


def decode_variant(check, kind):
    """Batch-1 greedy generate() with the static cache (transformers compiles its decode step on a GPU)."""

    def run():
        model = build(check, kind).eval()
        if check.dtype is not None:
            model = model.to(check.dtype)
        prompt = torch.randint(0, check.config.vocab_size, (1, check.size["prompt"]), device=check.device)
        new = check.size["new"]
        kwargs = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, cache_implementation="static",
                      pad_token_id=check.config.eos_token_id)  # fmt: skip

        def generate():
            with torch.inference_mode():
                out = model.generate(prompt, **kwargs)
            if out.shape[1] != prompt.shape[1] + new:
                raise RuntimeError(f"generate() returned {out.shape[1] - prompt.shape[1]} new tokens, not {new}")

        seconds, warmup_s = time_steps(check, generate, 2, 3)  # the first calls compile the decode step
        return dict(ms_per_token=1000 * seconds / new, tokens_per_s=new / seconds,
                    peak_memory_gib=check.peak_memory_gib(), warmup_s=warmup_s)  # fmt: skip

    return run


class StopAfterTraining(TrainerCallback):
    """Ends `embgpt train` once its steps are done: the final evaluation (another compile), samples and the save
    are not what this check times."""

    class Done(Exception):
        pass

    def on_train_end(self, args, state, control, **kwargs):
        self.log_history = list(state.log_history)
        raise self.Done


def embgpt_train_variant(check, workdir):
    """`embgpt train --torch_compile` on a random EmbGPT checkpoint of the checked size (a character tokenizer over
    random words: only the step's cost matters); the median tokens/s of its logging intervals after the first
    (which compiles) against the compiled raw loop's."""

    def run():
        raw = check.results["train"].get("embgpt_compiled", {})
        steps, log = check.size["train_steps"], check.size["train_log"]
        needed = int(1.2 * steps * check.size["batch"] * (check.size["seq"] + 1)) + 10_000
        rng = random.Random(0)
        words = "the quick brown fox jumps over a lazy dog while cats sleep".split()
        text = " ".join(rng.choice(words) for _ in range(needed // 4))
        data, folder = os.path.join(workdir, "words.txt"), os.path.join(workdir, "model")
        with open(data, "w") as f:
            f.write(text)
        torch.manual_seed(0)
        EmbGPTForCausalLM(check.config).save_pretrained(folder)
        save_tokenizer(char_tokenizer(text), folder)
        argv = ["--model", folder, "--data", data, "--output_dir", os.path.join(workdir, "out"),
                "--block_size", str(check.size["seq"]), "--per_device_train_batch_size", str(check.size["batch"]),
                "--max_steps", str(steps), "--logging_steps", str(log), "--warmup_steps", "2",
                "--validation_fraction", "0.05", "--eval_strategy", "no", "--save_strategy", "no",
                "--num_samples", "0", "--report_to", "none", "--disable_tqdm", "true"]  # fmt: skip
        argv += ["--torch_compile", "true", "--torch_compile_backend", check.args.compile_backend]
        if not check.cuda:
            argv += ["--use_cpu", "true"]
        stop = StopAfterTraining()
        t0 = time.perf_counter()
        try:
            embgpt_train(argv, callbacks=[stop])
            raise RuntimeError("embgpt train returned without ending its training")
        except StopAfterTraining.Done:
            pass
        rates = [h["tokens_per_second"] for h in stop.log_history if "tokens_per_second" in h]
        if len(rates) < 2:
            raise RuntimeError(f"embgpt train logged {len(rates)} tokens/s intervals; the check needs two or more")
        tokens_per_s = statistics.median(rates[1:])
        raw_rate = raw.get("tokens_per_s")
        return dict(tokens_per_s=tokens_per_s, raw_loop_tokens_per_s=raw_rate,
                    vs_raw_loop=tokens_per_s / raw_rate if raw_rate else None, steps=steps,
                    peak_memory_gib=check.peak_memory_gib(), warmup_s=time.perf_counter() - t0)  # fmt: skip

    return run


# ----------------------------------------------------------------------------------------------------------------
# Ratios and the table


def ratios(results):
    """Speed ratios as EmbGPT's tokens/s over the other's (> 1: EmbGPT is faster); memory as EmbGPT's peak over
    the other's (< 1: EmbGPT needs less). None where either side did not run."""
    train, decode = results["train"], results["decode"]

    def quotient(a, b, field):
        x, y = a.get(field), b.get(field)
        return x / y if x and y else None

    out = {}
    for mode in ("eager", "compiled"):
        ours = train.get(f"embgpt_{mode}", {})
        fused = train.get(f"embgpt_fused_loss_{mode}", {})
        for other in ("nanogpt", "gpt2"):
            theirs = train.get(f"{other}_{mode}", {})
            out[f"embgpt_vs_{other}_{mode}"] = quotient(ours, theirs, "tokens_per_s")
            out[f"memory_embgpt_vs_{other}_{mode}"] = quotient(ours, theirs, "peak_memory_gib")
        nano = train.get(f"nanogpt_{mode}", {})
        out[f"fused_loss_vs_nanogpt_{mode}"] = quotient(fused, nano, "tokens_per_s")
        out[f"memory_fused_loss_vs_nanogpt_{mode}"] = quotient(fused, nano, "peak_memory_gib")
    out["decode_embgpt_vs_gpt2"] = quotient(decode.get("embgpt_static_cache", {}), decode.get("gpt2_static_cache", {}),
                                            "tokens_per_s")  # fmt: skip
    out["embgpt_train_vs_raw_loop"] = results["embgpt_train"].get("embgpt_train", {}).get("vs_raw_loop")
    return out


def table(results):
    def num(value, fmt, suffix=""):
        return "—" if value is None else format(value, fmt) + suffix

    def cell(entry, field, fmt):
        return num(entry.get(field), fmt) if entry.get("status") == "ok" else entry.get("status", "—")

    r = results["ratios"]
    lines = [
        f"{results['device']} | {results['preset']} {results['batch']}x{results['seq']} {results['dtype']} | "
        f"torch {results['torch']}, transformers {results['transformers']}",
        "| training step | ms/step | tokens/s | MFU | peak GiB | EmbGPT / nanoGPT | EmbGPT / GPT2LMHeadModel |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in TRAIN_VARIANTS:
        e = results["train"].get(name, {})
        model, mode = name.rsplit("_", 1)
        vs_nano = vs_gpt2 = ""
        if model == "embgpt":
            vs_nano = num(r.get(f"embgpt_vs_nanogpt_{mode}"), ".2f", "x")
            vs_gpt2 = num(r.get(f"embgpt_vs_gpt2_{mode}"), ".2f", "x")
        elif model == "embgpt_fused_loss":
            vs_nano = num(r.get(f"fused_loss_vs_nanogpt_{mode}"), ".2f", "x")
        mfu = cell(e, "mfu", ".1%") if e.get("mfu") is not None or e.get("status") != "ok" else "n/a"
        lines.append(f"| {MODELS[model]}, {mode} | {cell(e, 'ms_per_step', '.1f')} | {cell(e, 'tokens_per_s', ',.0f')} "
                     f"| {mfu} | {cell(e, 'peak_memory_gib', '.2f')} | {vs_nano} | {vs_gpt2} |")  # fmt: skip
    lines += [
        "",
        "| batch-1 greedy decode, static cache | ms/token | tokens/s | EmbGPT / GPT2LMHeadModel |",
        "|---|---|---|---|",
    ]
    for name in DECODE_VARIANTS:
        e = results["decode"].get(name, {})
        vs = num(r.get("decode_embgpt_vs_gpt2"), ".2f", "x") if name.startswith("embgpt") else ""
        lines.append(f"| {name} | {cell(e, 'ms_per_token', '.2f')} | {cell(e, 'tokens_per_s', ',.0f')} | {vs} |")
    e = results["embgpt_train"].get("embgpt_train", {})
    lines += ["", f"embgpt train --torch_compile: {cell(e, 'tokens_per_s', ',.0f')} tokens/s, "
              f"{num(e.get('vs_raw_loop'), '.1%')} of the compiled raw loop (target >= 95%)"]  # fmt: skip
    for group in ("train", "decode", "embgpt_train"):
        for name, entry in results[group].items():
            if entry.get("status") != "ok":
                lines.append(f"{group}/{name}: {entry['status']}: {entry['detail']}")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    check = Check(args)
    # TF32 as nanoGPT's train.py sets it, for every variant alike; `embgpt train` turns it on the same way (through
    # TrainingArguments), and one process should not mix torch's two APIs for it
    if check.cuda and hasattr(torch.backends, "fp32_precision"):  # torch >= 2.9
        torch.backends.fp32_precision = "tf32"
    elif check.cuda:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    # the targets first, the optional memory mode last: a spent time budget skips what matters least
    plain = [name for name in TRAIN_VARIANTS if not name.startswith("embgpt_fused_loss")]
    for name in plain:
        model, mode = name.rsplit("_", 1)
        check.measure("train", name, TRAIN_FIELDS, training_variant(check, model, compiled=mode == "compiled"))
    with tempfile.TemporaryDirectory(prefix="gpu_check.") as workdir:
        check.measure("embgpt_train", "embgpt_train", EMBGPT_TRAIN_FIELDS, embgpt_train_variant(check, workdir))
    for name in DECODE_VARIANTS:
        check.measure("decode", name, DECODE_FIELDS, decode_variant(check, name.split("_")[0]))
    for name in [name for name in TRAIN_VARIANTS if name not in plain]:
        model, mode = name.rsplit("_", 1)
        check.measure("train", name, TRAIN_FIELDS, training_variant(check, model, compiled=mode == "compiled"))
    check.results["ratios"] = ratios(check.results)
    check.save()
    print("\n" + table(check.results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
