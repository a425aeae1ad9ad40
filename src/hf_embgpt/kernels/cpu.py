"""An opt-in CPU speed layer: `optimize(model)` swaps in faster fp32 CPU kernels and activation recomputation.

Not part of the model file (and never uploaded with it): the model is plain PyTorch; this layer changes how its
matmuls and saved activations run on a CPU, not what they compute.
"""

import contextlib
import functools
import platform

import torch
from torch import nn
from torch.nn import functional as F

from ..modeling_embgpt import MLP, Block


class Linear(nn.Linear):
    """nn.Linear with faster fp32 matmuls on x86 CPUs, same parameters and results to float rounding.

    PyTorch sends fp32 CPU matmuls to MKL, which on CPUs it does not tune for (AMD's) runs at half their AVX-512 rate;
    oneDNN, which PyTorch also ships, runs near it: about 2x faster forward and backward. A single input row
    (decoding one sequence) goes through `torch.bmm` over row chunks of the weight instead, which streams the weight
    over every core. GPUs, other dtypes, tensor subclasses, compiled graphs and `torch.backends.mkldnn.enabled =
    False` get F.linear.
    """

    def forward(self, x):
        weight, bias = self.weight, self.bias
        if not _onednn_applies(x, weight, bias):
            return F.linear(x, weight, bias)
        if not torch.is_grad_enabled() and x.numel() == self.in_features and weight.is_contiguous():
            chunks = _row_chunks(self.out_features, torch.get_num_threads())
            if chunks > 1:
                weight = weight.view(chunks, -1, self.in_features)  # (chunks, out / chunks, in)
                column = x.reshape(1, -1).t().expand(chunks, -1, -1)  # (chunks, in, 1), a BLAS-friendly view
                if bias is None:
                    y = torch.bmm(weight, column)
                else:
                    y = torch.baddbmm(bias.view(chunks, -1, 1), weight, column)
                return y.view(*x.shape[:-1], self.out_features)
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
            return _OneDNNLinear.apply(x, weight, bias)
        return _onednn_linear(x, weight, bias)


def _onednn_applies(x, weight, bias):
    """Plain fp32 CPU tensors, eager autograd only: everything else (GPUs, bf16, autocast, DTensor and other
    subclasses, compilers and tracers, torch.func transforms, forward-mode AD) keeps F.linear's semantics."""
    return (
        _ONEDNN_LINEAR is not None
        and _plain_eager_autograd()
        and type(x) is torch.Tensor
        and type(weight) is nn.Parameter
        and (bias is None or type(bias) is nn.Parameter)
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.numel() > 0
        and all(t is None or (t.device == x.device and t.dtype == x.dtype) for t in (weight, bias))
        and torch.backends.mkldnn.enabled
        and not torch.is_autocast_enabled("cpu")
    )


def _plain_eager_autograd():
    """No compiler or tracer, no torch.func transform and no forward-mode AD level is active (none of them supports
    custom saves or kernels)."""
    return (
        not _is_tracing()
        and _FUNCTORCH_LEVEL() is None
        and getattr(torch.autograd.forward_ad, "_current_level", -1) == -1
    )


_FUNCTORCH_LEVEL = getattr(torch._C._functorch, "maybe_current_level", lambda: None)


def _onednn_linear(x, weight, bias=None):
    """x @ weight.T + bias through oneDNN, for any leading shape of x; weight may be a transposed view."""
    y = _ONEDNN_LINEAR(x.reshape(-1, x.shape[-1]), weight, bias, "none", [], "")
    return y.view(*x.shape[:-1], weight.shape[0])


