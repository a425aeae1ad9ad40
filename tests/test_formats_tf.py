"""OpenAI TF checkpoints: the TensorBundle/SSTable reader, tested on checkpoints written by the package's own writer
(`hf_embgpt.formats.tf.write_tensor_bundle`; no TensorFlow needed) and on bundles whose protobuf entries the protobuf
library encodes as TensorFlow's writer does (zeros left out; either byte order; bfloat16; two shards).

The layout of every tensor is pinned independently of the package's name table: the test builds OpenAI's variables
from a transformers GPT2LMHeadModel by OpenAI's own names and shapes, uses the bundle writer only as a container, and
compares logits after import with GPT-2's.
"""

import functools
import importlib.util
import json
import os
import re
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import assert_same_tensors, random_state_dict
from hf_embgpt import EmbGPTConfig
from hf_embgpt.formats.common import expected_shapes, find_tokenizer, model_from_state_dict
from hf_embgpt.formats.registry import read_checkpoint
from hf_embgpt.formats.tf import (
    TABLE_MAGIC,
    _crc_update,
    crc32c,
    mask_crc,
    read_table,
    read_tensor_bundle,
    read_tf,
    write_table,
    write_tensor_bundle,
    write_tf,
)


def test_crc32c_matches_bytewise_definition():
    # the fast path (16384 lanes combined) against the plain byte loop of the Castagnoli CRC
    rng = np.random.default_rng(0)
    for n in [0, 1, 9, 1000, 2 * 16384 * 32 - 1, 2 * 16384 * 32, 2 * 16384 * 40 + 77]:
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert crc32c(data) == _crc_update(0xFFFFFFFF, data) ^ 0xFFFFFFFF, n
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value of its specification (RFC 3720, B.4)


def test_sstable_round_trip_with_shared_prefixes_and_many_blocks(tmp_path):
    entries = [(f"model/h{i}/attn/c_attn/{k}".encode(), os.urandom(i % 97)) for i in range(400) for k in "bw"]
    entries.append((b"", b"header"))
    write_table(tmp_path / "t.index", entries)
    data = (tmp_path / "t.index").read_bytes()
    assert struct.unpack("<Q", data[-8:])[0] == TABLE_MAGIC and len(data) > 3 * 4096  # several data blocks
    assert read_table(tmp_path / "t.index") == sorted(entries)


def leveldb_varint(data, pos):
    value = shift = 0
    while True:
        byte = data[pos]
        value, pos, shift = value | (byte & 0x7F) << shift, pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


def leveldb_block(data, handle):
    """[(shared, key, value, entry offset)] and the restart offsets of the block at `handle` (offset, size), decoded
    here as LevelDB's table_format.md lays a block out (varint shared/unshared/value lengths, key suffix, value; then
    uint32 restart offsets and their count), not with the reader under test."""
    offset, size = handle
    (count,) = struct.unpack_from("<I", data, offset + size - 4)
    restarts = list(struct.unpack_from(f"<{count}I", data, offset + size - 4 - 4 * count))
    entries, key, pos, end = [], b"", offset, offset + size - 4 - 4 * count
    while pos < end:
        start = pos - offset
        shared, pos = leveldb_varint(data, pos)
        unshared, pos = leveldb_varint(data, pos)
        length, pos = leveldb_varint(data, pos)
        key = key[:shared] + data[pos : pos + unshared]
        entries.append((shared, key, data[pos + unshared : pos + unshared + length], start))
        pos += unshared + length
    return entries, restarts


def leveldb_handle(data, pos=0):
    offset, pos = leveldb_varint(data, pos)
    size, pos = leveldb_varint(data, pos)
    return (offset, size), pos


def test_sstable_layout_is_leveldbs_so_tensorflow_can_seek_in_it(tmp_path):
    """TensorFlow looks tensors up through the index block: each index key must separate its data block from the
    next, restart points must start entries with no shared prefix (every 16th entry; every index entry), and the
    footer is two block handles, zero padding and the magic."""
    entries = sorted((f"model/h{i}/mlp/c_fc/{k}".encode(), bytes([i % 7]) * (i % 89)) for i in range(300) for k in "bw")
    write_table(tmp_path / "t.index", entries)
    data = (tmp_path / "t.index").read_bytes()
    footer = data[-48:]
    metaindex_handle, pos = leveldb_handle(footer)
    index_handle, pos = leveldb_handle(footer, pos)
    assert leveldb_block(data, metaindex_handle) == ([], [0])  # no filters: an empty block, one restart at 0
    assert footer[pos:40] == bytes(40 - pos) and struct.unpack("<Q", footer[40:])[0] == TABLE_MAGIC
    index, index_restarts = leveldb_block(data, index_handle)
    assert index_restarts == [start for _, _, _, start in index] and len(index) > 3  # several data blocks
    blocks = [leveldb_block(data, leveldb_handle(handle)[0]) for _, _, handle, _ in index]
    found = []
    for (_, separator, _, _), (block, restarts), following in zip(index, blocks, blocks[1:] + [None], strict=True):
        assert restarts == [start for n, (_, _, _, start) in enumerate(block) if n % 16 == 0]
        assert all(shared == 0 for n, (shared, _, _, _) in enumerate(block) if n % 16 == 0)
        assert block[-1][1] <= separator and (following is None or separator < following[0][0][1])
        found += [(key, value) for _, key, value, _ in block]
    assert found == entries


