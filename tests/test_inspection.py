"""Inspection of wte / wpe: numbers against direct torch computations on planted embeddings, the report folder,
`embgpt inspect`, and the wpe heatmap Trainer callback."""

import json
import os

import matplotlib.image
import pytest
import torch
from torch.nn import functional as F
from transformers import GPT2LMHeadModel, Trainer, TrainingArguments

import hf_embgpt
from hf_embgpt import inspection
from hf_embgpt.embeddings import (
    FIGURES,
    cosine_similarity_matrix,
    embedding_tables,
    frequent_token_ids,
    head_tying,
    nearest_neighbours,
    parameter_shares,
    pca,
    resolve_query,
    similarity_by_offset,
)
from hf_embgpt.formats.gpt2 import gpt2_config_from
from hf_embgpt.inspection import write_report
from hf_embgpt.training.callbacks import WpeHeatmapCallback

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(seed=0, vocab_size=97, block_size=32):
    torch.manual_seed(seed)
    config = hf_embgpt.EmbGPTConfig.from_preset(
        "tiny", vocab_size=vocab_size, block_size=block_size, bos_token_id=None, eos_token_id=None
    )
    return hf_embgpt.EmbGPTForCausalLM(config).eval()


def planted_model():
    """Token 10 is token 20 scaled (cosine 1.0); wpe is smooth waves over position plus a little noise."""
    model = tiny_model()
    wte, wpe = model.transformer.wte.weight, model.transformer.wpe.weight
    with torch.no_grad():
        wte[10] = 2.5 * wte[20]
        t = torch.arange(32.0)[:, None]
        waves = torch.cat([torch.cos(t * torch.pi / 32 * (f + 1)) for f in range(4)], dim=1)  # (32, 4)
        wpe.copy_(waves @ torch.randn(4, 64) + 0.01 * torch.randn(32, 64))
    return model


def assert_png(path, width, height):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    assert matplotlib.image.imread(path).shape[:2] == (height, width)


def test_planted_neighbour_has_similarity_one_and_matches_torch():
    wte, _ = embedding_tables(planted_model())
    found = nearest_neighbours(wte, 20, k=5)
    assert found[0][0] == 10 and found[0][1] == pytest.approx(1.0, abs=1e-6)
    direct = F.cosine_similarity(wte[20][None], wte, dim=1)
    direct[20] = -2  # the query itself is skipped
    values, indices = direct.topk(5)
    assert [i for i, _ in found] == indices.tolist()
    torch.testing.assert_close(torch.tensor([s for _, s in found]), values)


def test_neighbours_of_several_ids_use_their_mean_and_skip_them():
    wte, _ = embedding_tables(tiny_model())
    found = nearest_neighbours(wte, [3, 4], k=4, exclude=[7])
    direct = F.cosine_similarity(((wte[3] + wte[4]) / 2)[None], wte, dim=1)
    direct[[3, 4, 7]] = -2
    values, indices = direct.topk(4)
    assert [i for i, _ in found] == indices.tolist()
    torch.testing.assert_close(torch.tensor([s for _, s in found]), values)


def test_wpe_similarity_is_symmetric_with_unit_diagonal_and_matches_torch():
    _, wpe = embedding_tables(planted_model())
    similarity = cosine_similarity_matrix(wpe)
    torch.testing.assert_close(similarity, similarity.t())
    torch.testing.assert_close(similarity.diagonal(), torch.ones(32))
    direct = F.cosine_similarity(wpe[:, None, :], wpe[None, :, :], dim=-1)
    torch.testing.assert_close(similarity, direct)
    by_offset = similarity_by_offset(similarity)
    for d in (0, 1, 5, 31):
        expected = torch.stack([direct[i, i + d] for i in range(32 - d)]).mean()
        torch.testing.assert_close(by_offset[d], expected)


