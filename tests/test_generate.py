"""`embgpt generate`: the command's greedy text equals GPT2LMHeadModel's on the same weights and tokenizer."""

import re

import torch
from transformers import GPT2LMHeadModel

from hf_embgpt.cli import main as cli


def test_generate_command_greedy_matches_gpt2(tmp_path, gpt2_dir, gpt2_tokenizer, capsys):
    gpt2_tokenizer.save_pretrained(gpt2_dir)
    assert cli(["generate", gpt2_dir, "--prompt", "Hello world", "--greedy", "--max-new-tokens", "8"]) == 0
    printed = capsys.readouterr().out.splitlines()[0]
    ref = GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()
    ids = gpt2_tokenizer("Hello world", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = ref.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=50256)
    assert printed == gpt2_tokenizer.decode(expected[0], skip_special_tokens=True)


def test_generate_without_a_tokenizer_says_so(gpt2_dir, capsys):
    assert cli(["generate", gpt2_dir, "--greedy"]) == 1
    assert re.search(r"^embgpt generate: error: no tokenizer found at .*--tokenizer", capsys.readouterr().err)


def test_generate_past_block_size_is_refused(tmp_path, gpt2_dir, gpt2_tokenizer, capsys):
    gpt2_tokenizer.save_pretrained(tmp_path / "tokenizer")
    assert cli(["generate", gpt2_dir, "--tokenizer", str(tmp_path / "tokenizer"), "--max-new-tokens", "500"]) == 1
    assert "max_new_tokens 500 exceeds block_size 128" in capsys.readouterr().err


def test_cli_lists_commands_and_rejects_unknown_ones(capsys):
    assert cli([]) == 0
    assert "generate" in capsys.readouterr().out
    assert cli(["fly"]) == 2
    assert "unknown command 'fly'" in capsys.readouterr().err
