"""transformers' GPT-2 folders (GPT2LMHeadModel): reading is `EmbGPTForCausalLM.from_pretrained` (the model file's
GPT-2 table); this module writes them."""

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from ..modeling_embgpt import GPT2_TRANSPOSED


def gpt2_config_from(config):
    """The transformers GPT2Config that computes what `config` does (bias=True models only)."""
    if not config.bias:
        raise ValueError("GPT-2 has biases everywhere; a bias=False EmbGPT model can't be exported to GPT-2")
    return GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.block_size,
        n_layer=config.n_layer,
        n_head=config.n_head,
        n_embd=config.n_embd,
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        activation_function=config.activation_function,
        layer_norm_epsilon=config.layer_norm_epsilon,
        initializer_range=config.initializer_range,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )


def state_dict_to_gpt2(state_dict):
    """EmbGPT state dict -> GPT-2's (the inverse of `state_dict_from_gpt2`)."""
    return {name: tensor.t() if name.endswith(GPT2_TRANSPOSED) else tensor for name, tensor in state_dict.items()}


def write_gpt2(config, state_dict, folder, generation_config=None):
    """A stock transformers GPT2LMHeadModel folder, through the core GPT-2 table."""
    with torch.device("meta"):
        gpt2 = GPT2LMHeadModel(gpt2_config_from(config))
    gpt2_state_dict = {name: t.contiguous() for name, t in state_dict_to_gpt2(state_dict).items()}  # transposed
    gpt2.load_state_dict(gpt2_state_dict, strict=True, assign=True)
    gpt2.tie_weights()
    if generation_config is not None:
        gpt2.generation_config = generation_config
    gpt2.save_pretrained(folder)
