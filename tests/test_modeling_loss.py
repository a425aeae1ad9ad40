"""The loss path against transformers' ForCausalLMLoss and GPT2LMHeadModel: chunked cross-entropy upcast one chunk at a
time (no fp32 copy of the whole logits), num_items_in_batch and ignore_index honoured, a user's loss_function called
once; and the memory mode, config.fused_loss, wired to Liger-Kernel's fused linear cross-entropy (a stand-in on CPU)."""

import importlib.util
import re
import sys
import types

import pytest
import torch
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from transformers.loss.loss_utils import ForCausalLMLoss
from transformers.testing_utils import CaptureLogger

from conftest import assert_same_gradients
from hf_embgpt import EmbGPTConfig, EmbGPTForCausalLM, modeling_embgpt

VOCAB = 512


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    config = EmbGPTConfig.from_preset("tiny", vocab_size=VOCAB, bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1)
    for name, value in overrides.items():
        setattr(config, name, value)
    return EmbGPTForCausalLM(config)


def batch(seed=1, shape=(2, 128), ignore_index=-100):
    ids = torch.randint(0, VOCAB, shape, generator=torch.Generator().manual_seed(seed))
    labels = ids.clone()
    labels[0, :7] = ignore_index  # a prompt that is not trained on
    labels[1, -30:] = ignore_index  # right padding
    return ids, labels


# ---------------------------------------------------------------------------------------------------------------
# the default path: same loss as ForCausalLMLoss on the same logits


@pytest.mark.parametrize(
    "extra",
    [{}, {"num_items_in_batch": 777}, {"num_items_in_batch": torch.tensor(777)}, {"ignore_index": -1}],
    ids=["mean", "num_items_int", "num_items_tensor", "ignore_index"],
)
def test_loss_equals_for_causal_lm_loss_on_the_same_logits(extra, one_thread):
    model = tiny_model()
    ids, labels = batch(ignore_index=extra.get("ignore_index", -100))
    out = model(ids, labels=labels, **extra)
    want = ForCausalLMLoss(out.logits, labels, vocab_size=VOCAB, **extra)
    torch.testing.assert_close(out.loss, want, rtol=0, atol=1e-5)


def test_shift_labels_are_used_as_given(one_thread):
    model = tiny_model()
    ids, labels = batch()
    shifted = torch.roll(labels, -2, dims=1)  # deliberately not labels shifted by one
    out = model(ids, labels=labels, shift_labels=shifted)
    want = ForCausalLMLoss(out.logits, None, vocab_size=VOCAB, shift_labels=shifted)
    torch.testing.assert_close(out.loss, want, rtol=0, atol=1e-5)


def test_loss_and_gradients_match_gpt2_with_num_items_in_batch(make_pair, one_thread):
    """Gradient accumulation: micro-batches divided by the whole batch's count add up to the whole batch's loss."""
    ref, ours = make_pair("sdpa")
    ref.train()
    ours.train()
    ids, labels = batch(shape=(4, 40))
    labels[2, :35] = -100  # rows with very different counts, where a per-micro-batch mean would be wrong
    count = int((labels[:, 1:] != -100).sum())
    for model in (ref, ours):
        for rows in (slice(0, 1), slice(1, 3), slice(3, 4)):
            model(ids[rows], labels=labels[rows], num_items_in_batch=torch.tensor(count)).loss.backward()
    whole = tiny_copy_of(ours)
    whole(ids, labels=labels).loss.backward()
    ref_grads = modeling_embgpt.state_dict_from_gpt2({n: p.grad for n, p in ref.named_parameters()})  # Conv1D -> Linear
    whole_grads = dict(whole.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[name], rtol=0, atol=1e-5, msg=name)
        torch.testing.assert_close(p.grad, whole_grads[name].grad, rtol=0, atol=1e-5, msg=name)


def tiny_copy_of(model):
    copy = EmbGPTForCausalLM(model.config).train()
    copy.load_state_dict(model.state_dict())
    return copy


def test_bf16_loss_is_within_1e_2_of_for_causal_lm_loss(one_thread):
    model = tiny_model().to(torch.bfloat16)
    ids, labels = batch()
    out = model(ids, labels=labels)
    assert out.logits.dtype == torch.bfloat16 and out.loss.dtype == torch.float32
    want = ForCausalLMLoss(out.logits, labels, vocab_size=VOCAB)  # upcasts the whole logits at once
    torch.testing.assert_close(out.loss, want, rtol=1e-2, atol=0)


