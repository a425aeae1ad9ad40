"""The opt-in CPU layer (`hf_embgpt.kernels.optimize`) computes what the plain model computes, picks its kernels by
measurement, and leaves the saved model unchanged.

References: F.linear for each kernel; the plain EmbGPT with the same weights for the optimized model (logits and every
gradient); the plain model's save_pretrained folder for the optimized model's.
"""

import copy
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import hf_embgpt.kernels.cpu as cpu
from hf_embgpt import EmbGPTConfig, EmbGPTForCausalLM
from hf_embgpt.kernels import optimize
from hf_embgpt.kernels.cpu import Linear

needs_onednn = pytest.mark.skipif(cpu._ONEDNN_LINEAR is None, reason="oneDNN linear needs an x86 CPU build")


@pytest.fixture(autouse=True)
def fresh_choices(monkeypatch):
    """Every test measures (or is forced) from scratch, with measurement unless it sets EMBGPT_CPU_KERNELS."""
    monkeypatch.setattr(cpu, "_CHOICES", {})
    monkeypatch.delenv(cpu.KERNELS_ENV, raising=False)


@pytest.fixture
def fast_kernels(monkeypatch):
    monkeypatch.setenv(cpu.KERNELS_ENV, "fast")


@pytest.fixture
def onednn_calls(monkeypatch):
    """Counts calls of the oneDNN kernel, so a test can tell which path ran."""
    calls = []
    kernel = cpu._ONEDNN_LINEAR

    def counted(*args):
        calls.append(args[0].shape)
        return kernel(*args)

    monkeypatch.setattr(cpu, "_ONEDNN_LINEAR", counted)
    return calls


def assert_close_per_tensor(got, want, rtol=1e-5, name=""):
    """Equal within rtol of the tensor's largest magnitude: float rounding of different but exact kernels."""
    assert got.shape == want.shape, name
    torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * want.abs().max().item(), msg=lambda m: f"{name}: {m}")


def make_linear(out_features=96, in_features=64, bias=True):
    """A Linear and its (weight, bias), which F.linear takes as the reference."""
    torch.manual_seed(0)
    layer = Linear(in_features, out_features, bias=bias)
    return layer, (layer.weight, layer.bias)


# ---- the kernels against F.linear


@needs_onednn
@pytest.mark.parametrize("shape", [(1, 64), (7, 64), (3, 5, 64)])
@pytest.mark.parametrize(
    "bias, trains",
    [
        (True, "all"),
        (False, "all"),
        (True, "input_only"),
        (True, "weight_only"),
        (False, "weight_only"),
        (True, "bias_only"),
    ],
)
def test_onednn_forward_and_every_gradient_match_f_linear(fast_kernels, onednn_calls, bias, shape, trains):
    layer, (weight, b) = make_linear(bias=bias)
    x = torch.randn(*shape)
    x.requires_grad_(trains in ("all", "input_only"))
    weight.requires_grad_(trains in ("all", "weight_only"))
    if b is not None:
        b.requires_grad_(trains in ("all", "bias_only"))
    y = layer(x)
    assert onednn_calls, "the oneDNN path did not run"
    grad_y = torch.randn_like(y)
    y.backward(grad_y)
    ours = [t.grad for t in (x, weight, b) if t is not None and t.requires_grad]
    for t in (x, weight, b):
        if t is not None:
            t.grad = None
    expected_y = F.linear(x, weight, b)
    expected_y.backward(grad_y)
    expected = [t.grad for t in (x, weight, b) if t is not None and t.requires_grad]
    assert_close_per_tensor(y, expected_y, rtol=1e-6)
    assert len(ours) == len(expected) > 0
    for got, want in zip(ours, expected, strict=True):
        assert_close_per_tensor(got, want, rtol=1e-6)


@needs_onednn
def test_weight_gradient_in_column_slices_matches(fast_kernels, monkeypatch):
    monkeypatch.setattr(cpu, "_SLICE_ELEMENTS", 7 * 10)  # 10 positions: slices of 7 columns, the last one short
    layer, (weight, bias) = make_linear(out_features=30)
    x = torch.randn(2, 5, 64, requires_grad=True)
    layer(x).pow(2).sum().backward()
    ours = weight.grad.clone()
    weight.grad = None
    F.linear(x, weight, bias).pow(2).sum().backward()
    assert_close_per_tensor(ours, weight.grad, rtol=1e-6)


