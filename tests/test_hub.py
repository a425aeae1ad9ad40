"""`embgpt push`: the exact upload folder, remote-code loading without the package, the card, and the upload calls
(made through `huggingface_hub.HfApi`, recorded here instead of sent)."""

import importlib.metadata
import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch
from huggingface_hub import HfApi, ModelCard, ModelCardData, metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results
from packaging.requirements import Requirement
from transformers import GPT2TokenizerFast

import hf_embgpt
from hf_embgpt.cli import main as cli
from hf_embgpt.formats.provenance import PROVENANCE_FILE, read_provenance, write_provenance
from hf_embgpt.formats.registry import read_checkpoint
from hf_embgpt.hub import prepare_push_folder, push_to_hub, write_model_card

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_FILES = {
    "config.json",
    "configuration_embgpt.py",
    "modeling_embgpt.py",
    "model.safetensors",
    "generation_config.json",
    "README.md",
}
TRAINER_STATE = {
    "global_step": 40,
    "log_history": [
        {"loss": 4.25, "step": 20, "epoch": 0.5},
        {"eval_loss": 3.5, "eval_runtime": 1.5, "eval_samples_per_second": 9.0, "step": 20, "epoch": 0.5},
        {"loss": 3.125, "step": 40, "epoch": 1.0},
        {"eval_loss": 2.75, "eval_runtime": 1.4, "step": 40, "epoch": 1.0},
    ],
}
COMMAND = "embgpt train --preset tiny --data tinyshakespeare --max_steps 40"


@pytest.fixture
def trained_dir(gpt2_dir, gpt2_tokenizer_dir):
    """A tiny GPT-2 checkpoint folder with a tokenizer, a trainer state and a provenance record."""
    for name in os.listdir(gpt2_tokenizer_dir):
        shutil.copy(os.path.join(gpt2_tokenizer_dir, name), gpt2_dir)
    with open(os.path.join(gpt2_dir, "trainer_state.json"), "w") as f:
        json.dump(TRAINER_STATE, f)
    write_provenance(gpt2_dir, kind="trained", datasets=["tinyshakespeare"], command=COMMAND)
    return gpt2_dir


def tokenizer_files(tokenizer_dir, tmp_path):
    """The files transformers writes for this tokenizer (the oracle for the tokenizer part of the folder)."""
    out = tmp_path / "tokenizer-oracle"
    GPT2TokenizerFast.from_pretrained(tokenizer_dir).save_pretrained(out)
    return set(os.listdir(out))


def test_template_ships_inside_the_package():
    with (
        open(os.path.join(REPO, "model_card.md")) as a,
        open(os.path.join(hf_embgpt.__path__[0], "model_card.md")) as b,
    ):
        assert a.read() == b.read()


def test_provenance_schema(tmp_path):
    record = write_provenance(tmp_path, kind="converted", source="gpt2_124M.bin", source_format="llmc")
    record = write_provenance(tmp_path, command="embgpt convert gpt2_124M.bin out --to embgpt")
    assert read_provenance(tmp_path) == record
    assert record["source_format"] == "llmc" and record["command"].startswith("embgpt convert")  # merged
    assert record["hf_embgpt_version"] == importlib.metadata.version("hf_embgpt")
    with pytest.raises(ValueError, match="unknown provenance field 'dataset'"):
        write_provenance(tmp_path, dataset="x")
    with pytest.raises(TypeError, match="provenance field datasets must be list"):
        write_provenance(tmp_path, datasets="tinyshakespeare")
    with pytest.raises(ValueError, match="provenance kind 'fine-tuned' must be one of converted, trained"):
        write_provenance(tmp_path, kind="fine-tuned")
    (tmp_path / PROVENANCE_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=f"{PROVENANCE_FILE} is not valid JSON"):
        read_provenance(tmp_path)


