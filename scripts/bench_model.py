"""EmbGPT, plain and with the CPU layer, against transformers' GPT2LMHeadModel on the same weights, in one process.

Three models: GPT2LMHeadModel (sdpa), EmbGPT as loaded (plain PyTorch), and EmbGPT after
`hf_embgpt.kernels.optimize` (kernels chosen by measurement on this machine, recomputed activations). For one set of
random weights (GPT-2 124M shape by default, fp32, torch threads = cores) this measures, interleaving the models
(A B C A B C ...) after a warm-up, and reports medians, min-max and ratios to GPT2LMHeadModel (`speedup`: plain
EmbGPT; `speedup_optimized`: EmbGPT with the CPU layer):

- training step (forward + backward + fused AdamW) tokens/s at batch 4 x 256 and 1 x 1024, and each model's MFU
  (nanoGPT's FLOP formula) against the machine's fp32 matmul peak, measured in the same run;
- inference forward tokens/s at batch 8 x 256 under `torch.inference_mode`;
- `generate()` with the KV cache, greedy: batch 1 (32-token prompt, 64 new tokens) in ms/token, beside the
  bandwidth floor (weight bytes / measured memory bandwidth), and a left-padded batch of 8;
- peak RSS and minor page faults of a training step, in a fresh subprocess per model.

glibc returns large freed blocks to the OS, so every training step re-faults its big temporaries. `--malloc thp`
(the default) re-executes this script with glibc's `hugetlb` tunable, which backs those blocks with transparent huge
pages; `--malloc system` keeps glibc's defaults. These settings only take effect at process start, hence the
re-exec; a training launcher can set the same variable (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`).

    python scripts/bench_model.py --out bench.json          # full run (~15 minutes on 2 idle cores)
    python scripts/bench_model.py --quick --out quick.json  # tiny model, seconds: a smoke test
"""

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from transformers import GPT2LMHeadModel

from hf_embgpt import EmbGPTConfig, EmbGPTForCausalLM
from hf_embgpt.formats.gpt2 import gpt2_config_from
from hf_embgpt.kernels.cpu import _ONEDNN_LINEAR, chosen_kernels, optimize
from hf_embgpt.modeling_embgpt import state_dict_from_gpt2
from hf_embgpt.training.recipe import flops_per_token, non_embedding_params

