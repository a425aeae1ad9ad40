"""Saves are all or nothing and one writer at a time: `save_pretrained`, `embgpt convert` and the folder writers.

kill -9 at any point of a save, two processes saving into one folder, a destination that holds another model, and
the order in which a save's files become visible, each checked against the two models involved, tensor by tensor.
"""

import ctypes
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import types

import pytest
import torch

import hf_embgpt.modeling_embgpt as modeling
from hf_embgpt import EmbGPTConfig, EmbGPTForCausalLM
from hf_embgpt.convert import main as convert_main
from hf_embgpt.formats.registry import write_checkpoint

SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
# two models that can't be mistaken for each other: an old one saved in shards, a new deeper one saved whole
MODELS = """
import os
import torch
from transformers.utils import logging
from hf_embgpt import EmbGPTConfig, EmbGPTForCausalLM

torch.set_num_threads(1)
logging.disable_progress_bar()  # tqdm's lock is shared with forked children: one killed holding it blocks us
logging.set_verbosity_error()

def tiny(n_layer, seed):
    torch.manual_seed(seed)
    config = EmbGPTConfig(vocab_size=256, n_layer=n_layer, n_head=2, n_embd=32, block_size=16, bos_token_id=None,
                          eos_token_id=None)
    return EmbGPTForCausalLM(config)

OLD, NEW = tiny(2, 0), tiny(3, 1)
SHARDED = dict(max_shard_size="20KB")

def which(folder):
    '''"old" or "new" when `folder` loads and equals that model exactly, else what went wrong.'''
    try:
        loaded = EmbGPTForCausalLM.from_pretrained(folder)
    except Exception as e:
        return f"unloadable: {type(e).__name__}: {e}"
    model = {2: OLD, 3: NEW}.get(loaded.config.n_layer)
    if model is None:
        return f"n_layer {loaded.config.n_layer}"
    ours, theirs = loaded.state_dict(), model.state_dict()
    if ours.keys() != theirs.keys() or not all(torch.equal(ours[k], theirs[k]) for k in ours):
        return "mixed weights"
    return "old" if model is OLD else "new"

def leftovers(folder):
    parent, name = os.path.split(os.path.abspath(folder))
    return sorted(n for n in os.listdir(parent) if n.startswith(f".{name}.embgpt-"))
"""


def tiny(n_layer=2, seed=0):
    torch.manual_seed(seed)
    config = EmbGPTConfig(
        vocab_size=256, n_layer=n_layer, n_head=2, n_embd=32, block_size=16, bos_token_id=None, eos_token_id=None
    )
    return EmbGPTForCausalLM(config)


def files(folder):
    """{name: bytes} of the files at the top of `folder`; None when it does not exist."""
    if not os.path.isdir(folder):
        return None
    return {e.name: open(e.path, "rb").read() for e in os.scandir(folder) if e.is_file()}


def equal_weights(a, b):
    a, b = a.state_dict(), b.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def run_script(script, *args, timeout=120):
    proc = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, env=SUBPROCESS_ENV,
        timeout=timeout,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- 2. a destination that holds another model


def test_convert_refuses_a_folder_holding_another_model_and_overwrite_replaces_it_whole(tmp_path):
    source, fresh, destination = tmp_path / "source", tmp_path / "fresh", tmp_path / "destination"
    tiny(2, 0).save_pretrained(source)
    tiny(3, 1).save_pretrained(destination, max_shard_size="20KB")
    for name in ("tokenizer.json", "trainer_state.json", "train_results_embgpt.json", "loss_curve.png"):
        (destination / name).write_text("the old run's")
    before = files(destination)

    with pytest.raises(FileExistsError, match=rf"{destination}.*--overwrite"):
        convert_main([str(source), str(destination), "--to", "embgpt"])
    assert files(destination) == before

    convert_main([str(source), str(destination), "--to", "embgpt", "--overwrite"])
    convert_main([str(source), str(fresh), "--to", "embgpt"])  # the reference: the same conversion into no folder
    assert sorted(os.listdir(destination)) == sorted(os.listdir(fresh))
    assert equal_weights(EmbGPTForCausalLM.from_pretrained(destination), tiny(2, 0))
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []


