"""EmbGPT: the GPT-2 architecture in nanoGPT's layout, as a transformers model.

Read top to bottom: attention -> MLP -> block -> pretrained base -> EmbGPTModel -> heads, then small helpers (input
checks, the causal mask, atomic saves) and the GPT-2 weight table. Parameter names are GPT-2's (`transformer.wte`,
`transformer.h.0.attn.c_attn`, ...) in `nn.Linear` layout, so a GPT-2 checkpoint converts by renaming nothing and
transposing four matrices per block.

Numerics follow GPT-2 on purpose, so that logits equal `GPT2LMHeadModel`'s on the same weights (to float rounding).

References:
1) OpenAI's GPT-2: https://github.com/openai/gpt-2/blob/master/src/model.py
2) nanoGPT: https://github.com/karpathy/nanoGPT/blob/master/model.py
3) transformers' GPT-2: src/transformers/models/gpt2/modeling_gpt2.py

This file is uploaded to the Hub as remote code: it imports only torch, transformers and `.configuration_embgpt`.
"""

import contextlib
import ctypes
import errno
import importlib
import inspect
import math
import os
import pickle
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid

import torch
from torch import distributed as dist
from torch import nn
from torch.nn import functional as F
from transformers import (
    GenerationMixin,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    GPT2Model,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.cache_utils import DynamicCache
from transformers.loss.loss_utils import ForCausalLMLoss
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, create_causal_mask, sdpa_mask
from transformers.masking_utils import flash_attention_mask as flash_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    SequenceClassifierOutputWithPast,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import can_return_tuple, is_tracing, logging
from transformers.utils.deprecation import deprecate_kwarg

from .configuration_embgpt import EmbGPTConfig

try:
    import fcntl
except ImportError:  # Windows: msvcrt's byte-range lock instead
    fcntl = None
    import msvcrt

logger = logging.get_logger(__name__)

# transformers 5.24 renamed the KV-cache keyword and output field `past_key_values` -> `cache`; support both.
_CACHE_FIELD = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"
if _CACHE_FIELD == "cache":  # the old name still works, with the FutureWarning transformers' own models give
    _accept_past_key_values = deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
else:  # before 5.24 `past_key_values` is the name: nothing to warn about

    def _accept_past_key_values(forward):
        return forward


_MASK_PARAMS = set(inspect.signature(create_causal_mask).parameters)


def eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Attention written out, as GPT-2 computes it; also the path that can return the attention weights.

    A None mask means plain causal attention (see `_causal_mask`), as SDPA's `is_causal=True` does.
    """
    att = torch.matmul(query, key.transpose(-1, -2)) * scaling  # (B, nh, T, T_kv)
    if attention_mask is None and getattr(module, "is_causal", True):
        T, T_kv = att.shape[-2:]  # the last query sees every key: tril aligned to the bottom right
        attention_mask = torch.ones(T, T_kv, dtype=torch.bool, device=att.device).tril(T_kv - T)
    if attention_mask is not None and attention_mask.dtype == torch.bool:
        att = att.masked_fill(~attention_mask, torch.finfo(att.dtype).min)  # not -inf: fully padded rows stay finite
    elif attention_mask is not None:
        att = att + attention_mask
    att = F.softmax(att, dim=-1).to(value.dtype)
    att = F.dropout(att, p=dropout, training=module.training)
    return torch.matmul(att, value).transpose(1, 2), att  # (B, T, nh, hs), (B, nh, T, T_kv)


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.config = config  # the attention registry reads config._attn_implementation
        self.layer_idx = layer_idx
        self.n_head = config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.scaling = self.head_dim**-0.5
        self.is_causal = True
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v for all heads
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.is_residual_projection = True  # GPT-2's scaled init, see _init_weights
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, attention_mask=None, cache=None, **kwargs):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, nh, T, hs)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        # eager, sdpa, flash, flex or a function registered with AttentionInterface, as set_attn_implementation chose;
        # the mask was built for it (None: plain causal). Only eager returns attention weights (the others give None).
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        y, att = attention(
            self, q, k, v, attention_mask,
            scaling=self.scaling, dropout=self.dropout if self.training else 0.0, **kwargs,
        )  # fmt: skip
        y = y.reshape(B, T, C)  # re-assemble all head outputs side by side
        return self.resid_dropout(self.c_proj(y)), att


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.is_residual_projection = True
        self.dropout = nn.Dropout(config.dropout)
        # GPT-2 was trained with the tanh approximation ("gelu_new"); nanoGPT trains with the exact erf form.
        self.approximate = "tanh" if config.activation_function == "gelu_new" else "none"

    def forward(self, x):
        x = F.gelu(self.c_fc(x), approximate=self.approximate)
        return self.dropout(self.c_proj(x))


class Block(GradientCheckpointingLayer):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, attention_mask=None, cache=None, **kwargs):
        a, att = self.attn(self.ln_1(x), attention_mask, cache, **kwargs)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, att


class EmbGPTPreTrainedModel(PreTrainedModel):
    config_class = EmbGPTConfig
    config: EmbGPTConfig
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Block"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    # causal-mask buffers that old GPT-2 checkpoints carry; EmbGPT builds its masks instead
    _keys_to_ignore_on_load_unexpected = [r"attn\.bias$", r"attn\.masked_bias$"]

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            if getattr(module, "is_residual_projection", False):
                # GPT-2's scaled init: two residual branches per block add up along the depth
                std = std / math.sqrt(2 * self.config.n_layer)
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained` that also converts a transformers GPT-2 checkpoint (Hub id or folder)
        exactly, and refuses a checkpoint whose tensors don't fit the model.

        A missing, unexpected or mis-shaped tensor is a ValueError naming it and the checkpoint, where transformers
        would re-initialise it at random. Allowed: the tied `lm_head.weight` (never saved), the head tensors of a
        checkpoint saved by another class (a new classifier on a language model, or the reverse), and mis-shaped
        tensors re-initialised on purpose with `ignore_mismatched_sizes=True`.
        """
        source = pretrained_model_name_or_path
        return_info = kwargs.pop("output_loading_info", False)
        reinitialise_mismatched = kwargs.pop("ignore_mismatched_sizes", False)
        load = dict(output_loading_info=True, ignore_mismatched_sizes=True)  # we name the bad tensors ourselves
        model_type = _checkpoint_model_type(source, kwargs)
        if model_type == "gpt2":
            # where and which files to read go to the GPT-2 load only (the converted copy is local, without a
            # variant); the dtype to both, so that the result has the dtype GPT2LMHeadModel would load
            gpt2_kwargs = {k: kwargs[k] for k in (*_HUB_KWARGS, *_FILE_KWARGS, *_DTYPE_KWARGS) if k in kwargs}
            local = {k: v for k, v in kwargs.items() if k not in (*_HUB_KWARGS, *_FILE_KWARGS)}
            with tempfile.TemporaryDirectory() as converted, _reading(source):
                _convert_gpt2_folder(cls, source, converted, local, gpt2_kwargs)
                model, info = super().from_pretrained(converted, *model_args, **load, **local)
        else:
            if model_type not in (None, EmbGPTConfig.model_type) and kwargs.get("config") is None:
                raise ValueError(
                    f"{source} is a {model_type!r} checkpoint; EmbGPT loads 'embgpt' and 'gpt2' checkpoints"
                )
            with _reading(source):
                model, info = super().from_pretrained(source, *model_args, **load, **kwargs)
        _check_loaded_tensors(model, info, source if source is not None else "state_dict", reinitialise_mismatched)
        return (model, info) if return_info else model

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, always with remote code for every Auto class; all or nothing for readers
        and one writer at a time (see `_atomic_folder`), except uploads and saves shared by ranks (`_save_target`).
        """
        self.config.auto_map = dict(AUTO_MAP)
        target = _save_target(self, save_directory, *args, **kwargs)
        if target == "staged":
            with _atomic_folder(save_directory) as staging:
                super().save_pretrained(staging, *args, **kwargs)
            return
        if target == "scratch":
            with tempfile.TemporaryDirectory() as scratch:
                super().save_pretrained(scratch, *args, **kwargs)
        else:
            super().save_pretrained(save_directory, *args, **kwargs)
        # a rank past transformers' closing barrier finds the writing rank still holding the lock until its staging
        # folder is in place: wait for that, so the folder is complete on every rank when this returns
        with _folder_lock(os.path.realpath(save_directory), SAVE_LOCK_TIMEOUT):
            return


class EmbGPTModel(EmbGPTPreTrainedModel):
    """The transformer without a head: token + position embeddings, blocks, final LayerNorm."""

    def __init__(self, config):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token id -> vector
        self.wpe = nn.Embedding(config.block_size, config.n_embd)  # position 0..block_size-1 -> vector
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.wte

    def set_input_embeddings(self, new_embeddings):
        self.wte = new_embeddings

    @can_return_tuple
    @_accept_past_key_values
    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        inputs_embeds=None,
        token_type_ids=None,
        use_cache=None,
        output_attentions=None,
        output_hidden_states=None,
        cache=None,
        **kwargs,
    ):
        cache = cache if cache is not None else past_key_values
        if use_cache is None:  # a cache nobody asked for costs a copy of every key and value in training
            use_cache = cache is not None or (self.config.use_cache and not (self.training and torch.is_grad_enabled()))
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if self.gradient_checkpointing and self.training:
            use_cache, cache = False, None  # the recomputed forward would write the cache a second time
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        past = cache.get_seq_length() if cache is not None else 0
        _check_inputs(self.config, input_ids, inputs_embeds, attention_mask, position_ids, token_type_ids, past)
        if input_ids is not None:
            inputs_embeds = self.wte(input_ids)  # (B, T, C)
        T = inputs_embeds.shape[1]
        # the row may be longer than block_size only without a cache and with position_ids (checked below) that restart
        # inside it: packed sequences. Otherwise positions run past..past+T-1, and so does the cache.
        if not _is_tracing() and (position_ids is None or past > 0) and past + T > self.config.block_size:
            raise ValueError(
                f"input has length {T} (plus {int(past)} cached) but block_size is {self.config.block_size}; "
                f"crop the input or extend the model's block size"
            )
        caller_positions = position_ids  # they may restart at 0 inside a row: packed texts, each with its own mask
        cache_position = kwargs.pop("cache_position", None)
        if cache_position is None:
            cache_position = torch.arange(T, device=inputs_embeds.device) + past  # past is a tensor in static caches
        if position_ids is None:
            position_ids = cache_position.unsqueeze(0)
        x = inputs_embeds + self.wpe(position_ids)  # (B, T, C): what the token is + where it is
        if token_type_ids is not None:  # GPT-2 embeds segment ids through wte too
            x = x + self.wte(token_type_ids)
        x = self.drop(x)
        mask = _causal_mask(self.config, x, attention_mask, cache, caller_positions)  # None: causal

        hidden_states, attentions = [], []
        for block in self.h:
            if output_hidden_states:
                hidden_states.append(x)
            x, att = block(
                x, mask, cache,
                output_attentions=output_attentions, cache_position=cache_position, position_ids=position_ids, **kwargs,
            )  # fmt: skip
            if output_attentions and att is not None:  # SDPA and flash compute no weights: () as in GPT-2
                attentions.append(att)
        x = self.ln_f(x)
        if output_hidden_states:
            hidden_states.append(x)
        return BaseModelOutputWithPast(
            last_hidden_state=x,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
            **{_CACHE_FIELD: cache if use_cache else None},
        )


class EmbGPTForCausalLM(EmbGPTPreTrainedModel, GenerationMixin):
    """EmbGPT with the language-model head, whose weight is `wte`'s (tied), as in GPT-2.

    With labels and `config.fused_loss=True`, Liger-Kernel computes the loss from the hidden states; `logits` is None.
    """

    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}
    loss_chunks, loss_chunk_size = 4, 128  # the loss runs over up to 4 chunks of at least 128 positions

    def __init__(self, config):
        super().__init__(config)
        self.transformer = EmbGPTModel(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def _prepare_generated_length(
        self,
        generation_config,
        has_default_max_length,
        has_default_min_length,
        model_input_name,
        input_ids_length,
        inputs_tensor,
    ):
        """generate() sets its lengths here, before the first token: checked against block_size now, since one past
        it would fail half-way. max_length counts the returned ids, which leave out a prompt given as inputs_embeds."""
        generation_config = super()._prepare_generated_length(
            generation_config,
            has_default_max_length=has_default_max_length,
            has_default_min_length=has_default_min_length,
            model_input_name=model_input_name,
            input_ids_length=input_ids_length,
            inputs_tensor=inputs_tensor,
        )
        prompt_length = inputs_tensor.shape[1] if model_input_name == "inputs_embeds" else input_ids_length
        total_length = generation_config.max_length - input_ids_length + prompt_length
        block_size = self.config.block_size
        if total_length > block_size:
            new_tokens = generation_config.max_new_tokens
            asked = f" with max_new_tokens {new_tokens}" if new_tokens is not None else ""
            raise ValueError(
                f"a prompt of {prompt_length} tokens{asked} reaches {total_length} tokens but block_size is "
                f"{block_size}; lower max_new_tokens to at most {max(block_size - prompt_length, 0)}"
            )
        return generation_config

    @can_return_tuple
    @_accept_past_key_values
    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        inputs_embeds=None,
        token_type_ids=None,
        labels=None,
        use_cache=None,
        output_attentions=None,
        output_hidden_states=None,
        logits_to_keep=0,
        cache=None,
        **kwargs,
    ):
        if labels is not None:  # the base model checks the other inputs
            _check_labels(self.config, labels, input_ids, inputs_embeds, kwargs.get("ignore_index", -100))
        out = self.transformer(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache if cache is not None else past_key_values,
            inputs_embeds=inputs_embeds,
            token_type_ids=token_type_ids,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **kwargs,
        )
        x = out.last_hidden_state
        logits = loss = None
        if labels is not None and self.config.fused_loss:  # memory mode: the logits are never materialised
            loss = self._fused_loss(x, labels, **kwargs)
        else:
            # generation needs only the last position's logits: skip the (T, vocab) matmul for the rest
            keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
            logits = self.lm_head(x[:, keep, :])  # (B, T_keep, vocab)
            if labels is not None:  # shift, ignore -100, divide by num_items_in_batch when Trainer accumulates
                loss = self._loss_in_chunks(logits, labels, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
            **{_CACHE_FIELD: getattr(out, _CACHE_FIELD)},
        )

    def _loss_in_chunks(self, logits, labels, **kwargs):
        """The loss of transformers' ForCausalLMLoss (shift, ignore -100, divide by num_items_in_batch when Trainer
        accumulates gradients), with each chunk of positions upcast to fp32 on its own: a bf16 model never holds an fp32
        copy of the whole (B, T, vocab) logits, and under torch.compile each chunk fuses into its own kernels.
        """
        if self.loss_function is not ForCausalLMLoss:  # a loss set by the user may not take shift_labels: one call
            return self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **kwargs)
        targets, ignore_index, count = _next_token_targets(labels, **kwargs)  # (B*T,)
        logits = logits.reshape(-1, logits.shape[-1])  # (B*T, vocab)
        if targets.shape[0] != logits.shape[0]:
            raise ValueError(f"labels give {targets.shape[0]} targets for {logits.shape[0]} positions of logits")
        size = max(self.loss_chunk_size, -(-logits.shape[0] // self.loss_chunks))
        pieces = zip(logits.split(size), targets.to(logits.device).split(size), strict=True)
        total = sum(F.cross_entropy(part.float(), t, ignore_index=ignore_index, reduction="sum") for part, t in pieces)
        return _divide(total, count)

    def _fused_loss(self, x, labels, **kwargs):
        """config.fused_loss: Liger-Kernel's fused linear cross-entropy computes the loss from the last hidden states
        block by block on the GPU, so the (B, T, vocab) logits are never materialised; output.logits is None."""
        logger.warning_once(
            "fused_loss=True: Liger-Kernel's fused linear cross-entropy gives the loss; logits are None"
        )
        targets, ignore_index, count = _next_token_targets(labels, **kwargs)
        x = x.reshape(-1, x.shape[-1])  # (B*T, C)
        fused_linear_cross_entropy = _liger_fused_linear_cross_entropy()
        total = fused_linear_cross_entropy(
            x, self.lm_head.weight, targets.to(x.device), ignore_index=ignore_index, reduction="sum"
        )
        return _divide(total, count)


class EmbGPTForSequenceClassification(EmbGPTPreTrainedModel):
    """EmbGPT with a linear classifier on the last non-pad token, as GPT2ForSequenceClassification does."""

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.transformer = EmbGPTModel(config)
        self.score = nn.Linear(config.n_embd, config.num_labels, bias=False)
        self.post_init()

    @can_return_tuple
    @_accept_past_key_values
    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        inputs_embeds=None,
        token_type_ids=None,
        labels=None,
        use_cache=None,
        output_attentions=None,
        output_hidden_states=None,
        cache=None,
        **kwargs,
    ):
        out = self.transformer(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache if cache is not None else past_key_values,
            inputs_embeds=inputs_embeds,
            token_type_ids=token_type_ids,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **kwargs,
        )
        logits = self.score(out.last_hidden_state)  # (B, T, num_labels)
        batch_size = logits.shape[0]
        if self.config.pad_token_id is None and batch_size != 1:
            raise ValueError("batches of more than one sequence need config.pad_token_id to find each last token")
        if self.config.pad_token_id is None or input_ids is None:
            last = -1  # without ids the padding can't be seen: the last position, as GPT-2 does
        else:
            # the rightmost non-pad token handles both left and right padding
            not_pad = (input_ids != self.config.pad_token_id).to(logits.device, torch.int32)
            last = (torch.arange(input_ids.shape[-1], device=logits.device, dtype=torch.int32) * not_pad).argmax(-1)
        pooled_logits = logits[torch.arange(batch_size, device=logits.device), last]
        loss = None
        if labels is not None:
            loss = self.loss_function(labels=labels, pooled_logits=pooled_logits, config=self.config)
        return SequenceClassifierOutputWithPast(
            loss=loss,
            logits=pooled_logits,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
            **{_CACHE_FIELD: getattr(out, _CACHE_FIELD)},
        )


# ----------------------------------------------------------------------------------------------------------------
# Helpers: input checks, the causal mask across transformers versions, atomic saves.


def _is_tracing(tensor=None):
    """Compiling, exporting, jit/fx tracing or capturing a CUDA graph: no data-dependent Python branches here."""
    return is_tracing(tensor)


TOKEN_ID_DTYPES = (torch.int64, torch.int32)  # what nn.Embedding indexes with


def _check_inputs(config, input_ids, inputs_embeds, attention_mask, position_ids, token_type_ids, past_length):
    """Named errors for inputs torch would reject with a bare error, or accept and compute garbage from.

    Shapes and dtypes are free to check. The value ranges (token ids < vocab_size, positions < block_size) are one
    reduction that the host reads once: a single synchronisation per forward, before the blocks run (and one more in
    EmbGPTForCausalLM when labels are given). While compiling, exporting or capturing a CUDA graph the ranges are not
    checked: there a data-dependent branch would break the graph.
    """
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids or inputs_embeds")
    if input_ids is not None:
        _check_dtype(input_ids, "input_ids")
        if input_ids.ndim != 2:
            raise ValueError(
                f"input_ids must be integer token ids of shape (batch, length), got {tuple(input_ids.shape)}"
            )
        batch, length = input_ids.shape
    else:
        if inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != config.n_embd:
            raise ValueError(
                f"inputs_embeds must have shape (batch, length, n_embd={config.n_embd}), "
                f"got {tuple(inputs_embeds.shape)}"
            )
        batch, length = inputs_embeds.shape[:2]
    if batch == 0 or length == 0:
        name = "input_ids" if input_ids is not None else "inputs_embeds"
        shape = tuple((input_ids if input_ids is not None else inputs_embeds).shape)
        raise ValueError(f"{name} of shape {shape} is empty: the model needs at least one token per sequence")
    if attention_mask is not None:
        _check_attention_mask(attention_mask, batch, length, past_length)
    for name, ids in (("position_ids", position_ids), ("token_type_ids", token_type_ids)):
        if ids is not None:
            _check_dtype(ids, name)
            if ids.ndim != 2 or ids.shape[0] not in (1, batch) or ids.shape[1] != length:
                raise ValueError(
                    f"{name} must have shape ({batch}, {length}) or (1, {length}) to match the input, "
                    f"got {tuple(ids.shape)}"
                )
    _check_ranges(
        ("input_ids", input_ids, config.vocab_size, "vocab_size", None),
        ("position_ids", position_ids, config.block_size, "block_size", None),
        ("token_type_ids", token_type_ids, config.vocab_size, "vocab_size", None),
    )


def _check_attention_mask(mask, batch, length, past_length):
    """A 2-D mask covers the cached tokens and the new ones; a 4-D mask is (batch or 1, 1 or heads, new, keys)."""
    covered = past_length + length if isinstance(past_length, int) else None  # a static cache's length is a tensor
    if mask.ndim == 2 and mask.shape[0] == batch:
        if mask.shape[1] == covered or (covered is None and mask.shape[1] >= length):
            return
    if mask.ndim == 4 and mask.shape[0] in (1, batch) and mask.shape[2] == length:
        return
    cached = int(past_length) if torch.is_tensor(past_length) else past_length  # a host read only to say it
    tokens = f"{cached} cached + {length} new tokens" if cached else f"{length} tokens"
    raise ValueError(
        f"attention_mask has shape {tuple(mask.shape)} but the input needs ({batch}, {covered or 'cached + new'}): "
        f"one row per sequence and one column per token ({tokens}), or a 4-D mask ({batch}, 1, {length}, keys)"
    )


def _check_labels(config, labels, input_ids, inputs_embeds, ignore_index=-100):
    """Labels are token ids too: the same dtype, one per input position, inside the vocabulary or ignore_index."""
    _check_dtype(labels, "labels")
    inputs = input_ids if input_ids is not None else inputs_embeds
    if inputs is not None and tuple(labels.shape) != tuple(inputs.shape[:2]):
        raise ValueError(f"labels have shape {tuple(labels.shape)} but the input is {tuple(inputs.shape[:2])}")
    _check_ranges(("labels", labels, config.vocab_size, "vocab_size", ignore_index))


def _check_dtype(ids, name):
    """Before any range check: a uint8 id of 300 has already wrapped, and a float or bool is no id at all."""
    if not isinstance(ids, torch.Tensor) or ids.dtype not in TOKEN_ID_DTYPES:
        got = ids.dtype if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise TypeError(f"{name} must be a tensor of int64 or int32 ids, got {got}")


def _check_ranges(*checks):
    """checks: (name, ids or None, limit, limit name, allowed extra value). One host read for all of them."""
    checks = [check for check in checks if check[1] is not None and check[1].numel() > 0]
    if not checks or any(_is_tracing(ids) for _, ids, *_ in checks):
        return
    valid = {}
    for name, ids, limit, _, allowed in checks:
        in_range = (ids >= 0) & (ids < limit)
        valid[name] = in_range | (ids == allowed) if allowed is not None else in_range
    device = checks[0][1].device
    if bool(torch.stack([v.all().to(device) for v in valid.values()]).all()):  # the one synchronisation
        return
    for name, ids, limit, limit_name, _ in checks:  # the error path: find the first bad value
        if not bool(valid[name].all()):
            bad = ids[~valid[name]][0].item()
            what = "token id" if limit_name == "vocab_size" else "value"
            raise ValueError(f"{name} has {what} {bad}, which is out of range for {limit_name} {limit}")


def _next_token_targets(labels, num_items_in_batch=None, shift_labels=None, ignore_index=-100, **kwargs):
    """Flat next-token targets (labels shifted left by one, the last position ignored, or `shift_labels` as given),
    the ignore index, and what the summed loss is divided by: Trainer's num_items_in_batch (exact under gradient
    accumulation), else the number of counted targets, which makes the mean that ForCausalLMLoss takes."""
    if shift_labels is None:
        shift_labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    targets = shift_labels.reshape(-1)
    count = num_items_in_batch if num_items_in_batch is not None else (targets != ignore_index).sum()
    return targets, ignore_index, count


def _divide(total, count):
    return total / (count.to(total.device) if torch.is_tensor(count) else count)  # count may live on another device


def _liger_fused_linear_cross_entropy():
    """Liger-Kernel's fused linear cross-entropy (needs a GPU with triton), imported only when fused_loss=True: an
    optional package, which Hub remote code must not require to load (transformers checks the file's imports)."""
    try:
        liger = importlib.import_module("liger_kernel.transformers.functional")
    except ImportError as error:
        raise ImportError(
            "fused_loss=True needs Liger-Kernel: pip install 'hf_embgpt[gpu]' (liger-kernel>=0.5), "
            "or set config.fused_loss=False"
        ) from error
    return liger.liger_fused_linear_cross_entropy


def _causal_mask(config, x, attention_mask, cache, position_ids):
    """The mask every layer uses, or None for plain causal attention, which SDPA runs with is_causal=True (flash).

    None is decided from Python values alone, so it holds under torch.compile too: no padding mask, no caller's
    position ids (they may restart at 0 inside a row: packed sequences), no cached keys. Otherwise transformers'
    create_causal_mask builds the exact mask for the attention function in use: padding, block-diagonal for packed rows
    (from position_ids), the cache offset; in eager mode it too returns None for SDPA when the mask is all ones and the
    rows are not packed. Its signature moved within 5.x.
    """
    if isinstance(cache, DynamicCache) and cache.get_seq_length() == 0:
        cache = None  # same mask sizes; and transformers looks for packed rows only when there is no cache
    if attention_mask is None and position_ids is None and cache is None and _none_is_causal(config):
        return None
    offered = {
        "config": config,
        "inputs_embeds": x,
        "attention_mask": attention_mask,
        "cache": cache,  # 5.24; earlier 5.x releases call it past_key_values
        "past_key_values": cache,
        "position_ids": position_ids,
    }
    return create_causal_mask(**{k: v for k, v in offered.items() if k in _MASK_PARAMS})


def _none_is_causal(config):
    """Whether the attention function reads a None mask as plain causal attention: our eager one, and every function
    whose mask builder is SDPA's or flash's (they return None for a plain causal mask themselves)."""
    implementation = config._attn_implementation
    return implementation == "eager" or ALL_MASK_ATTENTION_FUNCTIONS.get(implementation) in (sdpa_mask, flash_mask)


@contextlib.contextmanager
def _reading(source):
    """Name the checkpoint when its weights file can't be parsed (truncated download, corrupt or foreign file)."""
    try:
        yield
    except Exception as error:
        unreadable = isinstance(error, (pickle.UnpicklingError, EOFError)) or type(error).__name__ == "SafetensorError"
        unreadable = unreadable or (
            # torch.load on a cut-off zip: a RuntimeError from its reader, or EINVAL when too little is left
            "PytorchStreamReader" in str(error) or "zip archive" in str(error) or getattr(error, "errno", 0) == 22
        )
        if not unreadable:
            raise
        raise OSError(f"could not read the weights of {source}: the file is truncated or corrupt ({error})") from error


_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")
_FILE_KWARGS = ("variant", "use_safetensors")  # which weights file of the checkpoint
_DTYPE_KWARGS = ("dtype", "torch_dtype")  # torch_dtype: the older name, still accepted by transformers 5.x


def _checkpoint_model_type(source, kwargs):
    """The `model_type` in the checkpoint's config.json; None where from_pretrained's argument form has none to read
    (a state_dict or GGUF file, no path, or a folder without config.json): transformers then handles it alone."""
    if source is None or kwargs.get("state_dict") is not None or kwargs.get("gguf_file") is not None:
        return None
    if os.path.isfile(os.fspath(source)):
        return None
    hub_kwargs = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
    try:
        config_dict, _ = EmbGPTConfig.get_config_dict(source, **hub_kwargs)
    except OSError:
        if kwargs.get("config") is None:
            raise
        return None  # weights without a config.json, loaded with the config given
    if not config_dict and kwargs.get("config") is None:  # transformers would load them into a default config
        raise OSError(f"{source} has no config.json: pass config= (an EmbGPTConfig) to load its weights")
    return config_dict.get("model_type")


def _check_loaded_tensors(model, info, source, reinitialise_mismatched):
    """Refuse a load that left tensors random or dropped some: one sentence naming them and the checkpoint.

    A tied `lm_head.weight` is `wte`'s and never reported missing. Head tensors (`lm_head.*`, `score.*`) may be
    missing or unused when the checkpoint names another class in its config's `architectures`: a new classifier on a
    language model, as transformers allows.
    """
    heads = ("lm_head.", "score.")
    saved_by = model.config.architectures or []
    task_switch = bool(saved_by) and type(model).__name__ not in saved_by
    mismatched_names = {k for k, *_ in info.get("mismatched_keys", [])}  # some versions also list them as missing
    missing = sorted(
        k for k in info["missing_keys"] if k not in mismatched_names and not (task_switch and k.startswith(heads))
    )
    unexpected = sorted(k for k in info["unexpected_keys"] if not (task_switch and k.startswith(heads)))
    mismatched = [] if reinitialise_mismatched else sorted(info.get("mismatched_keys", []))
    problems = [f"missing {missing}"] if missing else []
    problems += [f"unexpected {unexpected}"] if unexpected else []
    if mismatched:
        problems.append(f"mis-shaped {[f'{k} {tuple(ckpt)} vs {tuple(want)}' for k, ckpt, want in mismatched]}")
    if problems:
        raise ValueError(
            f"checkpoint {source} does not fit {type(model).__name__} and its config (shapes: checkpoint vs model): "
            f"{'; '.join(problems)}"
        )


# ----------------------------------------------------------------------------------------------------------------
# All-or-nothing saves, in the standard library only (this file travels as Hub remote code, and whoever loads it may
# save). A save writes a new folder beside the old one and swaps the two by rename, so a reader, or a process killed
# at any instant, finds the old complete folder or the new one. A lock file beside the folder, naming its holder's
# pid, makes a second writer wait. The next save into the folder finishes or clears what a killed one left.
#
# Beside a folder NAME:  .NAME.embgpt-lock          the lock (removed when released)
#                        .NAME.embgpt-new-HEX       a save being written
#                        .NAME.embgpt-MODE-INODE    during the swap: the new folder (its inode), then the old one

SAVE_LOCK_TIMEOUT = 600.0  # seconds a writer waits for another process's save into the same folder
_WEIGHT_FILE = re.compile(r"(model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)(\.index\.json)?")
_LOCKS_HELD = set()  # (lock file, thread): a save inside a save of the same folder does not wait for itself
_STAGING = set()  # folders being staged in this process: a save into one writes directly, the outer swap is atomic


def _save_target(model, save_directory, *args, **kwargs):
    """Where save_pretrained (these arguments) writes: "staged" (a staging folder swapped in under the lock), "in
    place" (an upload, or a distributed checkpoint where every rank writes its shard) or "scratch" (a rank that is not
    the writing one: a folder that is then dropped, since a transformers without should_save_on_this_rank, 5.10 for
    one, still writes the weights on such a rank, and would write them into the folder beside the staged save).

    Only "staged" takes the lock first: transformers may run collectives (gathers, barriers) inside save_pretrained
    on every rank of torch.distributed, so a rank waiting for the writing rank's lock would never join them."""
    options = inspect.signature(PreTrainedModel.save_pretrained).bind(model, save_directory, *args, **kwargs).arguments
    options.update(options.pop("kwargs", {}))
    if options.get("push_to_hub") or options.get("distributed_checkpoint"):
        return "in place"
    is_main_process = options.get("is_main_process", True)
    if hasattr(model, "should_save_on_this_rank"):  # transformers that picks the writing rank itself (rank 0)
        writes = model.should_save_on_this_rank(is_main_process)
    else:
        writes = is_main_process and not (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0)
    return "staged" if writes else "scratch"


@contextlib.contextmanager
def _atomic_folder(directory, existing="merge", lock_timeout=None):
    """Yield a staging folder; on success it replaces `directory` in one rename, under `directory`'s lock.

    existing: "merge" keeps the folder's other files and subfolders (tokenizer, checkpoints) and drops its old
    weights, as saving a model into a folder does; "replace" drops everything; "refuse" raises FileExistsError if
    the folder is not empty. Where a folder can't be swapped (a mount point, the working directory, a parent we
    can't write), files are moved in one by one, config.json last, and readers may see a mix meanwhile.
    """
    directory = os.path.realpath(os.fspath(directory))
    if directory in _STAGING:
        yield directory
        return
    if os.path.isfile(directory):
        raise NotADirectoryError(f"{directory} is a file; a model is saved into a folder")
    parent, name = os.path.split(directory)
    os.makedirs(parent, exist_ok=True)
    with _folder_lock(directory, SAVE_LOCK_TIMEOUT if lock_timeout is None else lock_timeout):
        _recover(directory)
        if existing == "refuse" and os.path.isdir(directory) and os.listdir(directory):
            raise FileExistsError(f"{directory} is not empty; pass --overwrite (overwrite=True) to replace it")
        in_place = os.path.ismount(directory) or directory == os.getcwd() or not os.access(parent, os.W_OK)
        staging = os.path.join(directory if in_place else parent, f".{name}.embgpt-new-{uuid.uuid4().hex[:12]}")
        os.makedirs(staging)  # not mkdtemp: the folder gets the user's umask, not mode 0700
        _STAGING.add(staging)
        try:
            yield staging
            if os.listdir(staging):  # nothing written (e.g. not the main process): the folder stays as it is
                (_move_in if in_place else _swap_in)(staging, directory, existing)
        finally:
            _STAGING.discard(staging)
            shutil.rmtree(staging, ignore_errors=True)


def _swap_in(staging, directory, existing):
    """Put `staging` at `directory` in one step: Linux's renameat2 exchange; elsewhere two renames (the next save
    puts the old folder back if killed between them)."""
    parent, name = os.path.split(directory)
    side = os.path.join(parent, f".{name}.embgpt-{existing}-{os.stat(staging).st_ino}")
    if not os.path.exists(directory):
        os.rename(staging, directory)
        return
    os.chmod(staging, os.stat(directory).st_mode)
    if existing == "merge":  # the old folder's other files, linked in now so that they never go missing
        for entry in os.scandir(directory):
            if entry.is_file(follow_symlinks=False) and not _kept_out(entry.name, staging):
                with contextlib.suppress(OSError):  # no hard links here: moved in after the swap instead
                    os.link(entry.path, os.path.join(staging, entry.name))
    os.rename(staging, side)  # killed from here on: the next save tells the folders apart by inode
    if not _exchange(side, directory):
        os.rename(side, staging)
        os.rename(directory, side)
        os.rename(staging, directory)
    _finish(side, directory, existing)


def _finish(side, directory, existing):
    """The new folder is in place and the old one at `side`: move its other entries over, then delete it."""
    if existing == "merge":
        for entry in os.listdir(side):
            if not _kept_out(entry, directory):
                os.rename(os.path.join(side, entry), os.path.join(directory, entry))
    shutil.rmtree(side, ignore_errors=True)


def _kept_out(name, folder):
    """Whether the old folder's entry `name` stays out of the new `folder`: replaced there, or old weights beside new
    ones (an older save's shards or index would shadow them)."""
    if os.path.lexists(os.path.join(folder, name)):
        return True
    return bool(_WEIGHT_FILE.fullmatch(name)) and any(_WEIGHT_FILE.fullmatch(n) for n in os.listdir(folder))


def _recover(directory):
    """Finish or undo whatever a killed save of `directory` left beside it (the caller holds the lock)."""
    parent, name = os.path.split(directory)
    prefix = f".{name}.embgpt-"
    for entry in sorted(os.listdir(parent)):
        existing, _, inode = entry[len(prefix) :].partition("-")
        if not entry.startswith(prefix) or existing == "lock":
            continue
        path = os.path.join(parent, entry)
        if existing in ("merge", "replace", "refuse") and str(os.stat(path).st_ino) != inode:  # the old folder
            if not os.path.exists(directory):
                os.rename(path, directory)  # killed between the two renames of a swap: the old folder goes back
            else:
                _finish(path, directory, existing)
        shutil.rmtree(path, ignore_errors=True)  # a save never swapped in, or what the old folder kept out
    if os.path.isdir(directory):  # in-place saves stage inside the folder
        for entry in os.listdir(directory):
            if entry.startswith(prefix):
                shutil.rmtree(os.path.join(directory, entry), ignore_errors=True)


def _exchange(a, b):
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where the system can't."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a C library without renameat2 (glibc < 2.28)
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):  # a file system without exchange (e.g. NFS)
        return False
    raise OSError(error, os.strerror(error), b)