class _OneDNNLinear(torch.autograd.Function):
    """Linear's forward and backward matmuls through oneDNN, saving only what the gradients need, as F.linear does.

    A second-order backward (create_graph=True) gets the same gradients from differentiable matmuls.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        needs_x, needs_weight, _ = ctx.needs_input_grad
        ctx.save_for_backward(x if needs_weight else None, weight if needs_x else None)
        ctx.x_shape, ctx.out_features, ctx.has_bias = x.shape, weight.shape[0], bias is not None
        return _onednn_linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        grad_y = grad_y.reshape(-1, ctx.out_features)  # (N, out)
        higher_order = torch.is_grad_enabled()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:  # grad_y @ weight
            grad_x = grad_y @ weight if higher_order else _onednn_linear(grad_y, weight.t())
            grad_x = grad_x.view(ctx.x_shape)
        if ctx.needs_input_grad[1]:  # grad_y.T @ x, in column slices of grad_y: oneDNN copies a transposed input
            x_t = x.reshape(-1, x.shape[-1]).t()
            width = max(1, _SLICE_ELEMENTS // max(1, grad_y.shape[0]))
            if higher_order:
                grad_w = grad_y.t() @ x_t.t()
            elif width >= grad_y.shape[1]:
                grad_w = _onednn_linear(grad_y.t(), x_t)
            else:
                grad_w = x.new_empty(grad_y.shape[1], x.shape[-1])
                for start in range(0, grad_y.shape[1], width):
                    grad_w[start : start + width] = _onednn_linear(grad_y[:, start : start + width].t(), x_t)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_y.sum(0)
        return grad_x, grad_w, grad_b


_SLICE_ELEMENTS = 2**20  # 4 MiB of fp32: measured fastest for the 50257-row head, which would copy 200 MiB at once
_ONEDNN_LINEAR = (
    getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if torch.backends.mkldnn.is_available() and platform.machine().lower() in ("x86_64", "amd64")
    else None
)


@functools.cache
def _row_chunks(out_features, threads):
    """The smallest divisor of out_features that gives each thread two chunks of at least 16 rows; else 1."""
    for chunks in range(2 * threads, out_features // 16 + 1):
        if out_features % chunks == 0:
            return chunks
    return 1



@contextlib.contextmanager
def _recomputed_in_backward(output, fn, *args, **kwargs):
    """Within this block, autograd saves `output` = fn(*args, **kwargs) (or a view of it) as that recipe.

    The matmul after a gelu or a layer norm saves that function's output for its weight gradient, while the function
    already saved its input; recomputing the output in the backward pass frees a third of a block's activations for
    an elementwise op. Parameters in `args` are copied now, in case sharded training releases them before the backward
    pass. Only for plain strided tensors in eager autograd: off under activation checkpointing (its own saved-tensor
    hooks), compilers and torch.func transforms, and for fn=None.
    """
    outer = _active_saved_tensor_hooks() if fn is not None and _recipes_apply(output) else ()
    if outer == () or (outer is not None and not getattr(outer[0], "recipes", False)):
        yield
        return
    args = [a.detach().clone() if isinstance(a, nn.Parameter) else a for a in args]
    recipe = functools.partial(fn, *args, **kwargs)
    version, recipes = output._version, []

    def pack(tensor):
        if (
            type(tensor) is torch.Tensor
            and tensor.layout == torch.strided
            and tensor.dtype == output.dtype
            and tensor.device == output.device
            and tensor.data_ptr() == output.data_ptr()
            and tensor.numel() == output.numel()
            and tensor.is_contiguous()
        ):
            recipes.append(tensor.shape)
            return _Recompute(recipe, tensor.shape)
        if outer:
            return outer[0](tensor)  # another block's recipe, one level up
        return _Stored(tensor, tensor._version)

    pack.recipes = True
    with torch.autograd.graph.saved_tensors_hooks(pack, _unpack):
        yield
    if recipes and output._version != version:
        raise RuntimeError("an activation saved for the backward pass was modified by an in-place operation")


class _Recompute:
    def __init__(self, recipe, shape):
        self.recipe, self.shape = recipe, shape

    def __call__(self):
        return self.recipe().view(self.shape)


class _Stored:
    """A tensor saved as is, with its version: autograd checks in-place changes only for tensors it stores itself."""

    def __init__(self, tensor, version):
        self.tensor, self.version = tensor, version


def _unpack(saved):
    if isinstance(saved, _Recompute):
        return saved()
    if saved.tensor._version != saved.version:
        raise RuntimeError(
            "one of the variables needed for gradient computation has been modified by an inplace operation"
        )
    return saved.tensor


def _recipes_apply(output):
    return (
        torch.is_grad_enabled()
        and _plain_eager_autograd()
        and type(output) is torch.Tensor
        and output.layout == torch.strided
        and output.device.type != "meta"
        and output.numel() > 0
    )


def _active_saved_tensor_hooks():
    """The innermost saved-tensor hooks (pack, unpack), None if there are none, () if this torch can't tell."""
    try:
        return _TOP_SAVED_TENSORS_HOOKS(False) if _SAVED_TENSORS_HOOKS_ENABLED() else ()
    except (TypeError, RuntimeError):
        return ()


_TOP_SAVED_TENSORS_HOOKS = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
_SAVED_TENSORS_HOOKS_ENABLED = getattr(torch._C._autograd, "_saved_tensors_hooks_is_enabled", lambda: False)


def _layer_norm_recipe(module, x):
    """(F.layer_norm, its arguments) for a plain nn.LayerNorm; (None,) when hooks or a subclass could change the
    output (PEFT's LN tuning, activation steering, DeepSpeed ZeRO-3's parameter hooks, Accelerate's patched forward)."""
    hooked = module._forward_hooks or module._forward_pre_hooks or "forward" in module.__dict__
    global_hooks = torch.nn.modules.module._global_forward_hooks or torch.nn.modules.module._global_forward_pre_hooks
    if type(module) is not nn.LayerNorm or hooked or global_hooks:
        return (None,)
    return F.layer_norm, x, module.normalized_shape, module.weight, module.bias, module.eps



def _is_tracing():
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or _FX_SYMBOLIC_TRACING()


_FX_SYMBOLIC_TRACING = getattr(torch.fx._symbolic_trace, "is_fx_tracing_symbolic_tracing", lambda: False)



class RecomputingMLP(MLP):
    def forward(self, x):
        h = self.c_fc(x)
        g = F.gelu(h, approximate=self.approximate)
        with _recomputed_in_backward(g, F.gelu, h, approximate=self.approximate):
            return self.dropout(self.c_proj(g))


class RecomputingBlock(Block):
    def forward(self, x, attention_mask=None, cache=None, **kwargs):
        h = self.ln_1(x)
        with _recomputed_in_backward(h, *_layer_norm_recipe(self.ln_1, x)):
            a, att = self.attn(h, attention_mask, cache, **kwargs)
        x = x + a
        h = self.ln_2(x)
        with _recomputed_in_backward(h, *_layer_norm_recipe(self.ln_2, x)):
            x = x + self.mlp(h)
        return x, att


def optimize(model):
    """Swap `model`'s linear layers, MLPs and blocks for their CPU-tuned versions in place; returns the model."""
    swaps = {nn.Linear: Linear, MLP: RecomputingMLP, Block: RecomputingBlock}
    for module in model.modules():
        if type(module) in swaps:
            module.__class__ = swaps[type(module)]
    return model
