"""EmbGPT against transformers' GPT2LMHeadModel on the same weights: logits, loss, gradients, masks, cache."""

import inspect

import pytest
import torch
from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel

import hf_embgpt
from hf_embgpt import EmbGPTConfig, EmbGPTForCausalLM, EmbGPTForSequenceClassification

# fused tanh-GELU vs GPT-2's composed gelu_new: equal up to float32 rounding
TOL = 1e-5


def max_diff(a, b):
    return (a - b).abs().max().item()


def grads_by_name(model):
    return {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


# Gradients differ from GPT-2's by float32 reordering only: at most ~6e-7 of each tensor's largest gradient (measured
# on the tiny pair, eager and sdpa). Each tensor is held to its own scale, so a small gradient (LayerNorm's ~6e-4)
# gets no more slack than a large one: a 1% error in any tensor fails, where an absolute 1e-5 let 1.5% pass.
GRAD_RTOL, GRAD_ATOL_OF_MAX = 1e-4, 1e-5


def assert_every_gradient_matches(ref, ours):
    """Every EmbGPT parameter has a gradient equal to GPT-2's (whose four Conv1D weights are transposed)."""
    ref_grads = grads_by_name(ref)
    our_grads = grads_by_name(ours)
    assert set(our_grads) == {n for n, _ in ours.named_parameters()}
    for name, grad in our_grads.items():
        expected = ref_grads[name]
        if name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            expected = expected.t()
        atol = GRAD_ATOL_OF_MAX * expected.abs().max().item()
        torch.testing.assert_close(grad, expected, rtol=GRAD_RTOL, atol=atol, msg=lambda m, n=name: f"{n}: {m}")


def test_gradient_check_fails_on_a_one_percent_error_in_the_smallest_gradient(make_pair):
    """The tolerance above is tight enough to matter: 1% off the tensor with the smallest gradients is caught."""
    ref, ours = make_pair("sdpa")
    ids = torch.randint(0, 50257, (2, 40))
    ref(ids, labels=ids).loss.backward()
    ours(ids, labels=ids).loss.backward()
    assert_every_gradient_matches(ref, ours)
    smallest = min(ours.parameters(), key=lambda p: p.grad.abs().max().item())
    smallest.grad *= 1.01
    with pytest.raises(AssertionError):
        assert_every_gradient_matches(ref, ours)


GPT2_124M = dict(n_layer=12, n_head=12, n_embd=768, n_positions=1024)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("shape", [{}, pytest.param(GPT2_124M, marks=pytest.mark.slow)], ids=["tiny", "124M"])
def test_logits_loss_and_every_gradient_match_gpt2(make_pair, attn_implementation, shape):
    ref, ours = make_pair(attn_implementation, **shape)
    assert ours.num_parameters() == ref.num_parameters()
    ids = torch.randint(0, 50257, (2, 40))
    a = ref(ids, labels=ids)
    b = ours(ids, labels=ids)
    assert max_diff(a.logits, b.logits) <= TOL
    assert abs(a.loss.item() - b.loss.item()) <= TOL
    a.loss.backward()
    b.loss.backward()
    assert_every_gradient_matches(ref, ours)


def test_a_gpt2_layer_norm_epsilon_reaches_every_layer_norm(make_pair):
    """GPT-2's default 1e-5 is also LayerNorm's: another value shows whether each of the model's LayerNorms gets it."""
    ref, ours = make_pair("eager", layer_norm_epsilon=0.5)  # far above the activations' variance at initialisation
    ids = torch.randint(0, 50257, (2, 12))
    with torch.no_grad():
        assert max_diff(ref(ids).logits, ours(ids).logits) <= TOL
    assert {m.eps for m in ours.modules() if isinstance(m, torch.nn.LayerNorm)} == {0.5}


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("padded", [False, True])
def test_hidden_states_and_attentions_match_gpt2(make_pair, attn_implementation, padded):
    ref, ours = make_pair(attn_implementation)
    ids = torch.randint(0, 50257, (2, 16))
    mask = torch.ones_like(ids)
    if padded:
        mask[0, :6] = 0
    a = ref(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    b = ours(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    real = mask.bool()
    assert max_diff(a.logits[real], b.logits[real]) <= TOL
    assert len(a.hidden_states) == len(b.hidden_states) == ours.config.n_layer + 1
    for x, y in zip(a.hidden_states, b.hidden_states, strict=True):
        assert max_diff(x[real], y[real]) <= TOL
    if attn_implementation == "sdpa":  # SDPA computes no weights, for either model
        assert a.attentions == b.attentions == ()
        return
    assert len(b.attentions) == ours.config.n_layer
    for x, y in zip(a.attentions, b.attentions, strict=True):
        assert max_diff(x[1], y[1]) <= TOL


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float32])
def test_four_dimensional_masks_match_gpt2(make_pair, attn_implementation, mask_dtype):
    ref, ours = make_pair(attn_implementation)
    ids = torch.randint(0, 50257, (2, 10))
    allowed = torch.tril(torch.ones(10, 10, dtype=torch.bool)).expand(2, 1, 10, 10).clone()
    allowed[0, :, :, :3] = False  # row 0: three left-pad keys
    allowed[0, :, :3, :3] = torch.eye(3, dtype=torch.bool)  # pad queries see themselves, as transformers does
    additive = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    a = ref(ids, attention_mask=additive).logits  # GPT-2's eager path adds a bool mask as 0/1, so it gets floats
    b = ours(ids, attention_mask=allowed if mask_dtype == torch.bool else additive).logits
    assert torch.isfinite(b).all()
    assert max_diff(a[:, 3:], b[:, 3:]) <= TOL


def test_left_padded_batch_matches_gpt2_on_real_tokens(make_pair):
    ref, ours = make_pair("sdpa")
    ids = torch.randint(0, 50257, (2, 12))
    mask = torch.ones_like(ids)
    mask[0, :5] = 0  # row 0 is left-padded by 5
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    a = ref(ids, attention_mask=mask, position_ids=position_ids).logits
    b = ours(ids, attention_mask=mask, position_ids=position_ids).logits
    assert max_diff(a[mask.bool()], b[mask.bool()]) <= TOL
    # and the padded row's real tokens equal the same tokens run alone
    alone = ours(ids[:1, 5:]).logits
    assert max_diff(alone[0], b[0, 5:]) <= TOL


@pytest.mark.parametrize("padded", [False, True])
def test_cached_forward_equals_uncached_and_gpt2(make_pair, padded):
    ref, ours = make_pair("sdpa")
    ids = torch.randint(0, 50257, (2, 20))
    mask = torch.ones_like(ids)
    if padded:
        mask[1, :7] = 0
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    full = ours(ids, attention_mask=mask, position_ids=position_ids, use_cache=False).logits
    first = ours(ids[:, :12], attention_mask=mask[:, :12], position_ids=position_ids[:, :12], use_cache=True)
    cache = first.cache if hasattr(first, "cache") else first.past_key_values
    second = ours(ids[:, 12:], attention_mask=mask, position_ids=position_ids[:, 12:], past_key_values=cache)
    real = mask.bool()
    assert max_diff(full[:, :12][real[:, :12]], first.logits[real[:, :12]]) <= TOL
    assert max_diff(full[:, 12:], second.logits) <= TOL
    expected = ref(ids, attention_mask=mask, position_ids=position_ids).logits
    assert max_diff(expected[real], full[real]) <= TOL


def cache_of(output):
    return output.cache if hasattr(output, "cache") else output.past_key_values


# GPT-2's KV-cache keyword: `cache` from transformers 5.24, `past_key_values` before (deprecated after)
GPT2_CACHE_KEYWORD = "cache" if "cache" in inspect.signature(GPT2LMHeadModel.forward).parameters else "past_key_values"


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("padded", [False, True])
def test_cached_forward_without_position_ids_matches_gpt2(make_pair, attn_implementation, padded):
    """The model's own positions under a cache: generate() passes position_ids, so only a direct call uses them.

    GPT-2 numbers the new tokens from the cache length, padding or not; EmbGPT must do the same, in one prefill, a
    chunk and single-token steps, and equal its own uncached forward.
    """
    ref, ours = make_pair(attn_implementation)
    ids = torch.randint(0, 50257, (2, 20))
    mask = torch.ones_like(ids)
    if padded:
        mask[1, :7] = 0  # left padding, given only as attention_mask
    real = mask.bool()
    with torch.no_grad():
        expected = ref(ids, attention_mask=mask, use_cache=False).logits
        full = ours(ids, attention_mask=mask, use_cache=False).logits
        assert max_diff(expected[real], full[real]) <= TOL
        steps = [(0, 12), (12, 16), (16, 17), (17, 18), (18, 19), (19, 20)]  # prefill, a chunk, one token at a time
        ref_cache = ours_cache = None
        for start, end in steps:
            a = ref(ids[:, start:end], attention_mask=mask[:, :end], **{GPT2_CACHE_KEYWORD: ref_cache}, use_cache=True)
            b = ours(ids[:, start:end], attention_mask=mask[:, :end], cache=ours_cache, use_cache=True)
            ref_cache, ours_cache = cache_of(a), cache_of(b)
            assert ours_cache.get_seq_length() == end
            step_real = real[:, start:end]
            assert max_diff(a.logits[step_real], b.logits[step_real]) <= TOL, (start, end)
            assert max_diff(full[:, start:end][step_real], b.logits[step_real]) <= TOL, (start, end)


def test_cache_keyword_and_past_key_values_keyword_are_the_same(make_pair):
    from transformers import DynamicCache

    _, ours = make_pair("sdpa")
    ids = torch.randint(0, 50257, (1, 10))
    results = []
    for keyword in ("cache", "past_key_values"):
        cache = DynamicCache(config=ours.config)
        ours(ids[:, :6], **{keyword: cache}, use_cache=True)
        assert cache.get_seq_length() == 6  # the model wrote into the cache it was given
        results.append(ours(ids[:, 6:], **{keyword: cache}, use_cache=True).logits)
    assert torch.equal(results[0], results[1])


def test_logits_to_keep_returns_the_last_positions(make_pair):
    _, ours = make_pair("sdpa")
    ids = torch.randint(0, 50257, (2, 10))
    full = ours(ids).logits
    last = ours(ids, logits_to_keep=1).logits
    assert last.shape == (2, 1, 50257)
    assert max_diff(last[:, 0], full[:, -1]) <= TOL  # a shorter matmul may round differently


def test_return_dict_false_gives_a_tuple(make_pair):
    _, ours = make_pair("sdpa")
    ids = torch.randint(0, 50257, (1, 5))
    out = ours(ids, labels=ids, return_dict=False)
    assert isinstance(out, tuple) and out[0].ndim == 0


def test_weights_are_tied_and_named_like_nanogpt(tiny_config):
    model = EmbGPTForCausalLM(tiny_config)
    assert model.lm_head.weight is model.transformer.wte.weight
    names = {n for n, _ in model.named_parameters()}
    expected = {"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight", "transformer.ln_f.bias"}
    for part in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"):
        expected |= {f"transformer.h.1.{part}.weight", f"transformer.h.1.{part}.bias"}
    assert expected <= names
    assert model.transformer.h[0].attn.c_attn.weight.shape == (3 * 64, 64)  # nn.Linear (out, in)


def test_gpt2_initialisation_scales_residual_projections():
    torch.manual_seed(0)
    config = EmbGPTConfig(n_layer=8, n_head=4, n_embd=256, block_size=64, vocab_size=512)
    model = EmbGPTForCausalLM(config)
    scaled = 0.02 / (2 * config.n_layer) ** 0.5
    for block in model.transformer.h:
        assert block.attn.c_proj.weight.std().item() == pytest.approx(scaled, rel=0.1)
        assert block.mlp.c_proj.weight.std().item() == pytest.approx(scaled, rel=0.1)
        assert block.mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.1)
        assert torch.count_nonzero(block.attn.c_attn.bias) == 0
    assert model.transformer.wpe.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_bias_false_variant_has_no_bias_tensors():
    model = EmbGPTForCausalLM(EmbGPTConfig.from_preset("tiny", bias=False))
    assert not [n for n, _ in model.named_parameters() if n.endswith(".bias")]
    ids = torch.randint(0, 50257, (1, 8))
    assert model(ids).logits.shape == (1, 8, 50257)


