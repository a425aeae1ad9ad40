"""The model's loss over chunks of positions against one call of transformers' ForCausalLMLoss, and no KV cache built
in training (moved here from test_kernels_cpu.py: they test the model file, not the CPU layer)."""

import pytest
import torch
from transformers import DynamicCache
from transformers.loss.loss_utils import ForCausalLMLoss

from hf_embgpt import EmbGPTConfig, EmbGPTForCausalLM
from hf_embgpt.modeling_embgpt import _CACHE_FIELD


def tiny_model(**overrides):
    torch.manual_seed(0)
    config = EmbGPTConfig.from_preset("tiny", vocab_size=300, bos_token_id=0, eos_token_id=0, **overrides)
    return EmbGPTForCausalLM(config).train()


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
