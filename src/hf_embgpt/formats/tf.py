"""OpenAI's original GPT-2 TensorFlow checkpoint, read (and written) without TensorFlow.

The release (`models/124M/`) holds `hparams.json` ({n_vocab, n_ctx, n_embd, n_head, n_layer}), `checkpoint`,
`model.ckpt.index`, `model.ckpt.data-00000-of-00001`, `model.ckpt.meta`, `encoder.json` and `vocab.bpe`.
`model.ckpt.*` is a TensorBundle (TF's V2 checkpoint):

- `.index` is an SSTable in LevelDB's table format: data blocks of prefix-compressed entries with restart points,
  each followed by a 5-byte trailer (compression type, masked crc32c); an index block mapping each data block's last
  key to its BlockHandle (offset, size as varints); and a 48-byte footer (metaindex and index handles, padding, the
  magic 0xdb4775248b80fb57). Its key "" holds a BundleHeaderProto (num_shards, endianness); every other key is a
  tensor name whose value is a BundleEntryProto (dtype, shape, shard_id, offset, size, masked crc32c).
- `.data-SSSSS-of-NNNNN` shards hold the raw tensors, back to back.

Names (openai/gpt-2 src/model.py): `model/wte` (V, C), `model/wpe` (T, C), `model/h{i}/ln_1/{g,b}`,
`model/h{i}/attn/c_attn/{w (1, C, 3C), b}`, `.../attn/c_proj`, `.../ln_2`, `.../mlp/c_fc`, `.../mlp/c_proj`,
`model/ln_f/{g,b}`. The `w`s are 1x1 convolutions, `x @ w[0] + b`: EmbGPT's nn.Linear weight is `w[0].T`.

The writer (`write_tensor_bundle`, `write_tf`) produces the same format, for tests and for tools that read the
original release (it writes no `.meta` graph, which OpenAI's code does not need). Both directions were checked
against TensorFlow itself (`tf.train.load_checkpoint` and `Saver.restore` read what we write; we read what its
`Saver` writes): tests/test_convert_tf.py repeats that check when TensorFlow is available.
"""

import json
import logging
import os
import struct

import numpy as np
import torch

from ..configuration_embgpt import EmbGPTConfig
from .common import atomic_folder, check_state_dict

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------------------
# The GPT-2 name table. "{i}" is the layer; "conv" tensors are (1, in, out) in TF and (out, in) in EmbGPT.

TF_NAMES = {
    "transformer.wte.weight": "model/wte",
    "transformer.wpe.weight": "model/wpe",
    "transformer.h.{i}.ln_1.weight": "model/h{i}/ln_1/g",
    "transformer.h.{i}.ln_1.bias": "model/h{i}/ln_1/b",
    "transformer.h.{i}.attn.c_attn.weight": "model/h{i}/attn/c_attn/w",
    "transformer.h.{i}.attn.c_attn.bias": "model/h{i}/attn/c_attn/b",
    "transformer.h.{i}.attn.c_proj.weight": "model/h{i}/attn/c_proj/w",
    "transformer.h.{i}.attn.c_proj.bias": "model/h{i}/attn/c_proj/b",
    "transformer.h.{i}.ln_2.weight": "model/h{i}/ln_2/g",
    "transformer.h.{i}.ln_2.bias": "model/h{i}/ln_2/b",
    "transformer.h.{i}.mlp.c_fc.weight": "model/h{i}/mlp/c_fc/w",
    "transformer.h.{i}.mlp.c_fc.bias": "model/h{i}/mlp/c_fc/b",
    "transformer.h.{i}.mlp.c_proj.weight": "model/h{i}/mlp/c_proj/w",
    "transformer.h.{i}.mlp.c_proj.bias": "model/h{i}/mlp/c_proj/b",
    "transformer.ln_f.weight": "model/ln_f/g",
    "transformer.ln_f.bias": "model/ln_f/b",
}
HPARAMS = {"n_vocab": "vocab_size", "n_ctx": "block_size", "n_embd": "n_embd", "n_head": "n_head", "n_layer": "n_layer"}


