"""EmbGPT behaves like a transformers model at the API level, against GPT-2's (or Llama's) own behaviour: tuples for
return_dict=False, every from_pretrained argument form, the past_key_values deprecation, and named errors for bad input.
"""

import os
import re
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import DynamicCache, GPT2ForSequenceClassification, GPT2LMHeadModel, GPT2Model

import hf_embgpt
from conftest import assert_same_tensors, gpt2_config, save_random_gpt2
from hf_embgpt import EmbGPTConfig, EmbGPTForCausalLM, EmbGPTForSequenceClassification, EmbGPTModel
from hf_embgpt.modeling_embgpt import _CACHE_FIELD, state_dict_from_gpt2

TOL = 1e-5
PAIRS = [(GPT2Model, EmbGPTModel), (GPT2LMHeadModel, EmbGPTForCausalLM)]


@pytest.fixture
def load_pair(tmp_path):
    """load_pair(gpt2_class, embgpt_class, **kwargs) -> the two models on the same random GPT-2 weights, in eval."""

    def load(gpt2_class, embgpt_class, attn_implementation="eager", **kwargs):
        folder = save_random_gpt2(tmp_path / "gpt2", pad_token_id=0)
        ref = gpt2_class.from_pretrained(folder, attn_implementation=attn_implementation, **kwargs).eval()
        ours = embgpt_class.from_pretrained(folder, attn_implementation=attn_implementation, **kwargs).eval()
        if hasattr(ref, "score"):  # a new classifier head on both sides: give them the same random weights
            ours.score.load_state_dict(ref.score.state_dict())
        return ref, ours

    return load


def assert_same_outputs(ours, ref):
    """Same structure (tuple lengths, types) and values: tensors to TOL, caches by type and length."""
    if isinstance(ref, torch.Tensor):
        assert isinstance(ours, torch.Tensor) and ours.shape == ref.shape
        assert (ours - ref).abs().max().item() <= TOL
    elif isinstance(ref, tuple):
        assert isinstance(ours, tuple) and len(ours) == len(ref), (len(ours), len(ref))
        for a, b in zip(ours, ref, strict=True):
            assert_same_outputs(a, b)
    else:  # a cache
        assert type(ours) is type(ref) and ours.get_seq_length() == ref.get_seq_length()


# ---- issue 14.1: return_dict=False and config.return_dict, tuples ordered as GPT-2's


@pytest.mark.parametrize(
    "gpt2_class, embgpt_class", PAIRS + [(GPT2ForSequenceClassification, EmbGPTForSequenceClassification)]
)
@pytest.mark.parametrize("extras", [{}, dict(use_cache=True, output_hidden_states=True, output_attentions=True)])
def test_return_dict_false_gives_gpt2s_tuple(load_pair, gpt2_class, embgpt_class, extras):
    ref, ours = load_pair(gpt2_class, embgpt_class)
    ids = torch.randint(1, 50257, (2, 7))
    labels = {"labels": ids} if embgpt_class is EmbGPTForCausalLM else {}
    if embgpt_class is EmbGPTForSequenceClassification:
        labels = {"labels": torch.tensor([0, 1])}
    with torch.no_grad():
        expected = ref(ids, return_dict=False, **labels, **extras)
        got = ours(ids, return_dict=False, **labels, **extras)
    assert isinstance(expected, tuple)
    if extras and gpt2_class is not GPT2ForSequenceClassification:
        # GPT-2's outputs end with cross_attentions, () when it has no cross-attention layers; EmbGPT has none
        assert expected[-1] == ()
        expected = expected[:-1]
    assert_same_outputs(got, expected)


@pytest.mark.parametrize("embgpt_class", [EmbGPTModel, EmbGPTForCausalLM, EmbGPTForSequenceClassification])
def test_config_return_dict_false_gives_tuples_and_the_keyword_overrides_it(embgpt_class):
    config = EmbGPTConfig.from_preset("tiny", vocab_size=100, pad_token_id=0, return_dict=False)
    model = embgpt_class(config).eval()
    ids = torch.randint(1, 100, (2, 6))
    with torch.no_grad():
        by_config = model(ids)
        by_keyword = model(ids, return_dict=False)
        forced = model(ids, return_dict=True)
    # GPT2Model does the same; transformers' own heads (GPT2LMHeadModel, LlamaForCausalLM) fail here with
    # "'tuple' object has no attribute 'last_hidden_state'", so the heads are held to the keyword's result instead
    assert isinstance(by_config, tuple)
    assert_same_outputs(by_config, by_keyword)
    assert not isinstance(forced, tuple) and torch.equal(forced[0], by_config[0])


def test_gpt2model_reference_also_gives_a_tuple_for_config_return_dict_false():
    torch.manual_seed(0)
    ref = GPT2Model(gpt2_config(return_dict=False)).eval()
    assert isinstance(ref(torch.randint(0, 50257, (1, 4))), tuple)


