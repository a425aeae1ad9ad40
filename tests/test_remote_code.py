"""The saved folder is Hub remote code: it loads with trust_remote_code=True where hf_embgpt can't be imported."""

import json
import subprocess
import sys
import textwrap

import torch

from hf_embgpt import EmbGPTForCausalLM
from hf_embgpt.modeling_embgpt import AUTO_MAP

# Runs in a fresh interpreter where `import hf_embgpt` fails, so only the folder's own code can be used.
LOAD_WITHOUT_PACKAGE = textwrap.dedent(
    """
    import sys
    sys.modules["hf_embgpt"] = None  # any import of the package now raises ImportError
    import json, torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification
    folder, ids_path, out_path = sys.argv[1:4]
    ids = torch.load(ids_path, weights_only=True)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    base = AutoModel.from_pretrained(folder, trust_remote_code=True)
    classifier = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True, num_labels=2)
    with torch.no_grad():
        logits = model(ids).logits
    generated = model.generate(ids[:1], max_new_tokens=5, do_sample=False, pad_token_id=0)
    torch.save({"logits": logits, "generated": generated}, out_path)
    json.dump({
        "module": type(model).__module__,
        "config": type(config).__name__,
        "base": type(base).__name__,
        "classifier": type(classifier).__name__,
        "tied": model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr(),
    }, sys.stdout)
    """
)


def test_folder_loads_as_remote_code_without_the_package(tmp_path, gpt2_dir):
    model = EmbGPTForCausalLM.from_pretrained(gpt2_dir).eval()
    folder = tmp_path / "hub-folder"
    model.save_pretrained(folder)
    assert {"configuration_embgpt.py", "modeling_embgpt.py", "config.json", "model.safetensors"} <= {
        p.name for p in folder.iterdir()
    }
    assert json.loads((folder / "config.json").read_text())["auto_map"] == AUTO_MAP

    ids = torch.randint(0, 50257, (2, 8))
    torch.save(ids, tmp_path / "ids.pt")
    result = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_PACKAGE, str(folder), str(tmp_path / "ids.pt"), str(tmp_path / "out.pt")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["module"].startswith("transformers_modules.") and info["module"].endswith("modeling_embgpt")
    assert (info["config"], info["base"], info["classifier"]) == (
        "EmbGPTConfig", "EmbGPTModel", "EmbGPTForSequenceClassification",
    )  # fmt: skip
    assert info["tied"]
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    with torch.no_grad():
        assert torch.equal(out["logits"], model(ids).logits)
    assert torch.equal(out["generated"], model.generate(ids[:1], max_new_tokens=5, do_sample=False, pad_token_id=0))


def test_hub_files_import_nothing_from_the_package():
    """transformers copies only these two files to the Hub: they may import each other, torch and transformers."""
    import re
    from pathlib import Path

    import hf_embgpt

    package = Path(hf_embgpt.__file__).parent
    for name in ("configuration_embgpt.py", "modeling_embgpt.py"):
        source = (package / name).read_text()
        imports = re.findall(r"^\s*(?:from|import)\s+(\S+)", source, flags=re.M)
        allowed = {"torch", "transformers", "safetensors", ".configuration_embgpt"}
        stdlib = set(sys.stdlib_module_names)
        for module in imports:
            top = module.split(".")[0] if not module.startswith(".") else module
            assert top in allowed or top in stdlib, f"{name} imports {module}"
