"""The attention and mask paths, against GPT2LMHeadModel on the same weights and transformers' own machinery:
`set_attn_implementation` switches like on GPT-2/Llama; unpadded inputs reach the attention function with no mask and
SDPA runs `is_causal=True` (the flash kernel on GPUs), eager and under torch.compile; padded and packed rows keep their
exact masks; a packed row may be longer than block_size (DataCollatorWithFlattening, TRL's SFTTrainer(packing=True))."""

import pytest
import torch
from tokenizers import Tokenizer, models
from torch.nn import functional as F
from transformers import AttentionInterface, DataCollatorWithFlattening, PreTrainedTokenizerFast
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from hf_embgpt import EmbGPTConfig, EmbGPTForCausalLM

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.compile's import touches torch.jit

SPY = "embgpt_test_spy"
seen_masks = []  # what the spy attention function received: "none" or "mask", one entry per layer call
seen_is_causal = []  # what F.scaled_dot_product_attention was called with
seen_kwargs = []  # the names of the keyword arguments the spy got beyond SDPA's own


def spy_attention(module, query, key, value, attention_mask, **kwargs):
    """transformers' SDPA attention, noting whether a mask came in."""
    seen_masks.append("none" if attention_mask is None else "mask")
    seen_kwargs.append(sorted(set(kwargs) - {"dropout", "scaling", "is_causal"}))
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(SPY, spy_attention)
AttentionMaskInterface.register(SPY, sdpa_mask)  # padded and packed rows get SDPA's masks, as "sdpa" does


@pytest.fixture
def spy(monkeypatch):
    """Clears the records and notes the is_causal of every SDPA call (sdpa_attention_forward looks the function up)."""
    sdpa = F.scaled_dot_product_attention

    def noting_sdpa(*args, is_causal=False, attn_mask=None, **kwargs):
        seen_is_causal.append(is_causal)
        return sdpa(*args, is_causal=is_causal, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", noting_sdpa)
    for records in (seen_masks, seen_is_causal, seen_kwargs):
        records.clear()
    yield
    for records in (seen_masks, seen_is_causal, seen_kwargs):
        records.clear()


def ids_and_padding(seed=0, batch=2, length=12, vocab=50257):
    ids = torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding
    return ids, mask


def packed_row(lengths, vocab=50257, seed=0):
    """Several texts in one row with position_ids restarting at 0 for each, as DataCollatorWithFlattening gives."""
    texts = [
        torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed + i)).tolist()
        for i, n in enumerate(lengths)
    ]
    return texts, DataCollatorWithFlattening()([{"input_ids": t, "labels": t} for t in texts])


# ---------------------------------------------------------------------------------------------------------------
# set_attn_implementation


# flex compiles its kernel with inductor: ~25 s on an idle CPU core, hence slow
@pytest.mark.parametrize(
    "implementation", ["eager", "sdpa", SPY, pytest.param("flex_attention", marks=pytest.mark.slow)]
)
def test_set_attn_implementation_switches_and_matches_gpt2(make_pair, implementation, one_thread):
    ref, ours = make_pair("eager")
    if implementation == "eager":
        ours.set_attn_implementation("sdpa")  # so that switching to eager is a real switch
    if implementation == "flex_attention":
        try:  # flex attention compiles a kernel: needs torch's inductor (and a C++ compiler on CPU)
            ours.set_attn_implementation(implementation)
            with torch.no_grad():  # flex has no backward on CPU
                ours(torch.zeros(1, 2, dtype=torch.long))
        except Exception as error:  # noqa: BLE001 - any reason the backend can't run here
            pytest.skip(f"flex_attention does not run here: {type(error).__name__}: {error}")
    ours.set_attn_implementation(implementation)
    # transformers only warns when it refuses: the switch must really be made
    assert ours.config._attn_implementation == implementation
    assert ours.transformer.config._attn_implementation == implementation
    ids, mask = ids_and_padding()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, ref(ids).logits, rtol=0, atol=1e-5)
        real = mask.bool()  # padded positions' logits are unspecified
        got, want = ours(ids, attention_mask=mask).logits[real], ref(ids, attention_mask=mask).logits[real]
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# no mask, is_causal=True, whenever there is no padding


