"""One-row linear layers (decoding one sequence) in the two weight layouts GPT-2 code uses, on this CPU.

nn.Linear (EmbGPT, nanoGPT, Llama) keeps its weight as (out, in) and computes x @ W.T; transformers' GPT-2 `Conv1D`
keeps (in, out) and computes x @ W. For one input row both are a matrix-vector product that streams the whole weight
from memory, but the BLAS runs a different kernel for each layout, and which is faster depends on the CPU and its
BLAS. This times the 48 block linears of GPT-2 124M at one row, weights read from memory as in decoding (12 layers'
copies, more than the caches hold), the layouts interleaved, and prints ms per token and the ratio.

    python scripts/bench_linear_layout.py --out layout.json
"""

import argparse
import json
import platform
import time

import torch
from torch.nn import functional as F

from bench_model import interleaved, summary  # scripts/ is on the path when run as a script


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n_embd", type=int, default=768)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--out", default="bench_linear_layout.json")
    args = p.parse_args(argv)

    torch.manual_seed(0)
    d = args.n_embd
    shapes = {"c_attn": (d, 3 * d), "attn.c_proj": (d, d), "c_fc": (d, 4 * d), "mlp.c_proj": (4 * d, d)}  # (in, out)
    linear = [{name: torch.randn(o, i) for name, (i, o) in shapes.items()} for _ in range(args.layers)]  # (out, in)
    conv1d = [{name: w.t().contiguous() for name, w in layer.items()} for layer in linear]  # (in, out)
    bias = {name: torch.randn(o) for name, (i, o) in shapes.items()}
    rows = {name: torch.randn(1, i) for name, (i, o) in shapes.items()}

    def nn_linear():
        for layer in linear:
            for name, w in layer.items():
                F.linear(rows[name], w, bias[name])

    def gpt2_conv1d():
        for layer in conv1d:
            for name, w in layer.items():
                torch.addmm(bias[name], rows[name], w)

    def timed_ms(run):
        def timed():
            start = time.perf_counter()
            run()
            return (time.perf_counter() - start) * 1e3

        return timed

    runs = {"nn.Linear (out, in): F.linear": nn_linear, "Conv1D (in, out): addmm": gpt2_conv1d}
    with torch.inference_mode():  # bench_model's protocol: a warm-up each, then the layouts interleaved
        times = interleaved({name: timed_ms(run) for name, run in runs.items()}, args.reps)
    ms = {name: summary(values) for name, values in times.items()}
    reference = ms["Conv1D (in, out): addmm"]["median"]
    result = {
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "blas": "mkl" if torch.backends.mkl.is_available() else "other",
        "layers": args.layers,
        "n_embd": d,
        "ms_per_token": ms,
        "nn_linear_speed_vs_conv1d": reference / ms["nn.Linear (out, in): F.linear"]["median"],
    }
    print(f"{result['cpu']}, {result['threads']} threads: {args.layers} layers x 4 linears, 1 row")
    print(f"{'layout':34} {'ms/token':>9} {'min-max':>15} {'speed vs Conv1D':>16}")
    for name, s in ms.items():
        print(f"{name:34} {s['median']:9.2f} {s['min']:7.2f}-{s['max']:<7.2f} {reference / s['median']:16.2f}x")
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