def test_tensor_bundle_round_trip_all_dtypes(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "a/float": rng.standard_normal((3, 5)).astype(np.float32),
        "a/double": rng.standard_normal(7),
        "b/half": rng.standard_normal((2, 2, 2)).astype(np.float16),
        "c/int": rng.integers(-5, 5, (4,)).astype(np.int32),
        "c/long": np.array(-(2**40), dtype=np.int64),
        "d/empty": np.zeros((0, 3), dtype=np.float32),
    }
    write_tensor_bundle(str(tmp_path / "model.ckpt"), tensors)
    assert sorted(os.listdir(tmp_path)) == ["model.ckpt.data-00000-of-00001", "model.ckpt.index"]
    back = read_tensor_bundle(str(tmp_path / "model.ckpt"))
    assert set(back) == set(tensors)
    for name, array in tensors.items():
        assert back[name].dtype == array.dtype and back[name].shape == array.shape, name
        np.testing.assert_array_equal(back[name], array)


def proto_classes(package, messages):
    """Message classes built by the protobuf library from `messages`: {name: [(number, field name, type, repeated,
    message type or None)]} in proto3, where fields at their zero value are left out, as TensorFlow's writers do."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    label = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name=f"{package}_in_test.proto", package=package, syntax="proto3")
    for name, fields in messages.items():
        message = file.message_type.add(name=name)
        for number, field_name, kind, repeated, type_name in fields:
            extra = {"type_name": f".{package}.{type_name}"} if type_name else {}
            kind = getattr(label, f"TYPE_{kind}")
            repeat = label.LABEL_REPEATED if repeated else label.LABEL_OPTIONAL
            message.field.add(name=field_name, number=number, type=kind, label=repeat, **extra)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{name}")) for name in messages}


@functools.cache
def bundle_protos():
    """BundleHeaderProto and BundleEntryProto with the field numbers of TensorFlow's tensor_bundle.proto (enums as
    int32, the same varint on the wire)."""
    classes = proto_classes(
        "bundle",
        {
            "Dim": [(1, "size", "INT64", False, None)],
            "Shape": [(2, "dim", "MESSAGE", True, "Dim")],
            "Entry": [
                (1, "dtype", "INT32", False, None),
                (2, "shape", "MESSAGE", False, "Shape"),
                (3, "shard_id", "INT32", False, None),
                (4, "offset", "INT64", False, None),
                (5, "size", "INT64", False, None),
                (6, "crc32c", "FIXED32", False, None),
            ],
            "Header": [(1, "num_shards", "INT32", False, None), (2, "endianness", "INT32", False, None)],
        },
    )
    return classes["Header"], classes["Entry"]


@pytest.mark.parametrize("endianness", ["little", "big"])
def test_two_shard_bfloat16_bundles_read_as_tensorflow_writes_them(tmp_path, endianness):
    """A bundle in either byte order (header endianness 0 or 1), a float32 tensor at offset 0 of shard 0 (its zero
    fields omitted) and a bfloat16 one in shard 1 of 2, read against torch's own bfloat16 conversion."""
    Header, Entry = bundle_protos()
    order = "<" if endianness == "little" else ">"
    weight = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    half = torch.randn(2, 5)
    bits = half.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    prefix = str(tmp_path / "model.ckpt")
    entries = [(b"", Header(num_shards=2, endianness=int(order == ">")).SerializeToString())]
    for shard, (name, array, dtype) in enumerate([("a/w", weight, 1), ("b/bf16", bits, 14)]):
        data = array.astype(array.dtype.newbyteorder(order)).tobytes()
        with open(f"{prefix}.data-{shard:05d}-of-00002", "wb") as f:
            f.write(data)
        shape = {"dim": [{"size": d} for d in array.shape]}
        entry = Entry(dtype=dtype, shape=shape, shard_id=shard, offset=0, size=len(data), crc32c=mask_crc(crc32c(data)))
        entries.append((name.encode(), entry.SerializeToString()))
    write_table(f"{prefix}.index", entries)
    back = read_tensor_bundle(prefix)
    assert back["a/w"].dtype == np.float32 and back["a/w"].dtype.isnative
    np.testing.assert_array_equal(back["a/w"], weight)
    assert back["b/bf16"].dtype == np.float32 and back["b/bf16"].shape == (2, 5)
    assert torch.equal(torch.from_numpy(back["b/bf16"]), half.to(torch.bfloat16).float())