def spy_model(seed=0):
    torch.manual_seed(seed)
    config = EmbGPTConfig.from_preset("tiny", vocab_size=512, bos_token_id=511, eos_token_id=511)
    model = EmbGPTForCausalLM(config)
    model.set_attn_implementation(SPY)
    assert model.config._attn_implementation == SPY
    return model


@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
@pytest.mark.parametrize("all_ones_mask", [False, True], ids=["no-mask", "all-ones-mask"])
def test_unpadded_inputs_reach_attention_without_mask_and_sdpa_runs_causal(spy, training, all_ones_mask, one_thread):
    model = spy_model().train(training)
    ids, _ = ids_and_padding(vocab=512)
    mask = torch.ones_like(ids) if all_ones_mask else None
    with torch.set_grad_enabled(training):
        out = model(ids, attention_mask=mask, labels=ids if training else None)
    if training:
        out.loss.backward()
    assert seen_masks == ["none"] * model.config.n_layer
    assert seen_is_causal == [True] * model.config.n_layer


@pytest.mark.parametrize("case", ["padded", "packed"])
def test_padded_and_packed_inputs_reach_attention_with_a_mask(spy, case, one_thread):
    model = spy_model().eval()
    if case == "padded":
        ids, mask = ids_and_padding(vocab=512)
        model(ids, attention_mask=mask)
    else:
        _, batch = packed_row([5, 7], vocab=512)
        model(batch["input_ids"], position_ids=batch["position_ids"])
    assert seen_masks == ["mask"] * model.config.n_layer
    assert seen_is_causal == [False] * model.config.n_layer


def test_cached_decoding_with_prefix_gets_the_mask_it_needs(spy, one_thread):
    """A multi-token step after cached tokens can't use SDPA's top-left is_causal: it must get a mask."""
    model = spy_model().eval()
    ids, _ = ids_and_padding(vocab=512)
    out = model(ids[:, :8], use_cache=True)
    cache = out.cache if hasattr(out, "cache") else out.past_key_values
    seen_masks.clear()
    with_cache = model(ids[:, 8:], past_key_values=cache).logits
    assert seen_masks == ["mask"] * model.config.n_layer
    torch.testing.assert_close(with_cache, model(ids).logits[:, 8:], rtol=0, atol=1e-5)


