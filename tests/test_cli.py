"""`embgpt` as a user meets it: one-line errors that name the file or value, no tracebacks for expected errors, the
right exit status, a light `--help`, and `python -m hf_embgpt` as the same program."""

import os
import pathlib
import subprocess
import sys

import pytest
import torch

import hf_embgpt
from hf_embgpt import cli
from hf_embgpt.formats.registry import write_checkpoint
from hf_embgpt.training import data as data_lib

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
ALPHABET = "abcdefghijklmnopqrstuvwxyz .,\n"


def embgpt_environment(**extra):
    """The environment for `python -m hf_embgpt` in a fresh interpreter: these sources first, no debug switch."""
    environment = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    environment.pop("EMBGPT_DEBUG", None)
    return {**environment, **extra}


def run_embgpt(args, cwd, preexec_fn=None):
    """`python -m hf_embgpt ARGS` in a fresh interpreter; returns the CompletedProcess (text)."""
    return subprocess.run(
        [sys.executable, "-m", "hf_embgpt", *args],
        cwd=cwd,
        env=embgpt_environment(),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=preexec_fn,
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny model as an EmbGPT folder (with a character tokenizer), an llm.c file cut in half, a nanoGPT ckpt.pt
    whose pickle holds more than tensors, text that turns binary after 8 kB, and a corpus that is not UTF-8."""
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    config = hf_embgpt.EmbGPTConfig(
        vocab_size=len(ALPHABET) + 1, block_size=32, n_layer=1, n_head=2, n_embd=16, bos_token_id=None,
        eos_token_id=None,
    )  # fmt: skip
    model = hf_embgpt.EmbGPTForCausalLM(config)
    write_checkpoint(model, root / "model", "embgpt", tokenizer=data_lib.char_tokenizer(ALPHABET))
    write_checkpoint(model, root / "model.bin", "llmc")
    whole = (root / "model.bin").read_bytes()
    (root / "cut.bin").write_bytes(whole[: len(whole) // 2])
    torch.save({"model_args": {}, "model": {}, "saved": os.stat_result(range(10))}, root / "ckpt.pt")
    (root / "late-binary.txt").write_bytes(b"plain text. " * 1000 + b"\xff\xfe binary from here")
    (root / "latin1.txt").write_bytes("caf\u00e9 cr\u00e8me".encode("latin-1"))
    (root / "a-file").write_text("not a folder")
    return root


# ----------------------------------------------------------------------------------------------------------------
# The unclear errors of issue 13: each is one line naming the file or value, with the right exit status


def error_cases(root):
    """{case: (argv, exit status, texts the error line must contain)}."""
    model, cut, llmc, ckpt = str(root / "model"), str(root / "cut.bin"), str(root / "model.bin"), str(root / "ckpt.pt")
    late, latin1 = str(root / "late-binary.txt"), str(root / "latin1.txt")
    refused_nanogpt, refused_llmc = root / "a-file" / "ckpt.pt", root / "a-file" / "m.bin"
    inspect = ["inspect", model, "--out", str(root / "report")]
    return {
        "truncated llm.c": (["convert", cut, "o1", "--to", "embgpt"], 1, [cut, "truncated"]),
        "nanogpt into a path the system refuses": (
            ["convert", model, str(refused_nanogpt), "--to", "nanogpt"],
            1,
            [f"cannot write {refused_nanogpt}:"],
        ),
        "llmc into a path the system refuses": (
            ["convert", model, str(refused_llmc), "--to", "llmc"],
            1,
            [f"cannot write {refused_llmc}:"],
        ),
        "missing tokenizer path": (
            ["convert", llmc, "o2", "--to", "embgpt", "--tokenizer", "/nonexistent/tok"],
            1,
            ["/nonexistent/tok does not exist"],
        ),
        "inspect a missing model": (["inspect", "nonexist"], 1, ["nonexist does not exist"]),
        "--from tf on a .bin": (["convert", llmc, "o3", "--to", "embgpt", "--from", "tf"], 1, [llmc, "llmc, not tf"]),
        "--from llmc on a folder": (
            ["convert", model, "o4", "--to", "embgpt", "--from", "llmc"],
            1,
            [model, "embgpt, not llmc"],
        ),
        "pickle of more than tensors": (
            ["convert", ckpt, "o5", "--to", "embgpt"],
            1,
            [ckpt, "objects other than tensors", "refused"],
        ),
        "data binary after 8 kB": (
            ["train", "--data", late, "--output_dir", str(root / "run")],
            1,
            [late, "not UTF-8", "offset 12000"],
        ),
        "extend past the limit": (["block-size", model, "o6", "--extend", "100000000"], 2, ["100000000", "limit"]),
        "zero components": ([*inspect, "--components", "0"], 2, ["--components", "0"]),
        "too many components": ([*inspect, "--components", "1000"], 1, ["1000", "from 1 to 16"]),
        "negative token id": ([*inspect, "--tokens", "#-1"], 1, ["'#-1'", "out of range"]),
        "token id past the vocabulary": ([*inspect, "--tokens", "#300"], 1, ["'#300'", "out of range for vocab_size"]),
        "text outside the vocabulary": (
            [*inspect, "--tokenizer", model, "--tokens", "\u03a9"],
            1,
            ["'\u03a9'", "not in the tokenizer's vocabulary"],
        ),
        "corpus that is not UTF-8": ([*inspect, "--corpus", latin1], 1, [latin1, "not UTF-8", "offset 3"]),
    }


CASES = list(error_cases(pathlib.Path("ROOT")))  # names only; the paths are rebuilt under the fixture's folder


@pytest.mark.parametrize("case", CASES)
def test_unclear_errors_become_one_line(case, files, capsys, monkeypatch):
    monkeypatch.delenv("EMBGPT_DEBUG", raising=False)
    monkeypatch.chdir(files)
    argv, status, must_name = error_cases(files)[case]
    if status == 2:  # argparse's usage errors exit from inside the command
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        code = exit_info.value.code
    else:
        code = cli.main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert code == status, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0] == err.rstrip("\n").splitlines()[-1], err  # the error is the last line
    assert lines[0].startswith(f"embgpt {argv[0]}: error: ")
    for text in must_name:
        assert text in lines[0], lines[0]


def test_unexpected_errors_keep_their_traceback(monkeypatch):
    """A bug (here a KeyError inside a command) is not dressed up as a user error."""
    import hf_embgpt.inspection

    def broken(argv):
        raise KeyError("a bug")

    monkeypatch.setattr(hf_embgpt.inspection, "main", broken)
    with pytest.raises(KeyError):
        cli.main(["inspect", "anything"])


def test_debug_shows_the_traceback(files, monkeypatch):
    monkeypatch.chdir(files)
    with pytest.raises(FileNotFoundError):
        cli.main(["--debug", "inspect", "nonexist"])
    monkeypatch.setenv("EMBGPT_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        cli.main(["inspect", "nonexist"])


# ----------------------------------------------------------------------------------------------------------------
# Each subcommand in a fresh interpreter (`python -m hf_embgpt`, as `embgpt`), all started at once


def test_every_subcommand_fails_in_one_line(files):
    root = str(files)
    cases = {
        "train": (["train", "--data", "missing.txt", "--output_dir", "run"], {}, 1, "missing.txt does not exist"),
        "generate": (["generate", "nonexist"], {}, 1, "nonexist does not exist"),
        "convert": (["convert", "cut.bin", "out", "--to", "embgpt"], {}, 1, "cut.bin is truncated"),
        "push": (["push", "nonexist", "me/model", "--dry-run"], {}, 1, "nonexist does not exist"),
        "inspect": (["inspect", "nonexist"], {}, 1, "nonexist does not exist"),
        "block-size": (["block-size", "model", "out", "--crop", "0"], {}, 1, "must be a positive integer, got 0"),
        "usage": (["convert", "model"], {}, 2, "the following arguments are required"),
        "debug": (["inspect", "nonexist"], {"EMBGPT_DEBUG": "1"}, 1, "nonexist does not exist"),
    }
    running = {
        name: subprocess.Popen(
            [sys.executable, "-m", "hf_embgpt", *argv],
            cwd=root,
            env=embgpt_environment(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (argv, env, _, _) in cases.items()
    }
    for name, process in running.items():
        _, err = process.communicate(timeout=600)
        argv, env, status, text = cases[name]
        assert process.returncode == status, (name, err)
        assert text in err.splitlines()[-1], (name, err)
        if name == "debug":  # the traceback, ending in the exception itself
            assert "Traceback" in err and err.splitlines()[-1].startswith("FileNotFoundError: "), err
            continue
        assert err.splitlines()[-1].startswith(f"embgpt {argv[0]}: error: "), (name, err)
        assert "Traceback" not in err, (name, err)
        if status == 1:
            assert len(err.strip().splitlines()) == 1, (name, err)  # nothing but the error line on stderr


def test_a_full_disk_is_named(files, tmp_path):
    """RLIMIT_FSIZE makes every write past 8 kB fail as a full disk would (EFBIG); torch.save hid that behind
    "[enforce fail at inline_container.cc]" and safetensors behind "I/O error", naming neither file."""
    resource = pytest.importorskip("resource")
    import signal

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (8 * 1024, 8 * 1024))  # the model's weights take 18 kB

    for fmt, destination in (("nanogpt", "ckpt.pt"), ("embgpt", "folder")):
        result = run_embgpt(
            ["convert", str(files / "model"), destination, "--to", fmt], tmp_path, preexec_fn=small_files
        )
        assert result.returncode == 1, result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith(f"embgpt convert: error: cannot write {destination}:")
        assert "Traceback" not in result.stderr and "enforce fail" not in result.stderr
        assert os.listdir(tmp_path) == [], os.listdir(tmp_path)  # nothing half-written, no staging left


# ----------------------------------------------------------------------------------------------------------------
# A light command line


LIGHT_CHECK = """
import sys
sys.argv[0] = "/usr/local/bin/embgpt"  # as the console script starts
from hf_embgpt.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
print("HEAVY", heavy[:5], file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.parametrize("argv, status", [(["--help"], 0), ([], 0), (["no-such-command"], 2)])
def test_help_and_usage_errors_import_neither_torch_nor_transformers(argv, status, tmp_path):
    environment = embgpt_environment()
    result = subprocess.run(
        [sys.executable, "-c", LIGHT_CHECK, *argv], env=environment, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == status, result.stderr
    assert "HEAVY []" in result.stderr, result.stderr
    assert "usage: embgpt" in result.stdout + result.stderr
    module = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "hf_embgpt", *argv],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert module.returncode == status
    imported = [
        line.rsplit("|", 1)[-1].strip() for line in module.stderr.splitlines() if line.startswith("import time")
    ]
    assert "hf_embgpt.cli" in imported and not [m for m in imported if m.split(".")[0] in ("torch", "transformers")]


def test_import_registers_the_auto_classes(tmp_path):
    """`import hf_embgpt` alone makes the Auto classes build EmbGPT (users rely on it); `from hf_embgpt import X`
    still works although the names load lazily."""
    code = (
        "import hf_embgpt\n"
        "from transformers import AutoConfig, AutoModel, AutoModelForCausalLM\n"
        "config = AutoConfig.for_model('embgpt', vocab_size=64, n_layer=1, n_head=2, n_embd=16, block_size=8,"
        " bos_token_id=None, eos_token_id=None)\n"
        "from hf_embgpt import EmbGPTConfig, EmbGPTForCausalLM, EmbGPTModel, crop_block_size\n"
        "assert type(config) is EmbGPTConfig, type(config)\n"
        "assert type(AutoModelForCausalLM.from_config(config)) is EmbGPTForCausalLM\n"
        "assert type(AutoModel.from_config(config)) is EmbGPTModel\n"
        "print('OK')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=embgpt_environment(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr


def test_unknown_public_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        hf_embgpt.NoSuchThing  # noqa: B018
