"""llm.c .bin files: header, stacked layout, v3 fp32 / v5 bf16, padded vocab, and every bad input."""

import logging
import os
import re
import tracemalloc

import numpy as np
import pytest
import torch
from transformers import GPT2Config

from conftest import assert_same_tensors, random_state_dict
from hf_embgpt import EmbGPTConfig
from hf_embgpt.formats.common import model_from_state_dict
from hf_embgpt.formats.llmc import HEADER_BYTES, MAGIC, read_llmc, write_llmc


@pytest.fixture
def tiny():
    return EmbGPTConfig.from_preset("tiny", vocab_size=300, bos_token_id=None, eos_token_id=None)


def test_v3_round_trip_is_bit_exact_and_file_is_stable(tmp_path, tiny):
    state_dict = random_state_dict(tiny)
    write_llmc(tiny, state_dict, tmp_path / "a.bin")
    config, back = read_llmc(tmp_path / "a.bin")
    assert config.to_diff_dict() == tiny.to_diff_dict()
    assert_same_tensors(state_dict, back)
    write_llmc(config, back, tmp_path / "b.bin")
    assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "b.bin").read_bytes()
    (tmp_path / "plain").write_bytes(b"")  # written files get the umask's mode, like any other new file
    assert (tmp_path / "a.bin").stat().st_mode == (tmp_path / "plain").stat().st_mode


def test_layout_matches_llmc_header_and_stacking(tmp_path, tiny):
    """Check the file against llm.c's documented layout, computed here with numpy."""
    state_dict = random_state_dict(tiny)
    write_llmc(tiny, state_dict, tmp_path / "m.bin")
    raw = (tmp_path / "m.bin").read_bytes()
    header = np.frombuffer(raw[:HEADER_BYTES], dtype="<i4")
    L, C, V, T = tiny.n_layer, tiny.n_embd, tiny.vocab_size, tiny.block_size
    Vp = (V + 127) // 128 * 128
    assert header[:8].tolist() == [MAGIC, 3, T, V, L, tiny.n_head, C, Vp] and not header[8:].any()
    body = np.frombuffer(raw[HEADER_BYTES:], dtype="<f4")
    wte = body[: Vp * C].reshape(Vp, C)
    np.testing.assert_array_equal(wte[:V], state_dict["transformer.wte.weight"].numpy())
    assert not wte[V:].any()  # padding rows are zeros
    start = Vp * C + T * C + 2 * L * C  # after wte, wpe, ln1w, ln1b
    qkvw = body[start : start + L * 3 * C * C].reshape(L, 3 * C, C)
    for i in range(L):
        np.testing.assert_array_equal(qkvw[i], state_dict[f"transformer.h.{i}.attn.c_attn.weight"].numpy())
    np.testing.assert_array_equal(body[-C:], state_dict["transformer.ln_f.bias"].numpy())
    n = sum(t.numel() for name, t in state_dict.items() if name != "lm_head.weight") + (Vp - V) * C
    assert len(body) == n


def test_v5_bfloat16_round_trip(tmp_path, tiny):
    state_dict = random_state_dict(tiny)
    write_llmc(tiny, state_dict, tmp_path / "m_bf16.bin", dtype="bfloat16")
    raw = (tmp_path / "m_bf16.bin").read_bytes()
    assert np.frombuffer(raw[:8], dtype="<i4").tolist() == [MAGIC, 5]
    _, back = read_llmc(tmp_path / "m_bf16.bin")
    rounded = {name: t.to(torch.bfloat16).float() for name, t in state_dict.items()}
    assert_same_tensors(rounded, back)  # bf16 -> fp32 widening is exact
    write_llmc(tiny, back, tmp_path / "again.bin", dtype="bfloat16")
    assert (tmp_path / "again.bin").read_bytes() == raw


def test_llmc_model_matches_transformers_gpt2(tmp_path, make_pair):
    ref, ours = make_pair()
    write_llmc(ours.config, ours.state_dict(), tmp_path / "m.bin")
    model = model_from_state_dict(*read_llmc(tmp_path / "m.bin"))
    x = torch.randint(0, ref.config.vocab_size, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, ref(x).logits, rtol=0, atol=1e-5)
        assert torch.equal(model(x).logits, ours(x).logits)


