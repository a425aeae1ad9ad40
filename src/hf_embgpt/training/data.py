"""Training data: text in, `block_size` blocks of token ids out.

Three steps, each a function:
1. `load_text` reads local files (`.txt`, `.md`, `.jsonl`, `.json`, `.csv`, ...) or a `datasets` name/config, or —
   with no data at all — `embedded_corpus()`, text built from the docstrings of Python's own standard library, so
   training runs offline on any machine.
2. A tokenizer: the checkpoint's own, GPT-2's BPE, a byte-level BPE trained on the corpus, or nanoGPT's
   character-level one — all `PreTrainedTokenizerFast`, so `save_pretrained` + `AutoTokenizer` round-trip them.
3. `pack` tokenizes with `datasets.map` (cached, multi-process), appends EOS after each document, and cuts the stream
   into `block_size` blocks; only the last partial block is dropped.
"""

import ast
import logging
import math
import os
import sysconfig

logger = logging.getLogger(__name__)

TEXT_SUFFIXES = {".txt": "text", ".md": "text", ".rst": "text", ".py": "text", ".text": "text"}
TABLE_SUFFIXES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
EOS = "<|endoftext|>"


# ----------------------------------------------------------------------------------------------------------------
# 1. Text


def embedded_corpus(min_length=80):
    """About 0.8 MB of English prose with code examples: every long docstring in the standard library's modules.

    Read from source with `ast` (nothing is imported or downloaded), in sorted file order, so the same Python version
    always gives the same text.
    """
    root = sysconfig.get_paths()["stdlib"]
    docs = []
    for name in sorted(os.listdir(root)):
        if not name.endswith(".py"):
            continue
        try:
            with open(os.path.join(root, name), encoding="utf-8") as f:
                tree = ast.parse(f.read())
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue  # a vendor-patched or unreadable file: the rest of the library is plenty
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= min_length:
                    docs.append(doc)
    text = "\n\n".join(docs)
    if len(text) < 10_000:
        raise ValueError(
            f"the standard library at {root} has only {len(text)} characters of docstrings (no .py sources?); "
            f"pass --data with a text file instead"
        )
    return text


def check_text_file(path, sniff_bytes=8192):
    """Raise FileNotFoundError for a missing file and ValueError for an empty or binary (non-UTF-8) one.

    Only the first `sniff_bytes` are read (all of the file with None): a cheap check before datasets reads it.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"data file {path} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"data path {path} is a folder; pass the text files in it")
    if os.path.getsize(path) == 0:
        raise ValueError(f"data file {path} is empty")
    with open(path, "rb") as f:
        head = f.read(sniff_bytes)
    if b"\x00" in head:
        raise ValueError(f"data file {path} is not text (it contains NUL bytes); pass UTF-8 text")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if sniff_bytes is None or e.start < len(head) - 4:  # a multi-byte character cut by the window is fine
            raise ValueError(f"data file {path} is not UTF-8 text (bad byte at offset {e.start})") from None


def _is_hub_id(name):
    from ..formats.registry import is_hub_id

    return is_hub_id(name)


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _unreadable_data(files, error):
    """datasets' DatasetGenerationError names no file: find the file that is not UTF-8 text past the sniffed head."""
    for split_paths in files.values():
        for path in split_paths:
            if not path.lower().endswith(".parquet"):
                try:
                    check_text_file(path, sniff_bytes=None)
                except ValueError as bad:
                    return bad
    names = ", ".join(p for ps in files.values() for p in ps)
    return ValueError(f"datasets could not read {names}: {_first_line(error.__cause__ or error)}")