# ---- issue 14.2: every from_pretrained argument form


def test_from_pretrained_none_with_config_and_state_dict_as_gpt2(monkeypatch):
    torch.manual_seed(0)
    config = EmbGPTConfig.from_preset("tiny", vocab_size=100)
    source = EmbGPTForCausalLM(config).eval()
    state_dict = source.state_dict()
    gpt2 = GPT2LMHeadModel(gpt2_config(vocab_size=100, bos_token_id=None, eos_token_id=None))
    assert isinstance(
        GPT2LMHeadModel.from_pretrained(None, config=gpt2.config, state_dict=gpt2.state_dict()), GPT2LMHeadModel
    )

    looked_up = []  # no checkpoint to look at: no config lookup (online it would ask the Hub for a repo "None")
    monkeypatch.setattr(EmbGPTConfig, "get_config_dict", lambda *a, **k: looked_up.append(a) or ({}, {}))
    loaded = EmbGPTForCausalLM.from_pretrained(None, config=config, state_dict=state_dict).eval()
    assert looked_up == []
    ids = torch.randint(0, 100, (1, 8))
    assert torch.equal(loaded(ids).logits, source(ids).logits)
    without_head = {k: v for k, v in state_dict.items() if k != "lm_head.weight"}  # tied: may be absent
    assert torch.equal(
        EmbGPTForCausalLM.from_pretrained(None, config=config, state_dict=without_head).eval()(ids).logits,
        source(ids).logits,
    )


def test_from_pretrained_subfolder_for_embgpt_and_gpt2_folders(tmp_path):
    torch.manual_seed(0)
    model = EmbGPTForCausalLM(EmbGPTConfig.from_preset("tiny", vocab_size=100)).eval()
    model.save_pretrained(tmp_path / "repo" / "embgpt")
    save_random_gpt2(tmp_path / "repo" / "gpt2")
    ids = torch.randint(0, 100, (1, 5))
    loaded = EmbGPTForCausalLM.from_pretrained(tmp_path / "repo", subfolder="embgpt").eval()
    assert torch.equal(loaded(ids).logits, model(ids).logits)
    converted = EmbGPTForCausalLM.from_pretrained(tmp_path / "repo", subfolder="gpt2").eval()
    ref = GPT2LMHeadModel.from_pretrained(tmp_path / "repo", subfolder="gpt2").eval()
    assert (converted(ids).logits - ref(ids).logits).abs().max() <= TOL


def test_from_pretrained_reads_a_gpt2_variant_as_gpt2(tmp_path):
    """The variant names which weights file to read: the GPT-2 load's, not the converted copy's."""
    folder = save_random_gpt2(tmp_path / "gpt2", seed=0)  # model.safetensors
    torch.manual_seed(1)
    GPT2LMHeadModel(gpt2_config()).save_pretrained(folder, variant="fp16")  # other weights in model.fp16.safetensors
    ids = torch.randint(0, 100, (1, 5))
    ref = GPT2LMHeadModel.from_pretrained(folder, variant="fp16").eval()
    ours = EmbGPTForCausalLM.from_pretrained(folder, variant="fp16", use_safetensors=True).eval()
    assert (ours(ids).logits - ref(ids).logits).abs().max() <= TOL
    plain = GPT2LMHeadModel.from_pretrained(folder).eval()
    assert (plain(ids).logits - ref(ids).logits).abs().max() > 1e-2  # the two files differ: the variant was read


@pytest.mark.parametrize("kwargs", [{}, {"dtype": "auto"}, {"dtype": torch.float32}, {"dtype": torch.float16}], ids=str)
def test_a_gpt2_checkpoint_loads_in_the_dtype_gpt2_loads_it_in_exactly(tmp_path, kwargs):
    torch.manual_seed(0)
    GPT2LMHeadModel(gpt2_config()).to(torch.bfloat16).save_pretrained(tmp_path / "gpt2")
    ref = GPT2LMHeadModel.from_pretrained(tmp_path / "gpt2", **kwargs)
    ours = EmbGPTForCausalLM.from_pretrained(tmp_path / "gpt2", **kwargs)
    assert ours.dtype == ref.dtype
    expected, got = state_dict_from_gpt2(ref.state_dict()), ours.state_dict()
    assert all(torch.equal(got[name], tensor) for name, tensor in expected.items())


def _error_of(call):
    try:
        call()
    except Exception as error:  # noqa: BLE001 - the error itself is what is compared
        return error
    return None


@pytest.mark.parametrize(
    "kwargs",
    [dict(gguf_file="model.gguf"), dict(state_dict={})],
    ids=["gguf_file", "folder-and-state_dict"],
)
def test_argument_forms_transformers_handles_pass_through_to_it(gpt2_dir, kwargs):
    """GGUF files and the other forms go to transformers unchanged: the same outcome as for GPT2LMHeadModel."""
    expected = _error_of(lambda: GPT2LMHeadModel.from_pretrained(gpt2_dir, **kwargs))
    got = _error_of(lambda: EmbGPTForCausalLM.from_pretrained(gpt2_dir, **kwargs))
    assert expected is not None  # without the gguf package or with both a folder and weights, transformers refuses
    assert type(got) is type(expected) and str(got) == str(expected)