def _move_in(staging, directory, existing):
    """The non-atomic fallback: move each file in with os.replace, config.json last, then drop old weights."""
    written = os.listdir(staging)
    for name in sorted(written, key=lambda name: name == "config.json"):
        os.replace(os.path.join(staging, name), os.path.join(directory, name))
    ours = f".{os.path.basename(directory)}.embgpt-"  # the staging folder and perhaps the lock
    for entry in os.scandir(directory):
        if entry.name not in written and not entry.name.startswith(ours):
            if existing == "replace" and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            elif existing == "replace" or _WEIGHT_FILE.fullmatch(entry.name):
                os.remove(entry.path)


@contextlib.contextmanager
def _folder_lock(directory, timeout):
    """Hold `directory`'s lock file against other processes (re-entrant within a thread).

    The kernel drops a killed holder's lock, so a stale lock file is taken over at once; a waiter gives up after
    `timeout` seconds with an error naming the holder's pid.
    """
    parent, name = os.path.split(directory)
    path = os.path.join(parent if os.access(parent, os.W_OK) else directory, f".{name}.embgpt-lock")
    key = (path, threading.get_ident())
    if key in _LOCKS_HELD:
        yield
        return
    deadline, waiting = time.monotonic() + timeout, False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        # the lock counts only while `path` is still this file: a finishing holder unlinks it
        if _try_lock(fd) and os.path.exists(path) and os.path.samestat(os.fstat(fd), os.stat(path)):
            break
        holder = _lock_holder(fd)
        os.close(fd)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{directory} is being saved by process {holder} (lock {path}); waited {timeout:g} s")
        if not waiting:
            logger.warning("waiting for process %s, which is saving %s", holder, directory)
            waiting = True
        time.sleep(0.05)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _LOCKS_HELD.add(key)
    try:
        yield
    finally:
        _LOCKS_HELD.discard(key)
        with contextlib.suppress(OSError):  # Windows can't remove an open file; the next holder reuses it
            os.remove(path)
        os.close(fd)


