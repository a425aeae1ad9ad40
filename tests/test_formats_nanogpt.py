"""nanoGPT ckpt.pt: checked against nanoGPT's own model.py architecture, written out below."""

import math
import os
import re
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from conftest import assert_same_tensors, random_state_dict
from hf_embgpt import EmbGPTConfig, EmbGPTForCausalLM
from hf_embgpt.formats.nanogpt import read_nanogpt, write_nanogpt
from hf_embgpt.formats.registry import read_checkpoint

# ---- nanoGPT's model.py (karpathy/nanoGPT), trimmed to what a forward pass needs ---------------------------------


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True


class LayerNorm(nn.Module):
    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.n_head, self.n_embd = config.n_head, config.n_embd

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1, self.attn = LayerNorm(config.n_embd, config.bias), CausalSelfAttention(config)
        self.ln_2, self.mlp = LayerNorm(config.n_embd, config.bias), MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight
        for name, p in self.named_parameters():  # nanoGPT's init, so the weights are not trivial
            nn.init.normal_(p, std=0.02 / math.sqrt(2 * config.n_layer) if name.endswith("c_proj.weight") else 0.02)

    def forward(self, idx):
        pos = torch.arange(idx.size(1), dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))


def load_like_sample_py(path):
    """nanoGPT's sample.py: GPT(GPTConfig(**model_args)), strip `_orig_mod.`, load_state_dict."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = GPT(GPTConfig(**checkpoint["model_args"]))
    state_dict = {k.removeprefix("_orig_mod."): v for k, v in checkpoint["model"].items()}
    model.load_state_dict(state_dict)
    return model.eval()


def save_like_train_py(model, model_args, path, compiled=True):
    """nanoGPT's train.py checkpoint: the (compiled) model's state dict, optimizer state and bookkeeping."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model(torch.zeros(1, 4, dtype=torch.long)).sum().backward()
    optimizer.step()  # the checkpoint then carries real optimizer state, as it does after training
    optimizer.zero_grad()
    state = (torch.compile(model) if compiled else model).state_dict()  # compiled: keys gain `_orig_mod.`
    checkpoint = {
        "model": state,
        "optimizer": optimizer.state_dict(),
        "model_args": model_args,
        "iter_num": 5000,
        "best_val_loss": torch.tensor(1.4697),
        "config": {"dataset": "shakespeare_char", "learning_rate": 1e-3, "compile": compiled},
    }
    torch.save(checkpoint, path)


ARGS = dict(n_layer=2, n_head=4, n_embd=64, block_size=64, vocab_size=320, dropout=0.0)

# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.compile's import touches torch.jit
@pytest.mark.parametrize("bias", [True, False])
def test_nanogpt_checkpoint_imports_with_identical_logits(tmp_path, bias):
    torch.manual_seed(0)
    args = {**ARGS, "bias": bias}
    ref = GPT(GPTConfig(**args))
    save_like_train_py(ref, args, tmp_path / "ckpt.pt")
    assert any(k.startswith("_orig_mod.") for k in torch.load(tmp_path / "ckpt.pt", weights_only=True)["model"])
    model, fmt = read_checkpoint(tmp_path)  # nanoGPT's out_dir
    assert fmt == "nanogpt" and model.config.activation_function == "gelu" and model.config.bias is bias
    assert model.config.vocab_size == 320  # the padded vocabulary is kept by default
    x = torch.randint(0, 320, (2, 33))
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, ref.eval()(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_exported_checkpoint_loads_into_nanogpt(tmp_path, bias):
    torch.manual_seed(1)
    model = EmbGPTForCausalLM(
        EmbGPTConfig(**{**ARGS, "bias": bias}, activation_function="gelu", bos_token_id=None, eos_token_id=None)
    ).eval()
    write_nanogpt(model.config, model.state_dict(), tmp_path / "ckpt.pt")
    ref = load_like_sample_py(tmp_path / "ckpt.pt")
    x = torch.randint(0, 320, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(ref(x), model(x).logits, rtol=0, atol=1e-5)
    config, state_dict = read_nanogpt(tmp_path / "ckpt.pt")
    assert config.to_diff_dict() == model.config.to_diff_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(state_dict[name], tensor), name


def test_vocab_slicing_drops_padding_rows(tmp_path):
    torch.manual_seed(0)
    args = {**ARGS, "bias": True}
    ref = GPT(GPTConfig(**args)).eval()
    save_like_train_py(ref, args, tmp_path / "ckpt.pt", compiled=False)
    config, state_dict = read_nanogpt(tmp_path / "ckpt.pt", vocab_size=300)
    assert config.vocab_size == 300 and state_dict["transformer.wte.weight"].shape == (300, 64)
    model, _ = read_checkpoint(tmp_path / "ckpt.pt")
    x = torch.randint(0, 300, (1, 20))
    with torch.no_grad():
        full = model(x).logits
    from hf_embgpt.formats.common import model_from_state_dict

    sliced = model_from_state_dict(config, state_dict)
    with torch.no_grad():
        assert torch.equal(sliced(x).logits, full[..., :300])
    with pytest.raises(
        ValueError, match=rf"^{re.escape(str(tmp_path / 'ckpt.pt'))}: vocab_size 400 must be an integer in \[1, 320\]"
    ):
        read_nanogpt(tmp_path / "ckpt.pt", vocab_size=400)


def test_gelu_new_model_round_trips_its_activation(tmp_path, caplog):
    model = EmbGPTForCausalLM(EmbGPTConfig.from_preset("tiny")).eval()
    with caplog.at_level("WARNING"):
        write_nanogpt(model.config, model.state_dict(), tmp_path / "ckpt.pt")
    assert "nanoGPT's model.py computes the exact GELU; this model uses 'gelu_new', so nanoGPT's logits" in caplog.text
    assert "LayerNorm" not in caplog.text
    config, _ = read_nanogpt(tmp_path / "ckpt.pt")
    assert config.activation_function == "gelu_new"


def test_other_layer_norm_eps_is_named_and_round_trips(tmp_path, caplog):
    config = EmbGPTConfig(**{**ARGS, "bias": True}, activation_function="gelu", layer_norm_epsilon=1e-6)
    model = EmbGPTForCausalLM(config)
    with caplog.at_level("WARNING"):
        write_nanogpt(config, model.state_dict(), tmp_path / "ckpt.pt")
    assert "nanoGPT's LayerNorm uses eps 1e-5; this model uses 1e-06" in caplog.text and "GELU" not in caplog.text
    assert read_nanogpt(tmp_path / "ckpt.pt")[0].layer_norm_epsilon == 1e-6


def test_exported_checkpoint_has_train_pys_keys_for_a_fresh_resume(tmp_path, caplog):
    """nanoGPT's train.py (init_from='resume') reads iter_num, best_val_loss and config: an export starts over."""
    model = EmbGPTForCausalLM(EmbGPTConfig(**{**ARGS, "bias": True}, activation_function="gelu"))
    with caplog.at_level("INFO", logger="hf_embgpt.formats.nanogpt"):
        write_nanogpt(model.config, model.state_dict(), tmp_path)  # a folder gets ckpt.pt, as train.py's out_dir
    assert f"wrote {tmp_path / 'ckpt.pt'} (nanoGPT)" in caplog.text
    checkpoint = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert {"model", "model_args", "iter_num", "best_val_loss", "config"} <= set(checkpoint)
    assert (checkpoint["iter_num"], checkpoint["best_val_loss"], checkpoint["config"]) == (0, float("inf"), {})


class NotAllowed:
    pass


def test_bad_checkpoints_name_file_and_problem(tmp_path):
    model = EmbGPTForCausalLM(EmbGPTConfig.from_preset("tiny")).eval()
    good = tmp_path / "good.pt"
    write_nanogpt(model.config, model.state_dict(), good)
    checkpoint = torch.load(good, weights_only=True)

    cases = {
        "no_args.pt": (
            {"model": checkpoint["model"]},
            "has no 'model_args', so it is not a nanoGPT checkpoint (found ['model'])",
        ),
        "tensor.pt": (torch.zeros(2), "has no 'model_args', so it is not a nanoGPT checkpoint (found Tensor)"),
        "few_args.pt": (  # in nanoGPT's train.py order
            {**checkpoint, "model_args": {"n_layer": 2}},
            "model_args is missing n_head, n_embd, block_size, bias, vocab_size, dropout",
        ),
        "odd_heads.pt": (
            {**checkpoint, "model_args": {**checkpoint["model_args"], "n_head": 3}},
            "model_args describe an impossible model: ",
        ),
        "no_model.pt": ({"model_args": checkpoint["model_args"]}, "no 'model' state dict"),
        "missing.pt": (
            {**checkpoint, "model": {k: v for k, v in checkpoint["model"].items() if "h.1.ln_2.bias" not in k}},
            "missing transformer.h.1.ln_2.bias",
        ),
        "shape.pt": (
            {**checkpoint, "model_args": {**checkpoint["model_args"], "n_embd": 32}},
            "shaped unlike the config",
        ),
        "head.pt": (
            {
                **checkpoint,
                "model": {**checkpoint["model"], "lm_head.weight": checkpoint["model"]["lm_head.weight"] + 1},
            },
            "lm_head.weight differs",
        ),
        # weights_only refuses it, and the message says so (naming the class) without torch's advice to pass
        # weights_only=False
        "pickle.pt": (
            {"model_args": NotAllowed()},
            f"objects other than tensors and plain containers ({__name__}.NotAllowed); it is refused",
        ),
    }
    for name, (content, message) in cases.items():
        torch.save(content, tmp_path / name)
        with pytest.raises(ValueError, match=re.escape(message)) as info:
            read_nanogpt(tmp_path / name)
        assert name in str(info.value), name
        assert "weights_only" not in str(info.value), name

    (tmp_path / "truncated.pt").write_bytes(good.read_bytes()[:-300])
    with pytest.raises(ValueError, match="truncated or corrupt") as info:
        read_nanogpt(tmp_path / "truncated.pt")
    try:  # the reason is torch's own, first line
        torch.load(tmp_path / "truncated.pt", weights_only=True)
    except RuntimeError as error:
        torch_says = str(error).strip().splitlines()[0]
    assert (
        str(info.value)
        == f"{tmp_path / 'truncated.pt'} is not a readable torch checkpoint (truncated or corrupt?): {torch_says}"
    )
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")  # neither a zip nor a pickle: corrupt, not hostile
    with pytest.raises(ValueError, match="garbage.pt is not a readable torch checkpoint") as info:
        read_nanogpt(tmp_path / "garbage.pt")
    assert "weights_only" not in str(info.value) and "other than tensors" not in str(info.value)
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        read_nanogpt(tmp_path / "nowhere.pt")


def test_failed_write_leaves_destination_untouched(tmp_path):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"previous")
    model = EmbGPTForCausalLM(EmbGPTConfig.from_preset("tiny"))
    broken = {k: v for k, v in model.state_dict().items() if k != "transformer.wpe.weight"}
    with pytest.raises(ValueError, match="^model: checkpoint is missing transformer.wpe.weight$"):
        write_nanogpt(model.config, broken, path)
    assert path.read_bytes() == b"previous" and os.listdir(tmp_path) == ["ckpt.pt"]


@pytest.mark.slow
def test_124m_round_trip(tmp_path):
    config = EmbGPTConfig.from_preset("gpt2", vocab_size=50304, bias=False, activation_function="gelu")
    state_dict = random_state_dict(config)
    write_nanogpt(config, state_dict, tmp_path / "ckpt.pt")
    back_config, back = read_nanogpt(tmp_path / "ckpt.pt")
    assert back_config.to_diff_dict() == config.to_diff_dict()
    assert_same_tensors(back, state_dict)