def test_none_without_weights_gets_transformers_error_as_gpt2():
    gpt2 = gpt2_config(vocab_size=100, bos_token_id=None, eos_token_id=None)
    expected = _error_of(lambda: GPT2LMHeadModel.from_pretrained(None, config=gpt2))
    got = _error_of(lambda: EmbGPTForCausalLM.from_pretrained(None, config=EmbGPTConfig.from_preset("tiny")))
    assert expected is not None and type(got) is type(expected) and str(got) == str(expected)


def test_output_loading_info_returns_the_model_and_the_report_as_gpt2(gpt2_dir, tmp_path):
    _, ref_info = GPT2LMHeadModel.from_pretrained(gpt2_dir, output_loading_info=True)
    model, info = EmbGPTForCausalLM.from_pretrained(gpt2_dir, output_loading_info=True)
    assert isinstance(model, EmbGPTForCausalLM) and set(info) == set(ref_info)
    model.save_pretrained(tmp_path / "embgpt")
    model, info = EmbGPTForCausalLM.from_pretrained(tmp_path / "embgpt", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]


# ---- issue 13.1: a checkpoint that lacks, adds or mis-shapes a tensor is refused by name


@pytest.fixture
def embgpt_dir(tmp_path):
    torch.manual_seed(0)
    EmbGPTForCausalLM(EmbGPTConfig.from_preset("tiny", vocab_size=100)).save_pretrained(tmp_path / "embgpt")
    return tmp_path / "embgpt"


def damage(folder, drop=(), add=(), reshape=()):
    path = os.path.join(folder, "model.safetensors")
    tensors = load_file(path)
    for name in drop:
        del tensors[name]
    for name in add:
        tensors[name] = torch.zeros(3)
    for name in reshape:
        tensors[name] = torch.zeros(tensors[name].shape[0] + 1, *tensors[name].shape[1:])
    save_file(tensors, path, metadata={"format": "pt"})


@pytest.mark.parametrize(
    "change, words",
    [
        (dict(drop=["transformer.h.1.mlp.c_fc.weight"]), r"missing \['transformer\.h\.1\.mlp\.c_fc\.weight'\]"),
        (dict(add=["transformer.h.9.attn.c_attn.weight"]), r"unexpected \['transformer\.h\.9\.attn\.c_attn\.weight'\]"),
        (
            dict(reshape=["transformer.h.0.ln_1.weight"]),
            r"mis-shaped \['transformer\.h\.0\.ln_1\.weight \(65,\) vs \(64,\)'\]",
        ),
        (
            dict(drop=["transformer.h.1.mlp.c_fc.weight"], add=["transformer.h.9.attn.c_attn.weight"]),
            r"missing \['transformer\.h\.1\.mlp\.c_fc\.weight'\]; "
            r"unexpected \['transformer\.h\.9\.attn\.c_attn\.weight'\]",
        ),
    ],
    ids=["missing", "unexpected", "mis-shaped", "missing and unexpected"],
)
def test_a_damaged_embgpt_folder_is_refused_by_name(embgpt_dir, change, words):
    damage(embgpt_dir, **change)
    head = re.escape(
        f"checkpoint {embgpt_dir} does not fit EmbGPTForCausalLM and its config (shapes: checkpoint vs model): "
    )
    with pytest.raises(ValueError, match=f"^{head}{words}$"):
        EmbGPTForCausalLM.from_pretrained(embgpt_dir)


def test_a_config_given_decides_over_the_folders_config_or_its_absence(embgpt_dir):
    """As in transformers, config= loads the folder's weights under that config: also where the folder's config.json
    names another model type, is unreadable, or is missing. Without config=, a missing one is an error naming the folder
    (transformers would build a default config and report every tensor as mis-shaped)."""
    saved = EmbGPTForCausalLM.from_pretrained(embgpt_dir)
    config, weights = saved.config, saved.state_dict()
    config_file = embgpt_dir / "config.json"
    config_file.write_text(config_file.read_text().replace('"model_type": "embgpt"', '"model_type": "llama"'))
    with pytest.raises(ValueError, match="is a 'llama' checkpoint"):
        EmbGPTForCausalLM.from_pretrained(embgpt_dir)
    assert_same_tensors(EmbGPTForCausalLM.from_pretrained(embgpt_dir, config=config).state_dict(), weights)
    config_file.write_text("{not json")  # transformers' own error names the file
    with pytest.raises(OSError, match=rf"config file at '{re.escape(str(config_file))}' is not a valid JSON file"):
        EmbGPTForCausalLM.from_pretrained(embgpt_dir)
    assert_same_tensors(EmbGPTForCausalLM.from_pretrained(embgpt_dir, config=config).state_dict(), weights)
    config_file.unlink()
    with pytest.raises(OSError, match=rf"^{re.escape(str(embgpt_dir))} has no config.json: pass config="):
        EmbGPTForCausalLM.from_pretrained(embgpt_dir)
    assert_same_tensors(EmbGPTForCausalLM.from_pretrained(embgpt_dir, config=config).state_dict(), weights)