@pytest.mark.parametrize("bias", [True, False])
def test_single_row_decode_through_row_chunks_matches(fast_kernels, monkeypatch, bias):
    chunked = []
    monkeypatch.setitem(cpu.KERNELS, "row_chunks", lambda *a: chunked.append(1) or cpu.row_chunked_linear(*a))
    layer, (weight, b) = make_linear(out_features=96, bias=bias)
    x = torch.randn(1, 1, 64)
    assert cpu._row_chunks(96, torch.get_num_threads()) > 1
    with torch.inference_mode():
        y = layer(x)
        expected = F.linear(x, weight, b)
    assert chunked  # the bmm path ran
    assert_close_per_tensor(y, expected, rtol=1e-6)


def test_row_chunks_divide_the_rows_or_give_up():
    assert cpu._row_chunks(2304, 2) == 4
    assert cpu._row_chunks(50257, 2) == 29  # 29 x 1733: GPT-2's vocabulary
    assert cpu._row_chunks(50261, 2) == 1  # prime: plain F.linear
    assert cpu._row_chunks(48, 2) == 1  # chunks under 16 rows are not worth it


def test_linear_is_plain_f_linear_when_onednn_is_off_or_autocast_runs(fast_kernels, onednn_calls):
    layer, (weight, bias) = make_linear()
    x = torch.randn(4, 64)
    with torch.backends.mkldnn.flags(enabled=False):
        assert torch.equal(layer(x), F.linear(x, weight, bias))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, expected = layer(x), F.linear(x, weight, bias)
    assert y.dtype == expected.dtype == torch.bfloat16 and torch.equal(y, expected)
    assert not onednn_calls


def test_second_order_gradients_through_linear_match_f_linear(fast_kernels):
    layer, (weight, bias) = make_linear()
    x = torch.randn(3, 64)
    v = torch.randn(3, 64)

    def hessian_vector_product(f):
        inputs = x.clone().requires_grad_()
        (grad,) = torch.autograd.grad(f(inputs).tanh().sum(), inputs, create_graph=True)
        (hvp,) = torch.autograd.grad((grad * v).sum(), inputs)
        return hvp

    ours, expected = hessian_vector_product(layer), hessian_vector_product(lambda t: F.linear(t, weight, bias))
    assert expected.abs().max() > 0
    assert_close_per_tensor(ours, expected)


