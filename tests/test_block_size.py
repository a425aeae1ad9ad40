"""crop_block_size / extend_block_size: exact logits where rows are kept, documented row placement, reload, training,
and the `embgpt block-size` command."""

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache, GPT2LMHeadModel

import hf_embgpt
from hf_embgpt.block_size import crop_block_size, extend_block_size, extended_wpe, main
from hf_embgpt.formats.gpt2 import gpt2_config_from
from hf_embgpt.inspection import load_tokenizer

SMALL = dict(vocab_size=97, block_size=16, bos_token_id=None, eos_token_id=None)  # GPT-2's 50256 is out of range


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(seed=0):
    torch.manual_seed(seed)
    config = hf_embgpt.EmbGPTConfig.from_preset("tiny", **SMALL)
    return hf_embgpt.EmbGPTForCausalLM(config).eval()


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_crop_keeps_logits_on_short_inputs_exactly():
    model = tiny_model()
    ids = torch.randint(0, 97, (2, 10))
    before = logits(model, ids)
    wpe = model.transformer.wpe.weight.detach().clone()
    assert crop_block_size(model, 10) is model
    assert model.config.block_size == model.config.max_position_embeddings == 10
    assert model.transformer.wpe.num_embeddings == 10
    torch.testing.assert_close(model.transformer.wpe.weight, wpe[:10], rtol=0, atol=0)
    torch.testing.assert_close(logits(model, ids), before, rtol=0, atol=0)
    with pytest.raises(ValueError, match="length 11 .*block_size is 10"):
        model(torch.randint(0, 97, (1, 11)))


def test_crop_lowers_generation_max_length():
    model = tiny_model()
    model.generation_config.max_length = 14
    crop_block_size(model, 12)
    assert model.generation_config.max_length == 12
    model.generation_config.max_length = 5
    crop_block_size(model, 8)
    assert model.generation_config.max_length == 5  # already fits: left alone


@pytest.mark.parametrize("method", ["copy", "tile"])
def test_extend_copy_and_tile_keep_rows_and_logits(method):
    model = tiny_model()
    model.generation_config.max_length = 16  # the whole context: follows the block size
    ids = torch.randint(0, 97, (2, 16))
    before = logits(model, ids)
    wpe = model.transformer.wpe.weight.detach().clone()
    extend_block_size(model, 40, method=method)
    new = model.transformer.wpe.weight.detach()
    assert new.shape == (40, 64) and model.config.block_size == 40
    assert model.generation_config.max_length == 40
    torch.testing.assert_close(new[:16], wpe, rtol=0, atol=0)
    for p in range(16, 40):
        expected = wpe[15] if method == "copy" else wpe[p % 16]
        torch.testing.assert_close(new[p], expected, rtol=0, atol=0)
    torch.testing.assert_close(logits(model, ids), before, rtol=0, atol=0)
    assert logits(model, torch.randint(0, 97, (1, 40))).shape == (1, 40, 97)


def test_extend_interpolate_places_rows_align_corners_style():
    torch.manual_seed(0)
    old, n = 16, 46  # n - 1 = 3 * (old - 1): old row i lands exactly on new position 3 * i
    weight = torch.randn(old, 8)
    new = extended_wpe(weight, n, "interpolate")
    assert new.shape == (n, 8)
    for i in range(old):
        torch.testing.assert_close(new[3 * i], weight[i])
    # every row against the definition: read the old table at j * (old-1) / (n-1), linearly between neighbours
    for j in range(n):
        x = j * (old - 1) / (n - 1)
        lo = min(int(x), old - 2)
        w = x - lo
        torch.testing.assert_close(new[j], (1 - w) * weight[lo] + w * weight[lo + 1])
    # a one-row table can only be repeated
    torch.testing.assert_close(extended_wpe(weight[:1], 5, "interpolate"), weight[:1].expand(5, -1))
    # any n keeps the end points exactly
    odd = extended_wpe(weight, 37, "interpolate")
    torch.testing.assert_close(odd[0], weight[0], rtol=0, atol=0)
    torch.testing.assert_close(odd[-1], weight[-1])


def test_extend_interpolate_in_bfloat16_keeps_dtype():
    weight = torch.randn(8, 4).to(torch.bfloat16)
    new = extended_wpe(weight, 15, "interpolate")
    assert new.dtype == torch.bfloat16
    torch.testing.assert_close(new[::2], weight)