@pytest.mark.parametrize("model_class", [GPT2LMHeadModel, EmbGPTForCausalLM])
def test_positional_model_arguments_reach_the_model_as_in_gpt2(tmp_path, model_class):
    """from_pretrained(path, *model_args) passes them to the class's __init__, which takes none besides config."""
    folder = save_random_gpt2(tmp_path / "gpt2")
    with pytest.raises(TypeError, match="positional argument"):
        model_class.from_pretrained(folder, "an extra argument")
    embgpt = EmbGPTForCausalLM(EmbGPTConfig.from_preset("tiny", vocab_size=100))
    embgpt.save_pretrained(tmp_path / "embgpt")
    if model_class is EmbGPTForCausalLM:  # and from an EmbGPT folder (no conversion)
        with pytest.raises(TypeError, match="positional argument"):
            model_class.from_pretrained(tmp_path / "embgpt", "an extra argument")


def test_transformers_alone_would_accept_the_missing_tensor(tmp_path):
    """The reference: GPT2LMHeadModel loads a folder missing a tensor with that tensor random (only a report)."""
    folder = save_random_gpt2(tmp_path / "gpt2")
    damage(folder, drop=["transformer.h.1.mlp.c_fc.weight"])
    _, info = GPT2LMHeadModel.from_pretrained(folder, output_loading_info=True)
    assert info["missing_keys"] == {"transformer.h.1.mlp.c_fc.weight"}
    words = rf"checkpoint {re.escape(str(folder))} does not fit .* missing \['transformer\.h\.1\.mlp\.c_fc\.weight'\]"
    with pytest.raises(ValueError, match=words):
        EmbGPTForCausalLM.from_pretrained(folder)  # the same damage in a GPT-2 folder


def test_weights_under_another_config_name_the_tensor_not_ignore_mismatched_sizes(embgpt_dir):
    other = EmbGPTConfig.from_preset("tiny", vocab_size=100, n_embd=32)
    with pytest.raises(ValueError) as caught:
        EmbGPTForCausalLM.from_pretrained(embgpt_dir, config=other)
    message = str(caught.value)
    assert "ignore_mismatched_sizes" not in message and "\n" not in message
    assert str(embgpt_dir) in message and "transformer.wte.weight (100, 64) vs (100, 32)" in message
    # asking for re-initialisation is transformers' documented way out, and stays allowed
    model = EmbGPTForCausalLM.from_pretrained(embgpt_dir, config=other, ignore_mismatched_sizes=True)
    assert model.transformer.wte.weight.shape == (100, 32)


def test_an_untied_lm_head_may_not_be_absent():
    config = EmbGPTConfig.from_preset("tiny", vocab_size=100, tie_word_embeddings=False)
    state_dict = EmbGPTForCausalLM(config).state_dict()
    assert EmbGPTForCausalLM.from_pretrained(None, config=config, state_dict=state_dict) is not None
    del state_dict["lm_head.weight"]
    with pytest.raises(ValueError, match=r"checkpoint state_dict does not fit .* missing \['lm_head\.weight'\]"):
        EmbGPTForCausalLM.from_pretrained(None, config=config, state_dict=state_dict)


def test_a_new_classifier_on_a_language_model_is_allowed_but_a_classifier_missing_its_head_is_not(embgpt_dir, tmp_path):
    classifier = EmbGPTForSequenceClassification.from_pretrained(embgpt_dir, num_labels=3)  # score is new
    classifier.save_pretrained(tmp_path / "classifier")
    EmbGPTForSequenceClassification.from_pretrained(tmp_path / "classifier")
    EmbGPTForCausalLM.from_pretrained(tmp_path / "classifier")  # and back: the LM head is tied to wte
    damage(tmp_path / "classifier", drop=["score.weight"])
    with pytest.raises(ValueError, match=r"missing \['score\.weight'\]"):
        EmbGPTForSequenceClassification.from_pretrained(tmp_path / "classifier")


def test_a_new_classifier_ignores_only_the_language_models_head(tmp_path):
    """A task switch excuses the other class's head (an untied lm_head here), not any other unused tensor."""
    config = EmbGPTConfig.from_preset("tiny", vocab_size=100, tie_word_embeddings=False)
    EmbGPTForCausalLM(config).save_pretrained(tmp_path / "lm")
    assert "lm_head.weight" in load_file(tmp_path / "lm" / "model.safetensors")
    EmbGPTForSequenceClassification.from_pretrained(tmp_path / "lm", num_labels=2)
    damage(tmp_path / "lm", add=["transformer.h.0.attn.rotary"])
    with pytest.raises(ValueError, match=r"unexpected \['transformer\.h\.0\.attn\.rotary'\]$"):
        EmbGPTForSequenceClassification.from_pretrained(tmp_path / "lm", num_labels=2)