def _names(n_layer):
    """[(EmbGPT name, TF name)] for every tensor of an n_layer model."""
    pairs = []
    for ours, theirs in TF_NAMES.items():
        layers = range(n_layer) if "{i}" in ours else [None]
        pairs += [(ours.format(i=i), theirs.format(i=i)) for i in layers]
    return pairs


def _is_conv(tf_name):
    return tf_name.endswith("/w")


def read_tf(path, verify_checksums=True):
    """Read OpenAI's TF checkpoint (its folder, the `model.ckpt` prefix or the `.index` file).

    Returns (EmbGPTConfig, state_dict); the config comes from `hparams.json` beside the checkpoint.
    """
    prefix = _find_prefix(os.fspath(path))
    hparams_file = os.path.join(os.path.dirname(prefix), "hparams.json")
    if not os.path.isfile(hparams_file):
        raise FileNotFoundError(f"{hparams_file} does not exist; OpenAI's checkpoints keep the model size there")
    with open(hparams_file) as f:
        hparams = json.load(f)
    missing = [name for name in HPARAMS if name not in hparams]
    if missing:
        raise ValueError(f"{hparams_file} is missing {', '.join(missing)}")
    try:
        values = {ours: hparams[theirs] for theirs, ours in HPARAMS.items()}
        config = EmbGPTConfig(**values)
    except ValueError as e:
        raise ValueError(f"{hparams_file} describes an impossible model: {e}") from e

    tensors = read_tensor_bundle(prefix, verify_checksums=verify_checksums)
    names = _names(config.n_layer)
    unexpected = sorted(set(tensors) - {theirs for _, theirs in names})
    missing = [theirs for _, theirs in names if theirs not in tensors]
    if missing or unexpected:
        raise ValueError(
            f"{prefix}.index does not hold a GPT-2 with the hparams.json size: "
            f"missing {', '.join(missing) or 'none'}; unexpected {', '.join(unexpected) or 'none'}"
        )
    state_dict = {}
    for ours, theirs in names:
        tensor = torch.from_numpy(tensors[theirs])
        if _is_conv(theirs):
            if tensor.ndim != 3 or tensor.shape[0] != 1:
                raise ValueError(f"{prefix}.index: {theirs} has shape {tuple(tensor.shape)}, expected (1, in, out)")
            tensor = tensor[0].t()
        state_dict[ours] = tensor.float().contiguous()  # torch's transposing copy is blocked: faster than numpy's
    return config, check_state_dict(state_dict, config, f"{prefix}.index")


def write_tf(config, state_dict, folder):
    """Write `folder/` as OpenAI's release lays it out: hparams.json, checkpoint, model.ckpt.{index,data-*}."""
    if not config.bias:
        raise ValueError("OpenAI's GPT-2 has biases everywhere; a bias=False model can't be written as a TF checkpoint")
    if config.activation_function != "gelu_new":
        logger.warning("OpenAI's GPT-2 uses the tanh GELU; this model uses %r", config.activation_function)
    state_dict = check_state_dict(state_dict, config, "model")
    tensors = {}
    for ours, theirs in _names(config.n_layer):
        tensor = state_dict[ours].detach().to("cpu", torch.float32)
        tensors[theirs] = tensor.t().contiguous().numpy()[None] if _is_conv(theirs) else tensor.contiguous().numpy()
    hparams = {theirs: getattr(config, ours) for theirs, ours in HPARAMS.items()}
    with atomic_folder(folder) as staging:
        write_tensor_bundle(os.path.join(staging, "model.ckpt"), tensors)
        with open(os.path.join(staging, "hparams.json"), "w") as f:
            json.dump(hparams, f, indent=2)
        with open(os.path.join(staging, "checkpoint"), "w") as f:
            f.write('model_checkpoint_path: "model.ckpt"\nall_model_checkpoint_paths: "model.ckpt"\n')
    logger.info("wrote %s (OpenAI TF checkpoint)", folder)