def test_pca_matches_covariance_eigenvalues():
    _, wpe = embedding_tables(planted_model())
    result = pca(wpe, k=5)
    variance = result["explained_variance"]
    assert (variance[:-1] >= variance[1:]).all()
    eigenvalues = torch.linalg.eigvalsh(torch.cov(wpe.t().double())).flip(0).float()
    torch.testing.assert_close(variance, eigenvalues[:5], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        result["explained_variance_ratio"], eigenvalues[:5] / eigenvalues.sum(), rtol=1e-4, atol=1e-6
    )
    # the projection's per-component variance is the explained variance; components are orthonormal
    torch.testing.assert_close(result["projection"].var(dim=0), variance, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(result["components"] @ result["components"].t(), torch.eye(5), atol=1e-5, rtol=0)
    assert result["explained_variance_ratio"][:4].sum() > 0.99  # four planted waves


def test_head_tying_and_parameter_shares():
    model = tiny_model()
    assert head_tying(model) == "tied"
    unique = {p.data_ptr(): p.numel() for p in model.parameters()}
    shares = parameter_shares(model)
    assert shares["total"] == sum(unique.values())
    assert shares["wte_share"] == pytest.approx(97 * 64 / sum(unique.values()))
    assert shares["wpe_share"] == pytest.approx(32 * 64 / sum(unique.values()))
    model.lm_head.weight = torch.nn.Parameter(model.transformer.wte.weight.detach().clone())
    assert head_tying(model) == "untied, equal values"
    with torch.no_grad():
        model.lm_head.weight[0, 0] += 1
    assert head_tying(model) == "untied"
    assert head_tying(model.transformer) == "no LM head"
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(gpt2_config_from(model.config))
    assert head_tying(gpt2) == "tied"
    torch.testing.assert_close(embedding_tables(gpt2)[1], gpt2.transformer.wpe.weight.detach())


def test_frequent_tokens_by_merge_rank_and_by_corpus(gpt2_tokenizer):
    ids, rule = frequent_token_ids(20, 50257, gpt2_tokenizer)
    assert "merge rank" in rule and len(ids) == 20 and ids == sorted(ids) and ids[0] >= 256
    for i in ids:
        text = gpt2_tokenizer.decode([i])
        assert text[0] == " " and text[1:].isalpha()
    corpus = " cat dog cat bird cat dog, 1 1 1 1 1"
    ids, rule = frequent_token_ids(3, 50257, gpt2_tokenizer, corpus=corpus)
    assert "corpus" in rule
    assert ids == [gpt2_tokenizer.encode(w)[0] for w in (" cat", " dog", " bird")]
    ids, rule = frequent_token_ids(5, 97)
    assert ids == [0, 1, 2, 3, 4] and "no tokenizer" in rule


def test_query_resolution(gpt2_tokenizer):
    assert resolve_query(" king", gpt2_tokenizer, 50257) == gpt2_tokenizer.encode(" king")
    assert resolve_query("#42", None, 97) == [42]
    assert resolve_query(7, None, 97) == [7]


def test_bad_inputs_are_refused(gpt2_tokenizer):
    with pytest.raises(ValueError, match="query 'king' is text but the model has no tokenizer"):
        resolve_query("king", None, 97)
    with pytest.raises(ValueError, match="query '#120' has token id 120.*vocab_size 97"):
        resolve_query("#120", None, 97)
    with pytest.raises(ValueError, match="query '' encodes to no tokens"):
        resolve_query("", gpt2_tokenizer, 50257)
    with pytest.raises(TypeError, match=r"a query is a token id .* got 1.5"):
        resolve_query(1.5, None, 97)
    wte, wpe = embedding_tables(tiny_model())
    with pytest.raises(ValueError, match="k .* positive integer, got 0"):
        nearest_neighbours(wte, 1, k=0)
    with pytest.raises(ValueError, match=r"at least 2 rows, got shape \(1, 64\)"):
        pca(wpe[:1])
    with pytest.raises(ValueError, match="number of tokens must be a positive integer, got -1"):
        frequent_token_ids(-1, 97)
    with pytest.raises(TypeError, match="Linear has no wte/wpe"):
        embedding_tables(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="every_n_steps must be a positive integer, got 0"):
        WpeHeatmapCallback(every_n_steps=0)


def test_report_folder_without_tokenizer(tmp_path):
    numbers = write_report(planted_model(), tmp_path / "report", queries=["#20", 5], k=3, n_tokens=30)
    for name, (width, height) in FIGURES.items():
        assert_png(tmp_path / "report" / name, width, height)
    with open(tmp_path / "report" / "report.json") as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(numbers))
    first = saved["wte"]["neighbours"][0]
    assert first["tokens"] == ["#20"] and first["neighbours"][0]["id"] == 10
    assert first["neighbours"][0]["similarity"] == pytest.approx(1.0, abs=1e-6)
    assert saved["model"]["lm_head"] == "tied" and saved["model"]["block_size"] == 32
    assert len(saved["wpe"]["norm_by_position"]) == 32 and saved["wpe"]["similarity_by_offset"][0] == pytest.approx(1)
    markdown = (tmp_path / "report" / "report.md").read_text()
    for name in FIGURES:
        assert f"]({name})" in markdown