def write_bundle(prefix, entries, num_shards=1, header=None):
    """A bundle whose index holds `entries` [(key bytes, BundleEntryProto bytes)] and one data shard of 48 bytes
    (a float32 (3, 4) tensor of 0..11); the header encoded by the protobuf library unless given as bytes."""
    Header, _ = bundle_protos()
    data = np.arange(12, dtype="<f4").tobytes()
    for shard in range(num_shards):
        with open(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}", "wb") as f:
            f.write(data)
    header = Header(num_shards=num_shards).SerializeToString() if header is None else header
    write_table(f"{prefix}.index", [(b"", header), *entries])
    return data


def entry(**fields):
    """A BundleEntryProto for the 48-byte float32 (3, 4) tensor at offset 0 of shard 0, with `fields` changed."""
    _, Entry = bundle_protos()
    values = dict(dtype=1, shape={"dim": [{"size": 3}, {"size": 4}]}, size=48)
    values.update(fields)
    return Entry(**{k: v for k, v in values.items() if v is not None}).SerializeToString()


@pytest.mark.parametrize(
    "entries, options, problem",
    [
        (
            [(b"w", entry(dtype=7))],
            {},
            "model.ckpt.index: w has TensorFlow dtype 7, which this reader does not support",
        ),
        (
            [(b"w", entry(dtype=None))],
            {},
            "model.ckpt.index: w has TensorFlow dtype 0, which this reader does not support",
        ),
        (
            [(b"w", entry(size=40))],
            {},
            "model.ckpt.index: w has shape (3, 4) of 4-byte items, but its entry says 40 bytes",
        ),
        ([(b"w", entry(shard_id=1))], {}, "model.ckpt.index: w is in shard 1 but the header says 1 shards"),
        (
            [(b"w", entry(shape={"dim": [{"size": 3}, {"size": 8}]}, size=96))],
            {},
            "model.ckpt.data-00000-of-00001 is truncated: w needs bytes 0..96, the file has 48",
        ),
        (
            [(b"w", entry() + b"\x3a\x00")],
            {},
            "model.ckpt.index: w is a partitioned variable (slices), which is not supported",
        ),
        ([(b"w", b"\x88")], {}, "model.ckpt.index is truncated: a varint runs past the end of its data"),
        (
            [(b"w", entry(shape=None) + b"\x12\x01\x88")],
            {},
            "model.ckpt.index is truncated: a varint runs past the end of its data",
        ),
        ([(b"w", entry(crc32c=12345))], {}, "model.ckpt.data-00000-of-00001 is corrupt: w fails its crc32c check"),
        ([], {"header": b"\x88"}, "model.ckpt.index is truncated: a varint runs past the end of its data"),
    ],
    ids=[
        "dtype",
        "no-dtype",
        "size",
        "shard",
        "truncated",
        "slices",
        "entry-proto",
        "shape-proto",
        "crc",
        "header-proto",
    ],
)
def test_a_bundle_entry_tensorflow_would_not_write_is_named(tmp_path, entries, options, problem):
    prefix = str(tmp_path / "model.ckpt")
    write_bundle(prefix, entries, **options)
    with pytest.raises(ValueError, match=f"^{re.escape(str(tmp_path))}/{re.escape(problem)}$"):
        read_tensor_bundle(prefix)