# glibc settings, read once at process start. Measured on a 124M training step (2 cores, 4 x 256): glibc's defaults
# unmap every large freed block, so each step takes ~400k minor page faults; "thp" backs those blocks with
# transparent huge pages (2 MiB), ~6k faults per step at the same peak RSS; "keep" never returns memory to the OS,
# ~40k faults per step but a ~15% higher peak RSS (fragmentation).
MALLOC = {
    "thp": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
    "keep": {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)},
    "system": {},
}
MALLOC_VARS = {name for settings in MALLOC.values() for name in settings}
MODELS = ("gpt2", "embgpt", "embgpt_cpu")
LABELS = {"gpt2": "GPT2LMHeadModel (sdpa)", "embgpt": "EmbGPT", "embgpt_cpu": "EmbGPT + kernels.optimize"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny model and shapes: a smoke run of every measurement")
    p.add_argument("--preset", default=None, help="EmbGPTConfig preset (default gpt2; tiny with --quick)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per model (default 5; 2 with --quick)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the cores this process may use)")
    p.add_argument("--malloc", choices=tuple(MALLOC), default="thp", help="glibc malloc settings, see MALLOC")
    p.add_argument("--compile", action="store_true", help="also time static-cache + torch.compile generation")
    p.add_argument("--skip-rss", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--child", choices=MODELS, help=argparse.SUPPRESS)  # internal: one peak-RSS measurement
    args = p.parse_args(argv)
    args.preset = args.preset or ("tiny" if args.quick else "gpt2")
    if args.reps is None:
        args.reps = 2 if args.quick else 5
    if args.reps < 1:
        p.error(f"--reps must be at least 1, got {args.reps}")
    # --quick runs on one thread: on a busy machine, tiny ops on several OpenMP threads mostly wait for each other
    args.threads = args.threads or (1 if args.quick else len(os.sched_getaffinity(0)))
    return args


def shapes(quick):
    """The measured workloads; --quick shrinks each one so that the whole run takes seconds."""
    if quick:
        return dict(train=[(2, 32), (1, 64)], infer=(2, 32), prompt=8, new=8, gen_batch=4, matmul=256, band_mb=16)
    return dict(train=[(4, 256), (1, 1024)], infer=(8, 256), prompt=32, new=64, gen_batch=8, matmul=2048, band_mb=512)


# ----------------------------------------------------------------------------------------------------------------
# Models: one random GPT-2, and EmbGPT converted from it by the package's own converter.


def build_models(preset, seed, quick=False, which=MODELS):
    # --quick also shrinks the vocabulary: at GPT-2's 50257 the tiny model's time is all in the head
    small = dict(vocab_size=1024, bos_token_id=1023, eos_token_id=1023) if quick else {}
    config = EmbGPTConfig.from_preset(preset, **small)
    torch.manual_seed(seed)
    ref = GPT2LMHeadModel._from_config(gpt2_config_from(config), attn_implementation="sdpa")
    models = {"gpt2": ref}
    for name in ("embgpt", "embgpt_cpu"):
        if name in which:
            ours = EmbGPTForCausalLM._from_config(config, attn_implementation="sdpa")
            ours.load_state_dict(state_dict_from_gpt2(ref.state_dict()), strict=True)
            models[name] = optimize(ours) if name == "embgpt_cpu" else ours
    for model in models.values():
        model.generation_config.pad_token_id = config.eos_token_id
    return config, {name: models[name] for name in which}


def weight_bytes(model):
    """Bytes one decode step streams: every distinct parameter but the position table (it reads one row)."""
    return non_embedding_params(model) * next(model.parameters()).element_size()


# ----------------------------------------------------------------------------------------------------------------
# The machine: fp32 matmul peak and memory bandwidth.


def best_seconds(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def matmul_peak_gflops(n, repeat=10):
    """fp32 GEMM rate of each library PyTorch ships: torch.mm (MKL on x86) and oneDNN, where this build has it.

    On CPUs MKL does not tune for (AMD's) it runs at about half the AVX-512 rate that oneDNN reaches; the machine's
    peak is the higher of the two.
    """
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    rates = {"torch.mm": 2 * n**3 / best_seconds(lambda: torch.mm(a, b, out=c), repeat) / 1e9}
    if _ONEDNN_LINEAR is not None:  # the kernel EmbGPT's Linear uses on this machine
        rates["oneDNN"] = 2 * n**3 / best_seconds(lambda: _ONEDNN_LINEAR(a, b, None, "none", [], ""), repeat) / 1e9
    return rates


def memory_bandwidth_gbs(megabytes, repeat=10):
    """Read bandwidth (a sum over a large tensor) and copy bandwidth (bytes read + written) in GB/s."""
    src = torch.ones(megabytes * 2**20 // 4)
    dst = torch.empty_like(src)
    nbytes = src.numel() * 4
    copy = 2 * nbytes / best_seconds(lambda: dst.copy_(src), repeat) / 1e9
    return read_bandwidth_meter(src, repeat)(), copy


def read_bandwidth_meter(src, repeat=10):
    """A function that measures read bandwidth now, in GB/s, over the preallocated tensor `src`."""
    return lambda: src.numel() * src.element_size() / best_seconds(lambda: src.sum(), repeat) / 1e9


def with_paired_floor(generate, floors_ms, read_gbs, nbytes):
    """generate's timing, recording the bandwidth floor measured around it: a shared machine's bandwidth moves
    between the start of a run and its end, so each generation is set against a reading taken just before and
    just after it (the higher of the two, which gives the lower floor)."""

    def timed():
        before = read_gbs()
        seconds = generate()
        floors_ms.append(1000 * nbytes / (max(before, read_gbs()) * 1e9))
        return seconds

    return timed


# ----------------------------------------------------------------------------------------------------------------
# Workloads. Each returns one timing in seconds.


def make_train_step(model, batch, seq, vocab, seed):
    model.train()
    # fused: what Trainer uses by default (optim "adamw_torch_fused" from torch 2.8) and what `embgpt train` uses; the
    # for-loop AdamW adds two temporaries the size of the largest parameter (wte) to the step's peak, for both models
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.1, fused=True)
    ids = torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))

    def step():
        t0 = time.perf_counter()
        loss = model(ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    return step


def make_forward(model, batch, seq, vocab, seed):
    ids = torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))

    def forward():
        model.eval()
        t0 = time.perf_counter()
        with torch.inference_mode():
            model(ids, use_cache=False)
        return time.perf_counter() - t0

    return forward