@pytest.mark.parametrize("fmt, name", [("nanogpt", "ckpt.pt"), ("llmc", "model.bin")])
def test_file_outputs_are_refused_unless_overwrite(tmp_path, fmt, name):
    path = tmp_path / name
    path.write_bytes(b"another model")
    with pytest.raises(FileExistsError, match=rf"{path} exists; pass --overwrite"):
        write_checkpoint(tiny(), tmp_path if fmt == "nanogpt" else path, fmt)
    assert path.read_bytes() == b"another model"
    write_checkpoint(tiny(), tmp_path if fmt == "nanogpt" else path, fmt, overwrite=True)
    assert path.read_bytes() != b"another model"


# ---- 3. kill -9 during a save

KILL_LOOP = (
    MODELS
    + """
import json, os, random, shutil, signal, sys, time

folder, rounds = sys.argv[1], int(sys.argv[2])
OLD.save_pretrained(folder, **SHARDED)

def forked_save_seconds():  # what a save takes in a forked child, which first copies the pages it touches
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        NEW.save_pretrained(folder)
        OLD.save_pretrained(folder, **SHARDED)
        os._exit(0)
    os.waitpid(pid, 0)
    return (time.perf_counter() - started) / 2

seconds = (forked_save_seconds() + forked_save_seconds()) / 2
rng, seen = random.Random(0), ["old"]
for _ in range(rounds):
    pid = os.fork()
    if pid == 0:  # saves the model the folder does not hold, then the other, ... until killed
        saves = [(NEW, {}), (OLD, SHARDED)][:: 1 if seen[-1] == "old" else -1]
        while True:
            for model, kwargs in saves:
                model.save_pretrained(folder, **kwargs)
    time.sleep(rng.uniform(0, 1.5 * seconds))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    seen.append(which(folder))
stale = leftovers(folder)
NEW.save_pretrained(folder)
print(json.dumps(dict(seen=seen[1:], stale=stale, after_next_save=leftovers(folder), last=which(folder))))
"""
)


@pytest.mark.processes
def test_kill_9_at_random_points_of_saves_leaves_the_old_or_the_new_model(tmp_path):
    result = run_script(KILL_LOOP, tmp_path / "model", 20)
    assert set(result["seen"]) <= {"old", "new"}, result["seen"]
    assert "old" in result["seen"] and "new" in result["seen"], "kills landed on both sides of the swap"
    assert result["stale"], "no kill landed inside a save: the test proved nothing"
    assert result["after_next_save"] == [] and result["last"] == "new"


# A kill before each file-system step of a save in turn (the child exits at step k, skipping every cleanup), with
# Linux's exchange and with the two-rename fallback; the old folder also holds a tokenizer and a subfolder, which a
# save must keep.
KILL_AT_EVERY_STEP = (
    MODELS
    + """
import json, os, shutil, sys
import hf_embgpt.modeling_embgpt as modeling

folder, results = sys.argv[1], {}
for mode in ("exchange", "fallback"):
    seen = []
    for k in range(1, 200):
        shutil.rmtree(folder, ignore_errors=True)
        OLD.save_pretrained(folder, **SHARDED)
        os.makedirs(os.path.join(folder, "checkpoint-1"))
        for name in ("tokenizer.json", "checkpoint-1/optimizer.pt"):
            open(os.path.join(folder, name), "w").write(name)
        pid = os.fork()
        if pid == 0:
            steps = iter(range(1, 10**6))
            def dies_at_k(f):
                def step(*args, **kwargs):
                    if next(steps) == k:
                        os._exit(9)
                    return f(*args, **kwargs)
                return step
            for name in ("rename", "replace", "link", "remove", "unlink"):
                setattr(os, name, dies_at_k(getattr(os, name)))
            shutil.rmtree = dies_at_k(shutil.rmtree)
            modeling._exchange = dies_at_k(modeling._exchange if mode == "exchange" else lambda a, b: False)
            NEW.save_pretrained(folder)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        before_recovery = which(folder)
        with modeling._atomic_folder(folder):  # writes nothing: only the recovery of the killed save runs
            pass
        kept = [open(os.path.join(folder, n)).read() for n in ("tokenizer.json", "checkpoint-1/optimizer.pt")]
        seen.append([before_recovery, which(folder), kept == ["tokenizer.json", "checkpoint-1/optimizer.pt"]])
        if os.WEXITSTATUS(status) == 0:
            break
    results[mode] = dict(seen=seen, leftovers=leftovers(folder))
print(json.dumps(results))
"""
)