def test_push_folder_is_exact_and_loads_without_the_package(tmp_path, trained_dir, gpt2_tokenizer_dir):
    folder = tmp_path / "push"
    files = prepare_push_folder(trained_dir, folder, "someone/tiny-shakespeare")
    assert set(files) == set(os.listdir(folder)) == MODEL_FILES | tokenizer_files(gpt2_tokenizer_dir, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "embgpt"
    assert set(config["auto_map"]) == {
        "AutoConfig",
        "AutoModel",
        "AutoModelForCausalLM",
        "AutoModelForSequenceClassification",
    }

    script = (
        "import sys\n"
        "sys.modules['hf_embgpt'] = None  # the package is not installed here\n"
        "import torch\n"
        "from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer\n"
        "folder, out = sys.argv[1], sys.argv[2]\n"
        "try:\n"
        "    import hf_embgpt\n"
        "    raise SystemExit('hf_embgpt is importable')\n"
        "except ImportError:\n"
        "    pass\n"
        "tok = AutoTokenizer.from_pretrained(folder)\n"
        "model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()\n"
        "base = AutoModel.from_pretrained(folder, trust_remote_code=True)\n"
        "ids = tok('Hello world, the model speaks', return_tensors='pt').input_ids\n"
        "with torch.no_grad():\n"
        "    logits = model(ids).logits\n"
        "torch.save({'ids': ids, 'logits': logits, 'modules': [type(model).__module__, type(base).__name__]}, out)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    out = tmp_path / "out.pt"
    done = subprocess.run(
        [sys.executable, "-c", script, str(folder), str(out)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = torch.load(out, weights_only=True)
    assert result["modules"][0].startswith("transformers_modules.") and result["modules"][1] == "EmbGPTModel"
    model, _ = read_checkpoint(trained_dir)
    with torch.no_grad():
        assert torch.equal(result["logits"], model(result["ids"]).logits)


def test_card_metadata_validates_and_body_is_complete(tmp_path, trained_dir):
    folder = tmp_path / "push"
    prepare_push_folder(trained_dir, folder, "someone/tiny-shakespeare", license="apache-2.0", tags=["shakespeare"])
    readme = folder / "README.md"
    metadata = metadata_load(readme)
    # local metadata checks: the YAML parses, survives a ModelCardData round trip, and its model-index parses
    assert ModelCardData(**metadata).to_dict() == metadata
    model_name, results = model_index_to_eval_results(metadata["model-index"])
    assert model_name == "tiny-shakespeare"
    assert {(r.metric_type, r.metric_value) for r in results} == {
        ("loss", 2.75),
        ("perplexity", round(math.exp(2.75), 4)),
    }
    card = ModelCard.load(readme)
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    assert card.data.license == "apache-2.0" and card.data.datasets == ["tinyshakespeare"]
    assert {"embgpt", "gpt2", "shakespeare"} <= set(card.data.tags)

    body = card.text
    requirement = next(
        Requirement(r) for r in importlib.metadata.requires("hf_embgpt") if Requirement(r).name == "transformers"
    )
    shown = body.split("Requirements: `")[1].split("`")[0]
    assert Requirement(shown).specifier == requirement.specifier  # read from the installed package's metadata
    assert 'from_pretrained("someone/tiny-shakespeare", trust_remote_code=True)' in body
    assert "`transformer.wte` is the token embedding" in body and "`transformer.wpe` is the learned position" in body
    assert COMMAND in body and "Trained with hf_embgpt on `tinyshakespeare`" in body
    assert "| loss | 2.7500 |" in body and f"| perplexity | {math.exp(2.75):.4f} |" in body
    assert "| final training loss | 3.1250 |" in body and "step 40" in body


def test_card_for_a_converted_checkpoint_without_metrics(tmp_path, gpt2_dir, gpt2_tokenizer_dir):
    # the provenance written by `embgpt convert` ends up in the card
    assert cli(["convert", gpt2_dir, str(tmp_path / "e"), "--to", "embgpt", "--tokenizer", gpt2_tokenizer_dir]) == 0
    card = write_model_card(str(tmp_path / "e"), "someone/converted")
    source = os.path.basename(gpt2_dir)
    assert f"Converted with hf_embgpt from the transformers GPT-2 (GPT2LMHeadModel) checkpoint `{source}`" in card.text
    assert "No evaluation metrics were recorded" in card.text and "model-index" not in metadata_load(
        tmp_path / "e" / "README.md"
    )
    provenance = card.text.split("## Provenance")[1].split("Command:")[0]
    assert str(tmp_path) not in provenance  # the source is shown without the user's directories


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    """No HF_TOKEN and no stored token, as on a machine that never ran `hf auth login`."""
    import huggingface_hub.constants

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))


@pytest.fixture
def hub_calls(monkeypatch):
    """Record HfApi calls (the real client up to the wire) and what the folder held at upload time."""
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs, self.token))

    def create_branch(self, repo_id, **kwargs):
        calls.append(("create_branch", repo_id, kwargs, self.token))

    def upload_folder(self, **kwargs):
        files = sorted(os.listdir(kwargs["folder_path"]))
        calls.append(("upload_folder", kwargs["repo_id"], {**kwargs, "files": files}, self.token))
        return "https://huggingface.co/commit/0"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_branch", create_branch)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


