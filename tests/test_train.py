"""`embgpt train`: Trainer runs that learn, nanoGPT's optimizer and schedule, 2 processes == 1, SIGKILL + resume ==
uninterrupted, bf16 / gradient checkpointing / LoRA, the embedded default, bad inputs."""

import json
import math
import os
import random
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

import hf_embgpt
from conftest import KILLED_TRAINING
from hf_embgpt import train
from hf_embgpt.training import checkpoints, data, recipe
from hf_embgpt.training.arguments import RunArguments

TINY = ["--n_layer", "2", "--n_head", "2", "--n_embd", "32", "--block_size", "32"]
QUIET = ["--disable_tqdm", "true", "--report_to", "none", "--logging_steps", "1", "--warmup_steps", "2"]
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


pytestmark = pytest.mark.usefixtures("one_thread")

# `embgpt` under torchrun, recording each rank's native threads (Linux names them in /proc) once `main` has returned
EXIT_THREADS_ENTRY = """
import atexit, os, sys
from hf_embgpt import cli

def record():
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            names.append(open(f"/proc/self/task/{task}/comm").read().strip())
        except FileNotFoundError:  # a thread that has just ended
            pass
    path = os.path.join(os.environ["EXIT_THREADS_DIR"], f"exit_threads_rank{os.environ['RANK']}.txt")
    with open(path, "w") as f:
        f.write("\\n".join(names))

atexit.register(record)
sys.exit(cli.main())
"""


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    rng = random.Random(0)
    vocab = "the quick brown fox jumps over a lazy dog while the cat sleeps".split()
    path = tmp_path_factory.mktemp("data") / "words.txt"
    path.write_text("\n".join(" ".join(rng.choice(vocab) for _ in range(10)) for _ in range(300)), "utf-8")
    return str(path)


def argv(out, data_path, *extra, tiny=True):
    return ["--data", data_path, "--output_dir", str(out), *(TINY if tiny else []), *QUIET, *extra]


def losses(results_or_dir):
    if isinstance(results_or_dir, dict):
        history = results_or_dir["log_history"]
    else:
        with open(os.path.join(results_or_dir, "train_results_embgpt.json")) as f:
            history = json.load(f)["log_history"]
    return [(h["step"], h["loss"]) for h in history if "loss" in h]


