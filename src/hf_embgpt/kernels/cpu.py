"""An opt-in CPU speed layer: `optimize(model)` picks, by measurement on this machine, the fastest of a few fp32
matmul kernels for each linear layer, and recomputes cheap activations in the backward pass instead of storing them.

Not part of the model file (and never uploaded with it): `optimize` swaps the classes of a model's `nn.Linear` and
`Block` modules for the subclasses below, which have the same parameters, state dict and results (to float rounding);
`save_pretrained` writes exactly what the plain model writes.

Why measure: the fast kernels win on some CPUs and lose on others. On an AMD EPYC, where MKL (PyTorch's fp32 CPU
matmul library) runs at about half the AVX-512 rate, oneDNN (which PyTorch also ships) makes fp32 training about 2x
faster; on an Intel Xeon the same kernels made batch-1 decoding 1.9x slower. So each linear layer uses a fast kernel
only where a one-time micro-benchmark on this machine, for that shape, dtype and thread count, measured it faster than
plain `F.linear`; everywhere else, and where a fast path would change semantics (GPUs, other dtypes, autocast, tensor
subclasses, compilers and tracers, torch.func transforms), it is plain `F.linear`.

    from hf_embgpt.kernels import optimize
    model = optimize(EmbGPTForCausalLM.from_pretrained(path))  # on a CPU; GPUs gain nothing from it

Set EMBGPT_CPU_KERNELS=plain (or =fast) to skip the measurement and always take the plain (or the fast) kernels.
"""

import functools
import itertools
import logging
import os
import platform
import threading
import time

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts
from transformers.utils import is_tracing

from ..modeling_embgpt import Block

logger = logging.getLogger(__name__)

KERNELS_ENV = "EMBGPT_CPU_KERNELS"  # "measure" (default), "plain" or "fast"

# oneDNN's fp32 linear. PyTorch has no public route to it: `F.linear` on fp32 CPU tensors always calls MKL (oneDNN
# only with `torch.backends.mkldnn.matmul.fp32_precision` "bf16"/"tf32", which change the results), and
# `torch.utils.mkldnn.to_mkldnn` gives inference-only modules with opaque weights. Measured on AMD EPYC (2 threads,
# GPT-2 124M shapes) this op is the whole training and prefill win, so it stays, behind this feature check and the
# measurement below, with `F.linear` as the fallback wherever it is missing or slower.
_ONEDNN_LINEAR = (
    getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if torch.backends.mkldnn.is_available() and platform.machine().lower() in ("x86_64", "amd64")
    else None
)


# ----------------------------------------------------------------------------------------------------------------
# The kernels: each computes F.linear(x, weight, bias).


def plain_linear(x, weight, bias):
    return F.linear(x, weight, bias)


def onednn_linear(x, weight, bias):
    """x @ weight.T + bias through oneDNN, forward and backward."""
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
        return _OneDNNLinear.apply(x, weight, bias)
    return _onednn(x, weight, bias)


def row_chunked_linear(x, weight, bias, chunks=None):
    """One input row (decoding one sequence): `torch.bmm` over row chunks of the weight, which spreads the weight's
    rows over every thread where a matrix-vector product may run on one. Inference only (no autograd)."""
    out_features, in_features = weight.shape
    chunks = chunks or _row_chunks(out_features, torch.get_num_threads())
    weight = weight.view(chunks, -1, in_features)  # (chunks, out / chunks, in)
    column = x.reshape(1, -1).t().expand(chunks, -1, -1)  # (chunks, in, 1)
    if bias is None:
        y = torch.bmm(weight, column)
    else:
        y = torch.baddbmm(bias.view(chunks, -1, 1), weight, column)
    return y.view(*x.shape[:-1], out_features)


KERNELS = {"plain": plain_linear, "onednn": onednn_linear, "row_chunks": row_chunked_linear}


def _onednn(x, weight, bias=None):
    """x @ weight.T + bias through oneDNN, for any leading shape of x; weight may be a transposed view."""
    y = _ONEDNN_LINEAR(x.reshape(-1, x.shape[-1]), weight, bias, "none", [], "")
    return y.view(*x.shape[:-1], weight.shape[0])