def test_bundle_reading_details_tensorflow_relies_on(tmp_path):
    """The header key missing, checksums skipped on request, a key that is not UTF-8, a scalar without a shape, and
    a tensor at offset 0 of shard 0 whose zero fields the protobuf encoder leaves out."""
    prefix = str(tmp_path / "model.ckpt")
    with pytest.raises(FileNotFoundError, match=f"^{re.escape(prefix)}.index does not exist$"):
        read_tensor_bundle(prefix)
    data = write_bundle(prefix, [(b"\xffw", entry(crc32c=12345)), (b"x", entry(dtype=1, shape=None, size=4))])
    with pytest.raises(ValueError, match="fails its crc32c check"):
        read_tensor_bundle(prefix)  # checked by default
    tensors = read_tensor_bundle(prefix, verify_checksums=False)
    assert sorted(tensors) == ["x", "\ufffdw"]  # an undecodable byte replaced, as in an error message
    np.testing.assert_array_equal(tensors["\ufffdw"], np.frombuffer(data, "<f4").reshape(3, 4))
    assert tensors["x"].shape == () and tensors["x"] == 0.0
    write_table(f"{prefix}.index", [(b"w", entry())])  # no BundleHeaderProto first
    with pytest.raises(ValueError, match="has no BundleHeaderProto"):
        read_tensor_bundle(prefix)


def test_gpt2_checkpoint_reads_with_transformers_logits(tmp_path, make_pair):
    ref, ours = make_pair()
    write_tf(ours.config, ours.state_dict(), tmp_path / "124M")
    raw = read_tensor_bundle(str(tmp_path / "124M" / "model.ckpt"))
    # OpenAI's layout: conv weights (1, in, out) equal transformers' Conv1D (in, out)
    gpt2 = ref.state_dict()
    np.testing.assert_array_equal(raw["model/h1/mlp/c_fc/w"][0], gpt2["transformer.h.1.mlp.c_fc.weight"].numpy())
    np.testing.assert_array_equal(raw["model/ln_f/g"], gpt2["transformer.ln_f.weight"].numpy())
    assert json.loads((tmp_path / "124M" / "hparams.json").read_text()) == dict(
        n_vocab=50257, n_ctx=128, n_embd=64, n_head=4, n_layer=2
    )
    model, fmt = read_checkpoint(str(tmp_path / "124M"))
    assert fmt == "tf"
    x = torch.randint(0, 50257, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, ref(x).logits, rtol=0, atol=1e-5)
        assert torch.equal(model(x).logits, ours(x).logits)
    for where in ["124M/model.ckpt", "124M/model.ckpt.index"]:  # the prefix and the index file work too
        _, state_dict = read_tf(str(tmp_path / where))
        assert torch.equal(state_dict["transformer.wpe.weight"], ours.transformer.wpe.weight)


def openai_variables(gpt2):
    """OpenAI's TF variables for a transformers GPT-2, by openai/gpt-2 src/model.py: `wte` [n_vocab, n_embd], `wpe`
    [n_ctx, n_embd], norm `g`/`b` [n_state], conv1d `w` [1, nx, nf] and `b` [nf]. transformers' Conv1D keeps
    its weight as (nx, nf) and computes x @ weight + bias, as OpenAI's conv1d does with w[0]: so w = weight[None]."""
    weights = {name: tensor.detach().numpy() for name, tensor in gpt2.state_dict().items()}
    variables = {
        "model/wte": weights["transformer.wte.weight"],
        "model/wpe": weights["transformer.wpe.weight"],
        "model/ln_f/g": weights["transformer.ln_f.weight"],
        "model/ln_f/b": weights["transformer.ln_f.bias"],
    }
    for i in range(gpt2.config.n_layer):
        for norm in ("ln_1", "ln_2"):
            variables[f"model/h{i}/{norm}/g"] = weights[f"transformer.h.{i}.{norm}.weight"]
            variables[f"model/h{i}/{norm}/b"] = weights[f"transformer.h.{i}.{norm}.bias"]
        for conv in ("attn/c_attn", "attn/c_proj", "mlp/c_fc", "mlp/c_proj"):
            module = f"transformer.h.{i}.{conv.replace('/', '.')}"
            variables[f"model/h{i}/{conv}/w"] = weights[f"{module}.weight"][None]
            variables[f"model/h{i}/{conv}/b"] = weights[f"{module}.bias"]
    return variables