def write_header(path, fields, body_floats):
    header = np.zeros(256, dtype="<i4")
    header[: len(fields)] = fields
    with open(path, "wb") as f:
        f.write(header.tobytes() + np.zeros(body_floats, dtype="<f4").tobytes())


def n_floats(config, Vp):
    C, L = config.n_embd, config.n_layer
    return Vp * C + config.block_size * C + L * (12 * C * C + 13 * C) + 2 * C


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda f: f.__setitem__(0, 1234), "magic 1234"),
        (lambda f: f.__setitem__(1, 4), "version 4"),
        (lambda f: f.__setitem__(7, 100), "padded vocab size 100 is smaller than vocab_size 300"),
        (lambda f: f.__setitem__(6, 66), "n_embd (66) must be divisible by n_head (4)"),
    ],
)
def test_bad_headers_name_file_and_problem(tmp_path, tiny, mutate, message):
    fields = [MAGIC, 3, tiny.block_size, 300, tiny.n_layer, tiny.n_head, tiny.n_embd, 384]
    mutate(fields)
    path = tmp_path / "bad.bin"
    write_header(path, fields, n_floats(tiny, 384))
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        read_llmc(path)
    assert str(path) in str(info.value)


def test_truncated_and_oversized_files(tmp_path, tiny):
    """Each message names the file and the byte counts, the expected size computed here from llm.c's layout."""
    write_llmc(tiny, random_state_dict(tiny), tmp_path / "m.bin")
    raw = (tmp_path / "m.bin").read_bytes()
    expected = HEADER_BYTES + 4 * n_floats(tiny, 384)
    described = f"(L={tiny.n_layer}, C={tiny.n_embd}, T={tiny.block_size}, Vp=384, float32)"
    for name, data, message in [
        ("short_header.bin", raw[:100], "is truncated: 100 bytes, shorter than llm.c's 1024-byte header"),
        ("header_only.bin", raw[:HEADER_BYTES], f"the header {described} needs {expected} bytes but the file has 1024"),
        ("short_body.bin", raw[:-4], f"the header {described} needs {expected} bytes but the file has {expected - 4}"),
        ("long.bin", raw + b"\0" * 8, f"has 8 bytes more than its header {described} describes"),
    ]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ValueError, match=re.escape(f"{path} ")) as info:
            read_llmc(path)
        assert message in str(info.value)


def test_missing_file_and_folder_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path / 'none.bin'} does not exist")):
        read_llmc(tmp_path / "none.bin")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path} is a folder; an llm.c checkpoint is one .bin file")):
        read_llmc(tmp_path)


def test_vocab_multiple_of_128_has_no_padding_rows(tmp_path):
    """Vp == V is a valid header (llm.c pads only up to the next multiple of 128)."""
    config = EmbGPTConfig.from_preset("tiny", vocab_size=256)
    state_dict = random_state_dict(config)
    write_llmc(config, state_dict, tmp_path / "m.bin")
    raw = (tmp_path / "m.bin").read_bytes()
    assert np.frombuffer(raw[:HEADER_BYTES], dtype="<i4")[[3, 7]].tolist() == [256, 256]
    assert len(raw) == HEADER_BYTES + 4 * n_floats(config, 256)
    _, back = read_llmc(tmp_path / "m.bin")
    assert_same_tensors(state_dict, back)


@pytest.fixture
def gpt2_vocab_file(tmp_path):
    """A small model over GPT-2's 50257-token vocabulary, in an llm.c file written here from the header up."""
    config = EmbGPTConfig.from_preset("tiny", n_layer=1, block_size=16, vocab_size=50257)
    fields = [MAGIC, 3, config.block_size, 50257, config.n_layer, config.n_head, config.n_embd, 50304]
    path = tmp_path / "gpt2_vocab.bin"
    write_header(path, fields, n_floats(config, 50304))
    return path


