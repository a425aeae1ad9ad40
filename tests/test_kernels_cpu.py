"""The modeling file's speed and memory paths give what the plain computation gives.

`Linear` (oneDNN matmuls, row-chunked single-row decode) against F.linear; activations recomputed in the backward
pass against stored ones; the loss over chunks of positions against one call of transformers' ForCausalLMLoss; no
KV cache built in training. Model-level parity with GPT2LMHeadModel is in test_modeling_embgpt.py.
"""

import pytest
import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.loss.loss_utils import ForCausalLMLoss

import hf_embgpt.kernels.cpu as modeling
from hf_embgpt import EmbGPTConfig, EmbGPTForCausalLM
from hf_embgpt.kernels.cpu import Linear, optimize
from hf_embgpt.modeling_embgpt import _CACHE_FIELD

needs_onednn = pytest.mark.skipif(modeling._ONEDNN_LINEAR is None, reason="oneDNN linear needs an x86 CPU build")


def relative_diff(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


@pytest.fixture
def onednn_calls(monkeypatch):
    """Counts calls of the oneDNN kernel, so a test can tell which path ran."""
    calls = []
    kernel = modeling._ONEDNN_LINEAR

    def counted(*args):
        calls.append(args[0].shape)
        return kernel(*args)

    monkeypatch.setattr(modeling, "_ONEDNN_LINEAR", counted)
    return calls


def make_linear(out_features=96, in_features=64, bias=True):
    """A Linear and its (weight, bias), which F.linear takes as the reference."""
    torch.manual_seed(0)
    layer = Linear(in_features, out_features, bias=bias)
    return layer, (layer.weight, layer.bias)


# ---- Linear


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
def test_linear_forward_and_every_gradient_match_f_linear(onednn_calls, bias, shape, trains):
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
    assert y.shape == expected_y.shape
    assert relative_diff(y, expected_y) <= 1e-6
    assert len(ours) == len(expected) > 0
    for got, want in zip(ours, expected, strict=True):
        assert got.shape == want.shape and relative_diff(got, want) <= 1e-6


@needs_onednn
def test_weight_gradient_in_column_slices_matches(monkeypatch):
    monkeypatch.setattr(modeling, "_SLICE_ELEMENTS", 7 * 10)  # 10 positions: slices of 7 columns, the last one short
    layer, (weight, bias) = make_linear(out_features=30)
    x = torch.randn(2, 5, 64, requires_grad=True)
    layer(x).pow(2).sum().backward()
    ours = weight.grad.clone()
    weight.grad = None
    F.linear(x, weight, bias).pow(2).sum().backward()
    assert relative_diff(ours, weight.grad) <= 1e-6


@needs_onednn
@pytest.mark.parametrize("bias", [True, False])
def test_single_row_decode_goes_through_row_chunks_and_matches(onednn_calls, bias):
    layer, (weight, b) = make_linear(out_features=96, bias=bias)
    x = torch.randn(1, 1, 64)
    assert modeling._row_chunks(96, torch.get_num_threads()) > 1
    with torch.inference_mode():
        y = layer(x)
        expected = F.linear(x, weight, b)
    assert not onednn_calls  # the bmm path ran
    assert y.shape == expected.shape and relative_diff(y, expected) <= 1e-6


def test_row_chunks_divide_the_rows_or_give_up():
    assert modeling._row_chunks(2304, 2) == 4
    assert modeling._row_chunks(50257, 2) == 29  # 29 x 1733: GPT-2's vocabulary
    assert modeling._row_chunks(50261, 2) == 1  # prime: plain F.linear
    assert modeling._row_chunks(48, 2) == 1  # chunks under 16 rows are not worth it


def test_linear_is_plain_f_linear_when_onednn_is_off_or_autocast_runs(onednn_calls):
    layer, (weight, bias) = make_linear()
    x = torch.randn(4, 64)
    with torch.backends.mkldnn.flags(enabled=False):
        assert torch.equal(layer(x), F.linear(x, weight, bias))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, expected = layer(x), F.linear(x, weight, bias)
    assert y.dtype == expected.dtype == torch.bfloat16 and torch.equal(y, expected)
    assert not onednn_calls


# ---- activations recomputed in the backward pass


def tiny_model(**overrides):
    torch.manual_seed(0)
    config = EmbGPTConfig.from_preset("tiny", vocab_size=300, bos_token_id=0, eos_token_id=0, **overrides)
    return optimize(EmbGPTForCausalLM(config)).train()


def loss_and_gradients(model, ids):
    model.zero_grad(set_to_none=True)
    loss = model(ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.fixture
def recomputed(monkeypatch):
    """Records every activation recomputed in a backward pass."""
    calls = []
    recompute = modeling._Recompute.__call__
    monkeypatch.setattr(modeling._Recompute, "__call__", lambda self: calls.append(self.shape) or recompute(self))
    return calls


def test_recomputed_activations_give_bit_identical_gradients(recomputed):
    model = tiny_model()
    ids = torch.randint(0, 300, (2, 16))
    loss, grads = loss_and_gradients(model, ids)
    # ln_1's and ln_2's outputs and the gelu's output, in every block
    assert len(recomputed) == 3 * model.config.n_layer
    recomputed.clear()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):  # someone else's hooks: stored as is
        stored_loss, stored = loss_and_gradients(model, ids)
    assert not recomputed
    assert torch.equal(loss, stored_loss)
    for name, grad in grads.items():
        assert torch.equal(grad, stored[name]), name


def test_activation_checkpointing_turns_recomputation_off_and_still_matches(recomputed):
    model = tiny_model()
    ids = torch.randint(0, 300, (2, 16))
    loss, grads = loss_and_gradients(model, ids)
    recomputed.clear()
    for kwargs in ({"use_reentrant": False}, {"use_reentrant": True}):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        checkpointed_loss, checkpointed = loss_and_gradients(model, ids)
        model.gradient_checkpointing_disable()
        assert torch.equal(loss, checkpointed_loss)
        for name, grad in grads.items():
            assert torch.equal(grad, checkpointed[name]), (kwargs, name)
    # non-reentrant checkpointing has its own hooks (ours stay off); reentrant re-runs the block with grad enabled
    assert len(recomputed) == 3 * model.config.n_layer


# ---- the loss over chunks of positions


@pytest.mark.parametrize("counted", [False, True], ids=["mean", "num_items_in_batch"])
def test_loss_in_chunks_equals_one_call_of_transformers_loss(counted):
    model = tiny_model()
    model.loss_chunk_size = 8  # 2 x 40 positions: 4 chunks of 20
    logits = torch.randn(2, 40, 300, requires_grad=True)
    labels = torch.randint(0, 300, (2, 40))
    labels[0, :7] = -100
    labels[1, 30:] = -100
    kwargs = {"num_items_in_batch": torch.tensor(123)} if counted else {}
    ours = model._loss_in_chunks(logits, labels, **kwargs)
    (grad_ours,) = torch.autograd.grad(ours, logits)
    expected = ForCausalLMLoss(logits, labels, vocab_size=300, **kwargs)
    (grad_expected,) = torch.autograd.grad(expected, logits)
    assert abs(ours.item() - expected.item()) <= 1e-6 * abs(expected.item())
    assert (grad_ours - grad_expected).abs().max().item() <= 1e-9


def test_loss_in_chunks_takes_shift_labels_and_names_a_length_mismatch():
    model = tiny_model()
    logits = torch.randn(1, 300, 300)
    labels = torch.randint(0, 300, (1, 300))
    shifted = torch.cat([labels[:, 1:], torch.full((1, 1), -100)], dim=1)
    assert torch.equal(model._loss_in_chunks(logits, None, shift_labels=shifted), model._loss_in_chunks(logits, labels))
    with pytest.raises(ValueError, match="labels give 299 targets for 300 positions"):
        model._loss_in_chunks(logits, labels[:, 1:])


# ---- no KV cache in training


def test_training_forward_builds_no_cache_unless_asked():
    model = tiny_model()
    ids = torch.randint(0, 300, (2, 8))
    cache_of = lambda output: getattr(output, _CACHE_FIELD)  # noqa: E731
    assert cache_of(model(ids)) is None
    assert isinstance(cache_of(model(ids, use_cache=True)), DynamicCache)
    given = DynamicCache(config=model.config)
    assert cache_of(model(ids, past_key_values=given)) is given and given.get_seq_length() == 8
    with torch.no_grad():
        assert isinstance(cache_of(model(ids)), DynamicCache)  # e.g. generate() on a model left in train mode
    assert isinstance(cache_of(model.eval()(ids)), DynamicCache)


# ---- the fast paths step aside where they would change semantics


def test_hooked_layer_norm_is_stored_not_recomputed(recomputed):
    model = tiny_model()
    ids = torch.randint(0, 300, (2, 16))
    model.transformer.h[0].ln_1.register_forward_hook(lambda module, args, out: out * 1.5)  # activation steering
    loss, grads = loss_and_gradients(model, ids)
    assert len(recomputed) == 3 * model.config.n_layer - 1  # every recipe but the hooked layer norm's
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        stored_loss, stored = loss_and_gradients(model, ids)
    assert torch.equal(loss, stored_loss)
    for name, grad in grads.items():
        assert torch.equal(grad, stored[name]), name


def test_in_place_change_of_a_saved_activation_is_an_error_as_in_plain_autograd():
    model = tiny_model()
    ids = torch.randint(0, 300, (2, 16))

    def scale_input_in_place(module, args, out):
        args[0].mul_(1.5)

    model.transformer.h[0].attn.c_proj.register_forward_hook(scale_input_in_place)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        model(ids, labels=ids).loss.backward()


def test_second_order_gradients_through_linear_match_f_linear():
    layer, (weight, bias) = make_linear()
    x = torch.randn(3, 64)
    v = torch.randn(3, 64)

    def hessian_vector_product(f):
        inputs = x.clone().requires_grad_()
        (grad,) = torch.autograd.grad(f(inputs).tanh().sum(), inputs, create_graph=True)
        (hvp,) = torch.autograd.grad((grad * v).sum(), inputs)
        return hvp

    ours, expected = hessian_vector_product(layer), hessian_vector_product(lambda t: F.linear(t, weight, bias))
    assert expected.abs().max() > 0 and relative_diff(ours, expected) <= 1e-5


def test_torch_func_grad_over_the_model_matches_autograd():
    model = tiny_model()
    ids = torch.randint(0, 300, (2, 8))
    params = {name: p.detach() for name, p in model.named_parameters()}
    loss_of = lambda p: torch.func.functional_call(model, p, (ids,), {"labels": ids}).loss  # noqa: E731
    grads = torch.func.grad(loss_of)(params)
    _, expected = loss_and_gradients(model, ids)
    for name, grad in expected.items():
        assert relative_diff(grads[name], grad) <= 1e-5, name


def test_linear_on_empty_or_mismatched_inputs_behaves_like_f_linear():
    layer, (weight, bias) = make_linear()
    x = torch.randn(0, 5, 64, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad.shape == x.shape and weight.grad.abs().sum() == 0
    with pytest.raises(RuntimeError) as ours:
        layer(torch.randn(2, 64, dtype=torch.float64))
    with pytest.raises(RuntimeError) as expected:
        F.linear(torch.randn(2, 64, dtype=torch.float64), weight, bias)
    assert type(ours.value) is type(expected.value)


def test_a_loss_function_set_by_the_user_gets_one_call_with_the_labels():
    model = tiny_model(block_size=320)
    ids = torch.randint(0, 300, (2, 300))  # 600 positions: ForCausalLMLoss would run in 4 chunks
    calls = []

    def my_loss(logits, labels, vocab_size, **kwargs):
        calls.append((logits.shape, labels.shape, sorted(kwargs)))
        return ForCausalLMLoss(logits, labels, vocab_size, **kwargs) * 2

    model.loss_function = my_loss
    loss = model(ids, labels=ids).loss
    assert calls == [((2, 300, 300), (2, 300), [])]
    del model._loss_function  # back to transformers' own (what the setter stored)
    assert abs(loss.item() - 2 * model(ids, labels=ids).loss.item()) <= 1e-5