def test_every_openai_variable_imports_to_gpt2_logits(tmp_path, make_pair):
    ref, ours = make_pair()
    config = ref.config
    variables = openai_variables(ref)
    C, V, T = config.n_embd, config.vocab_size, config.n_positions
    openai_shapes = {
        "model/wte": (V, C), "model/wpe": (T, C), "model/h1/attn/c_attn/w": (1, C, 3 * C),
        "model/h1/attn/c_attn/b": (3 * C,), "model/h1/attn/c_proj/w": (1, C, C), "model/h1/mlp/c_fc/w": (1, C, 4 * C),
        "model/h1/mlp/c_proj/w": (1, 4 * C, C), "model/h1/mlp/c_proj/b": (C,), "model/h1/ln_2/g": (C,),
    }  # fmt: skip
    assert {name: variables[name].shape for name in openai_shapes} == openai_shapes
    folder = tmp_path / "openai"
    folder.mkdir()
    write_tensor_bundle(str(folder / "model.ckpt"), variables)  # only the container: names and arrays are ours here
    hparams = dict(n_vocab=V, n_ctx=T, n_embd=C, n_head=config.n_head, n_layer=config.n_layer)
    (folder / "hparams.json").write_text(json.dumps(hparams))

    model, fmt = read_checkpoint(str(folder))
    assert fmt == "tf"
    x = torch.randint(0, V, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, ref(x).logits, rtol=0, atol=1e-5)
    # and the writer lays out every variable the same way
    write_tf(ours.config, ours.state_dict(), tmp_path / "written")
    written = read_tensor_bundle(str(tmp_path / "written" / "model.ckpt"))
    assert set(written) == set(variables)
    for name, array in variables.items():
        np.testing.assert_array_equal(written[name], array, err_msg=name)


def test_openai_tokenizer_files_become_the_gpt2_tokenizer(tmp_path, gpt2_tokenizer_dir, gpt2_tokenizer):
    model = model_from_state_dict(*_tiny_random())
    write_tf(model.config, model.state_dict(), tmp_path / "m")
    # OpenAI's release names GPT-2's vocab.json and merges.txt encoder.json and vocab.bpe
    (tmp_path / "m" / "encoder.json").write_bytes(open(os.path.join(gpt2_tokenizer_dir, "vocab.json"), "rb").read())
    (tmp_path / "m" / "vocab.bpe").write_bytes(open(os.path.join(gpt2_tokenizer_dir, "merges.txt"), "rb").read())
    tok = find_tokenizer(str(tmp_path / "m"), "tf")
    text = "Hello world, this is GPT-2's tokenizer."
    assert len(tok) == 50257 and tok(text).input_ids == gpt2_tokenizer(text).input_ids


def _tiny_random(seed=0, **overrides):
    config = EmbGPTConfig.from_preset("tiny", **overrides)
    generator = torch.Generator().manual_seed(seed)
    state_dict = {name: torch.randn(shape, generator=generator) for name, shape in expected_shapes(config).items()}
    state_dict["lm_head.weight"] = state_dict["transformer.wte.weight"]
    return config, state_dict


@pytest.fixture
def tf_folder(tmp_path):
    config, state_dict = _tiny_random()
    write_tf(config, state_dict, tmp_path / "m")
    return tmp_path / "m"


def checkpoint_state():
    """TensorFlow's CheckpointState (checkpoint_state.proto: model_checkpoint_path = 1, all_model_checkpoint_paths =
    2), which `tf.train.latest_checkpoint` reads from the `checkpoint` file in protobuf text format."""
    fields = [
        (1, "model_checkpoint_path", "STRING", False, None),
        (2, "all_model_checkpoint_paths", "STRING", True, None),
    ]
    return proto_classes("ckpt", {"CheckpointState": fields})["CheckpointState"]()


def test_write_tf_writes_float32_a_pointer_tensorflow_parses_and_refuses_what_openai_has_not(tmp_path, caplog):
    from google.protobuf import text_format

    config, state_dict = _tiny_random()
    half = {name: tensor.half() for name, tensor in state_dict.items()}
    with caplog.at_level("WARNING", logger="hf_embgpt.formats.tf"):
        write_tf(config, half, tmp_path / "half")
    assert caplog.records == []  # GPT-2's own activation: nothing to warn about
    tensors = read_tensor_bundle(str(tmp_path / "half" / "model.ckpt"))
    assert {array.dtype for array in tensors.values()} == {np.dtype("float32")}  # as OpenAI's release
    np.testing.assert_array_equal(tensors["model/wte"], half["transformer.wte.weight"].float().numpy())
    state = text_format.Parse((tmp_path / "half" / "checkpoint").read_text(), checkpoint_state())
    assert state.model_checkpoint_path == "model.ckpt" and list(state.all_model_checkpoint_paths) == ["model.ckpt"]
    with pytest.raises(ValueError, match="^OpenAI's GPT-2 has biases everywhere; a bias=False model can't be written"):
        write_tf(*_tiny_random(bias=False), tmp_path / "no-bias")
    config, state_dict = _tiny_random(activation_function="gelu")
    with caplog.at_level("WARNING", logger="hf_embgpt.formats.tf"):
        write_tf(config, state_dict, tmp_path / "gelu")
    assert [r.getMessage() for r in caplog.records] == ["OpenAI's GPT-2 uses the tanh GELU; this model uses 'gelu'"]