def load_text(data=None, dataset_config=None, validation_data=None, text_column="text", streaming=False):
    """Raw text as a `datasets.DatasetDict` with a `text` column and a `train` split (plus `validation` if the data
    has one). `data` is None (the embedded corpus), local file paths, or a `datasets` name."""
    import datasets

    if data is None or data == []:
        return datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": [embedded_corpus()]})})
    paths = [os.fspath(data)] if isinstance(data, (str, os.PathLike)) else [os.fspath(p) for p in data]
    looks_like_files = all(os.path.splitext(p)[1].lower() in {**TEXT_SUFFIXES, **TABLE_SUFFIXES} for p in paths)
    # files are read here; a folder (of parquet, json, ... files) or a Hub id is a `datasets` name
    if looks_like_files or any(os.path.isfile(p) for p in paths):
        files = {"train": paths}
        if validation_data:
            files["validation"] = [validation_data] if isinstance(validation_data, str) else list(validation_data)
        for split_paths in files.values():
            for path in split_paths:
                if path.lower().endswith(".parquet"):  # binary by design: datasets' parquet reader checks it
                    if not os.path.exists(path):
                        raise FileNotFoundError(f"data file {path} does not exist")
                else:
                    check_text_file(path)
        suffixes = {os.path.splitext(p)[1].lower() for ps in files.values() for p in ps}
        builders = {TEXT_SUFFIXES.get(s, TABLE_SUFFIXES.get(s, "text")) for s in suffixes}
        if len(builders) > 1:
            raise ValueError(f"data files mix formats {sorted(suffixes)}; pass files of one kind")
        builder = builders.pop()
        # each text file is one document: newlines are data, not example separators
        extra = {"sample_by": "document"} if builder == "text" else {}
        try:
            raw = datasets.load_dataset(builder, data_files=files, streaming=streaming, **extra)
        except datasets.exceptions.DatasetGenerationError as e:
            raise _unreadable_data(files, e) from e
    else:
        if len(paths) != 1:
            raise ValueError(f"--data takes local files or one datasets name (a Hub id or a folder), got {paths}")
        if validation_data:
            raise ValueError("--validation_data goes with local --data files; a datasets name brings its own splits")
        name = paths[0]
        if not os.path.exists(name) and not _is_hub_id(name):
            raise FileNotFoundError(f"data {name} does not exist (and is not a Hub dataset id, which reads owner/name)")
        try:
            raw = datasets.load_dataset(name, dataset_config, streaming=streaming)
        except datasets.exceptions.DatasetGenerationError as e:
            raise ValueError(f"datasets could not read {name}: {_first_line(e.__cause__ or e)}") from e
        if "validation" not in raw and "test" in raw:
            raw["validation"] = raw["test"]
        raw = type(raw)({k: v for k, v in raw.items() if k in ("train", "validation")})
    if "train" not in raw:
        raise ValueError(f"data {data!r} has no train split (splits: {', '.join(raw)})")
    columns = raw["train"].column_names
    if columns is not None and text_column not in columns:
        raise ValueError(f"data {data!r} has no column {text_column!r} (columns: {', '.join(columns)})")
    if columns is not None and text_column != "text":
        raw = raw.rename_column(text_column, "text")
    if (
        not streaming
        and sum(len(t or "") for t in raw["train"].select(range(min(1000, len(raw["train"]))))["text"]) == 0
    ):
        raise ValueError(f"data {data!r} is empty: its train split has no text")
    return raw


# ----------------------------------------------------------------------------------------------------------------
# 2. Tokenizers


def _wrap(tokenizer_object, **special):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tokenizer_object, clean_up_tokenization_spaces=False, **special)


