#!/usr/bin/env bash
# One short GPU check (under 5 minutes on an H100/H200): EmbGPT against transformers' GPT2LMHeadModel on the same
# random GPT-2 124M weights.
#   - fp32 logits parity on the GPU (TF32 off);
#   - bf16-autocast training tokens/s and MFU at batch x 1024 (forward + backward + fused AdamW), SDPA restricted to
#     the flash and to the memory-efficient kernel, eager and torch.compile'd;
#   - generate() tokens/s, batch 1, 32-token prompt, 64 new greedy tokens, bf16 weights (dynamic cache; EmbGPT also
#     with the static cache, compiled).
# Prints one line per measurement as it goes and writes $OUT/gpu_check.json (or ./gpu_check.json).
#
#   bash scripts/gpu_check.sh                                            # on the GPU machine, from the repo root
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_PRESET=tiny bash scripts/gpu_check.sh # a dry run of the script itself
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # the device's image may not have the package installed
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>/dev/null || true
"$PYTHON" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
exec timeout "${GPU_CHECK_TIMEOUT:-290}" "$PYTHON" - <<'EOF'
import json
import os
import sys
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from hf_embgpt.training.recipe import flops_per_token, non_embedding_params

sys.path.insert(0, "scripts")
from bench_model import build_models  # noqa: E402  the CPU benchmark's pair: same weights, same pad id

device = torch.device(os.environ.get("GPU_CHECK_DEVICE", "cuda"))
preset = os.environ.get("GPU_CHECK_PRESET", "gpt2")
tiny = preset == "tiny"
batch, seq = (2, 64) if tiny else (16, 1024)
steps = 2 if tiny else 10
results = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "preset": preset}
out_path = os.path.join(os.environ.get("OUT", "."), "gpu_check.json")


def report(key, value):
    results[key] = value
    print(f"{key}: {value}", flush=True)
    with open(out_path + ".tmp", "w") as f:
        json.dump(results, f, indent=2)
    os.replace(out_path + ".tmp", out_path)


def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()


def build():
    config, models = build_models(preset, seed=0)
    return config, {name: model.to(device) for name, model in models.items()}


def bf16_peak():
    """Nominal dense bf16 peak for known chips, else a measured 8192^3 matmul."""
    name = results["device"]
    for chip, tflops in (("H100", 989e12), ("H200", 989e12), ("A100", 312e12)):
        if chip in name:
            return tflops, "nominal"
    n = 512 if tiny else 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    (a @ a), sync()
    t0 = time.perf_counter()
    for _ in range(10):
        a @ a
    sync()
    return 10 * 2 * n**3 / (time.perf_counter() - t0), "measured"


torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
config, models = build()
ids = torch.randint(0, config.vocab_size, (2, 128), device=device)
with torch.inference_mode():
    a, b = (m.eval()(ids, use_cache=False).logits for m in models.values())
report("fp32_logits_max_abs_diff", (a - b).abs().max().item())
del a, b

peak, kind = bf16_peak()
report("bf16_peak_tflops", {"value": peak / 1e12, "kind": kind})
torch.backends.cuda.matmul.allow_tf32 = True
x = torch.randint(0, config.vocab_size, (batch, seq), device=device)
flops = flops_per_token(config, non_embedding_params(models["embgpt"]), seq) * batch * seq
backends = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION}
if device.type != "cuda":
    backends = {"math": SDPBackend.MATH}
for compiled in (False, True):
    for backend_name, backend in backends.items():
        if compiled and backend_name == "efficient":
            continue  # compile once, with the kernel that wins
        for name, model in models.items():
            key = f"train_bf16_{name}_{backend_name}{'_compiled' if compiled else ''}"
            try:
                model.train()
                opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
                fwd = torch.compile(model) if compiled else model
                with sdpa_kernel(backend):

                    def step():
                        with torch.autocast(device.type, dtype=torch.bfloat16):
                            loss = fwd(x, labels=x).loss
                        loss.backward()
                        opt.step()
                        opt.zero_grad(set_to_none=True)

                    t0 = time.perf_counter()
                    for _ in range(3):
                        step()
                    sync()
                    warmup = time.perf_counter() - t0
                    t0 = time.perf_counter()
                    for _ in range(steps):
                        step()
                    sync()
                    dt = (time.perf_counter() - t0) / steps
                report(key, {"tokens_per_s": batch * seq / dt, "mfu": flops / dt / peak, "warmup_s": warmup})
                del opt
            except Exception as e:  # one failing variant must not hide the rest
                report(key, {"error": f"{type(e).__name__}: {str(e)[:300]}"})
            model.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()

torch.backends.cuda.matmul.allow_tf32 = False
prompt = torch.randint(0, config.vocab_size, (1, 32), device=device)
new = 8 if tiny else 64
variants = [("gpt2", {}), ("embgpt", {}), ("embgpt", {"cache_implementation": "static"})]
for name, kwargs in variants:
    key = f"generate_b1_bf16_{name}{'_static_compiled' if kwargs else ''}"
    try:
        model = models[name].to(torch.bfloat16).eval()
        run = lambda: model.generate(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False, **kwargs)
        t0 = time.perf_counter()
        run(), run()  # a static cache compiles on the first calls
        sync()
        warmup = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(3):
            run()
        sync()
        dt = (time.perf_counter() - t0) / 3
        report(key, {"tokens_per_s": new / dt, "ms_per_token": 1000 * dt / new, "warmup_s": warmup})
    except Exception as e:
        report(key, {"error": f"{type(e).__name__}: {str(e)[:300]}"})
print("done", flush=True)
EOF