def test_embgpt_convert_of_a_damaged_folder_fails_and_writes_nothing(embgpt_dir, tmp_path):
    from hf_embgpt.convert import convert

    damage(embgpt_dir, drop=["transformer.h.1.mlp.c_fc.weight"])
    destination = tmp_path / "out"
    with pytest.raises(ValueError, match=r"missing \['transformer\.h\.1\.mlp\.c_fc\.weight'\]"):
        convert(str(embgpt_dir), str(destination), "embgpt")
    assert not destination.exists()


# ---- issue 14.5: past_key_values= warns as transformers' own models do (5.24+), and still works


@pytest.mark.parametrize("gpt2_class, embgpt_class", PAIRS)
def test_past_key_values_keyword_warns_exactly_as_gpt2(load_pair, gpt2_class, embgpt_class):
    ref, ours = load_pair(gpt2_class, embgpt_class)
    ids = torch.randint(0, 50257, (1, 6))
    caught = {}
    for name, model in (("ref", ref), ("ours", ours)):
        cache = DynamicCache(config=model.config)
        with warnings.catch_warnings(record=True) as record, torch.no_grad():
            warnings.simplefilter("always")
            model(ids[:, :4], past_key_values=cache, use_cache=True)
            out = model(ids[:, 4:], past_key_values=cache, use_cache=True)
        assert cache.get_seq_length() == 6  # the cache given under the old name was used
        caught[name] = [(w.category, str(w.message).replace(type(model).__name__, "CLASS")) for w in record]
        caught[name + "_out"] = out[0]
    assert caught["ours"] == caught["ref"]
    assert (caught["ours_out"] - caught["ref_out"]).abs().max() <= TOL
    if _CACHE_FIELD == "cache":  # transformers 5.24 renamed the keyword; before it nothing is deprecated
        assert any(category is FutureWarning and "past_key_values" in text for category, text in caught["ours"])
    else:
        assert caught["ours"] == []


def test_cache_keyword_is_silent(tiny_config):
    model = EmbGPTForCausalLM(tiny_config).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(torch.zeros(1, 3, dtype=torch.long), **{_CACHE_FIELD: DynamicCache(config=tiny_config)})
        model.generate(torch.zeros(1, 3, dtype=torch.long), max_new_tokens=3, do_sample=False)


# ---- issue 13.7: the attention mask's shape, against the ids and the cache


@pytest.mark.parametrize("shape", [(2, 5), (3, 10), (2, 12), (10,), (2, 1, 10)])
def test_attention_mask_of_the_wrong_shape_names_both_shapes(tiny_config, shape):
    model = EmbGPTForCausalLM(tiny_config)
    ids = torch.zeros(2, 10, dtype=torch.long)
    words = (
        f"attention_mask has shape {shape} but the input needs (2, 10): one row per sequence and one column per "
        "token (10 tokens), or a 4-D mask (2, 1, 10, keys)"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(words)}$"):
        model(ids, attention_mask=torch.ones(shape, dtype=torch.long))


def test_attention_mask_covers_cached_and_new_tokens(make_pair):
    ref, ours = make_pair("sdpa")
    ids = torch.randint(0, 50257, (2, 9))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding
    logits = {}
    for name, model in (("ref", ref), ("ours", ours)):
        cache = getattr(model(ids[:, :6], attention_mask=mask[:, :6], use_cache=True), _CACHE_FIELD)
        if name == "ours":  # a mask of the new tokens only
            with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 3\).*\(2, 9\).*6 cached \+ 3 new"):
                model(ids[:, 6:], attention_mask=mask[:, 6:], **{_CACHE_FIELD: cache})
        logits[name] = model(ids[:, 6:], attention_mask=mask, **{_CACHE_FIELD: cache}).logits
    real = mask[:, 6:].bool()
    assert (logits["ours"][real] - logits["ref"][real]).abs().max() <= TOL