def test_gpt2_vocab_gets_end_of_text_as_bos_and_eos(gpt2_vocab_file):
    config, _ = read_llmc(gpt2_vocab_file)
    assert config.bos_token_id == config.eos_token_id == GPT2Config().eos_token_id


def test_reading_float32_holds_one_copy_of_the_file(gpt2_vocab_file):
    """gpt2_124M.bin is 500 MB: the tensors are views of the one array read from disk, not of a second copy."""
    size = os.path.getsize(gpt2_vocab_file)
    tracemalloc.start()
    try:
        _, state_dict = read_llmc(gpt2_vocab_file)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert state_dict["transformer.wte.weight"].shape == (50257, 64)
    assert peak < 1.5 * size, f"peak {peak} bytes reading a {size}-byte file"


def test_unwritable_models_leave_destination_untouched(tmp_path, tiny):
    path = tmp_path / "m.bin"
    path.write_bytes(b"previous")
    no_bias = EmbGPTConfig.from_preset("tiny", bias=False)
    with pytest.raises(ValueError, match="bias=False"):
        write_llmc(no_bias, random_state_dict(no_bias), path)
    with pytest.raises(ValueError, match="dtype 'float16'"):
        write_llmc(tiny, random_state_dict(tiny), path, dtype="float16")
    broken = random_state_dict(tiny)
    del broken["transformer.h.1.ln_2.bias"]
    with pytest.raises(ValueError, match=r"^model: checkpoint is missing transformer\.h\.1\.ln_2\.bias$"):
        write_llmc(tiny, broken, path)
    assert path.read_bytes() == b"previous" and os.listdir(tmp_path) == ["m.bin"]


@pytest.mark.parametrize("activation, warned", [("gelu", True), ("gelu_new", False)])
def test_only_a_non_tanh_gelu_warns(tmp_path, caplog, activation, warned):
    config = EmbGPTConfig.from_preset("tiny", activation_function=activation)
    with caplog.at_level(logging.WARNING, logger="hf_embgpt"):
        write_llmc(config, random_state_dict(config), tmp_path / "m.bin")
    expected = f"llm.c computes the tanh GELU; this model uses {activation!r}, so llm.c's logits will differ slightly"
    assert [r.getMessage() for r in caplog.records if r.name.startswith("hf_embgpt")] == ([expected] if warned else [])


@pytest.mark.parametrize("dtype, version", [("float32", 3), ("bfloat16", 5)])
def test_write_logs_path_version_and_dtype(tmp_path, caplog, tiny, dtype, version):
    path = str(tmp_path / "m.bin")
    with caplog.at_level(logging.INFO, logger="hf_embgpt"):
        write_llmc(tiny, random_state_dict(tiny), path, dtype=dtype)
    assert [r.getMessage() for r in caplog.records if r.name.startswith("hf_embgpt")] == [
        f"wrote {path} (llm.c v{version}, {dtype})"
    ]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_state_dict_writes_the_same_file(tmp_path, tiny):
    """A model trained on a GPU is written straight from its state dict: the writer moves each tensor to the CPU."""
    state_dict = random_state_dict(tiny)
    for dtype in ("float32", "bfloat16"):
        write_llmc(tiny, state_dict, tmp_path / "cpu.bin", dtype=dtype)
        write_llmc(tiny, {name: t.cuda() for name, t in state_dict.items()}, tmp_path / "cuda.bin", dtype=dtype)
        assert (tmp_path / "cuda.bin").read_bytes() == (tmp_path / "cpu.bin").read_bytes(), dtype


@pytest.mark.slow
def test_124m_round_trip(tmp_path):
    config = EmbGPTConfig.from_preset("gpt2")
    state_dict = random_state_dict(config)
    write_llmc(config, state_dict, tmp_path / "gpt2_124M.bin")
    assert os.path.getsize(tmp_path / "gpt2_124M.bin") == HEADER_BYTES + 4 * (124_439_808 + 47 * 768)
    back_config, back = read_llmc(tmp_path / "gpt2_124M.bin")
    assert back_config.to_diff_dict() == config.to_diff_dict()
    assert_same_tensors(state_dict, back)