def test_gradient_checkpointing_changes_neither_loss_nor_gradients(make_pair):
    from transformers import DynamicCache

    ref, ours = make_pair("sdpa")
    ours.train()
    ids = torch.randint(0, 50257, (2, 16))
    plain = ours(ids, labels=ids)
    plain.loss.backward()
    plain_grads = {n: g.clone() for n, g in grads_by_name(ours).items()}
    ours.zero_grad()
    getattr(ours, "activation_checkpointing_enable", ours.gradient_checkpointing_enable)()  # renamed in 5.x
    cache = DynamicCache(config=ours.config)
    checkpointed = ours(ids, labels=ids, past_key_values=cache)
    checkpointed.loss.backward()
    assert cache.get_seq_length() == 0  # the recomputed forward must not write a cache
    assert checkpointed.loss.item() == plain.loss.item()
    for name, grad in grads_by_name(ours).items():
        assert torch.equal(grad, plain_grads[name]), name
    ref(ids, labels=ids).loss.backward()
    assert_every_gradient_matches(ref, ours)


def test_sequence_classification_matches_gpt2(tmp_path):
    from conftest import gpt2_config

    torch.manual_seed(0)
    config = gpt2_config(num_labels=3, pad_token_id=0)
    ref = GPT2ForSequenceClassification(config).eval()
    ref.save_pretrained(tmp_path)
    ours = EmbGPTForSequenceClassification.from_pretrained(tmp_path).eval()
    assert ours.config.pad_token_id == 0 and ours.config.num_labels == ours.num_labels == ref.num_labels == 3
    ids = torch.randint(1, 50257, (3, 10))
    ids[0, 7:] = 0  # right padding: pools position 6
    ids[1, :4] = 0  # left padding: pools the last position
    labels = torch.tensor([0, 2, 1])
    a = ref(ids, labels=labels)
    b = ours(ids, labels=labels)
    assert max_diff(a.logits, b.logits) <= TOL
    assert abs(a.loss.item() - b.loss.item()) <= TOL


