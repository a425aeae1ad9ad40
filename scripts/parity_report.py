"""Max |difference| between EmbGPT and transformers' GPT2LMHeadModel on the same random weights.

For each shape (tiny, GPT-2 124M) and attention implementation (eager, sdpa): logits, loss and every parameter
gradient of one forward/backward in fp32, plus greedy generation. Prints a table and writes JSON.

    python scripts/parity_report.py [--out parity.json]
"""

import argparse
import json
import tempfile

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from hf_embgpt import EmbGPTForCausalLM

SHAPES = {
    "tiny": dict(n_layer=2, n_head=4, n_embd=64, n_positions=128),
    "124M": dict(n_layer=12, n_head=12, n_embd=768, n_positions=1024),
}
CONV1D = ("c_attn.weight", "c_proj.weight", "c_fc.weight")


def measure(shape, attn_implementation, seq_len=128):
    torch.manual_seed(0)
    config = GPT2Config(**SHAPES[shape], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    with tempfile.TemporaryDirectory() as folder:
        GPT2LMHeadModel(config).save_pretrained(folder)
        ref = GPT2LMHeadModel.from_pretrained(folder, attn_implementation=attn_implementation).eval()
        ours = EmbGPTForCausalLM.from_pretrained(folder, attn_implementation=attn_implementation).eval()
    ids = torch.randint(0, config.vocab_size, (2, min(seq_len, config.n_positions)))
    a, b = ref(ids, labels=ids), ours(ids, labels=ids)
    a.loss.backward()
    b.loss.backward()
    ref_grads = dict(ref.named_parameters())
    grad_diff = 0.0
    for name, param in ours.named_parameters():
        expected = ref_grads[name].grad
        expected = expected.t() if name.endswith(CONV1D) else expected
        grad_diff = max(grad_diff, (param.grad - expected).abs().max().item())
    prompt = ids[:1, :16]
    with torch.no_grad():
        same_tokens = torch.equal(
            ref.generate(prompt, max_new_tokens=32, do_sample=False, pad_token_id=0),
            ours.generate(prompt, max_new_tokens=32, do_sample=False, pad_token_id=0),
        )
    return {
        "shape": shape,
        "attn_implementation": attn_implementation,
        "logits": (a.logits - b.logits).abs().max().item(),
        "loss": abs(a.loss.item() - b.loss.item()),
        "gradients": grad_diff,
        "greedy_tokens_identical": same_tokens,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="parity.json")
    args = parser.parse_args(argv)
    rows = [measure(shape, impl) for shape in SHAPES for impl in ("eager", "sdpa")]
    print("| shape | attention | logits | loss | every gradient | greedy tokens |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['shape']} | {r['attn_implementation']} | {r['logits']:.1e} | {r['loss']:.1e} | "
            f"{r['gradients']:.1e} | {'identical' if r['greedy_tokens_identical'] else 'DIFFERENT'} |"
        )
    with open(args.out, "w") as f:
        json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
