"""torch.compile(fullgraph=True): the training step and static-cache decoding trace without graph breaks and compute
what eager mode computes."""

import pytest
import torch
from transformers import CompileConfig

from conftest import assert_same_gradients
from hf_embgpt import EmbGPTConfig, EmbGPTForCausalLM

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.compile's import touches torch.jit

VOCAB = 512  # GPT-2's 50257 would make the tiny model's compile and run time all head


def tiny_model(seed=0):
    torch.manual_seed(seed)
    config = EmbGPTConfig.from_preset("tiny", vocab_size=VOCAB, bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1)
    return EmbGPTForCausalLM(config)


def test_compiled_training_step_matches_eager_without_graph_breaks():
    torch._dynamo.reset()
    eager = tiny_model().train()
    compiled_model = tiny_model().train()
    compiled = torch.compile(compiled_model, fullgraph=True)  # a graph break raises here instead of falling back
    ids = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[0, :5] = -100  # ignored positions go through the compiled loss too

    a = eager(ids, labels=labels)
    b = compiled(ids, labels=labels)
    torch.testing.assert_close(b.logits, a.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(b.loss, a.loss, rtol=0, atol=1e-5)
    a.loss.backward()
    b.loss.backward()
    assert_same_gradients(compiled_model, eager, atol=1e-5)


def test_static_cache_generation_compiles_fullgraph_and_matches_eager():
    torch._dynamo.reset()
    model = tiny_model(seed=2).eval()
    ids = torch.randint(0, VOCAB - 1, (2, 7), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    kwargs = dict(attention_mask=mask, max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=VOCAB - 1)
    expected = model.generate(ids, **kwargs)
    # aot_eager traces forward exactly as inductor would (fullgraph), without the C++ build; generate() compiles
    # on CPU only when told that every device is fine
    config = CompileConfig(fullgraph=True, backend="aot_eager")
    config._compile_all_devices = True
    torch._dynamo.utils.counters.clear()
    got = model.generate(ids, cache_implementation="static", compile_config=config, **kwargs)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # the decode step really was compiled
    assert torch.equal(got, expected)
