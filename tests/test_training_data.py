"""The data pipeline: loading and checking text, the four tokenizer kinds, lossless packing, the holdout split."""

import json
import random

import pytest
from transformers import AutoTokenizer

from hf_embgpt.training import data

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\tSpeak, speak.  ünïcode — ok?\n"


def write_words(path, n_lines=400, seed=0):
    rng = random.Random(seed)
    words = "the quick brown fox jumps over a lazy dog while the cat sleeps".split()
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(10)) for _ in range(n_lines)), "utf-8")
    return str(path)


def roundtrip_after_save(tokenizer, tmp_path, text):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert loaded(text, add_special_tokens=False)["input_ids"] == ids
    assert loaded.decode(ids) == text
    return ids


def test_char_tokenizer_is_nanogpts_and_round_trips(tmp_path):
    tok = data.char_tokenizer(TEXT)
    chars = sorted(set(TEXT))  # nanoGPT's prepare.py: stoi = {ch: i for i, ch in enumerate(sorted(set(text)))}
    assert len(tok) == len(chars) + 1  # + EOS
    ids = roundtrip_after_save(tok, tmp_path, TEXT)
    assert ids == [chars.index(c) for c in TEXT]
    assert tok.decode(tok("Z", add_special_tokens=False)["input_ids"]) == data.EOS  # unseen character -> EOS


def test_bpe_tokenizer_trains_on_the_corpus_and_round_trips_any_text(tmp_path):
    corpus = [TEXT * 20, "the quick brown fox " * 50]
    tok = data.train_bpe_tokenizer(corpus, vocab_size=300)
    assert len(tok) <= 300 and tok.eos_token == data.EOS
    roundtrip_after_save(tok, tmp_path / "a", TEXT)
    roundtrip_after_save(tok, tmp_path / "b", "never seen: 漢字 \x01 emoji 🙂\n")  # byte-level: nothing is unknown
    assert len(tok("the quick brown fox")["input_ids"]) < len("the quick brown fox")  # merges were learned


def test_bpe_vocab_too_small_is_rejected():
    with pytest.raises(ValueError, match=r"bpe vocab_size \(100\) must be at least 257"):
        data.train_bpe_tokenizer(["abc"], vocab_size=100)


def test_gpt2_tokenizer_and_checkpoint_tokenizer(gpt2_tokenizer_dir, tmp_path):
    tok = data.make_tokenizer(gpt2_tokenizer_dir)  # a path: that tokenizer
    assert tok("Hello world")["input_ids"] == [15496, 995]
    roundtrip_after_save(tok, tmp_path, TEXT)
    auto = data.make_tokenizer("auto", model_path=gpt2_tokenizer_dir)  # auto + checkpoint: the checkpoint's own
    assert auto("Hello world")["input_ids"] == [15496, 995]


def test_make_tokenizer_char_and_bpe_need_data():
    with pytest.raises(ValueError, match="'bpe' is trained on the data"):
        data.make_tokenizer("bpe")