def test_extended_model_saves_reloads_and_trains(tmp_path):
    model = tiny_model()
    extend_block_size(model, 31, method="interpolate")
    model.save_pretrained(tmp_path / "extended")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "extended").eval()
    assert reloaded.config.block_size == 31
    ids = torch.randint(0, 97, (2, 31))
    torch.testing.assert_close(logits(reloaded, ids), logits(model, ids), rtol=0, atol=0)

    reloaded.train()
    optimizer = torch.optim.AdamW(reloaded.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = reloaded(ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        assert (
            reloaded.transformer.wpe.weight.grad[29].abs().sum() > 0
        )  # new positions learn (30, the last, has no label)
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_extend_to_same_size_is_a_no_op():
    model = tiny_model()
    wpe = model.transformer.wpe
    assert extend_block_size(model, 16) is model and model.transformer.wpe is wpe


def test_works_on_base_model_and_keeps_requires_grad():
    torch.manual_seed(0)
    base = hf_embgpt.EmbGPTModel(hf_embgpt.EmbGPTConfig.from_preset("tiny", **SMALL))
    base.wpe.weight.requires_grad_(False)
    extend_block_size(base, 20, method="copy")
    assert base.config.block_size == 20 and not base.wpe.weight.requires_grad
    crop_block_size(base, 4)
    assert base.config.block_size == 4 and base.wpe.weight.shape == (4, 64)


@pytest.mark.parametrize("bad", [0, -3])
def test_non_positive_sizes_are_refused(bad):
    with pytest.raises(ValueError, match=f"positive integer, got {bad}"):
        crop_block_size(tiny_model(), bad)
    with pytest.raises(ValueError, match=f"positive integer, got {bad}"):
        extend_block_size(tiny_model(), bad)


def test_wrong_types_are_refused():
    with pytest.raises(TypeError, match="integer, got 8.0"):
        crop_block_size(tiny_model(), 8.0)
    with pytest.raises(TypeError, match="integer, got True"):
        extend_block_size(tiny_model(), True)
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(gpt2_config_from(tiny_model().config))
    with pytest.raises(TypeError, match="EmbGPT model .*GPT2LMHeadModel"):
        crop_block_size(gpt2, 8)


def test_direction_and_method_errors():
    with pytest.raises(ValueError, match="crop block_size 16 to 20.*extend_block_size"):
        crop_block_size(tiny_model(), 20)
    with pytest.raises(ValueError, match="extend block_size 16 to 8.*crop_block_size"):
        extend_block_size(tiny_model(), 8)
    with pytest.raises(ValueError, match="unknown extension method 'cubic'.*interpolate, copy, tile"):
        extend_block_size(tiny_model(), 32, method="cubic")


def test_crop_below_cache_in_use_is_refused():
    model = tiny_model()
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(torch.randint(0, 97, (1, 12)), cache=cache, use_cache=True)
    assert cache.get_seq_length() == 12
    with pytest.raises(ValueError, match="crop block_size to 8: the cache in use holds 12 positions"):
        crop_block_size(model, 8, cache=cache)
    assert model.config.block_size == 16  # unchanged on error
    crop_block_size(model, 12, cache=cache)
    assert model.config.block_size == 12
    with pytest.raises(TypeError, match="cache must be a transformers Cache .*got tuple"):
        crop_block_size(model, 12, cache=((torch.zeros(1, 4, 12, 16), torch.zeros(1, 4, 12, 16)),))


def test_cli_crops_and_extends_a_gpt2_folder(gpt2_dir, gpt2_tokenizer, tmp_path, capsys):
    gpt2_tokenizer.save_pretrained(gpt2_dir)
    original = hf_embgpt.EmbGPTForCausalLM.from_pretrained(gpt2_dir).eval()
    ids = torch.randint(0, 1000, (1, 20))

    assert main([gpt2_dir, str(tmp_path / "cropped"), "--crop", "32"]) == 0
    assert "block_size 128 -> 32" in capsys.readouterr().out
    cropped = AutoModelForCausalLM.from_pretrained(tmp_path / "cropped").eval()
    assert cropped.config.block_size == 32
    torch.testing.assert_close(logits(cropped, ids), logits(original, ids), rtol=0, atol=0)
    assert load_tokenizer(str(tmp_path / "cropped")).model_max_length == 32

    assert main([gpt2_dir, str(tmp_path / "extended"), "--extend", "200", "--method", "tile"]) == 0
    extended = AutoModelForCausalLM.from_pretrained(tmp_path / "extended").eval()
    assert extended.config.block_size == 200
    torch.testing.assert_close(logits(extended, ids), logits(original, ids), rtol=0, atol=0)


def test_cli_needs_exactly_one_of_crop_and_extend(gpt2_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([gpt2_dir, str(tmp_path / "out")])
    assert "one of the arguments --crop --extend is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([gpt2_dir, str(tmp_path / "out"), "--crop", "8", "--extend", "300"])
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(ValueError, match="positive integer, got 0"):
        main([gpt2_dir, str(tmp_path / "out"), "--crop", "0"])
