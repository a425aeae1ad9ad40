"""scripts/accelerate/*.yaml: each config loads with accelerate's own reader, and `accelerate launch` runs
`embgpt train` for one process with it. On a CPU accelerate applies neither FSDP nor DeepSpeed (they need GPUs), so
there the launch proves the config and the command, and FSDP2 wrapping `Block` is checked directly with torch's
`fully_shard` against the unsharded model; on a GPU the same launch must come up FSDP2-wrapped. DeepSpeed is skipped
where it is not installed. Two processes training like one is tests/test_train.py's."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType
from accelerate.utils.dataclasses import get_module_class_from_name

from hf_embgpt import EmbGPTConfig, EmbGPTForCausalLM
from hf_embgpt.modeling_embgpt import Block

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "scripts", "accelerate")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
ENV["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.join(ROOT, "src"), os.environ.get("PYTHONPATH")]))
TINY = ["--n_layer", "2", "--n_head", "2", "--n_embd", "32", "--block_size", "32"]

# `embgpt train` under `accelerate launch`, recording how the model was wrapped once training begins
PROBE_ENTRY = """
import json, os, sys
import torch
from accelerate.state import AcceleratorState
from transformers import TrainerCallback
from hf_embgpt.train import main

class Probe(TrainerCallback):
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        from torch.distributed.fsdp import FSDPModule
        record = {
            "distributed_type": str(AcceleratorState().distributed_type),
            "device": str(args.device),
            "fsdp_units": sorted({type(m).__name__ for m in model.modules() if isinstance(m, FSDPModule)}),
        }
        with open(os.environ["PROBE_OUT"], "w") as f:
            json.dump(record, f)

import hf_embgpt.train as train_module
train = train_module.train
train_module.train = lambda argv=None, callbacks=None: train(argv, callbacks=[Probe()])
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "words.txt"
    path.write_text("the quick brown fox jumps over the lazy dog\n" * 300, "utf-8")
    return str(path)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("ddp.yaml", DistributedType.MULTI_GPU),
        ("fsdp.yaml", DistributedType.FSDP),
        ("deepspeed_zero2.yaml", DistributedType.DEEPSPEED),
        ("deepspeed_zero3.yaml", DistributedType.DEEPSPEED),
    ],
)
def test_each_config_loads_with_accelerates_reader(name, kind):
    config = load_config_from_file(os.path.join(CONFIGS, name))
    assert config.distributed_type == kind and config.mixed_precision == "bf16"
    if kind == DistributedType.FSDP:
        assert config.fsdp_config["fsdp_version"] == 2
        assert config.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
        # accelerate finds the class to wrap by this name in the model: EmbGPT's transformer block
        model = EmbGPTForCausalLM(EmbGPTConfig.from_preset("tiny"))
        assert get_module_class_from_name(model, config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"]) is Block
        assert config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] in model._no_split_modules
    if kind == DistributedType.DEEPSPEED:
        assert config.deepspeed_config["zero_stage"] in (2, 3)


def launch_one_process(tmp_path, words, name):
    entry = tmp_path / "probe_entry.py"
    entry.write_text(PROBE_ENTRY)
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    out = tmp_path / "out"
    cmd = [accelerate, "launch", "--config_file", os.path.join(CONFIGS, name), "--num_processes", "1", str(entry),
           "--data", words, "--output_dir", str(out), *TINY, "--max_steps", "3", "--eval_strategy", "no",
           "--save_strategy", "no", "--num_samples", "0", "--disable_tqdm", "true", "--report_to", "none"]  # fmt: skip
    env = {**ENV, "PROBE_OUT": str(tmp_path / "probe.json")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "train loss" in proc.stdout and (out / "model.safetensors").exists()
    return json.loads((tmp_path / "probe.json").read_text())


@pytest.mark.parametrize("name", ["ddp.yaml", "fsdp.yaml"])
def test_one_process_launch_trains(tmp_path, words, name):
    probe = launch_one_process(tmp_path, words, name)
    if torch.cuda.is_available() and name == "fsdp.yaml":
        assert probe["distributed_type"] == str(DistributedType.FSDP)
        assert "Block" in " ".join(probe["fsdp_units"]), probe  # FSDP2 swaps in an FSDP<Block> class
    elif not torch.cuda.is_available():
        assert probe["device"].startswith("cpu") and probe["fsdp_units"] == []  # accelerate's FSDP needs a GPU


@pytest.mark.parametrize("name", ["deepspeed_zero2.yaml", "deepspeed_zero3.yaml"])
def test_deepspeed_one_process_launch_trains(tmp_path, words, name):
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install deepspeed; it needs a GPU)")
    if not torch.cuda.is_available():
        pytest.skip("DeepSpeed trains on GPUs only")
    probe = launch_one_process(tmp_path, words, name)
    assert probe["distributed_type"] == str(DistributedType.DEEPSPEED)


# FSDP2 on a CPU, without accelerate: one gloo rank, each Block its own unit, the tied wte/lm_head in the root unit,
# as fsdp.yaml asks. A training step must give the unsharded model's loss and weights.
FSDP2_ENTRY = """
import copy, os, sys
import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule, fully_shard
from hf_embgpt import EmbGPTConfig, EmbGPTForCausalLM
from hf_embgpt.modeling_embgpt import Block

dist.init_process_group("gloo", rank=0, world_size=1)
torch.manual_seed(0)
plain = EmbGPTForCausalLM(EmbGPTConfig.from_preset("tiny", vocab_size=256))
sharded = copy.deepcopy(plain)
for module in sharded.modules():
    if isinstance(module, Block):
        fully_shard(module)
fully_shard(sharded)
units = [type(m).__name__ for m in sharded.modules() if isinstance(m, FSDPModule)]
assert len(units) == 1 + plain.config.n_layer, units
ids = torch.randint(0, 256, (2, 16))
results = []
for model in (plain, sharded):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(2):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    state = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach() for k, v in model.state_dict().items()}
    results.append((losses, state))
(a_losses, a), (b_losses, b) = results
torch.testing.assert_close(torch.tensor(a_losses), torch.tensor(b_losses), rtol=1e-6, atol=1e-6)
assert a.keys() == b.keys()
for k in a:
    torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
dist.destroy_process_group()
print("fsdp2 ok", units[0], units[-1])
"""


def test_fsdp2_wrapping_blocks_trains_like_the_unsharded_model(tmp_path):
    with socket.socket() as s:  # a free port for the one-rank process group
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    proc = subprocess.run([sys.executable, "-c", FSDP2_ENTRY], capture_output=True, text=True, env=env, timeout=240)
    if proc.returncode != 0 and "not supported" in proc.stderr and "cpu" in proc.stderr.lower():
        pytest.skip(f"this torch has no FSDP2 on CPU: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "fsdp2 ok" in proc.stdout