def test_packing_loses_and_repeats_no_token(tmp_path):
    # more documents than one datasets.map batch (1000), so remainders cross batch boundaries
    rng = random.Random(0)
    docs = ["".join(rng.choice("abcdefgh \n") for _ in range(rng.randint(0, 40))) for _ in range(2500)]
    tok = data.char_tokenizer("".join(docs))
    import datasets

    tokenized = data.tokenize(datasets.Dataset.from_dict({"text": docs}), tok)
    stream = [t for d in docs for t in tok(d, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]
    assert [t for ids in tokenized["input_ids"] for t in ids] == stream
    block = 37
    packed = data.pack(tokenized, block)
    assert len(packed) == len(stream) // block
    assert all(len(b) == block for b in packed["input_ids"])
    assert [t for b in packed["input_ids"] for t in b] == stream[: len(packed) * block]


def test_holdout_is_the_tail_of_the_stream(tmp_path):
    path = write_words(tmp_path / "words.txt")
    raw = data.load_text([path])
    tok = data.char_tokenizer(open(path, encoding="utf-8").read())
    train, val = data.build_datasets(raw, tok, 16, validation_fraction=0.1)
    everything = list(data.pack(data.tokenize(raw["train"], tok), 16)["input_ids"])
    assert len(val) == -(-len(everything) // 10)
    assert list(train["input_ids"]) + list(val["input_ids"]) == everything


def test_text_file_is_one_document_with_its_newlines(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(TEXT, "utf-8")
    raw = data.load_text([str(path)])
    assert list(raw["train"]["text"]) == [TEXT]


def test_jsonl_with_a_text_column(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [{"body": f"document number {i}", "id": i} for i in range(5)]
    path.write_text("\n".join(json.dumps(r) for r in rows), "utf-8")
    raw = data.load_text([str(path)], text_column="body")
    assert list(raw["train"]["text"]) == [r["body"] for r in rows]
    with pytest.raises(ValueError, match=r"no column 'content' \(columns: body, id\)"):
        data.load_text([str(path)], text_column="content")


def test_explicit_validation_file_is_used(tmp_path):
    train_path, val_path = write_words(tmp_path / "a.txt", seed=1), write_words(tmp_path / "b.txt", 50, seed=2)
    raw = data.load_text([train_path], validation_data=[val_path])
    tok = data.char_tokenizer(open(train_path, encoding="utf-8").read())
    train, val = data.build_datasets(raw, tok, 16)
    expected = data.pack(data.tokenize(raw["validation"], tok), 16)
    assert list(val["input_ids"]) == list(expected["input_ids"]) and len(train) > len(val)


def test_embedded_corpus_needs_no_download():
    raw = data.load_text(None)  # docstrings read from the standard library's sources
    (text,) = list(raw["train"]["text"])
    assert len(text) > 100_000 and "Return" in text


def test_missing_file(tmp_path):
    missing = str(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError, match=f"data file {missing} does not exist"):
        data.load_text([missing])


def test_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("")
    with pytest.raises(ValueError, match=f"data file {path} is empty"):
        data.load_text([str(path)])


def test_binary_file(tmp_path):
    path = tmp_path / "weights.txt"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match=f"data file {path} is not text"):
        data.load_text([str(path)])
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 au lait, encore du caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match=f"data file {latin1} is not UTF-8 text"):
        data.load_text([str(latin1)])


def test_corpus_shorter_than_a_block(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("tiny", "utf-8")
    raw = data.load_text([str(path)])
    tok = data.char_tokenizer("tiny")
    with pytest.raises(ValueError, match="only 0 blocks of 64 tokens"):
        data.build_datasets(raw, tok, 64)


def test_random_windows_are_nanogpts_slices_and_reproducible():
    import torch

    stream = list(range(1000))
    blocks = {"input_ids": [stream[i : i + 10] for i in range(0, 1000, 10)]}
    windows = data.random_windows(blocks, block_size=8, num_samples=50, seed=3)
    again = data.RandomWindows(torch.arange(1000), 8, 50, seed=3)
    starts = set()
    for i in range(len(windows)):
        item = windows[i]
        start = int(item["input_ids"][0])
        starts.add(start)
        assert item["input_ids"].tolist() == stream[start : start + 8]  # x = data[i : i + block_size]
        assert item["shift_labels"].tolist() == stream[start + 1 : start + 9]  # y = data[i + 1 : i + 1 + block_size]
        assert torch.equal(again[i]["input_ids"], item["input_ids"])
    assert len(starts) > 40  # offsets vary
    batch = data.collate([windows[0], windows[1]])
    assert batch["input_ids"].shape == batch["shift_labels"].shape == (2, 8)


def test_stream_too_short_for_a_window():
    with pytest.raises(ValueError, match="has 5 tokens, too few for windows of 9"):
        data.random_windows({"input_ids": [[1, 2, 3, 4, 5]]}, block_size=8, num_samples=1)


def test_streamed_packing_is_the_same_on_every_pass():
    from datasets import Dataset

    stream = Dataset.from_dict({"input_ids": [[1, 2, 3, 4, 5, 6, 7]]}).to_iterable_dataset()
    packed = data.pack(stream, 3)
    first, second = [x["input_ids"] for x in packed], [x["input_ids"] for x in packed]
    assert first == second == [[1, 2, 3], [4, 5, 6]]


def test_parquet_data_loads(tmp_path):
    import pandas as pd

    path = tmp_path / "train.parquet"
    pd.DataFrame({"text": ["to be or not to be " * 20]}).to_parquet(path)
    assert data.load_text([str(path)])["train"]["text"][0].startswith("to be or not")


def test_validation_files_with_a_datasets_name_are_refused():
    with pytest.raises(ValueError, match="--validation_data goes with local --data files"):
        data.load_text(["someone/some-dataset"], validation_data=["val.txt"])


def test_a_datasets_name_from_the_command_line(tmp_path):
    """`embgpt train --data NAME --dataset_config C` (issue 13.8): the command line gives `--data` as a list, which
    once reached `datasets.load_dataset` as is. A local folder of parquet files is a name load_dataset accepts."""
    import datasets

    from hf_embgpt.training.arguments import parse_args

    folder = tmp_path / "corpus"
    folder.mkdir()
    train_rows = [f"train document {i}: " + "the cat sat on the mat. " * 5 for i in range(40)]
    validation_rows = [f"validation document {i}" for i in range(5)]
    datasets.Dataset.from_dict({"text": train_rows}).to_parquet(str(folder / "train-00000-of-00001.parquet"))
    datasets.Dataset.from_dict({"text": validation_rows}).to_parquet(str(folder / "validation-00000-of-00001.parquet"))

    _, data_args, _, _ = parse_args(["--data", str(folder), "--output_dir", str(tmp_path / "run")])
    assert isinstance(data_args.data, list)
    raw = data.load_text(data_args.data, data_args.dataset_config)
    expected = datasets.load_dataset(str(folder))  # what datasets itself makes of the name
    assert raw["train"]["text"] == expected["train"]["text"] == train_rows
    assert raw["validation"]["text"] == expected["validation"]["text"] == validation_rows


@pytest.mark.parametrize("name", ["./missing-corpus", "some/deep/missing/path"])
def test_a_missing_dataset_path_is_named(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"data {name} does not exist"):
        data.load_text([name])


def test_two_datasets_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="one datasets name"):
        data.load_text(["owner/one", "owner/two"])


def test_text_that_turns_binary_past_the_sniffed_head_is_named(tmp_path):
    """The first 8 kB pass the quick check; datasets then fails without naming the file: the error must."""
    path = tmp_path / "late.txt"
    path.write_bytes(b"plain words " * 1000 + b"\xff\xfe then bytes")
    with pytest.raises(ValueError, match=f"data file {path} is not UTF-8 text \\(bad byte at offset 12000\\)"):
        data.load_text([str(path)])


def test_a_tokenizer_path_that_does_not_exist_is_named():
    with pytest.raises(FileNotFoundError, match="tokenizer /nonexistent/tok does not exist"):
        data.make_tokenizer("/nonexistent/tok")