def get_lr(it, learning_rate, warmup_iters, lr_decay_iters, min_lr):
    """nanoGPT train.py's get_lr, verbatim (asserts aside): the schedule we must reproduce."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (learning_rate - min_lr)


def test_optimizer_groups_and_schedule_are_nanogpts(tmp_path, tiny_config):
    model = hf_embgpt.EmbGPTForCausalLM(tiny_config)
    args = TrainingArguments(
        output_dir=str(tmp_path), learning_rate=1e-3, weight_decay=0.1, adam_beta2=0.99, warmup_steps=10,
        optim="adamw_torch_fused", report_to="none", use_cpu=True,
    )  # fmt: skip
    trainer = recipe.trainer_class()(model=model, args=args, run_args=RunArguments(min_lr=1e-4))
    optimizer = trainer.create_optimizer()
    decay, no_decay = optimizer.param_groups
    params = {id(p): p for p in model.parameters()}
    assert {id(p) for p in decay["params"]} == {i for i, p in params.items() if p.dim() >= 2}
    assert {id(p) for p in no_decay["params"]} == {i for i, p in params.items() if p.dim() < 2}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert decay["betas"] == (0.9, 0.99) and decay["fused"]
    scheduler = trainer.create_scheduler(num_training_steps=100)
    for it in range(120):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(get_lr(it, 1e-3, 10, 100, 1e-4), rel=1e-12)
        optimizer.step()
        scheduler.step()


def test_training_lowers_the_loss_and_saves_a_loadable_folder(tmp_path, words):
    out = tmp_path / "out"
    results = train.train(
        argv(out, words, "--max_steps", "60", "--learning_rate", "3e-3", "--per_device_train_batch_size", "8",
             "--eval_steps", "30", "--save_steps", "30", "--num_samples", "1", "--sample_tokens", "40")
    )  # fmt: skip
    steps = losses(results)
    assert len(steps) == 60
    assert sum(loss for _, loss in steps[-5:]) / 5 < steps[0][1] - 0.7
    evals = [h["eval_loss"] for h in results["log_history"] if "eval_loss" in h]
    assert evals[-1] < evals[0] and results["eval_perplexity"] == pytest.approx(math.exp(results["eval_loss"]))
    logged = [h for h in results["log_history"] if "loss" in h][1:]
    assert all(h["tokens_per_second"] > 0 for h in logged)
    assert torch.cuda.is_available() or not any("mfu_percent" in h for h in logged)  # a CPU has no known peak
    assert len(results["samples"]) == 1 and len(results["samples"][0]) > 40  # prompt "\n" + 40 characters
    with open(out / "loss_curve.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    # the folder loads with the Auto classes; its eval loss, recomputed directly, is the one reported
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    text = open(words, encoding="utf-8").read()
    assert tokenizer.decode(tokenizer(text[:200])["input_ids"]) == text[:200]
    _, val = data.build_datasets(data.load_text([words]), tokenizer, 32)
    ids = torch.tensor(list(val["input_ids"]))
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    direct = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1))
    assert direct.item() == pytest.approx(results["eval_loss"], rel=1e-5)

    # the model card that `--push_to_hub` would upload names the command and shows the final eval loss
    from hf_embgpt.hub import push_to_hub

    card = push_to_hub(out, "someone/tiny-words", dry_run=True)["card"]
    assert "embgpt train" in card and "--max_steps 60" in card
    assert str(tmp_path) not in card  # public card: local paths by their last component only
    assert f"{results['eval_loss']:.4f}"[:5] in card


def test_push_to_hub_without_a_token_fails_before_training(tmp_path, words, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(ValueError, match="--push_to_hub needs a Hugging Face token"):
        train.train(argv(tmp_path / "out", words, "--push_to_hub", "true", "--max_steps", "1"))
    assert not (tmp_path / "out" / "config.json").exists()


def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path, words):
    common = ["--max_steps", "6", "--eval_strategy", "no", "--save_strategy", "no", "--num_samples", "1",
              "--sample_tokens", "8"]  # fmt: skip
    one = train.train(argv(tmp_path / "one", words, *common, "--per_device_train_batch_size", "4"))
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    entry = tmp_path / "embgpt_recording_exit_threads.py"
    entry.write_text(EXIT_THREADS_ENTRY)
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", str(entry), "train",
           *argv(tmp_path / "two", words, *common, "--per_device_train_batch_size", "2")]  # fmt: skip
    env = {**SUBPROCESS_ENV, "PYTHONFAULTHANDLER": "1", "EXIT_THREADS_DIR": str(tmp_path)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # gloo's threads were stopped before interpreter exit: left running there, they can abort a rank
    for rank in (0, 1):
        threads = (tmp_path / f"exit_threads_rank{rank}.txt").read_text().split()
        assert threads and not [t for t in threads if "gloo" in t], threads
    two = losses(str(tmp_path / "two"))
    assert [s for s, _ in two] == [s for s, _ in losses(one)] == list(range(1, 7))
    for (_, a), (_, b) in zip(two, losses(one), strict=True):
        assert a == pytest.approx(b, abs=1e-5)
    assert proc.stdout.count("--- sample 1 ---") == 1  # only rank 0 samples, prints and writes


def test_sigkill_then_resume_equals_uninterrupted(tmp_path, words):
    common = ["--max_steps", "10", "--save_steps", "4", "--eval_strategy", "no", "--num_samples", "0",
              "--per_device_train_batch_size", "4", "--dropout", "0.0"]  # fmt: skip
    killed = tmp_path / "killed"
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_TRAINING, *argv(killed, words, *common)],
        env={**SUBPROCESS_ENV, "KILL_AT": "6"}, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert not (killed / "model.safetensors").exists()
    assert checkpoints.last_complete_checkpoint(str(killed)) == str(killed / "checkpoint-4")

    # checkpoints the kill cut short: no trainer state yet, or a truncated optimizer file
    shutil.copytree(killed / "checkpoint-4", killed / "checkpoint-5")
    os.remove(killed / "checkpoint-5" / "trainer_state.json")
    shutil.copytree(killed / "checkpoint-4", killed / "checkpoint-6")
    state = json.loads((killed / "checkpoint-6" / "trainer_state.json").read_text())
    (killed / "checkpoint-6" / "trainer_state.json").write_text(json.dumps({**state, "global_step": 6}))
    optimizer = (killed / "checkpoint-6" / "optimizer.pt").read_bytes()
    (killed / "checkpoint-6" / "optimizer.pt").write_bytes(optimizer[: len(optimizer) // 2])
    assert not checkpoints.checkpoint_is_complete(str(killed / "checkpoint-5"))
    assert not checkpoints.checkpoint_is_complete(str(killed / "checkpoint-6"))
    assert checkpoints.last_complete_checkpoint(str(killed)) == str(killed / "checkpoint-4")

    resumed = train.train(argv(killed, words, *common, "--resume"))
    assert resumed["resumed_from"] == str(killed / "checkpoint-4")
    whole = train.train(argv(tmp_path / "whole", words, *common))
    assert losses(resumed) == losses(whole)  # steps 1-4 come from the checkpoint, 5-10 were trained again
    a, b = load_file(killed / "model.safetensors"), load_file(tmp_path / "whole" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


PRECISION_RUN = ["--max_steps", "10", "--learning_rate", "3e-3", "--dropout", "0.0", "--eval_strategy", "no",
                 "--save_strategy", "no", "--num_samples", "0", "--use_cpu", "true"]  # fmt: skip


@pytest.fixture(scope="module")
def fp32_run(tmp_path_factory, words):
    """The float32 run the bf16 and gradient-checkpointing runs are compared with: (results, its output folder)."""
    out = tmp_path_factory.mktemp("fp32")
    return train.train(argv(out, words, *PRECISION_RUN)), out


def bf16_loss_bound(fp32_folder, words, n_layer=2):
    """How far a bf16-autocast loss may sit from the float32 one, to first order in bf16's rounding.

    Autocast rounds each linear layer's input and output to bf16's 8 significant bits (relative error <= 2^-9 each,
    2^-8 per layer); the residual stream, LayerNorm and the loss stay float32. The deepest path to the logits z
    crosses 4 linear layers per block and the head, L = 4 * n_layer + 1, so |dz| <= L * 2^-8 * max|z|. The gradient
    of cross-entropy with respect to z (softmax - one-hot) has L1 norm <= 2, so |d loss| <= 2 * L * 2^-8 * max|z|.
    max|z| is read off the trained float32 model on the validation windows (logits grow as training goes, so the
    final model's bound covers the earlier steps). The runs' weights also drift apart through their updates; over
    10 steps that is second order (measured: 9e-5 at most, against a bound of 0.07).
    """
    model = AutoModelForCausalLM.from_pretrained(fp32_folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(fp32_folder)
    _, val = data.build_datasets(data.load_text([words]), tokenizer, model.config.block_size)
    with torch.no_grad():
        max_logit = model(input_ids=torch.tensor(list(val["input_ids"]))).logits.abs().max().item()
    return 2 * (4 * n_layer + 1) * 2**-8 * max_logit


def test_bf16_run_follows_the_float32_run(tmp_path, words, fp32_run):
    fp32, fp32_folder = fp32_run
    results = train.train(argv(tmp_path, words, "--bf16", *PRECISION_RUN))
    bound = bf16_loss_bound(fp32_folder, words)
    reference, got = losses(fp32), losses(results)
    assert [s for s, _ in got] == [s for s, _ in reference] == list(range(1, 11))
    differences = [abs(a - b) for (_, a), (_, b) in zip(reference, got, strict=True)]
    print(f"bf16 vs float32: largest loss difference {max(differences):.2e}, bound {bound:.3f}")
    assert got != reference  # bf16 really ran: its rounding shows in the losses
    assert max(differences) <= bound, differences
    assert abs(results["eval_loss"] - fp32["eval_loss"]) <= bound
    assert got[-1][1] < got[0][1] - 0.3  # and it learns as the float32 run does
    assert AutoModelForCausalLM.from_pretrained(tmp_path).config.n_layer == 2


def test_gradient_checkpointing_run_equals_the_plain_run(tmp_path, words, fp32_run):
    fp32, _ = fp32_run
    results = train.train(argv(tmp_path, words, "--gradient_checkpointing", *PRECISION_RUN))
    # recomputing the forward in backward does the same float32 arithmetic again: the same losses
    assert [s for s, _ in losses(results)] == [s for s, _ in losses(fp32)] == list(range(1, 11))
    assert [loss for _, loss in losses(results)] == pytest.approx([loss for _, loss in losses(fp32)], abs=1e-6)
    assert results["eval_loss"] == pytest.approx(fp32["eval_loss"], abs=1e-6)


def make_base_checkpoint(folder, words, block_size=32):
    tokenizer = data.char_tokenizer(open(words, encoding="utf-8").read())
    torch.manual_seed(0)
    config = hf_embgpt.EmbGPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=block_size, vocab_size=len(tokenizer))
    hf_embgpt.EmbGPTForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_lora_trains_only_the_adapter_and_merges_exactly(tmp_path, words):
    from peft import AutoPeftModelForCausalLM

    base = make_base_checkpoint(tmp_path / "base", words)
    out = tmp_path / "lora"
    train.train(
        ["--model", base, "--data", words, "--output_dir", str(out), *QUIET, "--lora_r", "4", "--merge_lora",
         "--max_steps", "8", "--learning_rate", "1e-2", "--eval_strategy", "no", "--save_strategy", "no",
         "--num_samples", "0"]
    )  # fmt: skip
    assert (out / "adapter_model.safetensors").exists() and not (out / "model.safetensors").exists()
    adapted = AutoPeftModelForCausalLM.from_pretrained(out).eval()
    before = load_file(os.path.join(base, "model.safetensors"))
    after = {k.replace("base_model.model.", "").replace(".base_layer", ""): v for k, v in adapted.state_dict().items()}
    assert all(torch.equal(before[k], after[k]) for k in before)  # the base model did not move
    lora_b = [v for k, v in adapted.state_dict().items() if "lora_B" in k]
    assert len(lora_b) == 2 * 4 and all(v.abs().sum() > 0 for v in lora_b)  # attn.c_attn/c_proj, mlp.c_fc/c_proj

    merged = AutoModelForCausalLM.from_pretrained(out / "merged").eval()
    assert type(merged) is hf_embgpt.EmbGPTForCausalLM
    assert not any("lora" in k for k in merged.state_dict())
    ids = torch.randint(0, merged.config.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, adapted(input_ids=ids).logits, atol=1e-5, rtol=1e-5)
    assert AutoTokenizer.from_pretrained(out / "merged").vocab == AutoTokenizer.from_pretrained(base).vocab


def test_embedded_default_runs_offline(tmp_path):
    results = train.train(
        ["--output_dir", str(tmp_path), *QUIET, "--max_steps", "3", "--eval_strategy", "no", "--save_strategy", "no",
         "--num_samples", "1", "--sample_tokens", "5"]
    )  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert (model.config.n_layer, model.config.n_head, model.config.n_embd, model.config.block_size) == (4, 4, 128, 64)
    assert len(AutoTokenizer.from_pretrained(tmp_path)) == model.config.vocab_size < 200  # characters
    assert results["global_step"] == 3


def test_block_size_larger_than_the_models(tmp_path, words):
    base = make_base_checkpoint(tmp_path / "base", words, block_size=16)
    with pytest.raises(ValueError, match=r"block_size 32 is larger than the model's block_size 16"):
        train.train(["--model", base, "--data", words, "--block_size", "32", "--output_dir", str(tmp_path / "o")])


def test_unknown_preset(tmp_path, words):
    with pytest.raises(ValueError, match=r"unknown preset 'gpt5'; choose one of baby, gpt2"):
        train.train(["--preset", "gpt5", "--data", words, "--output_dir", str(tmp_path)])


def test_bad_data_files(tmp_path):
    missing = tmp_path / "missing.txt"
    with pytest.raises(FileNotFoundError, match=f"data file {missing} does not exist"):
        train.train(["--data", str(missing), "--output_dir", str(tmp_path / "o")])
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match=f"data file {empty} is empty"):
        train.train(["--data", str(empty), "--output_dir", str(tmp_path / "o")])
    binary = tmp_path / "model.bin.txt"
    binary.write_bytes(torch.randn(1000).numpy().tobytes())
    with pytest.raises(ValueError, match=f"data file {binary} is not"):
        train.train(["--data", str(binary), "--output_dir", str(tmp_path / "o")])


def test_architecture_overrides_on_a_checkpoint_are_rejected(tmp_path, words):
    base = make_base_checkpoint(tmp_path / "base", words)
    with pytest.raises(ValueError, match=r"n_layer can't change a loaded checkpoint's architecture"):
        train.train(["--model", base, "--data", words, "--n_layer", "3", "--output_dir", str(tmp_path / "o")])


def test_run_clm_recipe(tmp_path, words):
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "scripts", "run_clm.py")
    spec = importlib.util.spec_from_file_location("run_clm", path)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    metrics = recipe.main(
        argv(tmp_path, words, "--max_steps", "20", "--learning_rate", "3e-3", "--eval_strategy", "no",
             "--save_strategy", "no", "--num_samples", "1", "--sample_tokens", "10")
    )  # fmt: skip
    assert metrics["eval_loss"] < math.log(AutoModelForCausalLM.from_pretrained(tmp_path).config.vocab_size)
    assert (tmp_path / "loss_curve.png").exists() and (tmp_path / "tokenizer.json").exists()


def test_streamed_data_trains(tmp_path, words):
    results = train.train(
        argv(tmp_path, words, "--streaming", "--validation_data", words, "--max_steps", "20", "--learning_rate", "3e-3",
             "--eval_strategy", "no", "--save_strategy", "no", "--num_samples", "0")
    )  # fmt: skip
    steps = losses(results)
    assert results["global_step"] == 20 and [s for s, _ in steps] == list(range(1, 21))
    first, last = steps[0][1], sum(loss for _, loss in steps[-3:]) / 3
    print(f"streamed run: first loss {first:.3f}, mean of the last three {last:.3f}")
    assert last < first - 0.3, (first, last)  # it learns from the streamed windows, not merely runs
    assert results["eval_loss"] < first


def test_random_window_sampling_trains(tmp_path, words):
    results = train.train(
        argv(tmp_path, words, "--sampling", "random", "--max_steps", "30", "--learning_rate", "3e-3",
             "--eval_strategy", "no", "--save_strategy", "no", "--num_samples", "0")
    )  # fmt: skip
    steps = losses(results)
    assert len(steps) == 30 and steps[-1][1] < steps[0][1] - 0.3
    with pytest.raises(ValueError, match="--sampling random needs --max_steps"):
        train.train(argv(tmp_path / "o", words, "--sampling", "random", "--max_steps", "-1", "--num_train_epochs", "1"))