def generation_inputs(batch, prompt, vocab, seed, pad_id):
    """Prompts of `prompt` tokens; in a batch, row i is left-padded by i * prompt // (2 * batch) tokens."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, prompt), generator=g)
    mask = torch.ones_like(ids)
    for i in range(batch if batch > 1 else 0):
        pad = i * prompt // (2 * batch)
        ids[i, :pad] = pad_id
        mask[i, :pad] = 0
    return ids, mask


def make_generate(model, ids, mask, new_tokens, results, **generate_kwargs):
    def generate():
        model.eval()
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                **generate_kwargs,
            )  # fmt: skip
        seconds = time.perf_counter() - t0
        results.append(out)
        return seconds

    return generate


def interleaved(workloads, reps):
    """workloads: {model: fn() -> seconds}. One warm-up each (where the CPU layer measures its kernels), then `reps`
    rounds of A B C; seconds per model."""
    for fn in workloads.values():
        fn()
    times = {name: [] for name in workloads}
    for _ in range(reps):
        for name, fn in workloads.items():
            times[name].append(fn())
    return times


def summary(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


# ----------------------------------------------------------------------------------------------------------------
# Peak memory of a training step, one fresh process per model.


def child_main(args):
    """Build one model, run training steps, print peak RSS and the minor page faults of the last step as JSON."""
    torch.set_num_threads(args.threads)
    sizes = shapes(args.quick)
    batch, seq = sizes["train"][0]
    config, models = build_models(args.preset, args.seed, args.quick, which=(args.child,))
    step = make_train_step(models[args.child], batch, seq, config.vocab_size, args.seed)
    for _ in range(2):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    seconds = step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(json.dumps({"peak_rss_bytes": peak_rss_bytes(), "minor_faults_per_step": faults, "step_s": seconds}))


def peak_rss_bytes():
    """This process's peak resident memory: VmHWM. (ru_maxrss would carry over the parent's peak through fork+exec.)"""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # no procfs: kilobytes on Linux


def measure_peak_rss(args, name):
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        name,
        "--preset",
        args.preset,
        "--seed",
        str(args.seed),
    ]
    cmd += ["--threads", str(args.threads), "--malloc", args.malloc] + (["--quick"] if args.quick else [])
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"peak-RSS subprocess for {name} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------------------------


def run(args):
    torch.set_num_threads(args.threads)
    sizes = shapes(args.quick)
    config, models = build_models(args.preset, args.seed, args.quick)
    vocab = config.vocab_size
    results = {
        "preset": args.preset,
        "quick": args.quick,
        "reps": args.reps,
        "threads": args.threads,
        "malloc": args.malloc,
        "malloc_env": {k: os.environ[k] for k in sorted(MALLOC_VARS) if k in os.environ},
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "models": LABELS,
    }
    log = lambda message: print(message, file=sys.stderr, flush=True)

    log("machine: fp32 matmul peak and memory bandwidth")
    rates = matmul_peak_gflops(sizes["matmul"])
    peak = max(rates.values())
    read_gbs, copy_gbs = memory_bandwidth_gbs(sizes["band_mb"])
    results["machine"] = {
        "matmul_peak_gflops": peak,
        "matmul_gflops_by_library": rates,
        "read_bandwidth_gbs": read_gbs,
        "copy_bandwidth_gbs": copy_gbs,
    }

    log("exactness: logits of the inference batch, eval mode")
    batch, seq = sizes["infer"]
    ids = torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(args.seed))
    with torch.inference_mode():
        logits = {name: m.eval()(ids, use_cache=False).logits for name, m in models.items()}
    results["logits_max_abs_diff"] = max((logits["gpt2"] - logits[n]).abs().max().item() for n in MODELS[1:])
    del logits

    results["train"] = {}
    for batch, seq in sizes["train"]:
        log(f"train step {batch}x{seq}")
        steps = {name: make_train_step(m, batch, seq, vocab, args.seed) for name, m in models.items()}
        times = interleaved(steps, args.reps)
        flops = flops_per_token(config, non_embedding_params(models["embgpt"]), seq) * batch * seq
        entry = {}
        for name, seconds in times.items():
            tps = [batch * seq / s for s in seconds]
            mfu = [flops / s / (peak * 1e9) for s in seconds]
            entry[name] = {"tokens_per_s": summary(tps), "mfu": summary(mfu)}
        add_speedups(entry, "tokens_per_s")
        results["train"][f"{batch}x{seq}"] = entry
        del steps
        for m in models.values():
            m.zero_grad(set_to_none=True)

    batch, seq = sizes["infer"]
    log(f"inference forward {batch}x{seq}")
    times = interleaved({name: make_forward(m, batch, seq, vocab, args.seed) for name, m in models.items()}, args.reps)
    entry = {name: {"tokens_per_s": summary([batch * seq / s for s in t])} for name, t in times.items()}
    add_speedups(entry, "tokens_per_s")
    results["inference"] = {f"{batch}x{seq}": entry}

    results["generate"] = {}
    nbytes = weight_bytes(models["embgpt"])
    read_meter = read_bandwidth_meter(torch.ones(sizes["band_mb"] * 2**20 // 4))
    floors = {name: [] for name in models}  # batch-1 generation's floors, one per run (warm-up first)
    variants = [("batch1", 1, {}), (f"batch{sizes['gen_batch']}_left_padded", sizes["gen_batch"], {})]
    if args.compile:
        compiled = dict(cache_implementation="static", compile_config=_compile_config())
        variants.append(("batch1_static_compile", 1, compiled))
    for label, batch, kwargs in variants:
        log(f"generate {label}: {sizes['prompt']}-token prompt, {sizes['new']} new tokens")
        gen_ids, mask = generation_inputs(batch, sizes["prompt"], vocab, args.seed, config.eos_token_id)
        outputs = {name: [] for name in models}
        fns = {
            name: make_generate(m, gen_ids, mask, sizes["new"], outputs[name], **kwargs) for name, m in models.items()
        }
        if label == "batch1":
            fns = {name: with_paired_floor(fn, floors[name], read_meter, nbytes) for name, fn in fns.items()}
        times = interleaved(fns, args.reps)
        entry = {name: {"ms_per_token": summary([1000 * s / sizes["new"] for s in t])} for name, t in times.items()}
        if label == "batch1":  # the timed runs' own floors: the warm-up is left out
            for name, t in times.items():
                paired = floors[name][-len(t) :]
                entry[name]["paired_floor_ms"] = summary(paired)
                entry[name]["over_paired_floor"] = summary(
                    [1000 * s / sizes["new"] / f for s, f in zip(t, paired, strict=True)]
                )
        add_speedups(entry, "ms_per_token", higher_is_better=False)
        entry["tokens_identical"] = all(
            torch.equal(a, b) for name in MODELS[1:] for a, b in zip(outputs["gpt2"], outputs[name], strict=True)
        )
        results["generate"][label] = entry
    # the floor uses the best read bandwidth seen: measured again after generation, as a shared machine's varies
    read_after = read_meter()
    read_around = nbytes / (min(min(f) for f in floors.values()) / 1000) / 1e9
    results["machine"]["read_bandwidth_gbs_by_time"] = {
        "start": read_gbs, "around_batch1_generate": read_around, "after_generate": read_after,
    }  # fmt: skip
    read_gbs = results["machine"]["read_bandwidth_gbs"] = max(read_gbs, read_around, read_after)
    del read_meter
    floor_ms = 1000 * nbytes / (read_gbs * 1e9)
    results["generate"]["bandwidth_floor_ms_per_token"] = floor_ms
    results["generate"]["weight_bytes"] = nbytes
    results["generate"]["batch1_over_floor"] = {
        name: results["generate"]["batch1"][name]["ms_per_token"]["median"] / floor_ms for name in models
    }

    if not args.skip_rss:
        del models
        results["peak_rss"] = {}
        for name in MODELS:
            log(f"peak RSS of a training step: {name} (fresh process)")
            results["peak_rss"][name] = measure_peak_rss(args, name)
        rss = results["peak_rss"]
        rss["ratio"] = rss["embgpt"]["peak_rss_bytes"] / rss["gpt2"]["peak_rss_bytes"]
        rss["ratio_optimized"] = rss["embgpt_cpu"]["peak_rss_bytes"] / rss["gpt2"]["peak_rss_bytes"]
    results["kernels"] = {str(key): name for key, name in chosen_kernels().items()}
    return results


def add_speedups(entry, figure, higher_is_better=True):
    """entry["speedup"]: plain EmbGPT against GPT2LMHeadModel; "speedup_optimized": EmbGPT with the CPU layer; as
    medians' ratios, > 1 when EmbGPT is faster."""
    for key, name in (("speedup", "embgpt"), ("speedup_optimized", "embgpt_cpu")):
        ratio = entry[name][figure]["median"] / entry["gpt2"][figure]["median"]
        entry[key] = ratio if higher_is_better else 1 / ratio