def _lock_holder(fd):
    try:
        return os.read(fd, 32).decode(errors="replace").strip() or "unknown"
    except OSError:  # Windows refuses to read a locked byte
        return "unknown"


def _try_lock(fd):
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return True
    except OSError:
        return False


# ----------------------------------------------------------------------------------------------------------------
# GPT-2 weights. transformers' GPT-2 stores these four as Conv1D, i.e. transposed relative to nn.Linear.

GPT2_MASK_BUFFER = re.compile(r"(^|\.)attn\.(bias|masked_bias)$")  # causal-mask buffers of old GPT-2 files
GPT2_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# GPT-2 features EmbGPT does not have, with the value that means "off"
GPT2_UNSUPPORTED = {
    "add_cross_attention": False,
    "scale_attn_by_inverse_layer_idx": False,
    "scale_attn_weights": True,
}


def config_from_gpt2(gpt2_config, **overrides):
    """EmbGPTConfig for a transformers GPT2Config; raises on GPT-2 options EmbGPT can't reproduce."""
    for name, off in GPT2_UNSUPPORTED.items():
        if getattr(gpt2_config, name, off) != off:
            raise ValueError(f"GPT-2 config has {name}={getattr(gpt2_config, name)!r}, which EmbGPT does not support")
    if gpt2_config.n_inner not in (None, 4 * gpt2_config.n_embd):
        raise ValueError(f"GPT-2 config has n_inner={gpt2_config.n_inner}; EmbGPT's MLP is 4 * n_embd wide")
    activation = {"gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_new", "gelu": "gelu"}.get(
        gpt2_config.activation_function
    )
    if activation is None:
        raise ValueError(f"GPT-2 config has activation_function={gpt2_config.activation_function!r}; EmbGPT has GELU")
    rates = {gpt2_config.resid_pdrop, gpt2_config.embd_pdrop, gpt2_config.attn_pdrop}
    if len(rates) > 1:
        logger.warning(f"GPT-2 dropout rates differ ({sorted(rates)}); EmbGPT uses resid_pdrop for all three")
    values = dict(
        vocab_size=gpt2_config.vocab_size,
        block_size=gpt2_config.n_positions,
        n_layer=gpt2_config.n_layer,
        n_head=gpt2_config.n_head,
        n_embd=gpt2_config.n_embd,
        dropout=gpt2_config.resid_pdrop,
        bias=True,
        activation_function=activation,
        layer_norm_epsilon=gpt2_config.layer_norm_epsilon,
        initializer_range=gpt2_config.initializer_range,
        bos_token_id=gpt2_config.bos_token_id,
        eos_token_id=gpt2_config.eos_token_id,
        pad_token_id=gpt2_config.pad_token_id,
        id2label=gpt2_config.id2label,
        label2id=gpt2_config.label2id,
        problem_type=gpt2_config.problem_type,
    )
    return EmbGPTConfig(**{**values, **overrides})