def test_report_of_a_one_position_model_skips_the_pca_figures(tmp_path):
    numbers = write_report(tiny_model(block_size=1), tmp_path, n_tokens=1)
    assert numbers["figures"] == ["wpe_norms.png", "wpe_similarity.png", "wte_norms.png"]
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".png")) == numbers["figures"]
    markdown = (tmp_path / "report.md").read_text()
    assert "(wte PCA: not enough rows to plot)" in markdown and "](wpe_components.png)" not in markdown


def test_cli_on_gpt2_folder_with_tokenizer(gpt2_dir, gpt2_tokenizer, tmp_path, capsys):
    gpt2_tokenizer.save_pretrained(gpt2_dir)
    out = tmp_path / "inspect"
    assert inspection.main([gpt2_dir, "--out", str(out), "--tokens", " king", "Hello world", "-k", "3"]) == 0
    assert "report.md" in capsys.readouterr().out
    saved = json.loads((out / "report.json").read_text())
    king, hello = saved["wte"]["neighbours"]
    assert king["tokens"] == [" king"] and len(king["neighbours"]) == 3
    assert hello["tokens"] == ["Hello", " world"]
    model = hf_embgpt.EmbGPTForCausalLM.from_pretrained(gpt2_dir)
    wte = model.transformer.wte.weight.detach()
    top = F.cosine_similarity(wte[gpt2_tokenizer.encode(" king")], wte, dim=1)
    top[gpt2_tokenizer.encode(" king")] = -2
    assert [n["id"] for n in king["neighbours"]] == top.topk(3).indices.tolist()
    assert [n["token"] for n in king["neighbours"]] == [gpt2_tokenizer.decode([i]) for i in top.topk(3).indices]
    assert "merge rank" in saved["wte"]["pca_tokens"]["rule"]
    assert_png(out / "wte_pca.png", *FIGURES["wte_pca.png"])


def test_cli_errors(gpt2_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="corpus file .*missing.txt does not exist"):
        inspection.main([gpt2_dir, "--corpus", str(tmp_path / "missing.txt")])
    small = tmp_path / "small"
    tiny_model().save_pretrained(small)
    from conftest import build_gpt2_tokenizer_folder

    with pytest.raises(ValueError, match="tokenizer has 50257 tokens but the model's vocab_size is 97"):
        inspection.main([str(small), "--tokenizer", build_gpt2_tokenizer_folder(tmp_path / "tok")])


def test_wpe_heatmap_callback_saves_pngs_during_training(tmp_path):
    model = tiny_model().train()
    torch.manual_seed(0)
    data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 97, (8, 16))]
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=4,
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    callback = WpeHeatmapCallback(every_n_steps=2)
    before = model.transformer.wpe.weight.detach().clone()
    Trainer(model=model, args=args, train_dataset=data, callbacks=[callback]).train()
    folder = tmp_path / "run" / "wpe_similarity"
    assert sorted(os.listdir(folder)) == ["step-000002.png", "step-000004.png"]
    assert callback.saved == [str(folder / "step-000002.png"), str(folder / "step-000004.png")]
    for name in os.listdir(folder):
        assert_png(folder / name, *FIGURES["wpe_similarity.png"])
    assert not torch.equal(before, model.transformer.wpe.weight.detach())  # it did train