def _compile_config():
    from transformers import CompileConfig

    # generate() compiles only on accelerators unless told that this device is fine too
    config = CompileConfig(fullgraph=True, mode="default")
    config._compile_all_devices = True
    return config


def table(results):
    """The results as a markdown table: medians with min-max, and each EmbGPT's ratio to the reference."""
    rows = [
        "| figure | GPT2LMHeadModel (sdpa) | EmbGPT | EmbGPT + optimize | EmbGPT / ref | + optimize / ref |",
        "|---|---|---|---|---|---|",
    ]
    fmt = lambda s, scale=1.0, digits=0: (
        f"{s['median'] * scale:.{digits}f} ({s['min'] * scale:.{digits}f}-{s['max'] * scale:.{digits}f})"
    )
    ratios = lambda entry, unit="x": f"{entry['speedup']:.2f}{unit} | {entry['speedup_optimized']:.2f}{unit}"
    for shape, entry in results["train"].items():
        cells = " | ".join(f"{fmt(entry[n]['tokens_per_s'])} ({100 * entry[n]['mfu']['median']:.0f}%)" for n in MODELS)
        rows.append(f"| train step {shape}, tokens/s (MFU %) | {cells} | {ratios(entry)} |")
    for shape, entry in results["inference"].items():
        cells = " | ".join(fmt(entry[n]["tokens_per_s"]) for n in MODELS)
        rows.append(f"| inference {shape}, tokens/s | {cells} | {ratios(entry)} |")
    gen = results["generate"]
    for label, entry in gen.items():
        if not isinstance(entry, dict) or "speedup" not in entry:
            continue
        same = "" if entry["tokens_identical"] else " (tokens differ!)"
        cells = " | ".join(fmt(entry[n]["ms_per_token"], digits=1) for n in MODELS)
        rows.append(f"| generate {label}, ms/token{same} | {cells} | {ratios(entry, 'x faster')} |")
    over = gen["batch1_over_floor"]
    paired = " | ".join(f"{fmt(gen['batch1'][n]['over_paired_floor'], digits=2)}x" for n in MODELS)
    rows.append(
        f"| batch-1 generate / bandwidth floor measured around each run "
        f"({fmt(gen['batch1']['embgpt']['paired_floor_ms'], digits=1)} ms) | {paired} | | |"
    )
    best = " | ".join(f"{over[n]:.2f}x" for n in MODELS)
    rows.append(
        f"| batch-1 generate / floor at the run's best bandwidth ({gen['bandwidth_floor_ms_per_token']:.1f} ms) "
        f"| {best} | | |"
    )
    if "peak_rss" in results:
        rss = results["peak_rss"]
        gib = lambda r: f"{r['peak_rss_bytes'] / 2**30:.2f} GiB, {r['minor_faults_per_step'] / 1000:.0f}k faults/step"
        cells = " | ".join(gib(rss[n]) for n in MODELS)
        rows.append(f"| peak RSS, train step | {cells} | {rss['ratio']:.2f}x | {rss['ratio_optimized']:.2f}x |")
    m = results["machine"]
    libraries = ", ".join(f"{name} {rate:.0f}" for name, rate in m["matmul_gflops_by_library"].items())
    rows.append(
        f"\nmachine: fp32 matmul peak {m['matmul_peak_gflops']:.0f} GFLOP/s ({libraries}), "
        f"read {m['read_bandwidth_gbs']:.1f} GB/s, "
        f"copy {m['copy_bandwidth_gbs']:.1f} GB/s; {results['threads']} threads; malloc {results['malloc']}; "
        f"logits max |diff| {results['logits_max_abs_diff']:.2e}"
    )
    chosen = {}
    for key, name in results.get("kernels", {}).items():
        chosen.setdefault(name, []).append(key)
    rows.append("kernels chosen by measurement: " + ", ".join(f"{n} x{len(k)}" for n, k in sorted(chosen.items())))
    return "\n".join(rows)


def write_json(path, results):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".bench.", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(results, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_VARS}
    env.update(MALLOC[args.malloc])
    if env != dict(os.environ):  # glibc reads these once, at process start
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *argv], env)
    if args.child:
        return child_main(args)
    results = run(args)
    print(table(results))
    if args.out:
        write_json(args.out, results)


if __name__ == "__main__":
    main()