def test_bad_index_files(tf_folder):
    index = tf_folder / "model.ckpt.index"
    data = index.read_bytes()
    index.write_bytes(data[:-1] + b"\x00")
    with pytest.raises(ValueError, match="footer magic") as info:
        read_tf(tf_folder)
    assert "model.ckpt.index" in str(info.value)
    index.write_bytes(data[:20])
    with pytest.raises(ValueError, match="is truncated") as info:
        read_tf(tf_folder)
    assert "model.ckpt.index" in str(info.value)
    corrupt = bytearray(data)
    corrupt[10] ^= 0xFF  # inside the first data block
    index.write_bytes(bytes(corrupt))
    with pytest.raises(ValueError, match="fails its crc32c check"):
        read_tf(tf_folder)


def test_compressed_tables_are_refused(tmp_path):
    write_table(tmp_path / "t.index", [(b"k", b"v")])
    data = bytearray((tmp_path / "t.index").read_bytes())
    assert data[13] == 0  # the first block: 3 one-byte varints, key, value, one restart, its count = 13 bytes
    data[13] = 1  # snappy
    (tmp_path / "t.index").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="compressed block") as info:
        read_table(tmp_path / "t.index")
    assert "t.index" in str(info.value)


def test_bad_data_shards(tf_folder):
    shard = tf_folder / "model.ckpt.data-00000-of-00001"
    data = shard.read_bytes()
    shard.write_bytes(data[:-4])
    with pytest.raises(ValueError, match="is truncated: model/wte needs bytes") as info:
        read_tf(tf_folder)
    assert "data-00000-of-00001" in str(info.value)
    corrupt = bytearray(data)
    corrupt[len(data) // 2] ^= 1
    shard.write_bytes(bytes(corrupt))
    with pytest.raises(ValueError, match="fails its crc32c check"):
        read_tf(tf_folder)
    read_tf(tf_folder, verify_checksums=False)  # on request: the bytes as they are
    shard.unlink()
    with pytest.raises(FileNotFoundError, match="data-00000-of-00001 does not exist"):
        read_tf(tf_folder)


def test_hparams_inconsistent_with_tensors(tf_folder):
    hparams = json.loads((tf_folder / "hparams.json").read_text())
    (tf_folder / "hparams.json").write_text(json.dumps({**hparams, "n_layer": 3}))
    with pytest.raises(ValueError, match="missing model/h2/ln_1/g") as info:
        read_tf(tf_folder)
    assert "model.ckpt.index" in str(info.value)
    (tf_folder / "hparams.json").write_text(json.dumps({**hparams, "n_embd": 32}))
    with pytest.raises(ValueError, match="shaped unlike the config"):
        read_tf(tf_folder)
    (tf_folder / "hparams.json").write_text(json.dumps({**hparams, "n_head": 5}))
    with pytest.raises(ValueError, match=re.escape("n_embd (64) must be divisible by n_head (5)")):
        read_tf(tf_folder)
    (tf_folder / "hparams.json").unlink()
    with pytest.raises(FileNotFoundError, match="hparams.json does not exist"):
        read_tf(tf_folder)


def test_unexpected_variables_and_shapes(tmp_path):
    config, state_dict = _tiny_random()
    write_tf(config, state_dict, tmp_path / "m")
    prefix = str(tmp_path / "m" / "model.ckpt")
    tensors = read_tensor_bundle(prefix)
    write_tensor_bundle(prefix, {**tensors, "model/extra": np.zeros(2, np.float32)})
    with pytest.raises(ValueError, match="unexpected model/extra"):
        read_tf(tmp_path / "m")
    write_tensor_bundle(prefix, {**tensors, "model/h0/attn/c_attn/w": tensors["model/h0/attn/c_attn/w"][0]})
    with pytest.raises(
        ValueError, match=re.escape("model/h0/attn/c_attn/w has shape (64, 192), expected (1, in, out)")
    ):
        read_tf(tmp_path / "m")
    two = np.concatenate([tensors["model/h0/attn/c_attn/w"]] * 2)  # (2, in, out): OpenAI's conv1d has one
    write_tensor_bundle(prefix, {**tensors, "model/h0/attn/c_attn/w": two})
    with pytest.raises(
        ValueError, match=re.escape("model/h0/attn/c_attn/w has shape (2, 64, 192), expected (1, in, out)")
    ):
        read_tf(tmp_path / "m")


def test_failed_write_leaves_destination_untouched(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "keep.txt").write_text("previous")
    config, state_dict = _tiny_random(bias=False)
    with pytest.raises(ValueError, match="bias=False"):
        write_tf(config, state_dict, tmp_path / "m")
    assert os.listdir(tmp_path) == ["m"] and os.listdir(tmp_path / "m") == ["keep.txt"]


TF_SCRIPT = """
import sys, numpy as np, tensorflow as tf
ours, theirs = sys.argv[1], sys.argv[2]
expected = dict(np.load(ours + "/expected.npz"))
reader = tf.train.load_checkpoint(ours + "/model.ckpt")  # TF verifies every tensor's crc32c as it reads
for name in reader.get_variable_to_shape_map():
    assert np.array_equal(reader.get_tensor(name), expected[name.replace("/", "|")]), name
assert len(reader.get_variable_to_shape_map()) == len(expected)
tf.compat.v1.disable_eager_execution()
values = {k.replace("|", "/"): v for k, v in expected.items()}
variables = [tf.compat.v1.get_variable(k, initializer=v) for k, v in values.items()]
with tf.compat.v1.Session() as session:
    session.run(tf.compat.v1.global_variables_initializer())
    tf.compat.v1.train.Saver().save(session, theirs + "/model.ckpt")
"""


def _python_with_tensorflow():
    if importlib.util.find_spec("tensorflow") is not None:
        return sys.executable
    return os.environ.get("EMBGPT_TF_PYTHON")  # e.g. a separate venv with tensorflow-cpu


@pytest.mark.skipif(_python_with_tensorflow() is None, reason="needs TensorFlow (or EMBGPT_TF_PYTHON=<its python>)")
def test_tensorflow_reads_our_checkpoints_and_we_read_its(tmp_path):
    config, state_dict = _tiny_random(vocab_size=300, bos_token_id=None, eos_token_id=None)
    write_tf(config, state_dict, tmp_path / "ours")
    expected = read_tensor_bundle(str(tmp_path / "ours" / "model.ckpt"))
    np.savez(tmp_path / "ours" / "expected.npz", **{k.replace("/", "|"): v for k, v in expected.items()})
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "hparams.json").write_text((tmp_path / "ours" / "hparams.json").read_text())
    done = subprocess.run(
        [_python_with_tensorflow(), "-c", TF_SCRIPT, str(tmp_path / "ours"), str(tmp_path / "theirs")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    back_config, back = read_tf(tmp_path / "theirs")  # written by TensorFlow's own Saver
    assert back_config.to_diff_dict() == config.to_diff_dict()
    for name, tensor in state_dict.items():
        assert torch.equal(back[name], tensor), name


@pytest.mark.slow
def test_124m_round_trip(tmp_path):
    config = EmbGPTConfig.from_preset("gpt2")
    state_dict = random_state_dict(config)
    write_tf(config, state_dict, tmp_path / "124M")
    back_config, back = read_tf(tmp_path / "124M")
    assert back_config.to_diff_dict() == config.to_diff_dict()
    assert_same_tensors(back, state_dict)


# ---- the pieces a reader meets: which prefix a folder holds, hparams, variable names, protobuf as Google encodes it


def test_a_folder_is_read_at_the_prefix_its_checkpoint_file_names(tmp_path):
    """TensorFlow's Saver writes `checkpoint` (model_checkpoint_path: "...") beside its prefixes; it decides."""
    config, state_dict = _tiny_random()
    other_config, other = _tiny_random(seed=1)
    write_tf(config, state_dict, tmp_path / "a")
    write_tf(other_config, other, tmp_path / "b")
    for name in os.listdir(tmp_path / "b"):
        if name.startswith("model.ckpt"):
            os.rename(tmp_path / "b" / name, tmp_path / "a" / name.replace("model.ckpt", "model.ckpt-2"))
    if (tmp_path / "a" / "checkpoint").exists():
        os.remove(tmp_path / "a" / "checkpoint")
    with pytest.raises(
        FileNotFoundError, match=rf"^{tmp_path / 'a'} holds 2 .index files; expected one TF checkpoint$"
    ):
        read_tf(tmp_path / "a")
    for pointed, expected in (("model.ckpt-2", other), (str(tmp_path / "a" / "model.ckpt"), state_dict)):
        (tmp_path / "a" / "checkpoint").write_text(
            f'model_checkpoint_path: "{pointed}"\nall_model_checkpoint_paths: "model.ckpt"\n'
        )
        assert_same_tensors(read_tf(tmp_path / "a")[1], expected)
    assert_same_tensors(read_tf(tmp_path / "a" / "model.ckpt-2.index")[1], other)  # an .index file names its prefix


def test_a_missing_prefix_and_a_single_file_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"^{tmp_path / 'model.ckpt'}.index does not exist$"):
        read_tf(tmp_path / "model.ckpt")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'weights.bin'} is a single file, not an OpenAI TF checkpoint"):
        read_tf(tmp_path / "weights.bin")


