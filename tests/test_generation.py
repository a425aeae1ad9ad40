"""generate() through EmbGPT gives the same tokens as GPT2LMHeadModel with the same weights.

At random init a tiny model's attention is nearly uniform and its logits close together, so its tokens hardly depend
on the attention math: the parity tests below also run on weights made attention-sensitive (`sharpen_attention`), and
one test checks on GPT-2 itself that a wrong attention scale changes those tokens.
"""

import pytest
import torch

from conftest import sharpen_attention

PROMPTS = ["Hello, my dog is", "The meaning of life, the universe and everything, said the old computer, is"]


def generate_both(ref, ours, inputs, **kwargs):
    outs = []
    for model in (ref, ours):
        if kwargs.get("do_sample"):
            torch.manual_seed(1234)
        outs.append(model.generate(**inputs, max_new_tokens=12, pad_token_id=50256, **kwargs))
    return outs


def left_padded(tokenizer):
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    assert (inputs.attention_mask == 0).any()  # the batch really is padded
    return inputs


MODES = pytest.mark.parametrize(
    "mode",
    [
        dict(do_sample=False),
        dict(do_sample=False, num_beams=3),
        dict(do_sample=True, top_k=20, temperature=0.8),
        dict(do_sample=True, top_p=0.9, temperature=1.3),
    ],
    ids=["greedy", "beam", "top_k", "top_p"],
)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@MODES
def test_left_padded_batch_generation_matches_gpt2(make_pair, gpt2_tokenizer, attn_implementation, mode):
    ref, ours = make_pair(attn_implementation)
    expected, got = generate_both(ref, ours, left_padded(gpt2_tokenizer), **mode)
    assert torch.equal(expected, got)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@MODES
def test_generation_matches_gpt2_where_attention_decides_the_tokens(
    make_pair, gpt2_tokenizer, attn_implementation, mode
):
    ref, ours = make_pair(attn_implementation, edit=sharpen_attention)
    expected, got = generate_both(ref, ours, left_padded(gpt2_tokenizer), **mode)
    assert torch.equal(expected, got)


def test_sharpened_weights_make_greedy_tokens_depend_on_the_attention_scale(make_pair, gpt2_tokenizer):
    """The premise of the test above, checked on GPT-2: greedy choices are far from ties (the top-1/top-2 margin is
    over 100x the float noise between the two models' logits), and GPT-2 with attention scaled by 1/head_dim instead
    of 1/sqrt(head_dim) generates other tokens."""
    ref, ours = make_pair("eager", edit=sharpen_attention)
    inputs = left_padded(gpt2_tokenizer)
    greedy = dict(max_new_tokens=12, pad_token_id=50256, do_sample=False, output_scores=True)
    out = ref.generate(**inputs, **greedy, return_dict_in_generate=True)
    ours_out = ours.generate(**inputs, **greedy, return_dict_in_generate=True)
    assert torch.equal(out.sequences, ours_out.sequences)
    scores = torch.stack(out.scores)  # (steps, batch, vocab)
    noise = (scores - torch.stack(ours_out.scores)).abs().max().item()
    top2 = scores.topk(2, dim=-1).values
    margin = (top2[..., 0] - top2[..., 1]).min().item()
    print(f"smallest top-1/top-2 logit margin of the greedy steps: {margin:.2e}; largest logit difference: {noise:.2e}")
    assert margin > 100 * max(noise, 1e-7)  # (float32 rounding of logits of this size is ~1e-7 at least)
    for block in ref.transformer.h:
        block.attn.scaling = 1.0 / block.attn.head_dim
    wrong_scale = ref.generate(**inputs, max_new_tokens=12, pad_token_id=50256, do_sample=False)
    assert not torch.equal(wrong_scale, out.sequences)


def test_single_prompt_greedy_matches_gpt2_and_padding_does_not_change_it(make_pair, gpt2_tokenizer):
    ref, ours = make_pair("sdpa")
    gpt2_tokenizer.pad_token = gpt2_tokenizer.eos_token
    gpt2_tokenizer.padding_side = "left"
    alone = gpt2_tokenizer(PROMPTS[:1], return_tensors="pt")
    expected, got = generate_both(ref, ours, alone)
    assert torch.equal(expected, got)
    batch = gpt2_tokenizer(PROMPTS, return_tensors="pt", padding=True)
    padded = ours.generate(**batch, max_new_tokens=12, pad_token_id=50256)
    n = alone.input_ids.shape[1]
    assert torch.equal(padded[0, -12:], got[0, n:])


def test_generation_without_cache_equals_with_cache(make_pair, gpt2_tokenizer):
    _, ours = make_pair("sdpa")
    inputs = gpt2_tokenizer(PROMPTS[:1], return_tensors="pt")
    with_cache = ours.generate(**inputs, max_new_tokens=10, pad_token_id=50256, use_cache=True)
    without = ours.generate(**inputs, max_new_tokens=10, pad_token_id=50256, use_cache=False)
    assert torch.equal(with_cache, without)


def test_static_cache_generation_matches_dynamic(make_pair, gpt2_tokenizer):
    ref, ours = make_pair("sdpa")
    inputs = gpt2_tokenizer(PROMPTS[:1], return_tensors="pt")
    dynamic = ours.generate(**inputs, max_new_tokens=10, pad_token_id=50256)
    static = ours.generate(**inputs, max_new_tokens=10, pad_token_id=50256, cache_implementation="static")
    assert torch.equal(dynamic, static)


def test_text_generation_pipeline_matches_gpt2(make_pair, gpt2_tokenizer):
    from transformers import pipeline

    ref, ours = make_pair("sdpa")
    texts = []
    for model in (ref, ours):
        generator = pipeline("text-generation", model=model, tokenizer=gpt2_tokenizer)
        texts.append(generator(PROMPTS[0], max_new_tokens=8, do_sample=False, pad_token_id=50256)[0]["generated_text"])
    assert texts[0] == texts[1] and texts[1].startswith(PROMPTS[0])