def _find_prefix(path):
    """The checkpoint prefix (`.../model.ckpt`) for a folder, a prefix or an .index file."""
    if os.path.isdir(path):
        pointer = os.path.join(path, "checkpoint")
        if os.path.isfile(pointer):
            with open(pointer) as f:
                for line in f:
                    if line.startswith("model_checkpoint_path:"):
                        name = line.split(":", 1)[1].strip().strip('"')
                        return name if os.path.isabs(name) else os.path.join(path, name)
        indexes = sorted(name for name in os.listdir(path) if name.endswith(".index"))
        if len(indexes) != 1:
            raise FileNotFoundError(f"{path} holds {len(indexes)} .index files; expected one TF checkpoint")
        return os.path.join(path, indexes[0][: -len(".index")])
    if path.endswith(".index"):
        path = path[: -len(".index")]
    if not os.path.isfile(path + ".index"):
        if os.path.isfile(path):
            raise ValueError(
                f"{path} is a single file, not an OpenAI TF checkpoint (a folder with hparams.json and "
                f"model.ckpt.index/.data-*, or its model.ckpt prefix)"
            )
        raise FileNotFoundError(f"{path}.index does not exist")
    return path


# ----------------------------------------------------------------------------------------------------------------
# crc32c (Castagnoli), masked as LevelDB and TensorBundle store it. Large buffers are hashed in 16384 parallel lanes
# with numpy and the lanes' CRCs combined, since a byte loop in Python would take minutes on a 500 MB shard.

_POLY = 0x82F63B78
_TABLE = np.zeros(256, dtype=np.uint32)
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ _POLY if _c & 1 else _c >> 1
    _TABLE[_n] = _c
_TABLE_LIST = _TABLE.tolist()
_TABLE16 = np.arange(65536, dtype=np.uint32)  # register after feeding two bytes whose xor with it is the index
for _ in range(2):
    _TABLE16 = _TABLE[_TABLE16 & 0xFF] ^ (_TABLE16 >> 8)
_MASK_DELTA = 0xA282EAD8
_LANES = 16384


def _crc_update(register, data):
    """The raw (no pre/post inversion) reflected CRC register after feeding `data` bytes."""
    table = _TABLE_LIST
    for byte in data:
        register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register


def _zero_feed(length):
    """Byte tables of the linear map 'feed `length` zero bytes' on the CRC register."""
    basis = np.array([1 << k for k in range(32)], dtype=np.uint32)
    for _ in range(length):
        basis = _TABLE[basis & 0xFF] ^ (basis >> 8)
    basis = basis.tolist()
    tables = []
    for shift in range(0, 32, 8):
        table = [0] * 256
        for value in range(1, 256):
            low = value & -value
            table[value] = table[value ^ low] ^ basis[shift + low.bit_length() - 1]
        tables.append(table)
    return tables


def crc32c(data):
    """CRC-32C of a bytes-like object."""
    view = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    register = 0xFFFFFFFF
    words = len(view) // (2 * _LANES)  # each lane hashes `words` little-endian 16-bit words, two bytes per step
    if words < 32:
        return _crc_update(register, view.tobytes()) ^ 0xFFFFFFFF
    lanes = view[: 2 * words * _LANES].view("<u2").reshape(_LANES, words)  # lane k hashes row k
    partial = np.zeros(_LANES, dtype=np.uint32)
    index, looked_up = np.empty(_LANES, dtype=np.uint32), np.empty(_LANES, dtype=np.uint32)
    columns = np.empty((32, _LANES), dtype=np.uint16)
    for start in range(0, words, 32):  # transposed 32 words at a time: cache-friendly, 3x faster than at once
        block = columns[: min(32, words - start)]
        np.copyto(block, lanes[:, start : start + 32].T)
        for column in block:
            np.bitwise_xor(partial, column, out=index)
            np.bitwise_and(index, 0xFFFF, out=index)
            np.right_shift(partial, 16, out=partial)
            np.take(_TABLE16, index, out=looked_up)
            np.bitwise_xor(partial, looked_up, out=partial)
    t0, t1, t2, t3 = _zero_feed(2 * words)
    for value in partial.tolist():  # register(A + B) = zero_feed_len(B)(register(A)) ^ register_from_0(B)
        register = t0[register & 0xFF] ^ t1[(register >> 8) & 0xFF] ^ t2[(register >> 16) & 0xFF] ^ t3[register >> 24]
        register ^= value
    return _crc_update(register, view[2 * words * _LANES :].tobytes()) ^ 0xFFFFFFFF