def test_missing_hparams_and_variables_are_all_named(tf_folder):
    hparams = json.loads((tf_folder / "hparams.json").read_text())
    (tf_folder / "hparams.json").write_text(json.dumps({"n_embd": hparams["n_embd"]}))
    with pytest.raises(ValueError, match=rf"^{tf_folder / 'hparams.json'} is missing n_vocab, n_ctx, n_head, n_layer$"):
        read_tf(tf_folder)
    (tf_folder / "hparams.json").write_text(json.dumps(hparams))
    prefix = str(tf_folder / "model.ckpt")
    tensors = read_tensor_bundle(prefix)
    del tensors["model/ln_f/b"], tensors["model/wpe"]
    write_tensor_bundle(prefix, {**tensors, "model/extra": np.zeros(2, np.float32)})
    with pytest.raises(ValueError, match=": missing model/wpe, model/ln_f/b; unexpected model/extra$"):
        read_tf(tf_folder)
    write_tensor_bundle(prefix, {**read_tensor_bundle(prefix), "model/ln_f/b": np.zeros(64, np.float32)})
    write_tensor_bundle(prefix, {**read_tensor_bundle(prefix), "model/wpe": np.zeros((128, 64), np.float32)})
    with pytest.raises(ValueError, match=": missing none; unexpected model/extra$"):
        read_tf(tf_folder)
    write_tensor_bundle(
        prefix, {k: v for k, v in read_tensor_bundle(prefix).items() if k not in ("model/extra", "model/wpe")}
    )
    with pytest.raises(ValueError, match=": missing model/wpe; unexpected none$"):
        read_tf(tf_folder)