def test_sequence_classifier_from_a_gpt2_language_model_gets_a_fresh_head(gpt2_dir):

    classifier = EmbGPTForSequenceClassification.from_pretrained(gpt2_dir, num_labels=3, pad_token_id=50256)
    assert classifier.score.weight.shape == (3, 64) and classifier.config.num_labels == 3
    body = GPT2LMHeadModel.from_pretrained(gpt2_dir).transformer.wpe.weight
    assert torch.equal(classifier.transformer.wpe.weight, body)


def test_auto_classes_resolve_to_embgpt(tmp_path, tiny_config):
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    EmbGPTForCausalLM(tiny_config).save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), EmbGPTConfig)
    assert type(AutoModel.from_pretrained(tmp_path)) is hf_embgpt.EmbGPTModel
    assert type(AutoModelForCausalLM.from_pretrained(tmp_path)) is EmbGPTForCausalLM
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=2)
    assert type(classifier) is EmbGPTForSequenceClassification


# ---- bad input: clear errors, never a deep IndexError


@pytest.mark.parametrize("bad_id", [-1, 50257, 60000])
@pytest.mark.parametrize("ids", [[1, 2, None, 3], [None]], ids=["in-a-row", "alone"])  # alone: a decoding step
def test_token_ids_out_of_range_are_named(tiny_config, bad_id, ids):
    model = EmbGPTForCausalLM(tiny_config)
    ids = torch.tensor([[bad_id if i is None else i for i in ids]])
    with pytest.raises(
        ValueError, match=rf"input_ids has token id {bad_id}, which is out of range for vocab_size 50257"
    ):
        model(ids)