def test_push_without_token_fails_before_anything(no_token, hub_calls, tmp_path):
    with pytest.raises(ValueError, match="no Hugging Face token is configured") as info:
        push_to_hub(str(tmp_path / "does-not-exist"), "someone/model")  # the token is checked first
    assert "someone/model" in str(info.value) and "hf auth login" in str(info.value)
    assert hub_calls == []


def test_push_uploads_one_commit_private_on_a_branch(trained_dir, hub_calls, tmp_path, monkeypatch, no_token):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    result = push_to_hub(trained_dir, "someone/tiny", private=True, revision="v1", commit_message="first")
    assert [c[0] for c in hub_calls] == ["create_repo", "create_branch", "upload_folder"]
    assert all(c[1] == "someone/tiny" and c[3] == "hf_test_token" for c in hub_calls)
    assert hub_calls[0][2]["private"] is True and hub_calls[0][2]["exist_ok"] is True
    assert hub_calls[1][2]["branch"] == "v1"
    upload = hub_calls[2][2]
    assert upload["revision"] == "v1" and upload["commit_message"] == "first"
    assert upload["files"] == sorted(result["files"]) and MODEL_FILES <= set(upload["files"])
    assert result["commit"] == "https://huggingface.co/commit/0"
    assert not os.path.exists(upload["folder_path"])  # the staging folder is cleaned up


def test_dry_run_cli_prints_files_and_card_without_token(trained_dir, hub_calls, no_token, capsys):
    assert cli(["push", trained_dir, "someone/tiny", "--dry-run", "--dataset", "tinyshakespeare"]) == 0
    out = capsys.readouterr().out
    assert "would upload to someone/tiny" in out
    for name in MODEL_FILES:
        assert f"  {name}" in out
    assert "library_name: transformers" in out and "trust_remote_code=True" in out
    assert hub_calls == []


def test_push_needs_a_fitting_tokenizer(tmp_path, gpt2_dir, gpt2_tokenizer_dir, no_token):
    with pytest.raises(ValueError, match="no tokenizer found with") as info:
        push_to_hub(gpt2_dir, "someone/x", dry_run=True)
    assert gpt2_dir in str(info.value)
    small = tmp_path / "small"
    assert cli(["convert", gpt2_dir, str(small), "--to", "embgpt", "--vocab-size", "1000"]) == 0
    with pytest.raises(ValueError, match="the tokenizer has 50257 tokens but the model's vocab_size is 1000"):
        push_to_hub(str(small), "someone/x", dry_run=True, tokenizer=gpt2_tokenizer_dir)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "old.txt").write_text("x")
    with pytest.raises(ValueError, match="busy is not empty"):
        push_to_hub(gpt2_dir, "someone/x", dry_run=True, tokenizer=gpt2_tokenizer_dir, folder=str(tmp_path / "busy"))