def test_linear_on_empty_or_mismatched_inputs_behaves_like_f_linear(fast_kernels):
    layer, (weight, bias) = make_linear()
    x = torch.randn(0, 5, 64, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad.shape == x.shape and weight.grad.abs().sum() == 0
    with pytest.raises(RuntimeError) as ours:
        layer(torch.randn(2, 64, dtype=torch.float64))
    with pytest.raises(RuntimeError) as expected:
        F.linear(torch.randn(2, 64, dtype=torch.float64), weight, bias)
    assert type(ours.value) is type(expected.value)


# ---- choosing a kernel by measurement


def fake_timer(monkeypatch, seconds):
    """Replaces the measurement's timer: each kernel takes seconds[name] (plain by default 1.0); records the calls."""
    calls = []

    def timed(runs, **_):
        calls.append(sorted(runs))
        for run in runs.values():
            run()  # the kernels still run: a kernel that fails on this machine fails here
        return {name: seconds.get(name, 1.0) for name in runs}

    monkeypatch.setattr(cpu, "time_kernels", timed)
    return calls


@needs_onednn
@pytest.mark.parametrize("grad", [True, False])
def test_the_fast_kernel_is_chosen_only_where_it_measured_faster(monkeypatch, grad):
    layer, _ = make_linear()
    x = torch.randn(8, 64)
    with torch.set_grad_enabled(grad):
        calls = fake_timer(monkeypatch, {"plain": 1.0, "onednn": 2.0})
        assert cpu.kernel_for(x, layer.weight, layer.bias) is cpu.plain_linear
        assert calls == [["onednn", "plain"]]
        monkeypatch.setattr(cpu, "_CHOICES", {})
        fake_timer(monkeypatch, {"plain": 1.0, "onednn": 0.99})  # inside the margin: noise, not a win
        assert cpu.kernel_for(x, layer.weight, layer.bias) is cpu.plain_linear
        monkeypatch.setattr(cpu, "_CHOICES", {})
        calls = fake_timer(monkeypatch, {"plain": 1.0, "onednn": 0.5})
        assert cpu.kernel_for(x, layer.weight, layer.bias) is cpu.onednn_linear
        assert cpu.kernel_for(x[:5], layer.weight, layer.bias) is cpu.onednn_linear  # rows 5 and 8: one bucket
        assert len(calls) == 1  # measured once, then cached
    (key,) = cpu.chosen_kernels()
    assert key[:5] == (8, 64, 96, True, grad) and cpu.chosen_kernels()[key] == "onednn"


def test_single_row_decode_chooses_among_three_kernels(monkeypatch):
    layer, _ = make_linear()
    calls = fake_timer(monkeypatch, {"plain": 1.0, "onednn": 0.9, "row_chunks": 0.5})
    with torch.no_grad():
        chosen = cpu.kernel_for(torch.randn(1, 64), layer.weight, layer.bias)
    expected = ["plain", "row_chunks"] if cpu._ONEDNN_LINEAR is None else ["onednn", "plain", "row_chunks"]
    assert calls == [expected] and chosen is cpu.row_chunked_linear


def test_measurement_on_this_machine_picks_a_candidate_once_per_shape(monkeypatch):
    measured = []
    timer = cpu.time_kernels
    monkeypatch.setattr(cpu, "time_kernels", lambda runs, **kw: measured.append(sorted(runs)) or timer(runs, **kw))
    layer, (weight, bias) = make_linear()
    x = torch.randn(4, 64, requires_grad=True)
    for _ in range(3):
        y = layer(x)
    assert len(measured) == (0 if cpu._ONEDNN_LINEAR is None else 1)
    assert set(cpu.chosen_kernels().values()) <= {"plain", "onednn"}
    assert_close_per_tensor(y, F.linear(x, weight, bias), rtol=1e-6)


def test_a_forced_choice_skips_the_measurement_and_a_bad_one_is_named(monkeypatch):
    calls = fake_timer(monkeypatch, {})
    layer, _ = make_linear()
    x = torch.randn(8, 64)
    monkeypatch.setenv(cpu.KERNELS_ENV, "plain")
    assert cpu.kernel_for(x, layer.weight, layer.bias) is cpu.plain_linear
    monkeypatch.setattr(cpu, "_CHOICES", {})
    monkeypatch.setenv(cpu.KERNELS_ENV, "fastest")
    with pytest.raises(ValueError, match="EMBGPT_CPU_KERNELS='fastest'; use 'measure', 'plain' or 'fast'"):
        cpu.kernel_for(x, layer.weight, layer.bias)
    assert not calls


def test_no_fast_path_is_measured_for_other_dtypes_or_devices(monkeypatch):
    calls = fake_timer(monkeypatch, {"onednn": 0.1, "row_chunks": 0.1})
    layer, _ = make_linear()
    x = torch.randn(8, 64, dtype=torch.float64)
    assert cpu.kernel_for(x, layer.weight.double(), None) is cpu.plain_linear
    assert cpu.kernel_for(torch.randn(8, 64, device="meta"), layer.weight, layer.bias) is cpu.plain_linear
    assert not calls and not cpu.chosen_kernels()


# ---- the optimized model against the plain one


def model_pair(**overrides):
    """A plain tiny EmbGPT in train mode, and an optimized copy with the same weights."""
    torch.manual_seed(0)
    config = EmbGPTConfig.from_preset("tiny", vocab_size=300, bos_token_id=0, eos_token_id=0, **overrides)
    plain = EmbGPTForCausalLM(config).train()
    return plain, optimize(copy.deepcopy(plain))


def logits_and_gradients(model, ids, **kwargs):
    model.zero_grad(set_to_none=True)
    out = model(ids, labels=ids, **kwargs)
    out.loss.backward()
    return out.logits.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


def assert_same_logits_and_gradients(ours, expected):
    assert_close_per_tensor(ours[0], expected[0], name="logits")
    assert ours[1].keys() == expected[1].keys()
    for name, grad in expected[1].items():
        assert_close_per_tensor(ours[1][name], grad, name=name)


@pytest.mark.parametrize("kernels", ["fast", "measure", "plain"])
def test_optimized_model_gives_the_plain_models_logits_and_every_gradient(monkeypatch, kernels):
    monkeypatch.setenv(cpu.KERNELS_ENV, kernels)
    plain, fast = model_pair()
    ids = torch.randint(0, 300, (2, 16))
    assert_same_logits_and_gradients(logits_and_gradients(fast, ids), logits_and_gradients(plain, ids))
    assert type(fast.transformer.h[0]) is cpu.RecomputingBlock and type(fast.lm_head) is Linear
    if kernels == "plain":  # same kernels, recomputed activations: bit for bit
        ours, expected = logits_and_gradients(fast, ids), logits_and_gradients(plain, ids)
        assert torch.equal(ours[0], expected[0]) and all(torch.equal(ours[1][n], g) for n, g in expected[1].items())


class OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.counts = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.counts[name] = self.counts.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


def backward_ops(model, ids):
    loss = model(ids, labels=ids).loss
    with OpCounter() as counter:
        loss.backward()
    return counter.counts


def test_backward_recomputes_layer_norms_and_gelu_but_no_matmul(monkeypatch):
    monkeypatch.setenv(cpu.KERNELS_ENV, "plain")  # the same matmul ops in both models
    plain, fast = model_pair()
    ids = torch.randint(0, 300, (2, 16))
    stored, recomputed = backward_ops(plain, ids), backward_ops(fast, ids)
    n_layer = plain.config.n_layer
    assert stored.get("native_layer_norm", 0) == 0 and stored.get("gelu", 0) == 0
    assert recomputed["native_layer_norm"] == 2 * n_layer and recomputed["gelu"] == n_layer
    for matmul in ("mm", "addmm", "bmm", "_scaled_dot_product_flash_attention_for_cpu"):
        assert recomputed.get(matmul, 0) == stored.get(matmul, 0), matmul


def test_activation_checkpointing_or_a_kv_cache_turn_recomputation_off_and_still_match(monkeypatch):
    monkeypatch.setenv(cpu.KERNELS_ENV, "plain")
    plain, fast = model_pair()
    ids = torch.randint(0, 300, (2, 16))
    for kwargs in ({"use_reentrant": False}, {"use_reentrant": True}):
        for model in (plain, fast):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        expected = logits_and_gradients(plain, ids)
        assert_same_logits_and_gradients(logits_and_gradients(fast, ids), expected)
        # full checkpointing recomputes each block once; ours would add a second, nested recomputation
        assert backward_ops(fast, ids)["native_layer_norm"] == 2 * plain.config.n_layer, kwargs
        for model in (plain, fast):
            model.gradient_checkpointing_disable()
    cached = logits_and_gradients(fast, ids, use_cache=True)  # a cache updated in a region that runs twice
    assert_same_logits_and_gradients(cached, logits_and_gradients(plain, ids, use_cache=True))
    out = fast(ids, use_cache=True)
    cache = getattr(out, "cache", None) or out.past_key_values
    assert cache.get_seq_length() == 16


def test_hooks_on_layer_norms_and_in_place_changes_behave_as_in_the_plain_model(monkeypatch):
    monkeypatch.setenv(cpu.KERNELS_ENV, "plain")
    plain, fast = model_pair()
    ids = torch.randint(0, 300, (2, 16))
    for model in (plain, fast):  # activation steering: runs again in the recomputation, same output
        model.transformer.h[0].ln_1.register_forward_hook(lambda module, args, out: out * 1.5)
    assert_same_logits_and_gradients(logits_and_gradients(fast, ids), logits_and_gradients(plain, ids))

    def scale_input_in_place(module, args, out):
        args[0].mul_(1.5)

    for model in (plain, fast):
        model.transformer.h[0].attn.c_proj.register_forward_hook(scale_input_in_place)
        with pytest.raises(RuntimeError, match="modified by an inplace operation|mutated"):
            model(ids, labels=ids).loss.backward()


def test_torch_func_grad_over_the_optimized_model_matches_autograd(fast_kernels):
    plain, fast = model_pair()
    ids = torch.randint(0, 300, (2, 8))
    params = {name: p.detach() for name, p in fast.named_parameters()}
    loss_of = lambda p: torch.func.functional_call(fast, p, (ids,), {"labels": ids}).loss  # noqa: E731
    grads = torch.func.grad(loss_of)(params)
    _, expected = logits_and_gradients(plain, ids)
    for name, grad in expected.items():
        assert_close_per_tensor(grads[name], grad, name=name)


def test_optimized_generation_gives_the_plain_models_tokens(fast_kernels):
    plain, fast = model_pair()
    ids = torch.randint(0, 300, (1, 5))
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(fast.eval().generate(ids, **kwargs), plain.eval().generate(ids, **kwargs))


# ---- saving: the optimized model writes exactly the plain model's files


def folder_bytes(path):
    files = {}
    for root, _, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                files[os.path.relpath(full, path)] = f.read()
    return files


def test_an_optimized_model_saves_exactly_the_plain_files(tmp_path, fast_kernels):
    plain, fast = model_pair()
    ids = torch.randint(0, 300, (2, 8))
    logits_and_gradients(fast, ids)  # measured and ran: nothing of it may reach the files
    plain.save_pretrained(tmp_path / "plain")
    fast.save_pretrained(tmp_path / "fast")
    expected = folder_bytes(tmp_path / "plain")
    assert "model.safetensors" in expected and "config.json" in expected
    assert folder_bytes(tmp_path / "fast") == expected
    assert fast.state_dict().keys() == plain.state_dict().keys()
    reloaded = EmbGPTForCausalLM.from_pretrained(tmp_path / "fast")
    assert all(type(m) is not Linear and type(m) is not cpu.RecomputingBlock for m in reloaded.modules())
    assert type(reloaded.lm_head) is nn.Linear