@pytest.mark.processes
def test_kill_before_every_step_of_a_save_leaves_the_old_or_the_new_model(tmp_path):
    results = run_script(KILL_AT_EVERY_STEP, tmp_path / "model")
    for mode, result in results.items():
        seen = result["seen"]
        assert len(seen) > 5 and seen[-1][:2] == ["new", "new"], (mode, seen)
        assert all(recovered in ("old", "new") and kept for _, recovered, kept in seen), (mode, seen)
        assert result["leftovers"] == []
        assert "old" in [recovered for _, recovered, _ in seen]  # some kills came before the swap
    # with the exchange a reader never finds anything else, even before the next save recovers
    assert all(before in ("old", "new") for before, _, _ in results["exchange"]["seen"])


@pytest.mark.parametrize(
    "state, survivor, others_kept",
    [
        ("writing", "old", True),  # killed while writing the new folder beside the old one
        ("staged", "old", True),  # the new folder renamed to its swap name, not swapped yet
        ("swapped", "new", True),  # swapped; the old folder's subfolders not yet moved over
        ("swapped, replacing", "new", False),  # the same for an overwrite: nothing of the old folder stays
        ("between the renames", "old", True),  # no exchange: the old folder moved aside, the new one not yet in
        ("between the renames, replacing", "old", True),  # the same for an overwrite: the old folder goes back whole
        ("writing the first save", None, False),  # no folder before: none after (not a half-written one)
        ("writing in place", "old", True),  # a save into a mount point stages inside the folder
    ],
)
def test_the_next_save_finishes_or_undoes_what_a_killed_one_left(tmp_path, state, survivor, others_kept):
    """Each state a save killed between two steps leaves, laid out on disk as the save lays it out; the processes
    tests above reach them by killing real saves."""
    folder, staged, old, new = tmp_path / "model", tmp_path / "new", tiny(2, 0), tiny(3, 1)
    old.save_pretrained(folder)
    (folder / "tokenizer.json").write_text("{}")
    (folder / "runs").mkdir()
    (folder / "runs" / "events").write_text("1")
    new.save_pretrained(staged)
    mode = "replace" if state.endswith("replacing") else "merge"
    swap_name = tmp_path / f".model.embgpt-{mode}-{os.stat(staged).st_ino}"  # named by the new folder's inode
    writing = tmp_path / ".model.embgpt-new-0123456789ab"
    if state == "writing":
        os.rename(staged, writing)
    elif state == "writing the first save":
        shutil.rmtree(folder)
        os.rename(staged, writing)
    elif state == "staged":
        os.rename(staged, swap_name)
    elif state.startswith("swapped"):  # as renameat2's exchange leaves it: the old folder under the swap name
        if mode == "merge":
            os.link(folder / "tokenizer.json", staged / "tokenizer.json")  # the old folder's files, linked in first
        os.rename(folder, swap_name)
        os.rename(staged, folder)
    elif state.startswith("between the renames"):
        os.rename(folder, swap_name)
        os.rename(staged, writing)
    else:
        os.rename(staged, folder / ".model.embgpt-new-0123456789ab")
    with modeling._atomic_folder(folder):  # writes nothing: only the recovery of the killed save runs
        pass
    if survivor is None:
        assert not folder.exists()
    else:
        assert equal_weights(EmbGPTForCausalLM.from_pretrained(folder), old if survivor == "old" else new)
        kept = (folder / "tokenizer.json").is_file() and os.listdir(folder / "runs") == ["events"]
        assert kept if others_kept else not ({"tokenizer.json", "runs"} & set(os.listdir(folder)))
    for parent in (tmp_path, folder) if survivor else (tmp_path,):  # nothing of the killed save beside or in it
        assert [n for n in os.listdir(parent) if ".embgpt-" in n] == []


# ---- 4. two writers


WRITER = (
    MODELS
    + """
import os, sys, time
folder, sync, me, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
model = OLD if me == "old" else NEW
open(os.path.join(sync, f"ready-{me}"), "w").close()  # imports done: the rounds' deadlines start from here
for r in range(rounds):
    while not os.path.exists(os.path.join(sync, f"go-{r}")):
        time.sleep(0.002)
    model.save_pretrained(folder, **SHARDED)
    open(os.path.join(sync, f"done-{me}-{r}"), "w").close()
print("{}")
"""
)