@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_compiled_unpadded_inputs_reach_attention_without_mask_and_sdpa_runs_causal(spy, training, one_thread):
    torch._dynamo.reset()
    model = spy_model().train(training)
    # aot_eager traces forward (and backward) as inductor would, fullgraph, without the C++ build
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    ids, mask = ids_and_padding(vocab=512)
    with torch.set_grad_enabled(training):
        out = compiled(ids, labels=ids)
    if training:
        out.loss.backward()
    assert seen_masks == ["none"] * model.config.n_layer
    assert seen_is_causal == [True] * model.config.n_layer
    # a padded batch under compile keeps its mask, and the compiled model computes what eager computes
    seen_masks.clear()
    seen_is_causal.clear()
    with torch.no_grad():
        got = compiled(ids, attention_mask=mask).logits
    assert seen_masks == ["mask"] * model.config.n_layer
    assert seen_is_causal == [False] * model.config.n_layer
    with torch.no_grad():
        torch.testing.assert_close(got, model(ids, attention_mask=mask).logits, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# packed (padding-free) rows


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_packed_row_logits_match_gpt2(make_pair, attn_implementation, one_thread):
    ref, ours = make_pair(attn_implementation)
    texts, batch = packed_row([5, 9, 4])
    kwargs = dict(position_ids=batch["position_ids"], use_cache=False)  # transformers detects packing without a cache
    with torch.no_grad():
        got = ours(batch["input_ids"], **kwargs).logits
        torch.testing.assert_close(got, ref(batch["input_ids"], **kwargs).logits, rtol=0, atol=1e-5)
        start = 0
        for text in texts:  # each text sees only itself: its logits alone
            alone = ours(torch.tensor([text])).logits[0]
            torch.testing.assert_close(got[0, start : start + len(text)], alone, rtol=0, atol=1e-5)
            start += len(text)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_packed_row_longer_than_block_size_has_the_loss_of_padded_rows(make_pair, attn_implementation, one_thread):
    _, model = make_pair(attn_implementation)
    lengths = [100, 60, 90]  # 250 tokens in one row; block_size is 128
    texts, packed = packed_row(lengths)
    assert packed["input_ids"].shape[1] > model.config.block_size
    padded_ids = torch.zeros(len(texts), max(lengths), dtype=torch.long)
    padded_mask = torch.zeros_like(padded_ids)
    for i, text in enumerate(texts):
        padded_ids[i, : len(text)] = torch.tensor(text)
        padded_mask[i, : len(text)] = 1
    padded_labels = padded_ids.masked_fill(padded_mask == 0, -100)
    with torch.no_grad():
        packed_loss = model(**packed).loss  # eval mode: the empty cache must not hide the packing
        padded_loss = model(padded_ids, attention_mask=padded_mask, labels=padded_labels).loss
    torch.testing.assert_close(packed_loss, padded_loss, rtol=0, atol=1e-5)


def test_flash_attention_kwargs_of_packed_rows_reach_the_attention_function_as_in_llama(spy, one_thread):
    """DataCollatorWithFlattening(return_flash_attn_kwargs=True) gives cu_seq_lens/max_length for flash attention's
    varlen kernel: every layer must hand them to the attention function, as Llama's layers do."""
    from transformers import LlamaConfig, LlamaForCausalLM

    texts, _ = packed_row([5, 9, 4], vocab=512)
    batch = DataCollatorWithFlattening(return_flash_attn_kwargs=True)([{"input_ids": t, "labels": t} for t in texts])
    flash_kwargs = sorted(k for k in batch if k.startswith(("cu_seq_lens", "max_length")))
    assert flash_kwargs  # the collator gives them
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2))  # fmt: skip
    for model in (llama, spy_model()):
        model.set_attn_implementation(SPY)
        seen_kwargs.clear()
        with torch.no_grad():
            model(**batch)
        assert len(seen_kwargs) == model.config.num_hidden_layers
        assert all(set(flash_kwargs) <= set(names) for names in seen_kwargs), (type(model).__name__, seen_kwargs)


def test_packed_position_beyond_block_size_is_named(tiny_config):
    model = EmbGPTForCausalLM(tiny_config)
    positions = torch.cat([torch.arange(100), torch.arange(129)])[None]
    with pytest.raises(ValueError, match="position_ids has value 128, which is out of range for block_size 128"):
        model(torch.zeros_like(positions), position_ids=positions)


def test_trl_sft_trainer_with_packing_trains(tmp_path, one_thread):
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    torch.manual_seed(0)
    vocab = 64
    config = EmbGPTConfig.from_preset("tiny", vocab_size=vocab, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    model = EmbGPTForCausalLM(config)
    rows = torch.randint(3, vocab, (24, 40), generator=torch.Generator().manual_seed(1))
    lengths = torch.randint(8, 40, (24,), generator=torch.Generator().manual_seed(2))
    # the same short text over and over (with varied lengths) so that six steps visibly learn it
    pattern = rows[0].tolist()
    texts = [[0, *pattern[: int(n)], 1] for n in lengths]
    dataset = datasets.Dataset.from_dict({"input_ids": texts})
    args = trl.SFTConfig(
        output_dir=str(tmp_path),
        packing=True,
        max_length=160,  # rows of up to 160 tokens: longer than block_size 128, each text far shorter
        per_device_train_batch_size=2,
        max_steps=6,
        learning_rate=3e-3,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    words = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t3"))  # the data is token ids
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=words, bos_token="t0", eos_token="t1", pad_token="t2", unk_token="t3"
    )
    trainer = trl.SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))  # padding-free: one row of texts, positions restarting at 0
    assert batch["input_ids"].shape == (1, batch["position_ids"].shape[1])
    assert batch["input_ids"].shape[1] > config.block_size and int(batch["position_ids"].max()) < config.block_size
    assert "attention_mask" not in batch
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 6
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 0.5, losses