def test_token_type_and_position_ids_out_of_range_are_named(tiny_config):
    model = EmbGPTForCausalLM(tiny_config)
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match=r"token_type_ids has token id 50300, which is out of range for vocab_size"):
        model(ids, token_type_ids=torch.tensor([[0, 0, 50300]]))
    with pytest.raises(ValueError, match=r"position_ids has value 128, which is out of range for block_size 128"):
        model(ids, position_ids=torch.tensor([[0, 1, 128]]))


@pytest.mark.parametrize("shape", [(5,), (1, 2, 3)])
def test_input_ids_of_the_wrong_shape_are_named(tiny_config, shape):
    model = EmbGPTForCausalLM(tiny_config)
    with pytest.raises(ValueError, match=r"input_ids must be integer token ids of shape \(batch, length\)"):
        model(torch.zeros(shape, dtype=torch.long))


def test_labels_out_of_range_are_named_but_minus_100_is_allowed(tiny_config):
    model = EmbGPTForCausalLM(tiny_config)
    ids = torch.tensor([[1, 2, 3, 4]])
    assert model(ids, labels=torch.tensor([[-100, 2, -100, 4]])).loss.isfinite()
    with pytest.raises(ValueError, match=r"labels has token id 99999, which is out of range for vocab_size 50257"):
        model(ids, labels=torch.tensor([[1, 99999, 3, 4]]))