def state_dict_from_gpt2(gpt2_state_dict):
    """GPT-2 state dict (GPT2LMHeadModel/GPT2Model names) -> EmbGPT's: the same names, four matrices transposed."""
    return {
        name: tensor.t() if name.endswith(GPT2_TRANSPOSED) else tensor
        for name, tensor in gpt2_state_dict.items()
        if not GPT2_MASK_BUFFER.search(name)
    }


def _convert_gpt2_folder(cls, source, destination, kwargs, gpt2_kwargs):
    """Load a GPT-2 checkpoint with transformers, check every tensor was there, and save it as EmbGPT.

    The conversion renames and transposes only, so the weights keep the dtype the GPT-2 load gave them, exactly."""
    overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in inspect.signature(EmbGPTConfig.__init__).parameters}
    head_kwargs = {k: kwargs.pop(k) for k in ("num_labels", "id2label", "label2id", "problem_type") if k in kwargs}
    gpt2_class = {
        "EmbGPTModel": GPT2Model,
        "EmbGPTForSequenceClassification": GPT2ForSequenceClassification,
    }.get(cls.__name__, GPT2LMHeadModel)
    gpt2, info = gpt2_class.from_pretrained(
        source, output_loading_info=True, ignore_mismatched_sizes=True, **gpt2_kwargs, **head_kwargs
    )  # we report every mismatch below, by name, rather than re-initialising
    info["unexpected_keys"] = {k for k in info["unexpected_keys"] if not GPT2_MASK_BUFFER.search(k)}
    _check_loaded_tensors(gpt2, info, source, reinitialise_mismatched=False)
    model = cls(config_from_gpt2(gpt2.config, **overrides)).to(gpt2.dtype)
    model.load_state_dict(state_dict_from_gpt2(gpt2.state_dict()), strict=True)
    if model.can_generate():
        model.generation_config = gpt2.generation_config
    model.save_pretrained(destination)


AUTO_MAP = {
    "AutoConfig": "configuration_embgpt.EmbGPTConfig",
    "AutoModel": "modeling_embgpt.EmbGPTModel",
    "AutoModelForCausalLM": "modeling_embgpt.EmbGPTForCausalLM",
    "AutoModelForSequenceClassification": "modeling_embgpt.EmbGPTForSequenceClassification",
}
# makes save_pretrained copy this file and configuration_embgpt.py beside the weights (Hub remote code)
EmbGPTConfig.register_for_auto_class()
EmbGPTModel.register_for_auto_class("AutoModel")
EmbGPTForCausalLM.register_for_auto_class("AutoModelForCausalLM")
EmbGPTForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")

__all__ = [
    "EmbGPTPreTrainedModel",
    "EmbGPTModel",
    "EmbGPTForCausalLM",
    "EmbGPTForSequenceClassification",
    "config_from_gpt2",
    "state_dict_from_gpt2",
]
