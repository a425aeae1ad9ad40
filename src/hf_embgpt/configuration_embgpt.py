"""EmbGPT configuration: nanoGPT's vocabulary of settings, with the standard transformers names mapped onto it.

This file is uploaded to the Hub beside `modeling_embgpt.py` as remote code, so it imports only transformers.
"""

from transformers import PretrainedConfig
from transformers.utils import logging

logger = logging.get_logger(__name__)

# Named presets. GPT-2's four sizes are OpenAI's; `tiny` is a debug model that runs in milliseconds on a CPU.
PRESETS = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),  # 124M
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),  # 350M
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),  # 774M
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),  # 1558M
    "tiny": dict(n_layer=2, n_head=4, n_embd=64, block_size=128),
}

# tanh-approximate GELU is what GPT-2 was trained with; nanoGPT trains with the exact erf form.
ACTIVATIONS = ("gelu_new", "gelu")

GPT2_END_OF_TEXT = 50256  # GPT-2's <|endoftext|>, its bos and eos token
# bos/eos_token_id not given: <|endoftext|> where the vocabulary holds it, else None. A `vocab_size=100` or char-level
# model has no id 50256, and transformers would warn about an id outside the vocabulary at every construction.
_END_OF_TEXT_IF_IN_VOCABULARY = object()


class EmbGPTConfig(PretrainedConfig):
    r"""Configuration of an EmbGPT model (the GPT-2 architecture in nanoGPT's layout).

    Defaults give GPT-2 small (124M). `EmbGPTConfig.from_preset("gpt2-medium", dropout=0.1)` builds a named size.

    Args:
        vocab_size: number of token ids (GPT-2: 50257; nanoGPT pads to 50304 for speed).
        block_size: longest sequence the model accepts; the number of rows of `wpe`.
        n_layer, n_head, n_embd: depth, attention heads and width; `n_embd` must be divisible by `n_head`.
        dropout: one rate for embeddings, attention probabilities and residual branches, as in nanoGPT.
        bias: biases in the Linear layers and LayerNorms (GPT-2: True; nanoGPT's `bias=False` variant: False).
        activation_function: `"gelu_new"` (tanh approximation, GPT-2) or `"gelu"` (exact, nanoGPT-trained weights).
        layer_norm_epsilon: LayerNorm epsilon (GPT-2: 1e-5).
        initializer_range: std of the normal init; residual projections use `initializer_range / sqrt(2 * n_layer)`.
        fused_loss: with labels, compute the loss with Liger-Kernel's fused linear cross-entropy (extra `gpu`) and
            return no logits: less memory, somewhat slower. Default False: logits plus a chunked cross-entropy.
        bos_token_id, eos_token_id: default to GPT-2's <|endoftext|> (50256) if `vocab_size` holds it, else None;
            a value given is kept (transformers warns about one outside the vocabulary).
    """

    model_type = "embgpt"
    keys_to_ignore_at_inference = ["past_key_values", "cache"]
    attribute_map = {
        "hidden_size": "n_embd",
        "num_hidden_layers": "n_layer",
        "num_attention_heads": "n_head",
        "max_position_embeddings": "block_size",
    }

    def __init__(
        self,
        vocab_size=50257,
        block_size=1024,
        n_layer=12,
        n_head=12,
        n_embd=768,
        dropout=0.0,
        bias=True,
        activation_function="gelu_new",
        layer_norm_epsilon=1e-5,
        initializer_range=0.02,
        use_cache=True,
        fused_loss=False,
        bos_token_id=_END_OF_TEXT_IF_IN_VOCABULARY,
        eos_token_id=_END_OF_TEXT_IF_IN_VOCABULARY,
        pad_token_id=None,
        tie_word_embeddings=True,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.block_size = block_size
        self.n_layer = n_layer
        self.n_head = n_head
        self.n_embd = n_embd
        self.dropout = dropout
        self.bias = bias
        self.activation_function = activation_function
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = initializer_range
        self.use_cache = use_cache
        self.fused_loss = fused_loss
        end_of_text = GPT2_END_OF_TEXT if isinstance(vocab_size, int) and vocab_size > GPT2_END_OF_TEXT else None
        if bos_token_id is _END_OF_TEXT_IF_IN_VOCABULARY:
            bos_token_id = end_of_text
        if eos_token_id is _END_OF_TEXT_IF_IN_VOCABULARY:
            eos_token_id = end_of_text
        super().__init__(
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )
        self.validate_embgpt()

    @classmethod
    def from_preset(cls, name, **overrides):
        """Build a named configuration (`gpt2`, `gpt2-medium`, `gpt2-large`, `gpt2-xl`, `tiny`) with overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def validate_embgpt(self):
        """Raise a ValueError that names the bad value and the rule it breaks."""
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} ({value!r}) must be a positive integer")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout ({self.dropout!r}) must be a number in [0, 1)")
        if not isinstance(self.bias, bool):
            raise ValueError(f"bias ({self.bias!r}) must be True or False")
        if not isinstance(self.fused_loss, bool):
            raise ValueError(f"fused_loss ({self.fused_loss!r}) must be True or False")
        if self.activation_function not in ACTIVATIONS:
            raise ValueError(
                f"activation_function ({self.activation_function!r}) must be one of {', '.join(ACTIVATIONS)}"
            )
        if not isinstance(self.layer_norm_epsilon, (int, float)) or self.layer_norm_epsilon <= 0:
            raise ValueError(f"layer_norm_epsilon ({self.layer_norm_epsilon!r}) must be a positive number")
        if not isinstance(self.initializer_range, (int, float)) or self.initializer_range < 0:
            raise ValueError(f"initializer_range ({self.initializer_range!r}) must be a non-negative number")


__all__ = ["EmbGPTConfig", "PRESETS"]