def test_sequence_longer_than_block_size_is_named(tiny_config):
    model = EmbGPTForCausalLM(tiny_config)
    with pytest.raises(ValueError, match=r"input has length 129 \(plus 0 cached\) but block_size is 128"):
        model(torch.zeros(1, 129, dtype=torch.long))


def test_sequence_plus_cache_longer_than_block_size_is_named(tiny_config):
    model = EmbGPTForCausalLM(tiny_config)
    out = model(torch.zeros(1, 100, dtype=torch.long), use_cache=True)
    cache = out.cache if hasattr(out, "cache") else out.past_key_values
    with pytest.raises(ValueError, match=r"input has length 40 \(plus 100 cached\) but block_size is 128"):
        model(torch.zeros(1, 40, dtype=torch.long), past_key_values=cache)


def test_generation_past_block_size_is_an_error_not_garbage(tiny_config):
    model = EmbGPTForCausalLM(tiny_config)
    with pytest.raises(ValueError, match=r"block_size is 128"):
        model.generate(torch.zeros(1, 120, dtype=torch.long), max_new_tokens=20, do_sample=False, pad_token_id=0)


def test_both_or_neither_of_input_ids_and_embeds_is_an_error(tiny_config):
    model = EmbGPTForCausalLM(tiny_config)
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model()
    ids = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model(ids, inputs_embeds=model.transformer.wte(ids))


def test_inputs_embeds_equal_input_ids(tiny_config):
    model = EmbGPTForCausalLM(tiny_config).eval()
    ids = torch.randint(0, 50257, (2, 7))
    assert torch.equal(model(ids).logits, model(inputs_embeds=model.transformer.wte(ids)).logits)


# ---- the ecosystem's tools


def test_torch_export_matches_eager(make_pair):
    _, ours = make_pair("sdpa")
    ids = torch.randint(0, 50257, (2, 16))
    program = torch.export.export(ours, args=(ids,), kwargs={"use_cache": False})
    graph_ops = {str(node.target) for node in program.graph.nodes}
    assert not any("mkldnn" in op for op in graph_ops)  # the exported graph stays portable: plain linear ops
    with torch.no_grad():
        exported = program.module()(ids, use_cache=False).logits
        with torch.backends.mkldnn.flags(enabled=False):  # eager through the same F.linear: bit-equal
            assert torch.equal(exported, ours(ids, use_cache=False).logits)
        torch.testing.assert_close(exported, ours(ids, use_cache=False).logits, rtol=0, atol=1e-5)


def test_accelerate_device_map_splits_at_block_boundaries_and_matches(tmp_path):
    torch.manual_seed(0)
    config = EmbGPTConfig.from_preset("tiny", n_layer=4, vocab_size=1000, bos_token_id=0, eos_token_id=0)
    ours = EmbGPTForCausalLM(config).eval()
    ours.save_pretrained(tmp_path / "model")
    offloaded = EmbGPTForCausalLM.from_pretrained(
        tmp_path / "model", device_map="auto", max_memory={"cpu": "700KB"}, offload_folder=tmp_path / "offload"
    )
    placement = offloaded.hf_device_map
    assert placement["transformer.h.0"] == "cpu" and placement["transformer.h.3"] == "disk"  # really split
    assert all(not name.startswith("transformer.h.") or name.count(".") == 2 for name in placement)  # whole blocks
    ids = torch.randint(0, 1000, (1, 12))
    with torch.no_grad():
        assert (offloaded(ids).logits - ours(ids).logits).abs().max() <= TOL