def mask_crc(crc):
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def unmask_crc(masked):
    rotated = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rotated >> 17) | (rotated << 15)) & 0xFFFFFFFF


# ----------------------------------------------------------------------------------------------------------------
# Protocol buffers: the wire format, and the two messages a TensorBundle index holds.


def _read_varint(buf, pos, source):
    value, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise ValueError(f"{source} is truncated: a varint runs past the end of its data")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError(f"{source} is corrupt: a varint is longer than 10 bytes")


def _varint(value):
    value &= (1 << 64) - 1  # negative int64s take ten bytes, as protobuf writes them
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _parse_proto(buf, source):
    """{field number: [values]}: ints for varint/fixed fields, bytes for length-delimited ones."""
    fields, pos = {}, 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos, source)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos, source)
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wire == 2:
            length, pos = _read_varint(buf, pos, source)
            value, pos = bytes(buf[pos : pos + length]), pos + length
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"{source} is corrupt: protobuf wire type {wire} in field {number}")
        if pos > len(buf):
            raise ValueError(f"{source} is truncated: protobuf field {number} runs past its message")
        fields.setdefault(number, []).append(value)
    return fields


def _field(number, wire, value):
    key = _varint(number << 3 | wire)
    if wire == 0:
        return key + _varint(value)
    if wire == 5:
        return key + struct.pack("<I", value)
    return key + _varint(len(value)) + value


# tensorflow/core/framework/types.proto DataType -> numpy dtype (little-endian); bfloat16 is read as uint16 bits
DTYPES = {1: "f4", 2: "f8", 3: "i4", 4: "u1", 5: "i2", 6: "i1", 9: "i8", 10: "?", 14: "u2", 19: "f2"}
DT_BFLOAT16 = 14
NUMPY_TO_DT = {"float32": 1, "float64": 2, "int32": 3, "uint8": 4, "int16": 5, "int8": 6, "int64": 9, "bool": 10}
NUMPY_TO_DT["float16"] = 19


def _entry_proto(dtype, shape, shard_id, offset, size, crc):
    """A BundleEntryProto: dtype=1, shape=2 (TensorShapeProto: dim=2 {size=1}), shard_id=3, offset=4, size=5,
    crc32c=6 (fixed32, masked). Fields at their default (0) are omitted, as protobuf does."""
    dims = b"".join(_field(2, 2, _field(1, 0, d) if d else b"") for d in shape)
    out = _field(1, 0, dtype) + _field(2, 2, dims)
    for number, value in ((3, shard_id), (4, offset), (5, size)):
        if value:
            out += _field(number, 0, value)
    return out + _field(6, 5, crc)


def _header_proto(num_shards):
    """A BundleHeaderProto: num_shards=1, endianness=2 (LITTLE=0, omitted), version=3 (VersionDef producer=1)."""
    return _field(1, 0, num_shards) + _field(3, 2, _field(1, 0, 1))


# ----------------------------------------------------------------------------------------------------------------
# SSTable (LevelDB table format), as TensorFlow's tensorflow/core/lib/io/table writes it, uncompressed.

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_BYTES = 48
BLOCK_TRAILER_BYTES = 5
BLOCK_BYTES = 4096
RESTART_INTERVAL = 16


def _read_handle(buf, pos, source):
    offset, pos = _read_varint(buf, pos, source)
    size, pos = _read_varint(buf, pos, source)
    return (offset, size), pos


def _read_block(data, handle, source):
    offset, size = handle
    end = offset + size + BLOCK_TRAILER_BYTES
    if end > len(data):
        raise ValueError(f"{source} is truncated: a block at byte {offset} needs {end} bytes, the file has {len(data)}")
    contents = data[offset : offset + size]
    kind = data[offset + size]
    if kind != 0:
        raise ValueError(f"{source} has a compressed block (type {kind}); only uncompressed SSTables are supported")
    stored = unmask_crc(int.from_bytes(data[offset + size + 1 : end], "little"))
    if crc32c(data[offset : offset + size + 1]) != stored:
        raise ValueError(f"{source} is corrupt: the block at byte {offset} fails its crc32c check")
    return contents