class LargestFloat32(TorchDispatchMode):
    """Notes the largest fp32 tensor any operation produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.dtype == torch.float32:
                self.largest = max(self.largest, t.numel())
        return out


def test_bf16_loss_never_makes_an_fp32_copy_of_the_whole_logits(one_thread):
    model = tiny_model().to(torch.bfloat16)
    ids, labels = batch(shape=(4, 128))
    logits_size = ids.numel() * VOCAB
    with LargestFloat32() as seen:
        out = model(ids, labels=labels)
        out.loss.backward()
    assert out.logits.numel() == logits_size
    assert 0 < seen.largest <= logits_size // 2, (seen.largest, logits_size)


def test_a_loss_function_set_by_the_user_is_called_once_with_the_labels(one_thread):
    model = tiny_model()
    ids, labels = batch()
    calls = []

    def my_loss(logits, labels, vocab_size, **kwargs):
        calls.append((logits, labels, vocab_size, kwargs.get("num_items_in_batch")))
        return logits.float().logsumexp(-1).mean()

    model.loss_function = my_loss
    out = model(ids, labels=labels, num_items_in_batch=5)
    assert len(calls) == 1
    logits, got_labels, vocab_size, num_items = calls[0]
    assert logits is out.logits and got_labels is labels and vocab_size == VOCAB and num_items == 5
    torch.testing.assert_close(out.loss, out.logits.logsumexp(-1).mean())


# ---------------------------------------------------------------------------------------------------------------
# the memory mode: fused_loss=True


def reference_fused_linear_cross_entropy(x, weight, target, bias=None, ignore_index=-100, reduction="mean"):
    """What Liger's fused linear cross-entropy computes, written plainly (Liger itself needs a GPU)."""
    return F.cross_entropy(F.linear(x, weight, bias).float(), target, ignore_index=ignore_index, reduction=reduction)


@pytest.fixture
def stand_in_liger(monkeypatch):
    calls = []

    def stand_in(*args, **kwargs):
        calls.append(kwargs)
        return reference_fused_linear_cross_entropy(*args, **kwargs)

    # in Liger's place, where the model imports it from
    functional = types.ModuleType("liger_kernel.transformers.functional")
    functional.liger_fused_linear_cross_entropy = stand_in
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers.functional", functional)
    return calls


@pytest.mark.parametrize("num_items_in_batch", [None, 333])
def test_fused_loss_equals_the_plain_loss_and_returns_no_logits(stand_in_liger, num_items_in_batch, one_thread):
    plain, fused = tiny_model(), tiny_model(fused_loss=True)
    ids, labels = batch()
    extra = {} if num_items_in_batch is None else {"num_items_in_batch": num_items_in_batch}
    want = plain(ids, labels=labels, **extra)
    logger = modeling_embgpt.logger
    type(logger).warning_once.cache_clear()  # said once per process: forget earlier tests
    with CaptureLogger(logger) as first:
        got = fused(ids, labels=labels, **extra)
    assert got.logits is None
    assert "fused_loss=True: Liger-Kernel's fused linear cross-entropy gives the loss; logits are None" in first.out
    torch.testing.assert_close(got.loss, want.loss, rtol=0, atol=1e-6)
    want.loss.backward()
    got.loss.backward()
    assert_same_gradients(fused, plain, atol=1e-6)
    assert len(stand_in_liger) == 1 and stand_in_liger[0]["reduction"] == "sum"
    with CaptureLogger(logger) as second:
        fused(ids, labels=labels, **extra)
    assert second.out == ""  # said once
    # without labels the model gives logits as usual (generation, evaluation of logits)
    torch.testing.assert_close(fused(ids).logits, plain(ids).logits, rtol=0, atol=0)


@pytest.mark.skipif(importlib.util.find_spec("liger_kernel") is not None, reason="Liger-Kernel is installed")
def test_fused_loss_without_liger_names_the_extra(one_thread):
    model = tiny_model(fused_loss=True)
    ids, labels = batch()
    words = (
        "fused_loss=True needs Liger-Kernel: pip install 'hf_embgpt[gpu]' (liger-kernel>=0.5), "
        "or set config.fused_loss=False"
    )
    with pytest.raises(ImportError, match=f"^{re.escape(words)}$"):
        model(ids, labels=labels)


def test_fused_loss_must_be_a_bool():
    with pytest.raises(ValueError, match=r"fused_loss \('yes'\) must be True or False"):
        EmbGPTConfig(fused_loss="yes")
    assert EmbGPTConfig.from_preset("tiny", fused_loss=True).fused_loss is True


def test_fused_loss_passes_the_callers_ignore_index(stand_in_liger, one_thread):
    plain, fused = tiny_model(), tiny_model(fused_loss=True)
    ids, labels = batch(ignore_index=-1)
    want = plain(ids, labels=labels, ignore_index=-1).loss
    torch.testing.assert_close(fused(ids, labels=labels, ignore_index=-1).loss, want, rtol=0, atol=1e-6)
    assert stand_in_liger[-1]["ignore_index"] == -1
