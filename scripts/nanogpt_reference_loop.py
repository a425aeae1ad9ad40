"""nanoGPT's own model (its model.py, condensed: bias=False, exact GELU, its init) against EmbGPT, both trained by the
same nanoGPT-style loop on Shakespeare-char (nanoGPT's CPU recipe), with nanoGPT's estimate of the val loss.

This separates the model from the training path: `bench_shakespeare.py` trains EmbGPT through Trainer; this shows
where nanoGPT's model itself lands on this machine with the same seed. `GPT` is also the nanoGPT-architecture
reference that `gpu_check.py` times against EmbGPT (importing this module runs nothing).

    python scripts/nanogpt_reference_loop.py [nanogpt] [embgpt]    # ~70 s each on 2 cores
"""

import math
import os
import sys
import time

import torch
import torch.nn as nn
from torch.nn import functional as F

from hf_embgpt import EmbGPTConfig, EmbGPTForCausalLM

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "tinyshakespeare", "input.txt")


class LayerNorm(nn.Module):
    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class Attn(nn.Module):
    def __init__(s, C, nh, bias=False):
        super().__init__()
        s.c_attn = nn.Linear(C, 3 * C, bias=bias)
        s.c_proj = nn.Linear(C, C, bias=bias)
        s.nh = nh

    def forward(s, x):
        B, T, C = x.size()
        q, k, v = s.c_attn(x).split(C, dim=2)
        k = k.view(B, T, s.nh, C // s.nh).transpose(1, 2)
        q = q.view(B, T, s.nh, C // s.nh).transpose(1, 2)
        v = v.view(B, T, s.nh, C // s.nh).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return s.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(s, C, bias=False):
        super().__init__()
        s.c_fc = nn.Linear(C, 4 * C, bias=bias)
        s.gelu = nn.GELU()
        s.c_proj = nn.Linear(4 * C, C, bias=bias)

    def forward(s, x):
        return s.c_proj(s.gelu(s.c_fc(x)))


class Block(nn.Module):
    def __init__(s, C, nh, bias=False):
        super().__init__()
        s.ln_1 = LayerNorm(C, bias)
        s.attn = Attn(C, nh, bias)
        s.ln_2 = LayerNorm(C, bias)
        s.mlp = MLP(C, bias)

    def forward(s, x):
        x = x + s.attn(s.ln_1(x))
        return x + s.mlp(s.ln_2(x))


class GPT(nn.Module):
    """nanoGPT's GPT: vocabulary V, block size T, L layers of nh heads, width C; bias=False as nanoGPT's bench.py."""

    def __init__(s, V, T, L, nh, C, bias=False):
        super().__init__()
        s.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(V, C),
                wpe=nn.Embedding(T, C),
                h=nn.ModuleList([Block(C, nh, bias) for _ in range(L)]),
                ln_f=LayerNorm(C, bias),
            )
        )
        s.lm_head = nn.Linear(C, V, bias=False)
        s.transformer.wte.weight = s.lm_head.weight
        s.apply(s._init_weights)
        for pn, p in s.named_parameters():
            if pn.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * L))

    def _init_weights(s, m):
        if isinstance(m, nn.Linear):
            torch.nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            torch.nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(s, idx, targets=None):
        pos = torch.arange(idx.size(1), device=idx.device)
        x = s.transformer.wte(idx) + s.transformer.wpe(pos)
        for b in s.transformer.h:
            x = b(x)
        logits = s.lm_head(s.transformer.ln_f(x))
        if targets is None:
            return logits
        # nanoGPT's loss: cross-entropy over every position (autocast computes it in fp32)
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)


def get_lr(it):
    if it < 100:
        return 1e-3 * (it + 1) / 101
    r = (it - 100) / (2000 - 100)
    return 1e-4 + 0.5 * (1.0 + math.cos(math.pi * r)) * (1e-3 - 1e-4)


def load_shakespeare():
    """Shakespeare-char as nanoGPT's prepare.py splits it: (train, val) id tensors, 90% / 10%."""
    text = open(os.path.normpath(DATA)).read()
    stoi = {c: i for i, c in enumerate(sorted(set(text)))}
    data = torch.tensor([stoi[c] for c in text])
    n = int(0.9 * len(data))
    return data[:n], data[n:]


def run(kind, train, val, seed=1337):
    torch.manual_seed(seed)
    if kind == "nanogpt":
        model = GPT(65, 64, 4, 4, 128)
        fwd = model
    else:
        model = EmbGPTForCausalLM(
            EmbGPTConfig(
                vocab_size=65,
                block_size=64,
                n_layer=4,
                n_head=4,
                n_embd=128,
                bias=False,
                activation_function="gelu",
                bos_token_id=0,
                eos_token_id=0,
            )
        )
        fwd = lambda x: model(input_ids=x).logits
    model.train()
    params = [p for p in model.parameters()]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.99), fused=True)
    t0 = time.time()
    for it in range(2000):
        for g in opt.param_groups:
            g["lr"] = get_lr(it)
        ix = torch.randint(len(train) - 64, (12,))
        x = torch.stack([train[i : i + 64] for i in ix])
        y = torch.stack([train[i + 1 : i + 65] for i in ix])
        logits = fwd(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    model.eval()
    g = torch.Generator().manual_seed(1337)
    losses = []
    with torch.no_grad():
        for _ in range(200):
            ix = torch.randint(len(val) - 64, (12,), generator=g)
            x = torch.stack([val[i : i + 64] for i in ix])
            y = torch.stack([val[i + 1 : i + 65] for i in ix])
            losses.append(F.cross_entropy(fwd(x).reshape(-1, 65), y.reshape(-1)).item())
    print(
        kind,
        seed,
        "val (200 random batches)",
        round(sum(losses) / len(losses), 4),
        "time",
        round(time.time() - t0, 1),
        flush=True,
    )


if __name__ == "__main__":
    train, val = load_shakespeare()
    for kind in sys.argv[1:] or ["nanogpt", "embgpt"]:
        run(kind, train, val)