def _block_entries(block, source):
    """[(key, value)] of one block: entries share key prefixes with the previous one, reset at restart points."""
    if len(block) < 4:
        raise ValueError(f"{source} is corrupt: a block of {len(block)} bytes has no restart array")
    num_restarts = int.from_bytes(block[-4:], "little")
    limit = len(block) - 4 - 4 * num_restarts
    if num_restarts < 1 or limit < 0:
        raise ValueError(f"{source} is corrupt: a block claims {num_restarts} restart points")
    entries, key, pos = [], b"", 0
    while pos < limit:
        shared, pos = _read_varint(block, pos, source)
        unshared, pos = _read_varint(block, pos, source)
        value_length, pos = _read_varint(block, pos, source)
        if shared > len(key) or pos + unshared + value_length > limit:
            raise ValueError(f"{source} is corrupt: a block entry overruns its block")
        key = key[:shared] + bytes(block[pos : pos + unshared])
        pos += unshared
        entries.append((key, bytes(block[pos : pos + value_length])))
        pos += value_length
    return entries


def read_table(path):
    """Every (key, value) of an uncompressed LevelDB-format SSTable, in key order."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < FOOTER_BYTES:
        raise ValueError(f"{path} is truncated: {len(data)} bytes, shorter than the {FOOTER_BYTES}-byte SSTable footer")
    footer = data[-FOOTER_BYTES:]
    magic = int.from_bytes(footer[-8:], "little")
    if magic != TABLE_MAGIC:
        raise ValueError(
            f"{path} is not a TensorBundle index (truncated?): footer magic {magic:#018x}, expected {TABLE_MAGIC:#x}"
        )
    _, pos = _read_handle(footer, 0, path)  # metaindex: filters, which TensorBundle doesn't write
    index_handle, _ = _read_handle(footer, pos, path)
    entries = []
    for _, handle_bytes in _block_entries(_read_block(data, index_handle, path), path):
        handle, _ = _read_handle(handle_bytes, 0, path)
        entries += _block_entries(_read_block(data, handle, path), path)
    return entries


def write_table(path, entries):
    """Write sorted (key, value) pairs as an uncompressed SSTable: data blocks, metaindex, index, footer."""
    entries = sorted(entries)

    def block(items, restart_interval):
        out, restarts, previous = bytearray(), [], b""
        for n, (key, value) in enumerate(items):
            shared = 0
            if n % restart_interval:
                while shared < min(len(key), len(previous)) and key[shared] == previous[shared]:
                    shared += 1
            else:
                restarts.append(len(out))
            out += _varint(shared) + _varint(len(key) - shared) + _varint(len(value)) + key[shared:] + value
            previous = key
        restarts = restarts or [0]
        return bytes(out) + struct.pack(f"<{len(restarts)}I", *restarts) + struct.pack("<I", len(restarts))

    with open(path, "wb") as f:
        offset = 0

        def emit(contents):
            nonlocal offset
            trailer = b"\x00" + struct.pack("<I", mask_crc(crc32c(contents + b"\x00")))
            f.write(contents + trailer)
            handle = _varint(offset) + _varint(len(contents))
            offset += len(contents) + len(trailer)
            return handle

        index, pending, size = [], [], 0
        for key, value in entries:
            pending.append((key, value))
            size += len(key) + len(value) + 8
            if size >= BLOCK_BYTES:
                index.append((key, emit(block(pending, RESTART_INTERVAL))))
                pending, size = [], 0
        if pending:
            index.append((pending[-1][0], emit(block(pending, RESTART_INTERVAL))))
        metaindex_handle = emit(block([], RESTART_INTERVAL))
        index_handle = emit(block(index, 1))
        footer = (metaindex_handle + index_handle).ljust(FOOTER_BYTES - 8, b"\x00") + struct.pack("<Q", TABLE_MAGIC)
        f.write(footer)


# ----------------------------------------------------------------------------------------------------------------
# TensorBundle: the index's entries, and the data shards they point into.


def _shard_name(prefix, shard, num_shards):
    return f"{prefix}.data-{shard:05d}-of-{num_shards:05d}"


def read_tensor_bundle(prefix, verify_checksums=True):
    """{name: numpy array} of every tensor in the TensorBundle at `prefix` (`prefix.index` + data shards)."""
    index = f"{prefix}.index"
    if not os.path.isfile(index):
        raise FileNotFoundError(f"{index} does not exist")
    entries = read_table(index)
    if not entries or entries[0][0] != b"":
        raise ValueError(f"{index} has no BundleHeaderProto (the entry with the empty key)")
    header = _parse_proto(entries[0][1], index)
    num_shards = header.get(1, [1])[0]
    endianness = "<" if header.get(2, [0])[0] == 0 else ">"
    shards = {}
    tensors = {}
    for key, value in entries[1:]:
        name = key.decode("utf-8", errors="replace")
        fields = _parse_proto(value, index)
        if 7 in fields:
            raise ValueError(f"{index}: {name} is a partitioned variable (slices), which is not supported")
        dtype = fields.get(1, [0])[0]
        if dtype not in DTYPES:
            raise ValueError(f"{index}: {name} has TensorFlow dtype {dtype}, which this reader does not support")
        shape_fields = _parse_proto(fields.get(2, [b""])[0], index)
        shape = tuple(_parse_proto(dim, index).get(1, [0])[0] for dim in shape_fields.get(2, []))
        shard, offset, size = (fields.get(n, [0])[0] for n in (3, 4, 5))
        item = np.dtype(endianness + DTYPES[dtype])
        if size != int(np.prod(shape)) * item.itemsize:
            raise ValueError(
                f"{index}: {name} has shape {shape} of {item.itemsize}-byte items, but its entry says {size} bytes"
            )
        if shard >= num_shards:
            raise ValueError(f"{index}: {name} is in shard {shard} but the header says {num_shards} shards")
        path = _shard_name(prefix, shard, num_shards)
        if path not in shards:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path} does not exist (data shard of {index})")
            shards[path] = np.memmap(path, dtype=np.uint8, mode="r")
        data = shards[path]
        if offset + size > len(data):
            raise ValueError(
                f"{path} is truncated: {name} needs bytes {offset}..{offset + size}, the file has {len(data)}"
            )
        raw = data[offset : offset + size]
        if verify_checksums and 6 in fields and crc32c(raw) != unmask_crc(fields[6][0]):
            raise ValueError(f"{path} is corrupt: {name} fails its crc32c check")
        array = np.array(raw).view(item).reshape(shape)  # a writable copy, off the memory map
        array = array.astype(item.newbyteorder("="), copy=False)  # this machine's byte order
        if dtype == DT_BFLOAT16:  # its 16 bits are a float32's upper half
            array = (array.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = array
    return tensors


def write_tensor_bundle(prefix, tensors):
    """Write {name: numpy array} as a one-shard TensorBundle (`prefix.index`, `prefix.data-00000-of-00001`)."""
    entries, offset = [(b"", _header_proto(1))], 0
    with open(_shard_name(prefix, 0, 1), "wb") as f:
        for name in sorted(tensors):
            array = np.asarray(tensors[name])
            if not array.flags.c_contiguous:  # (np.ascontiguousarray would turn a scalar into shape (1,))
                array = array.copy(order="C")
            dtype = NUMPY_TO_DT.get(array.dtype.name)
            if dtype is None:
                raise TypeError(f"tensor {name} has dtype {array.dtype}, which the TensorBundle writer can't store")
            data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
            f.write(data)
            entries.append(
                (name.encode(), _entry_proto(dtype, array.shape, 0, offset, len(data), mask_crc(crc32c(data))))
            )
            offset += len(data)
    write_table(f"{prefix}.index", entries)


__all__ = [
    "TF_NAMES",
    "read_tf",
    "write_tf",
    "read_tensor_bundle",
    "write_tensor_bundle",
    "read_table",
    "write_table",
    "crc32c",
]