def test_left_padded_generation_matches_gpt2(make_pair):
    ref, ours = make_pair("sdpa")
    ids = torch.randint(0, 50257, (2, 8))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    kwargs = dict(attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(ours.generate(ids, **kwargs), ref.generate(ids, **kwargs))


# ---- issue 13: named errors, not bare torch ones


@pytest.mark.parametrize("shape", [(1, 0), (0, 5)])
def test_empty_input_is_named(tiny_config, shape):
    model = EmbGPTForCausalLM(tiny_config)
    with pytest.raises(ValueError, match=rf"input_ids of shape {re.escape(str(shape))} is empty"):
        model(torch.zeros(shape, dtype=torch.long))
    embeds_shape = (*shape, tiny_config.n_embd)
    with pytest.raises(ValueError, match=rf"inputs_embeds of shape {re.escape(str(embeds_shape))} is empty"):
        model(inputs_embeds=torch.zeros(embeds_shape))


def test_ids_and_embeddings_together_or_neither_are_refused(tiny_config):
    model = EmbGPTForCausalLM(tiny_config)
    ids = torch.zeros(1, 4, dtype=torch.long)
    for inputs in ({}, {"input_ids": ids, "inputs_embeds": torch.zeros(1, 4, tiny_config.n_embd)}):
        with pytest.raises(ValueError, match="^pass exactly one of input_ids or inputs_embeds$"):
            model(**inputs)


def test_ids_that_are_not_integer_tensors_are_named(tiny_config):
    model = EmbGPTForCausalLM(tiny_config)
    with pytest.raises(TypeError, match=r"^input_ids must be a tensor of int64 or int32 ids, got list$"):
        model([[1, 2, 3]])
    ids = torch.zeros(1, 3, dtype=torch.long)
    for name in ("position_ids", "token_type_ids"):
        with pytest.raises(TypeError, match=rf"^{name} must be a tensor of int64 or int32 ids, got torch.float32$"):
            model(ids, **{name: torch.zeros(1, 3)})


@pytest.mark.parametrize("dtype", [torch.bool, torch.int16, torch.uint8, torch.float32])
def test_token_ids_of_the_wrong_dtype_are_named_before_any_value(tiny_config, dtype):
    ids = torch.tensor([[1, 2, 44]]).to(dtype)  # as uint8, 300 would have wrapped to 44 before any range check
    with pytest.raises(TypeError, match=rf"input_ids must be a tensor of int64 or int32 ids, got {dtype}"):
        EmbGPTForCausalLM(tiny_config)(ids)


def test_int32_ids_are_accepted_as_nn_embedding_does(tiny_config):
    model = EmbGPTForCausalLM(tiny_config).eval()
    ids = torch.randint(0, 50257, (1, 5))
    assert torch.equal(model(ids.int()).logits, model(ids).logits)


def test_inputs_embeds_of_the_wrong_width_are_named(tiny_config):
    with pytest.raises(
        ValueError, match=r"inputs_embeds must have shape \(batch, length, n_embd=64\), got \(1, 5, 32\)"
    ):
        EmbGPTForCausalLM(tiny_config)(inputs_embeds=torch.zeros(1, 5, 32))


@pytest.mark.parametrize("shape", [(2, 5), (3, 10), (10,)])
def test_position_and_token_type_ids_of_the_wrong_shape_are_named(tiny_config, shape):
    model = EmbGPTForCausalLM(tiny_config)
    ids = torch.zeros(2, 10, dtype=torch.long)
    for name in ("position_ids", "token_type_ids"):
        with pytest.raises(
            ValueError, match=rf"{name} must have shape \(2, 10\) or \(1, 10\).*{re.escape(str(shape))}"
        ):
            model(ids, **{name: torch.zeros(shape, dtype=torch.long)})
    assert model(ids, position_ids=torch.arange(10)[None]).logits.shape == (2, 10, 50257)  # (1, T) broadcasts


def test_float_or_mis_shaped_labels_are_named(tiny_config):
    model = EmbGPTForCausalLM(tiny_config)
    ids = torch.zeros(2, 6, dtype=torch.long)
    with pytest.raises(TypeError, match=r"labels must be a tensor of int64 or int32 ids, got torch.float32"):
        model(ids, labels=ids.float())
    with pytest.raises(ValueError, match=r"labels have shape \(2, 5\) but the input is \(2, 6\)"):
        model(ids, labels=ids[:, :5])


@pytest.mark.filterwarnings("ignore:Using the model-agnostic default")  # the default is what is under test
def test_generation_without_a_length_gives_gpt2s_default_number_of_new_tokens(load_pair):
    ref, ours = load_pair(GPT2LMHeadModel, EmbGPTForCausalLM)
    ids = torch.randint(0, ref.config.vocab_size, (1, 7))
    expected = ref.generate(ids, do_sample=False, pad_token_id=0)
    assert expected.shape[1] > ids.shape[1] + 7  # the default counts new tokens, not the prompt's
    assert torch.equal(ours.generate(ids, do_sample=False, pad_token_id=0), expected)


def test_generation_past_block_size_fails_before_the_first_forward(tiny_config, monkeypatch):
    model = EmbGPTForCausalLM(tiny_config).eval()
    calls = []
    monkeypatch.setattr(model.transformer, "forward", lambda *a, **k: calls.append(1))
    with pytest.raises(ValueError, match=r"120 tokens with max_new_tokens 20 reaches 140 tokens but block_size is 128"):
        model.generate(torch.zeros(1, 120, dtype=torch.long), max_new_tokens=20, do_sample=False, pad_token_id=0)
    assert calls == []


@pytest.mark.parametrize(
    "length, error",
    [
        ({"max_new_tokens": 20}, "a prompt of 120 tokens with max_new_tokens 20 reaches 140 tokens"),
        ({"max_length": 140}, "a prompt of 120 tokens reaches 140 tokens"),  # max_length counts the prompt too
    ],
    ids=["max_new_tokens", "max_length"],
)
def test_generation_from_embeddings_past_block_size_fails_before_the_first_forward(
    tiny_config, monkeypatch, length, error
):
    """generate() leaves a prompt given as inputs_embeds out of max_length: the check counts it."""
    model = EmbGPTForCausalLM(tiny_config).eval()
    embeds = model.transformer.wte(torch.zeros(1, 120, dtype=torch.long)).detach()
    calls = []
    monkeypatch.setattr(model.transformer, "forward", lambda *a, **k: calls.append(1))
    with pytest.raises(ValueError, match=rf"{error} but block_size is 128; lower max_new_tokens to at most 8"):
        model.generate(inputs_embeds=embeds, do_sample=False, pad_token_id=0, **length)
    assert calls == []


def test_generation_from_a_prompt_that_fills_block_size_fails_naming_no_room_left(tiny_config):
    model = EmbGPTForCausalLM(tiny_config).eval()
    with pytest.raises(ValueError, match="a prompt of 128 tokens .* lower max_new_tokens to at most 0$"):
        model.generate(torch.zeros(1, 128, dtype=torch.long), max_new_tokens=1, do_sample=False, pad_token_id=0)


def test_generation_from_embeddings_up_to_block_size_runs(tiny_config):
    model = EmbGPTForCausalLM(tiny_config).eval()
    embeds = model.transformer.wte(torch.zeros(1, 120, dtype=torch.long)).detach()
    out = model.generate(inputs_embeds=embeds, max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 8)  # the new tokens only: the prompt has no ids


def test_generation_up_to_block_size_runs(tiny_config):
    model = EmbGPTForCausalLM(tiny_config).eval()
    out = model.generate(torch.zeros(1, 120, dtype=torch.long), max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 128)


# ---- issue 12: the Hub pair uses public torch API only; the input check reads the host once


PRIVATE_TORCH = re.compile(
    r"torch(\.\w+)*\._\w|torch\.ops\b|functorch|torch\.fx\.experimental|from torch(\.\w+)* import _\w"
)


@pytest.mark.parametrize("module", ["modeling_embgpt.py", "configuration_embgpt.py"])
def test_the_model_files_use_no_private_torch_api(module):
    source = open(os.path.join(os.path.dirname(hf_embgpt.__file__), module)).read()
    found = sorted({m.group(0) for m in PRIVATE_TORCH.finditer(source)})
    assert not found, f"{module} uses private torch API: {found}"


def test_the_private_api_pattern_catches_what_it_must():
    for text in ("torch._C._autograd", "torch.ops.mkldnn", "torch.fx._symbolic_trace", "from torch._dynamo import x",
                 "import functorch", "torch.utils._pytree", "from torch.utils import _pytree"):  # fmt: skip
        assert PRIVATE_TORCH.search(text), text
    for text in ("torch.compiler.is_compiling()", "torch.jit.is_tracing()", "torch.nn.functional"):
        assert not PRIVATE_TORCH.search(text), text


class HostReads(torch.overrides.TorchFunctionMode):
    """Counts the tensor calls that make the host wait for the device on a GPU (no GPU needed to count them)."""

    READS = {"__bool__", "item", "__int__", "__float__", "__index__", "tolist", "nonzero", "numpy"}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += getattr(func, "__name__", "") in self.READS
        return func(*args, **(kwargs or {}))


def test_a_forward_reads_the_host_once_and_once_more_for_labels(tiny_config):
    model = EmbGPTForCausalLM(tiny_config).eval()
    ids = torch.randint(0, 50257, (2, 16))
    # (position_ids given by the caller cost one more read: transformers' mask helper looks for packed rows in them)
    inputs = dict(token_type_ids=torch.zeros_like(ids))
    with torch.no_grad():
        with HostReads() as plain:
            model(ids, **inputs)
        with HostReads() as with_labels:
            model(ids, labels=ids, **inputs)
    assert (plain.count, with_labels.count) == (1, 2)
    bad_positions = torch.arange(16)[None].clone()
    bad_positions[0, -1] = 200
    with pytest.raises(ValueError, match=r"position_ids has value 200, which is out of range for block_size 128"):
        model(ids, position_ids=bad_positions, labels=ids)  # the one read still catches every range


# Survivors of a mutation run on modeling_embgpt.py (scripts/mutation.sh): the attention's dropout in eager mode, the
# 4-D mask shape rule, and labels checked against inputs_embeds.


def test_eager_attention_dropout_follows_the_rate_and_the_mode(make_pair):
    """Eval mode drops nothing at any rate (GPT-2's logits); training with rate 0 drops nothing either."""
    ids = torch.randint(0, 99, (2, 12), generator=torch.Generator().manual_seed(0))
    ref, ours = make_pair("eager", dropout=0.3)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, ref(ids).logits, rtol=0, atol=TOL)
        ours.train()  # dropout on: the output is no longer the eval one
        assert not torch.allclose(ours(ids).logits, ref(ids).logits, atol=1e-3)
    ref, ours = make_pair("eager", dropout=0.0)
    with torch.no_grad():
        ours.train()
        torch.testing.assert_close(ours(ids).logits, ref(ids).logits, rtol=0, atol=TOL)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_a_4d_mask_is_taken_when_it_fits_and_named_when_it_does_not(make_pair, attn_implementation):
    ref, ours = make_pair(attn_implementation)
    ids = torch.randint(0, 99, (2, 6), generator=torch.Generator().manual_seed(0))
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    with torch.no_grad():
        want = ref(ids).logits
        for mask in (causal[None, None].expand(2, 1, 6, 6), causal[None, None]):  # per sequence, or one for all
            torch.testing.assert_close(ours(ids, attention_mask=mask).logits, want, rtol=0, atol=TOL)
        for shape in ((3, 1, 6, 6), (2, 1, 7, 6)):  # another batch; another number of queries
            with pytest.raises(ValueError, match=re.escape(f"attention_mask has shape {shape}")):
                ours(ids, attention_mask=torch.ones(shape, dtype=torch.bool))