class _OneDNNLinear(torch.autograd.Function):
    """Linear's forward and backward matmuls through oneDNN, saving only what the gradients need, as F.linear does.

    A second-order backward (create_graph=True) gets the same gradients from differentiable matmuls.
    """

    @staticmethod
    def forward(x, weight, bias):
        return _onednn(x, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias = inputs
        needs_x, needs_weight, _ = ctx.needs_input_grad
        ctx.save_for_backward(x if needs_weight else None, weight if needs_x else None)
        ctx.x_shape, ctx.out_features, ctx.has_bias = x.shape, weight.shape[0], bias is not None

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        grad_y = grad_y.reshape(-1, ctx.out_features)  # (N, out)
        higher_order = torch.is_grad_enabled()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:  # grad_y @ weight
            grad_x = grad_y @ weight if higher_order else _onednn(grad_y, weight.t())
            grad_x = grad_x.view(ctx.x_shape)
        if ctx.needs_input_grad[1]:  # grad_y.T @ x, in column slices of grad_y: oneDNN copies a transposed input
            x_t = x.reshape(-1, x.shape[-1]).t()
            width = max(1, _SLICE_ELEMENTS // max(1, grad_y.shape[0]))
            if higher_order:
                grad_w = grad_y.t() @ x_t.t()
            elif width >= grad_y.shape[1]:
                grad_w = _onednn(grad_y.t(), x_t)
            else:
                grad_w = x.new_empty(grad_y.shape[1], x.shape[-1])
                for start in range(0, grad_y.shape[1], width):
                    grad_w[start : start + width] = _onednn(grad_y[:, start : start + width].t(), x_t)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_y.sum(0)
        return grad_x, grad_w, grad_b


_SLICE_ELEMENTS = 2**20  # 4 MiB of fp32: measured fastest for the 50257-row head, which would copy 200 MiB at once


@functools.cache
def _row_chunks(out_features, threads):
    """The smallest divisor of out_features that gives each thread two chunks of at least 16 rows; else 1."""
    for chunks in range(2 * threads, out_features // 16 + 1):
        if out_features % chunks == 0:
            return chunks
    return 1


# ----------------------------------------------------------------------------------------------------------------
# Choosing a kernel by measurement, once per (rows, in, out, bias, grad, dtype, threads, oneDNN switch).

_CHOICES = {}  # key -> kernel name; in-process
_CHOICES_LOCK = threading.Lock()
_MARGIN = 0.05  # a fast kernel must beat plain F.linear by 5%: noise must not pick a kernel that is not faster
_TIMED_RUNS = 5
_MEASURED_ROWS = 256  # input rows per measured call, and
_MEASURED_MACS = 2**26  # multiply-adds (~2 ms at 2 threads): the weight's rows are cut to fit
_MEASURED_GEMV_ELEMENTS = 2**23  # a one-row call streams the weight: up to 32 MiB of it, past most caches
_MEASURED_COLD_BYTES = 2**27  # and cycles through copies of it, 128 MiB in all: decoding reads each weight from memory


def _fast_paths_apply(x, weight, bias):
    """Plain fp32 CPU tensors in eager mode only: GPUs, other dtypes, autocast, tensor subclasses (DTensor, ...),
    compilers and tracers (their graphs take F.linear) keep F.linear's semantics."""
    return (
        type(x) is torch.Tensor
        and type(weight) is nn.Parameter
        and (bias is None or type(bias) is nn.Parameter)
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() >= 1
        and x.numel() > 0
        and all(t is None or (t.device == x.device and t.dtype == x.dtype) for t in (weight, bias))
        and not torch.is_autocast_enabled("cpu")
        and not is_tracing()
    )


def _row_bucket(rows):
    """One row, or the next power of two: a generation of growing prompts measures a handful of shapes, not each."""
    return 1 if rows == 1 else 1 << (rows - 1).bit_length()


def _candidates(rows, weight, grad):
    """The kernels that can compute this call, plain first."""
    names = ["plain"]
    if _ONEDNN_LINEAR is not None and torch.backends.mkldnn.enabled:
        names.append("onednn")
    if rows == 1 and not grad and weight.is_contiguous() and _row_chunks(weight.shape[0], torch.get_num_threads()) > 1:
        names.append("row_chunks")
    return names


def kernel_for(x, weight, bias):
    """The kernel this layer's call should use: measured once per shape, cached; plain F.linear where no fast path
    applies."""
    if not _fast_paths_apply(x, weight, bias):
        return plain_linear
    rows = x.numel() // x.shape[-1]
    grad = torch.is_grad_enabled()
    threads, onednn = torch.get_num_threads(), torch.backends.mkldnn.enabled  # the switch users know turns oneDNN off
    key = (_row_bucket(rows), weight.shape[1], weight.shape[0], bias is not None, grad, x.dtype, threads, onednn)
    name = _CHOICES.get(key)
    if name is None:
        names = _candidates(rows, weight, grad)
        with _CHOICES_LOCK:
            name = _CHOICES.get(key) or _choose(key, names, weight, bias)
            _CHOICES[key] = name
    return KERNELS[name]


def _choose(key, names, weight, bias):
    forced = os.environ.get(KERNELS_ENV, "measure")
    if forced not in ("measure", "plain", "fast"):
        raise ValueError(f"{KERNELS_ENV}={forced!r}; use 'measure', 'plain' or 'fast'")
    if len(names) == 1 or forced == "plain":
        return "plain"
    if forced == "fast":
        return names[-1]
    seconds = _measure(key, names, weight, bias)
    best = min(names, key=seconds.get)
    if seconds[best] > seconds["plain"] * (1 - _MARGIN):
        best = "plain"
    logger.debug("linear %s: %s (%s)", key, best, ", ".join(f"{n} {1e3 * s:.2f} ms" for n, s in seconds.items()))
    return best


def _measure(key, names, weight, bias):
    """Seconds per call of each kernel on this key's shape (cut to a few ms of work), best of interleaved runs.

    Runs in a thread of its own: grad mode, autocast, saved-tensor hooks (activation checkpointing) and dispatch modes
    are per thread, so the caller's (a checkpointed region, a FLOP counter) neither see the measurement nor change it.
    """
    rows, in_features, out_features, has_bias, grad, dtype = key[:6]
    budget = _MEASURED_GEMV_ELEMENTS if rows == 1 else _MEASURED_MACS
    rows = min(rows, _MEASURED_ROWS)
    keep = min(out_features, max(16, budget // (rows * in_features)))
    chunks = _row_chunks(out_features, torch.get_num_threads())
    if "row_chunks" in names:  # a whole number of the real shape's chunks
        keep = max(chunks, keep - keep % chunks)
    result = {}

    def run():
        with torch.no_grad():
            w = weight.detach()[:keep] if rows == 1 else torch.full((keep, in_features), 0.01, dtype=dtype)
            b = None if not has_bias else torch.full((keep,), 0.01, dtype=dtype)
            x = torch.full((rows, in_features), 0.01, dtype=dtype)
        if grad:
            x, w = x.requires_grad_(), w.clone().requires_grad_()
            b = None if b is None else b.requires_grad_()
            grad_y = torch.full((rows, keep), 0.01, dtype=dtype)
        # one row: the weight is read from memory in a real decoding step (the model's other weights evict it from
        # the caches), so the measured calls cycle through copies of it that the caches cannot hold (at most 16: a
        # model small enough to stay in the caches is measured in them, as it runs)
        copies = min(16, max(1, -(-_MEASURED_COLD_BYTES // (w.numel() * w.element_size())))) if rows == 1 else 1
        weights = [nn.Parameter(w if i == 0 else w.detach().clone(), requires_grad=grad) for i in range(copies)]
        b = None if b is None else nn.Parameter(b, requires_grad=grad)
        turn = itertools.cycle(weights)

        def call(kernel):
            w = next(turn)
            if not grad:
                with torch.no_grad():
                    return kernel(x, w, b)
            kernel(x, w, b).backward(grad_y)

        kernels = {n: KERNELS[n] for n in names}
        if "row_chunks" in names:  # the cut weight in the real shape's chunks
            kernels["row_chunks"] = functools.partial(row_chunked_linear, chunks=chunks)
        result.update(time_kernels({n: functools.partial(call, k) for n, k in kernels.items()}))

    worker = threading.Thread(target=run, name="embgpt-kernel-measurement")
    worker.start()
    worker.join()
    if set(result) != set(names):
        raise RuntimeError(f"measuring the linear kernels for {key} failed (see the error above)")
    return result


def time_kernels(calls, runs=_TIMED_RUNS):
    """{name: fn()} -> {name: best seconds}: one warm-up each, then `runs` interleaved rounds (A B A B ...)."""
    for fn in calls.values():
        fn()
    times = {name: [] for name in calls}
    for _ in range(runs):
        for name, fn in calls.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return {name: min(t) for name, t in times.items()}


def chosen_kernels():
    """{(rows, in, out, bias, grad, dtype, threads, onednn enabled): kernel name} measured so far in this process."""
    return dict(_CHOICES)


# ----------------------------------------------------------------------------------------------------------------
# The modules optimize() swaps in.


class Linear(nn.Linear):
    """nn.Linear that runs each call through the kernel measured fastest for its shape on this machine."""

    def forward(self, x):
        return kernel_for(x, self.weight, self.bias)(x, self.weight, self.bias)


# Ops whose outputs the recomputing block keeps: matmuls and attention, which cost the time. Everything else in the
# block (layer norms, GELU, residual adds, views) is recomputed in the backward pass.
_SAVED_OPS = {
    torch.ops.aten.mm,
    torch.ops.aten.addmm,
    torch.ops.aten.bmm,
    torch.ops.aten.baddbmm,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu,
    torch.ops.aten._scaled_dot_product_flash_attention,
    torch.ops.aten._scaled_dot_product_efficient_attention,
    torch.ops.aten._scaled_dot_product_cudnn_attention,
    torch.ops.aten.native_dropout,  # random: the same mask in the backward pass without replaying the generator
}
if _ONEDNN_LINEAR is not None:
    _SAVED_OPS.add(torch.ops.mkldnn._linear_pointwise)


def _keep_matmuls(ctx, op, *args, **kwargs):
    saved = op.overloadpacket in _SAVED_OPS
    return CheckpointPolicy.MUST_SAVE if saved else CheckpointPolicy.PREFER_RECOMPUTE


_KEEP_MATMULS = functools.partial(create_selective_checkpoint_contexts, _keep_matmuls)


class RecomputingBlock(Block):
    """A Block that stores its matmul and attention outputs for the backward pass and recomputes the rest.

    A linear layer saves its input for the weight gradient; after a layer norm or a GELU that input is an output the
    elementwise op could recompute from its own saved input. Recomputing them frees about a third of a block's
    activations (6 of 16 (B, T, n_embd) tensors, less one kept matmul output) for a few elementwise ops per block.
    Through torch's selective activation checkpointing; steps aside under full activation checkpointing
    (`gradient_checkpointing_enable()`), with a KV cache (the region runs twice), and where `optimize`'s other fast
    paths do (GPUs, tracers, torch.func transforms).
    """

    def forward(self, x, attention_mask=None, cache=None, **kwargs):
        if not self._recomputes(x, cache):
            return super().forward(x, attention_mask, cache, **kwargs)
        return checkpoint(
            super().forward, x, attention_mask, cache, use_reentrant=False, context_fn=_KEEP_MATMULS, **kwargs
        )

    def _recomputes(self, x, cache):
        return (
            torch.is_grad_enabled()
            and cache is None
            and not (getattr(self, "gradient_checkpointing", False) and self.training)
            and type(x) is torch.Tensor
            and x.device.type == "cpu"
            and not is_tracing()
            and _saved_tensor_hooks_allowed()
        )


def _saved_tensor_hooks_allowed():
    """False under transforms that disable saved-tensor hooks (torch.func.vmap), which checkpointing needs."""
    try:
        with torch.autograd.graph.saved_tensors_hooks(_same, _same):
            return True
    except RuntimeError:
        return False


def _same(tensor):
    return tensor


def optimize(model):
    """Swap `model`'s nn.Linear and Block modules for their CPU versions in place; returns the model.

    The parameters, state dict, config and saved files stay those of the plain model; only how the layers run on a
    CPU changes. Kernels are measured on first use of each shape (a few milliseconds each).
    """
    swaps = {nn.Linear: Linear, Block: RecomputingBlock}
    for module in model.modules():
        if type(module) in swaps:
            module.__class__ = swaps[type(module)]
    return model