@pytest.mark.processes
def test_two_processes_saving_into_one_folder_never_mix(tmp_path):
    folder, sync, rounds = tmp_path / "model", tmp_path / "sync", 5
    sync.mkdir()
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(folder), str(sync), me, str(rounds)],
            env=SUBPROCESS_ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for me in ("old", "new")
    ]
    writer_models, seen = {"old": tiny(2, 0), "new": tiny(3, 1)}, []

    def wait_for(names, seconds, what):
        deadline = time.monotonic() + seconds
        while not all((sync / name).exists() for name in names):
            for writer in writers:
                assert writer.poll() is None, f"a writer exited: {writer.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, f"{what} took over {seconds} s"
            time.sleep(0.01)

    wait_for(["ready-old", "ready-new"], 300, "starting the writers")  # python, torch and transformers imports
    for r in range(rounds):
        (sync / f"go-{r}").touch()
        wait_for([f"done-{me}-{r}" for me in ("old", "new")], 60, f"round {r}")
        loaded = EmbGPTForCausalLM.from_pretrained(folder)
        seen.append(next((name for name, model in writer_models.items() if equal_weights(loaded, model)), "mixed"))
    for writer in writers:
        assert writer.wait(60) == 0, writer.stderr.read()[-3000:]
    assert set(seen) <= {"old", "new"}, seen
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []


LOCK_HOLDER = """
import sys, time
from hf_embgpt.formats.common import folder_lock
with folder_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


@pytest.mark.processes
def test_a_second_writer_waits_names_the_holder_and_takes_over_a_dead_ones_lock(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(folder)], env=SUBPROCESS_ENV, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        monkeypatch.setattr(modeling, "SAVE_LOCK_TIMEOUT", 0.5)
        with pytest.raises(TimeoutError, match=rf"{folder} is being saved by process {holder.pid} "):
            tiny().save_pretrained(folder)
        assert not folder.exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / ".model.embgpt-lock").read_text().strip() == str(holder.pid)  # the dead holder's lock file
    tiny().save_pretrained(folder)  # taken over at once: the kernel dropped the dead process's lock
    assert equal_weights(EmbGPTForCausalLM.from_pretrained(folder), tiny())
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []


# ---- issue 15: the order in which a save becomes visible, observed


def observe(monkeypatch, folder):
    """Record `files(folder)` after every file-system step that could change it."""
    states = []

    def watching(f):
        def step(*args, **kwargs):
            result = f(*args, **kwargs)
            states.append(files(folder))
            return result

        return step

    for name in ("rename", "replace", "link", "remove", "unlink"):
        monkeypatch.setattr(os, name, watching(getattr(os, name)))
    monkeypatch.setattr(shutil, "rmtree", watching(shutil.rmtree))
    monkeypatch.setattr(modeling, "_exchange", watching(modeling._exchange))
    return states


def test_a_lock_file_names_its_holder_or_an_unknown_one(tmp_path):
    """The pid a holder wrote; "unknown" for an empty lock file (its holder killed before writing) or an unreadable."""
    path = tmp_path / ".model.embgpt-lock"
    for content, holder in ((b"4242\n", "4242"), (b"", "unknown"), (b" \n", "unknown"), (b"\xff42", "\ufffd42")):
        path.write_bytes(content)
        fd = os.open(path, os.O_RDONLY)
        try:
            assert modeling._lock_holder(fd) == holder, content
        finally:
            os.close(fd)
    read_end, write_end = os.pipe()  # a read that fails (a write-only end here; on Windows, a locked byte)
    try:
        assert modeling._lock_holder(write_end) == "unknown"
    finally:
        os.close(read_end)
        os.close(write_end)


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two renames"])
def test_readers_see_the_old_files_then_the_new_ones_never_a_mix(tmp_path, monkeypatch, exchange):
    """With renameat2's exchange the folder is always there; without it (not Linux, or a file system that refuses the
    exchange) the old folder is moved aside and the new one in, and a reader may find no folder in between."""
    if not exchange:
        monkeypatch.setattr(modeling, "_exchange", lambda a, b: False)
    folder, fresh = tmp_path / "model", tmp_path / "fresh"
    tiny(2, 0).save_pretrained(folder, max_shard_size="20KB")
    (folder / "tokenizer.json").write_text("{}")
    (folder / "checkpoint-1").mkdir()
    old = files(folder)
    tiny(3, 1).save_pretrained(fresh)
    new = {**files(fresh), "tokenizer.json": b"{}"}  # the new model's own files, and the folder's other files

    states = observe(monkeypatch, folder)
    tiny(3, 1).save_pretrained(folder)
    monkeypatch.undo()
    seen = [state for state in states if exchange or state is not None]  # None: no folder
    assert all(state in (old, new) for state in seen), [sorted(s or ()) for s in states]
    assert seen[-1] == new and new in seen
    assert seen.index(new) > max(i for i, state in enumerate(seen) if state == old)  # one switch, old to new
    assert exchange or None in states
    assert (folder / "checkpoint-1").is_dir()


def test_where_no_swap_is_possible_files_move_in_with_config_json_last(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    tiny(2, 0).save_pretrained(folder, max_shard_size="20KB")
    monkeypatch.setattr(os.path, "ismount", lambda path: os.fspath(path) == str(folder))  # e.g. a mounted volume
    moved_in = []
    replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (moved_in.append(os.path.relpath(b, folder)), replace(a, b))[1])
    tiny(3, 1).save_pretrained(folder)
    monkeypatch.undo()
    assert moved_in[-1] == "config.json" and "model.safetensors" in moved_in
    assert sorted(n for n in os.listdir(folder) if n.startswith(("model.", "model-"))) == ["model.safetensors"]
    assert equal_weights(EmbGPTForCausalLM.from_pretrained(folder), tiny(3, 1))


def test_where_no_swap_is_possible_an_overwrite_leaves_only_the_new_files(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    tiny(2, 0).save_pretrained(folder, max_shard_size="20KB")
    (folder / "notes.txt").write_text("old")
    (folder / "runs" / "old").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "keep.txt").write_text("not ours")
    (folder / "link").symlink_to(tmp_path / "elsewhere")  # a link to a folder: the link goes, not what it points to
    monkeypatch.setattr(os.path, "ismount", lambda path: os.fspath(path) == str(folder))  # e.g. a mounted volume
    write_checkpoint(tiny(3, 1), folder, "embgpt", overwrite=True)
    monkeypatch.undo()
    write_checkpoint(tiny(3, 1), tmp_path / "fresh", "embgpt")
    assert sorted(os.listdir(folder)) == sorted(os.listdir(tmp_path / "fresh"))
    assert (tmp_path / "elsewhere" / "keep.txt").read_text() == "not ours"
    assert equal_weights(EmbGPTForCausalLM.from_pretrained(folder), tiny(3, 1))


@pytest.mark.parametrize("hard_links", [True, False], ids=["hard links", "no hard links"])
def test_a_save_keeps_the_folders_other_files_and_mode(tmp_path, monkeypatch, hard_links):
    """Files are linked into the new folder before the swap; on a file system without hard links, moved after it."""
    if not hard_links:

        def link(*args, **kwargs):
            raise PermissionError(errno.EPERM, "no hard links on this file system")

        monkeypatch.setattr(os, "link", link)
    folder = tmp_path / "model"
    folder.mkdir(mode=0o750)
    folder.chmod(0o750)
    (folder / "tokenizer.json").write_text("{}")
    (folder / "runs").mkdir()
    (folder / "runs" / "events").write_text("1")
    tiny().save_pretrained(folder)
    tiny().save_pretrained(folder)
    assert {"tokenizer.json", "runs", "config.json", "model.safetensors"} <= set(os.listdir(folder))
    assert (folder / "tokenizer.json").read_text() == "{}"  # the same entries, moved
    assert os.listdir(folder / "runs") == ["events"] and (folder / "runs" / "events").read_text() == "1"
    assert folder.stat().st_mode & 0o777 == 0o750
    tiny().save_pretrained(tmp_path / "new")
    (tmp_path / "made").mkdir()
    assert (tmp_path / "new").stat().st_mode == (tmp_path / "made").stat().st_mode  # the umask's, not mkdtemp's 0700


# ---- every rank of torch.distributed calls save_pretrained, as transformers asks


RANK_SAVES = """
import sys
import torch
import torch.distributed as dist
from transformers.utils import logging
from hf_embgpt import EmbGPTConfig, EmbGPTForCausalLM

logging.disable_progress_bar()
logging.set_verbosity_error()
dist.init_process_group("gloo")  # RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT from the environment
torch.manual_seed(0)  # the same weights on both ranks
config = EmbGPTConfig(vocab_size=256, n_layer=1, n_head=2, n_embd=32, block_size=16, bos_token_id=None,
                      eos_token_id=None)
model = EmbGPTForCausalLM(config)
try:  # a tensor-parallel layout that shards nothing: transformers' save then ends in a barrier on every rank
    from transformers.distributed import DistributedConfig
    model.config.distributed_config = DistributedConfig(tp_size=2, tp_plan={})
except (ImportError, TypeError):  # transformers without it runs no collective inside save_pretrained
    pass