def test_labels_are_checked_against_inputs_embeds(tiny_config):
    model = EmbGPTForCausalLM(tiny_config).eval()
    embeds = torch.randn(2, 5, tiny_config.n_embd)
    assert model(inputs_embeds=embeds, labels=torch.zeros(2, 5, dtype=torch.long)).loss is not None
    with pytest.raises(ValueError, match=r"labels have shape \(2, 4\) but the input is \(2, 5\)"):
        model(inputs_embeds=embeds, labels=torch.zeros(2, 4, dtype=torch.long))


def test_the_attention_function_gets_the_dropout_rate_in_training_only(tiny_config):
    """Every attention implementation applies the rate it is given: 0 in eval, config.dropout in training."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    rates = []

    def noting_dropout(module, query, key, value, attention_mask, **kwargs):
        rates.append(kwargs["dropout"])
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("note_dropout", noting_dropout)
    AttentionMaskInterface.register("note_dropout", sdpa_mask)
    tiny_config.dropout = 0.25
    model = EmbGPTForCausalLM(tiny_config)
    model.set_attn_implementation("note_dropout")
    ids = torch.randint(0, 99, (1, 8))
    model.eval()(ids)
    model.train()(ids)
    assert rates == [0.0] * tiny_config.n_layer + [0.25] * tiny_config.n_layer


def test_attention_mask_with_a_static_cache_covers_at_least_the_new_tokens(tiny_config):
    """A static cache's length may be a tensor (no host read to compare it with): the mask must cover the new tokens."""
    from transformers import StaticCache

    model = EmbGPTForCausalLM(tiny_config).eval()
    ids = torch.randint(0, tiny_config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    cache = StaticCache(config=tiny_config, max_cache_len=32)
    model(ids[:, :10], attention_mask=mask[:, :10], **{_CACHE_FIELD: cache})
    words = (
        "attention_mask has shape (2, 1) but the input needs (2, cached + new): one row per sequence and one column "
        "per token (10 cached + 2 new tokens), or a 4-D mask (2, 1, 2, keys)"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(words)}$"):
        model(ids[:, 10:], attention_mask=mask[:, :1], **{_CACHE_FIELD: cache})
    torch.testing.assert_close(
        model(ids[:, 10:], attention_mask=mask, **{_CACHE_FIELD: cache}).logits, model(ids).logits[:, 10:]
    )


@pytest.mark.parametrize("mean_resizing", [True, False])
def test_resize_token_embeddings_matches_gpt2(make_pair, mean_resizing):
    """Adding tokens (a pad token, chat markers): the same new rows as GPT-2's, the head still tied, old logits kept."""
    ref, ours = make_pair("sdpa", vocab_size=1000)
    ids = torch.randint(0, 1000, (2, 7), generator=torch.Generator().manual_seed(0))
    before = ours(ids).logits
    for model in (ref, ours):
        torch.manual_seed(1)
        model.resize_token_embeddings(1003, mean_resizing=mean_resizing)
    assert ours.config.vocab_size == ref.config.vocab_size == 1003
    assert ours.lm_head.weight is ours.transformer.wte.weight
    torch.testing.assert_close(ours.transformer.wte.weight, ref.transformer.wte.weight, rtol=0, atol=0)
    new_ids = torch.tensor([[1000, 5, 1002, 1001]])
    torch.testing.assert_close(ours(new_ids).logits, ref(new_ids).logits, rtol=0, atol=TOL)
    torch.testing.assert_close(ours(ids).logits[..., :1000], before, rtol=0, atol=TOL)
