"""`embgpt train`'s device defaults (bf16 and TF32 on a CUDA GPU, today's fp32 defaults on a CPU) and its MFU, which
is measured against the peak of the device it runs on or not reported at all. CUDA is faked: no GPU here."""

import types

import pytest
import torch
from transformers import HfArgumentParser, TrainingArguments
from transformers.utils import import_utils

from hf_embgpt import EmbGPTForCausalLM, train
from hf_embgpt.training import arguments, recipe

TINY = ["--n_layer", "2", "--n_head", "2", "--n_embd", "32", "--block_size", "32"]
QUIET = ["--disable_tqdm", "true", "--report_to", "none", "--warmup_steps", "2", "--eval_strategy", "no"]


@pytest.fixture
def fake_cuda(monkeypatch):
    """fake_cuda(name, capability): torch.cuda answers as one such GPU would (only the calls the defaults make)."""

    def fake(name="NVIDIA H100 80GB HBM3", capability=(9, 0)):
        monkeypatch.setattr(torch.version, "cuda", "12.8")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(
            torch.cuda, "get_device_properties", lambda device=None: types.SimpleNamespace(major=capability[0])
        )
        # as torch's own: native from Ampere (8.x) on, emulated before
        monkeypatch.setattr(
            torch.cuda, "is_bf16_supported", lambda including_emulation=True: capability[0] >= 8 or including_emulation
        )
        import_utils.is_torch_tf32_available.cache_clear()

    yield fake
    import_utils.is_torch_tf32_available.cache_clear()


def defaults(argv=()):
    return vars(arguments.build_parser(list(argv)).parse_args(list(argv)))


def todays_defaults(argv=()):
    """The parser as it was before device defaults: TrainingArguments' own plus the recipe's."""
    classes = (arguments.ModelArguments, arguments.DataArguments, arguments.RunArguments, TrainingArguments)
    parser = HfArgumentParser(classes)
    parser.set_defaults(**arguments.TRAINING_DEFAULTS)
    return vars(parser.parse_args(list(argv)))


def test_cpu_defaults_are_unchanged(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also where the tests run on a GPU machine
    assert defaults() == todays_defaults()
    assert defaults(["--bf16", "true"]) == todays_defaults(["--bf16", "true"])


def test_an_ampere_or_newer_gpu_trains_in_bf16_with_tf32_and_fused_adamw(fake_cuda):
    fake_cuda("NVIDIA H200", (9, 0))
    got = defaults()
    # the same answers as transformers' own checks for these flags
    assert got["bf16"] is True and got["bf16"] == import_utils.is_torch_bf16_gpu_available()
    assert got["tf32"] is True and got["tf32"] == import_utils.is_torch_tf32_available()
    assert got["optim"] == "adamw_torch_fused" and got["fp16"] is False
    assert {k: v for k, v in got.items() if k not in ("bf16", "tf32")} == {
        k: v for k, v in todays_defaults().items() if k not in ("bf16", "tf32")
    }


def test_flags_on_the_command_line_win_over_the_gpu_defaults(fake_cuda):
    fake_cuda()
    assert defaults(["--bf16", "false"])["bf16"] is False
    assert defaults(["--tf32", "false"])["tf32"] is False
    fp16 = defaults(["--fp16"])  # TrainingArguments refuses fp16 and bf16 together
    assert fp16["fp16"] is True and fp16["bf16"] is False and fp16["tf32"] is True
    assert defaults(["--use_cpu", "true"]) == todays_defaults(["--use_cpu", "true"])


def test_a_gpu_before_ampere_keeps_fp32(fake_cuda):
    fake_cuda("Tesla V100-SXM2-16GB", (7, 0))
    got = defaults()
    assert got["bf16"] is False  # torch emulates bf16 there, slower than fp32
    assert got["tf32"] is None and import_utils.is_torch_tf32_available() is False


def test_mfu_peak_is_the_devices_own_or_none(fake_cuda):
    assert recipe.mfu_peak_tflops("cpu") is None
    assert recipe.mfu_peak_tflops("cpu", override=50.0) == 50.0
    with pytest.raises(ValueError, match=r"mfu_peak_tflops \(0.0\) must be a positive"):
        recipe.mfu_peak_tflops("cpu", override=0.0)
    fake_cuda("NVIDIA H100 80GB HBM3")
    assert recipe.mfu_peak_tflops("cuda") == 989.0
    assert recipe.mfu_peak_tflops("cuda:0", override=400.0) == 400.0
    fake_cuda("NVIDIA GeForce RTX 4090")
    assert recipe.mfu_peak_tflops("cuda") is None


@pytest.mark.parametrize(
    ("name", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA H200 NVL", 835.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA A100-PCIE-40GB", 312.0),
        ("NVIDIA L4", 121.0),
        ("NVIDIA L40S", 362.0),
        ("NVIDIA A10G", None),  # not an A10: a lower clock
        ("NVIDIA L40", None),
    ],
)
def test_gpu_names_match_their_own_row(name, tflops):
    assert recipe.gpu_peak_tflops(name) == tflops


def test_mfu_is_logged_only_against_a_known_peak(tmp_path, one_thread):
    text = tmp_path / "words.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 300, "utf-8")
    common = [*TINY, *QUIET, "--data", str(text), "--max_steps", "4", "--logging_steps", "2", "--num_samples", "0",
              "--save_strategy", "no", "--per_device_train_batch_size", "4", "--use_cpu", "true"]  # fmt: skip

    def logged(results):
        return [h for h in results["log_history"] if "loss" in h]

    cpu = logged(train.train([*common, "--output_dir", str(tmp_path / "cpu")]))
    assert cpu and all(h["tokens_per_second"] > 0 and "mfu_percent" not in h for h in cpu)
    told = logged(train.train([*common, "--output_dir", str(tmp_path / "told"), "--mfu_peak_tflops", "0.001"]))
    model = EmbGPTForCausalLM.from_pretrained(tmp_path / "told")
    flops = recipe.flops_per_token(model.config, recipe.non_embedding_params(model), 32)
    for h in told:
        assert h["mfu_percent"] == pytest.approx(100 * flops * h["tokens_per_second"] / 1e9, rel=1e-3)