model.save_pretrained(sys.argv[1])
loaded = EmbGPTForCausalLM.from_pretrained(sys.argv[1])  # complete on this rank as soon as save_pretrained returns
same = all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
print(f"rank {dist.get_rank()} loads the same weights: {same}")
dist.destroy_process_group()
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.processes
def test_every_rank_saving_into_one_folder_finishes_and_the_folder_loads(tmp_path):
    folder = tmp_path / "model"
    world = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", RANK_SAVES, str(folder)],
            env={**SUBPROCESS_ENV, **world, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = []
    try:
        for rank in ranks:
            outputs.append(rank.communicate(timeout=120))
    except subprocess.TimeoutExpired:
        pytest.fail("the ranks are still saving after 120 s: a rank waits on the folder lock outside a collective")
    finally:
        for rank in ranks:
            rank.kill()
    for rank, (_, err) in zip(ranks, outputs, strict=True):
        assert rank.returncode == 0, err[-3000:]
    assert sorted(out.strip() for out, _ in outputs) == [f"rank {r} loads the same weights: True" for r in (0, 1)]


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hasattr(ctypes.CDLL(None), "renameat2"),
    reason="the swap is Linux's renameat2 (glibc >= 2.28)",
)
def test_a_swap_the_file_system_refuses_falls_back_and_any_other_failure_is_named(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    # EINVAL (here the kernel refuses to swap a folder with its own subfolder; a file system without RENAME_EXCHANGE
    # says the same): no swap, nothing moved, and the caller moves the files in instead
    assert modeling._exchange(folder, folder / "sub") is False and (folder / "sub").is_dir()
    absent = str(tmp_path / "absent")  # the saves pass real paths as strings
    with pytest.raises(FileNotFoundError) as caught:  # any other failure: the OSError, naming the path
        modeling._exchange(str(folder), absent)
    assert str(caught.value) == f"[Errno {errno.ENOENT}] {os.strerror(errno.ENOENT)}: '{absent}'"
    monkeypatch.setattr(modeling.ctypes, "CDLL", lambda *args, **kwargs: object())  # a C library without renameat2
    assert modeling._exchange(folder, tmp_path) is False and (folder / "sub").is_dir()


def test_save_pretrained_passes_its_arguments_on_and_always_names_the_remote_code(tmp_path):
    folder, other = tmp_path / "model", tiny(2, 1)
    model = tiny(2, 0)
    model.config.auto_map = {"AutoModel": "elsewhere.Model"}
    model.save_pretrained(folder, True, other.state_dict())  # is_main_process, state_dict: by position
    assert equal_weights(EmbGPTForCausalLM.from_pretrained(folder), other)
    assert json.loads((folder / "config.json").read_text())["auto_map"] == modeling.AUTO_MAP


def test_a_rank_that_writes_nothing_leaves_the_folder_as_it_was(tmp_path):
    """transformers before should_save_on_this_rank writes the weights on every rank: ours go to a scratch folder."""
    folder = tmp_path / "model"
    tiny(2, 0).save_pretrained(folder)
    before = files(folder)
    tiny(3, 1).save_pretrained(folder, False)  # is_main_process by position
    tiny(3, 1).save_pretrained(folder, is_main_process=False)
    assert files(folder) == before


# a model: transformers' should_save_on_this_rank where it has one (5.24), else our rule; an object without it: ours
@pytest.mark.parametrize("rule", ["model", "our rule"])
@pytest.mark.parametrize("rank, target", [(0, "staged"), (1, "scratch")])
def test_under_torch_distributed_only_rank_0_saves_through_the_lock(monkeypatch, rule, rank, target):
    model = tiny() if rule == "model" else types.SimpleNamespace()  # only save_pretrained's `self`
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda group=None: rank)
    assert modeling._save_target(model, "folder") == target
    assert modeling._save_target(model, "folder", is_main_process=False) == "scratch"


@pytest.mark.parametrize(
    "args, kwargs, target",
    [
        ((), {}, "staged"),
        ((True,), {}, "staged"),
        ((False,), {}, "scratch"),  # is_main_process given by position, as save_pretrained's second parameter
        ((), {"is_main_process": False}, "scratch"),
        ((True, None, True), {}, "in place"),  # push_to_hub by position
        ((), {"push_to_hub": True}, "in place"),
        ((), {"distributed_checkpoint": True}, "in place"),
    ],
)
def test_the_saves_that_skip_the_lock_are_uploads_shared_saves_and_ranks_that_write_nothing(args, kwargs, target):
    assert modeling._save_target(tiny(), "folder", *args, **kwargs) == target
