"""scripts/gpu_check.sh as a CPU dry run: every variant and field in its JSON, ratios that are the quotients of the
entries they compare, and a failing variant recorded without stopping the others. The GPU figures themselves need a
GPU; these tests only prove that the script runs and reports."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import gpu_check  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}


def run_check(tmp_path, *args, dry_run_by="env"):
    env = {**ENV, "OUT": str(tmp_path)}
    cmd = ["bash", os.path.join(ROOT, "scripts", "gpu_check.sh"), *args]
    if dry_run_by == "env":
        env["DRY_RUN"] = "1"
    else:
        cmd.append("--dry-run")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    with open(tmp_path / "gpu_check.json") as f:
        return json.load(f), proc.stdout


def test_dry_run_reports_every_variant_and_ratio(tmp_path):
    results, stdout = run_check(tmp_path)
    assert results["dry_run"] is True and results["device"] == "cpu"
    assert results["peak_tflops"] is None  # no MFU against another chip's peak
    groups = {
        "train": (gpu_check.TRAIN_VARIANTS, gpu_check.TRAIN_FIELDS),
        "decode": (gpu_check.DECODE_VARIANTS, gpu_check.DECODE_FIELDS),
        "embgpt_train": (["embgpt_train"], gpu_check.EMBGPT_TRAIN_FIELDS),
    }
    for group, (names, fields) in groups.items():
        assert sorted(results[group]) == sorted(names)
        for name in names:
            entry = results[group][name]
            assert set(entry) == {*fields, "status", "detail"}, (group, name)
            if name.startswith("embgpt_fused_loss"):  # the memory mode needs liger_kernel and the model's option
                assert entry["status"] in ("ok", "skipped"), entry
                if entry["status"] == "skipped":
                    assert entry["detail"]
                    continue
            assert entry["status"] == "ok", (group, name, entry)
            rate = entry["tokens_per_s"]
            assert rate > 0 and entry["warmup_s"] > 0, (group, name, entry)
            assert entry.get("mfu") is None and entry["peak_memory_gib"] is None  # neither is measured on a CPU
    train = results["train"]
    for name in gpu_check.TRAIN_VARIANTS:
        if train[name]["status"] == "ok":
            size = results["batch"] * results["seq"]
            assert train[name]["tokens_per_s"] == pytest.approx(1000 * size / train[name]["ms_per_step"])
    r = results["ratios"]
    for mode in ("eager", "compiled"):
        for other in ("nanogpt", "gpt2"):
            expected = train[f"embgpt_{mode}"]["tokens_per_s"] / train[f"{other}_{mode}"]["tokens_per_s"]
            assert r[f"embgpt_vs_{other}_{mode}"] == pytest.approx(expected)
    decode = results["decode"]
    expected = decode["embgpt_static_cache"]["tokens_per_s"] / decode["gpt2_static_cache"]["tokens_per_s"]
    assert r["decode_embgpt_vs_gpt2"] == pytest.approx(expected)
    ours = results["embgpt_train"]["embgpt_train"]
    assert ours["raw_loop_tokens_per_s"] == train["embgpt_compiled"]["tokens_per_s"]
    assert r["embgpt_train_vs_raw_loop"] == pytest.approx(ours["tokens_per_s"] / ours["raw_loop_tokens_per_s"])
    # the printed table carries the same ratios
    assert "| EmbGPT, compiled |" in stdout
    assert f"{r['embgpt_vs_nanogpt_compiled']:.2f}x | {r['embgpt_vs_gpt2_compiled']:.2f}x |" in stdout


def test_a_failing_compile_is_recorded_and_the_rest_still_runs(tmp_path):
    only = "embgpt_eager,embgpt_compiled,gpt2_compiled"
    results, stdout = run_check(
        tmp_path, "--only", only, "--compile-backend", "no_such_backend", dry_run_by="flag"
    )  # fmt: skip
    train = results["train"]
    assert train["embgpt_eager"]["status"] == "ok"
    for name in ("embgpt_compiled", "gpt2_compiled"):
        assert train[name]["status"] == "error" and "no_such_backend" in train[name]["detail"], train[name]
    assert train["nanogpt_eager"] == {**dict.fromkeys(gpu_check.TRAIN_FIELDS), "status": "skipped",
                                      "detail": "not selected (--only)"}  # fmt: skip
    assert results["ratios"]["embgpt_vs_gpt2_compiled"] is None
    assert "train/embgpt_compiled: error:" in stdout


def test_unknown_variant_is_rejected_with_the_choices(capsys):
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--only", "embgpt_turbo"])
    assert "unknown variant(s) embgpt_turbo; choose from nanogpt_eager" in capsys.readouterr().err
