"""scripts/bench_model.py --quick runs every measurement end to end and writes every field (times are not checked)."""

import json
import os
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "bench_model.py")
MODELS = ("gpt2", "embgpt", "embgpt_cpu")  # GPT2LMHeadModel, plain EmbGPT, EmbGPT + kernels.optimize


def summary_ok(s):
    return s["min"] <= s["median"] <= s["max"] and len(s["values"]) == 2 and all(v > 0 for v in s["values"])


def test_quick_benchmark_writes_every_field(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, SCRIPT, "--quick", "--reps", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| train step 2x32" in done.stdout and "| peak RSS, train step" in done.stdout
    assert "| EmbGPT + optimize |" in done.stdout
    r = json.loads(out.read_text())

    assert r["quick"] is True and r["preset"] == "tiny" and r["malloc"] == "thp"
    assert r["malloc_env"] == {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}  # the re-exec took effect
    assert r["logits_max_abs_diff"] <= 1e-5  # same weights, same logits
    machine = r["machine"]
    assert all(machine[k] > 0 for k in ("matmul_peak_gflops", "read_bandwidth_gbs", "copy_bandwidth_gbs"))

    assert set(r["train"]) == {"2x32", "1x64"}
    for entry in r["train"].values():
        for name in MODELS:
            assert summary_ok(entry[name]["tokens_per_s"]) and summary_ok(entry[name]["mfu"])
        for key, name in (("speedup", "embgpt"), ("speedup_optimized", "embgpt_cpu")):
            assert entry[key] == pytest.approx(
                entry[name]["tokens_per_s"]["median"] / entry["gpt2"]["tokens_per_s"]["median"]
            )
    infer = r["inference"]["2x32"]
    assert all(summary_ok(infer[name]["tokens_per_s"]) for name in MODELS)
    assert infer["speedup"] > 0 and infer["speedup_optimized"] > 0

    gen = r["generate"]
    for label in ("batch1", "batch4_left_padded"):
        assert all(summary_ok(gen[label][name]["ms_per_token"]) for name in MODELS)
        assert gen[label]["speedup"] > 0 and gen[label]["speedup_optimized"] > 0
        assert gen[label]["tokens_identical"] is True  # greedy decoding of the same weights
    assert gen["weight_bytes"] > 0 and gen["bandwidth_floor_ms_per_token"] > 0
    assert set(gen["batch1_over_floor"]) == set(MODELS)
    for name in MODELS:  # each timed batch-1 run set against the floor measured around it
        runs = gen["batch1"][name]
        assert len(runs["over_paired_floor"]["values"]) == len(runs["ms_per_token"]["values"])
        assert summary_ok(runs["paired_floor_ms"]) and summary_ok(runs["over_paired_floor"])
        assert runs["paired_floor_ms"]["min"] >= gen["bandwidth_floor_ms_per_token"] * (1 - 1e-9)

    rss = r["peak_rss"]
    for name in MODELS:
        assert rss[name]["peak_rss_bytes"] > 0 and rss[name]["minor_faults_per_step"] >= 0
    assert rss["ratio"] == pytest.approx(rss["embgpt"]["peak_rss_bytes"] / rss["gpt2"]["peak_rss_bytes"])
    assert rss["ratio_optimized"] == pytest.approx(rss["embgpt_cpu"]["peak_rss_bytes"] / rss["gpt2"]["peak_rss_bytes"])
    # the CPU layer measured each linear shape it ran, and chose one of its kernels for each
    assert r["kernels"] and set(r["kernels"].values()) <= {"plain", "onednn", "row_chunks"}


def test_bad_reps_is_rejected_with_a_message():
    done = subprocess.run(
        [sys.executable, SCRIPT, "--quick", "--reps", "0"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 2
    assert "--reps must be at least 1, got 0" in done.stderr


def test_linear_layout_benchmark_times_both_layouts(tmp_path):
    script = os.path.join(os.path.dirname(SCRIPT), "bench_linear_layout.py")
    out = tmp_path / "layout.json"
    done = subprocess.run(
        [sys.executable, script, "--n_embd", "64", "--layers", "2", "--reps", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(out.read_text())
    assert set(r["ms_per_token"]) == {"nn.Linear (out, in): F.linear", "Conv1D (in, out): addmm"}
    assert all(s["min"] <= s["median"] <= s["max"] for s in r["ms_per_token"].values())
    assert r["nn_linear_speed_vs_conv1d"] > 0 and "speed vs Conv1D" in done.stdout