def char_tokenizer(text):
    """nanoGPT's Shakespeare-char tokenizer: one id per distinct character (sorted), plus EOS at the end.

    Characters never seen in `text` map to EOS, which doubles as the unknown token.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    chars = sorted(set(text))
    if not chars:
        raise ValueError("cannot build a character tokenizer from empty text")
    vocab = {c: i for i, c in enumerate(chars)}
    vocab[EOS] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token=EOS))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character, newlines too
    tok.decoder = decoders.Fuse()  # join with nothing between characters
    tok.add_special_tokens([EOS])
    return _wrap(tok, eos_token=EOS, unk_token=EOS, bos_token=EOS)


def train_bpe_tokenizer(texts, vocab_size=4096):
    """A byte-level BPE (GPT-2's scheme) trained on `texts` (an iterable of strings) with `tokenizers`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    if vocab_size < 257:
        raise ValueError(f"bpe vocab_size ({vocab_size}) must be at least 257 (256 bytes + EOS)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return _wrap(tok, eos_token=EOS, unk_token=EOS, bos_token=EOS)


def gpt2_tokenizer(name_or_path="openai-community/gpt2"):
    """GPT-2's own BPE (50257 tokens) from the Hub (cached after the first download) or a folder."""
    from transformers import AutoTokenizer, GPT2TokenizerFast

    files = os.listdir(name_or_path) if os.path.isdir(name_or_path) else []
    if "tokenizer_config.json" not in files and {"vocab.json", "merges.txt"} <= set(files):
        return GPT2TokenizerFast.from_pretrained(name_or_path)  # bare GPT-2 BPE files: AutoTokenizer can't tell
    return AutoTokenizer.from_pretrained(name_or_path)


def make_tokenizer(kind, raw=None, model_path=None, bpe_vocab_size=4096, sample_chars=20_000_000):
    """`kind` is `char`, `bpe`, `gpt2`, `auto` (the checkpoint's own tokenizer, else `char`), or a tokenizer path/id."""
    if kind == "auto":
        if model_path is not None:
            try:
                return gpt2_tokenizer(model_path)
            except (OSError, ValueError, TypeError) as e:
                logger.warning("checkpoint %s has no tokenizer (%s); using GPT-2's BPE", model_path, e)
                return gpt2_tokenizer()
        kind = "char"
    if kind in ("char", "bpe"):
        if raw is None:
            raise ValueError(f"tokenizer {kind!r} is trained on the data; pass the data")
        texts = _text_sample(raw["train"], sample_chars)
        return char_tokenizer("".join(texts)) if kind == "char" else train_bpe_tokenizer(texts, bpe_vocab_size)
    if kind == "gpt2":
        return gpt2_tokenizer()
    if not os.path.exists(kind) and not _is_hub_id(kind):
        raise FileNotFoundError(
            f"tokenizer {kind} does not exist; --tokenizer is auto, char, bpe, gpt2, a folder or a Hub id (owner/name)"
        )
    return gpt2_tokenizer(kind)


def _text_sample(train, max_chars):
    """The first `max_chars` characters of the train split (all of it for the datasets this runs on in tests)."""
    out, total = [], 0
    for example in train:
        text = example["text"] or ""
        out.append(text[: max_chars - total])
        total += len(out[-1])
        if total >= max_chars:
            break
    return out


# ----------------------------------------------------------------------------------------------------------------
# 3. Packing


def tokenize(raw_split, tokenizer, num_proc=None):
    """Token ids of every document with EOS appended (documents stay apart in the packed stream)."""
    eos = tokenizer.eos_token_id

    def encode(batch):
        ids = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        return {"input_ids": [x + [eos] if eos is not None else x for x in ids]}

    kwargs = dict(batched=True, remove_columns=raw_split.column_names or ["text"])  # streams may not know theirs
    if not _is_iterable(raw_split):
        kwargs.update(num_proc=num_proc, desc="tokenizing")
    return raw_split.map(encode, **kwargs)


def pack(tokenized, block_size):
    """Cut the concatenated token stream into `block_size` blocks, in order; only the last partial block is lost.

    `datasets.map` processes batches in order here (one process), carrying each batch's remainder into the next, so
    no token is dropped or repeated at a batch boundary.
    """
    if block_size <= 0:
        raise ValueError(f"block_size ({block_size}) must be a positive integer")
    carry = []

    def cut(batch, indices):
        if indices and indices[0] == 0:
            carry.clear()  # a new pass over the data (a stream is re-read each epoch/evaluation)
        stream = carry + [t for ids in batch["input_ids"] for t in ids]
        n = len(stream) // block_size * block_size
        carry[:] = stream[n:]
        return {"input_ids": [stream[i : i + block_size] for i in range(0, n, block_size)]}

    kwargs = dict(batched=True, with_indices=True, remove_columns=["input_ids"])
    if not _is_iterable(tokenized):
        kwargs.update(desc=f"packing into blocks of {block_size}", load_from_cache_file=False)
    return tokenized.map(cut, **kwargs)


def build_datasets(raw, tokenizer, block_size, validation_fraction=0.1, num_proc=None):
    """(train, validation) datasets of packed blocks. Data without a validation split holds out its last
    `validation_fraction` of blocks, as nanoGPT holds out the last 10% of its token stream."""
    train = pack(tokenize(raw["train"], tokenizer, num_proc), block_size)
    if "validation" in raw:
        validation = pack(tokenize(raw["validation"], tokenizer, num_proc), block_size)
    elif _is_iterable(train):
        raise ValueError("streamed data needs its own validation split (or pass --validation_data)")
    else:
        if not 0.0 < validation_fraction < 1.0:
            raise ValueError(f"validation_fraction ({validation_fraction}) must be in (0, 1)")
        n_val = math.ceil(len(train) * validation_fraction)
        if len(train) - n_val < 1:
            raise ValueError(
                f"the corpus makes only {len(train)} blocks of {block_size} tokens: too little to hold out "
                f"{validation_fraction:.0%} for validation; use more text or a smaller block_size"
            )
        train, validation = train.select(range(len(train) - n_val)), train.select(range(len(train) - n_val, len(train)))
    if not _is_iterable(train) and len(train) == 0:
        raise ValueError(f"the corpus is shorter than one block of {block_size} tokens; use a smaller block_size")
    return train, validation


class RandomWindows:
    """nanoGPT's sampling: example `i` is the window of `block_size + 1` tokens at a random offset of `stream`; the
    model reads the first `block_size` and predicts the last `block_size` (`shift_labels`), so every position of the
    window is trained. The offset depends only on (seed, i): runs resume and shard over processes reproducibly."""

    def __init__(self, stream, block_size, num_samples, seed=0):
        import torch

        self.stream = torch.as_tensor(stream, dtype=torch.long)
        if len(self.stream) <= block_size + 1:
            raise ValueError(f"the train stream has {len(self.stream)} tokens, too few for windows of {block_size + 1}")
        self.block_size, self.num_samples, self.seed = block_size, num_samples, seed

    def __len__(self):
        return self.num_samples

    def __getitem__(self, i):
        import torch

        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + int(i))
        start = int(torch.randint(len(self.stream) - self.block_size, (1,), generator=generator))
        window = self.stream[start : start + self.block_size + 1]
        return {"input_ids": window[:-1], "shift_labels": window[1:]}


def random_windows(train_blocks, block_size, num_samples, seed=0):
    """`RandomWindows` over the token stream that the (in-order) packed train blocks came from."""
    import torch

    stream = torch.tensor([t for ids in train_blocks["input_ids"] for t in ids], dtype=torch.long)
    return RandomWindows(stream, block_size, num_samples, seed)


def collate(features):
    """Blocks -> a batch; labels are the inputs (the model shifts them) unless windows bring their `shift_labels`."""
    import torch

    ids = torch.stack([torch.as_tensor(f["input_ids"], dtype=torch.long) for f in features])
    if "shift_labels" in features[0]:
        return {"input_ids": ids, "labels": ids, "shift_labels": torch.stack([f["shift_labels"] for f in features])}
    return {"input_ids": ids, "labels": ids}


def _is_iterable(ds):
    import datasets

    return isinstance(ds, datasets.IterableDataset)
