"""`embgpt generate`: sample or decode text from an EmbGPT or GPT-2 checkpoint with transformers' generate()."""

import argparse
import logging

import torch

from .kernels import optimize

logger = logging.getLogger(__name__)


def load_model_and_tokenizer(model_name_or_path, tokenizer_name_or_path=None, dtype=torch.float32):
    """EmbGPT model (GPT-2 checkpoints are converted) and its tokenizer, which must be saved beside it or named."""
    from transformers import AutoTokenizer

    from .formats.registry import check_source
    from .modeling_embgpt import EmbGPTForCausalLM

    model = EmbGPTForCausalLM.from_pretrained(check_source(model_name_or_path, "model"), dtype=dtype).eval()
    source = check_source(tokenizer_name_or_path or model_name_or_path, "tokenizer")
    missing = f"no tokenizer found at {source}; pass --tokenizer with a tokenizer folder or Hub id"
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise ValueError(missing) from error
    if len(tokenizer) <= 1:  # transformers builds an empty tokenizer from a folder without vocabulary files
        raise ValueError(missing)
    return model, tokenizer


def generate_text(model, tokenizer, prompts, max_new_tokens=50, seed=None, **generation_kwargs):
    """Continue each prompt; returns the decoded texts (prompt included). Left-pads batches as GPT-2 needs."""
    if seed is not None:
        torch.manual_seed(seed)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    inputs = tokenizer(list(prompts), return_tensors="pt", padding=True).to(model.device)
    room = model.config.block_size - inputs.input_ids.shape[1]
    if max_new_tokens > room:
        raise ValueError(
            f"prompt of {inputs.input_ids.shape[1]} tokens plus max_new_tokens {max_new_tokens} exceeds "
            f"block_size {model.config.block_size}"
        )
    with torch.inference_mode():
        output = model.generate(
            **inputs, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **generation_kwargs
        )
    return tokenizer.batch_decode(output, skip_special_tokens=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="embgpt generate", description=__doc__)
    parser.add_argument("model", help="EmbGPT or GPT-2 checkpoint: a folder or a Hub id")
    parser.add_argument("--prompt", action="append", help="prompt text (repeat for a batch); default: the EOS token")
    parser.add_argument("--tokenizer", help="tokenizer folder or Hub id, if not saved beside the model")
    parser.add_argument("--max-new-tokens", type=int, default=50)
    parser.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=200)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--num-samples", type=int, default=1, help="samples per prompt")
    args = parser.parse_args(argv)
    for option, value in (("--max-new-tokens", args.max_new_tokens), ("--num-beams", args.num_beams),
                          ("--num-samples", args.num_samples)):  # fmt: skip
        if value < 1:
            parser.error(f"{option} must be a positive integer, got {value}")
    if not args.greedy and args.temperature <= 0:
        parser.error(f"--temperature must be positive when sampling, got {args.temperature} (use --greedy)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model, tokenizer = load_model_and_tokenizer(args.model, args.tokenizer)
    if model.device.type == "cpu":  # CPU kernels chosen by measurement on this machine
        optimize(model)
    prompts = args.prompt or [tokenizer.eos_token]
    sampling = dict(do_sample=True, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    if args.greedy:
        sampling = {}
    texts = generate_text(
        model,
        tokenizer,
        [p for p in prompts for _ in range(args.num_samples)],
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        num_beams=args.num_beams,
        **sampling,
    )
    for text in texts:
        print(text)
        print("-" * 40)
    return 0