def test_protobuf_fields_parse_as_googles_encoder_writes_them():
    """Every wire type a TensorBundle header may use, encoded by the protobuf library itself."""
    import struct

    from google.protobuf import wrappers_pb2

    from hf_embgpt.formats.tf import _parse_proto

    cases = [
        (wrappers_pb2.UInt64Value(value=2**64 - 1), lambda v: v),  # a 10-byte varint, the longest
        (wrappers_pb2.Int64Value(value=-2), lambda v: v - 2**64),  # negative: ten bytes too
        (wrappers_pb2.DoubleValue(value=1.5), lambda v: struct.unpack("<d", v.to_bytes(8, "little"))[0]),  # fixed64
        (wrappers_pb2.FloatValue(value=-0.25), lambda v: struct.unpack("<f", v.to_bytes(4, "little"))[0]),  # fixed32
        (wrappers_pb2.BytesValue(value=b"\x00tensor"), lambda v: v),  # length-delimited
    ]
    for message, decode in cases:
        (value,) = _parse_proto(message.SerializeToString(), "header")[1]
        assert decode(value) == message.value, type(message).__name__
    double, single = wrappers_pb2.DoubleValue(value=3.0), wrappers_pb2.FloatValue(value=2.0)
    for first, second in ((double, single), (single, double)):  # a field repeated: both values, in order
        values = _parse_proto(first.SerializeToString() + second.SerializeToString(), "header")[1]
        widths = [8 if message is double else 4 for message in (first, second)]
        pairs = zip(values, widths, strict=True)
        decoded = [struct.unpack("<d" if n == 8 else "<f", v.to_bytes(n, "little"))[0] for v, n in pairs]
        assert decoded == [first.value, second.value]


@pytest.mark.parametrize(
    "data, problem",
    [
        (b"\x88", "is truncated: a varint runs past the end of its data"),
        (b"\x08\xff", "is truncated: a varint runs past the end of its data"),
        (b"\x08" + b"\xff" * 10 + b"\x01", "is corrupt: a varint is longer than 10 bytes"),
        (b"\x09\x00\x00", "is truncated: protobuf field 1 runs past its message"),
        (b"\x0b", "is corrupt: protobuf wire type 3 in field 1"),
    ],
    ids=["cut-key", "cut-varint", "long-varint", "cut-fixed64", "group"],
)
def test_broken_protobuf_is_named(data, problem):
    from hf_embgpt.formats.tf import _parse_proto

    with pytest.raises(ValueError, match=f"^model.ckpt.index {re.escape(problem)}$"):
        _parse_proto(data, "model.ckpt.index")
