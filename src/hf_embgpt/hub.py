"""`embgpt push`: upload a checkpoint to the Hugging Face Hub with its code, tokenizer and a real model card.

The pushed folder holds exactly: `config.json` (with `auto_map` for every Auto class), `configuration_embgpt.py`,
`modeling_embgpt.py`, `model.safetensors`, `generation_config.json`, the tokenizer files and `README.md`, the card
rendered from the `model_card.md` template through `huggingface_hub.ModelCard`. It is uploaded in one commit with
`HfApi.create_repo` + `HfApi.upload_folder`.

The card's provenance comes from `embgpt_provenance.json`, a small record that `embgpt convert` and the training
command write into a checkpoint folder with `write_provenance(folder, **info)`; its fields are `PROVENANCE_FIELDS`.
Evaluation metrics come from the `trainer_state.json` that transformers' Trainer writes.
"""

import argparse
import glob
import importlib.metadata
import json
import logging
import math
import os
import sys
import tempfile

import huggingface_hub
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

from .configuration_embgpt import EmbGPTConfig
from .formats.common import atomic_file
from .formats.provenance import PROVENANCE_FILE, package_version, read_provenance

logger = logging.getLogger(__name__)

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_card.md")
TRAINER_STATE_FILE = "trainer_state.json"
DEFAULT_TAGS = ("embgpt", "gpt2", "nanogpt", "causal-lm", "custom_code")
FORMAT_NAMES = {
    "embgpt": "EmbGPT",
    "gpt2": "transformers GPT-2 (GPT2LMHeadModel)",
    "hub": "Hugging Face Hub",
    "nanogpt": "nanoGPT (ckpt.pt)",
    "llmc": "llm.c (.bin)",
    "tf": "OpenAI TensorFlow",
}
# Trainer's bookkeeping that says nothing about the model
_SKIPPED_METRICS = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "epoch", "step")


# ----------------------------------------------------------------------------------------------------------------
# Metrics.


def read_metrics(folder):
    """(step, [(name, value)]) of the last evaluation in the folder's trainer_state.json (or newest checkpoint-*)."""
    folder = os.fspath(folder)
    candidates = [os.path.join(folder, TRAINER_STATE_FILE)]
    checkpoints = glob.glob(os.path.join(folder, "checkpoint-*", TRAINER_STATE_FILE))
    candidates += sorted(checkpoints, key=lambda p: _step_of(os.path.dirname(p)), reverse=True)
    path = next((p for p in candidates if os.path.isfile(p)), None)
    if path is None:
        return None, []
    with open(path) as f:
        try:
            state = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e
    history = state.get("log_history") or []
    evals = [entry for entry in history if any(k.startswith("eval_") for k in entry)]
    metrics, step = [], None
    if evals:
        last = evals[-1]
        step = last.get("step")
        for name, value in last.items():
            if name.startswith("eval_") and name not in _SKIPPED_METRICS and isinstance(value, (int, float)):
                metrics.append((name.removeprefix("eval_"), value))
                if name == "eval_loss" and value < 50:
                    metrics.append(("perplexity", math.exp(value)))
    train_losses = [entry["loss"] for entry in history if isinstance(entry.get("loss"), (int, float))]
    if train_losses:
        metrics.append(("final training loss", train_losses[-1]))
    if metrics and state.get("global_step"):
        metrics.append(("training steps", state["global_step"]))
    return step, metrics


def _step_of(checkpoint_dir):
    tail = os.path.basename(checkpoint_dir).removeprefix("checkpoint-")
    return int(tail) if tail.isdigit() else -1


def requirement(name):
    """hf_embgpt's requirement on `name` as installed (e.g. 'transformers>=5.0.0,<5.25'), read from its metadata."""
    from packaging.requirements import Requirement

    try:
        requires = importlib.metadata.requires("hf_embgpt") or []
    except importlib.metadata.PackageNotFoundError:
        requires = []
    for line in requires:
        req = Requirement(line)
        if req.name.lower() == name.lower() and req.marker is None:
            lower_first = sorted(req.specifier, key=lambda s: (s.operator not in (">=", ">", "~=", "=="), str(s)))
            specs = ",".join(str(s) for s in lower_first)
            return f"{req.name}{specs}"
    return name


# ----------------------------------------------------------------------------------------------------------------
# The model card.


def render_model_card(
    config,
    repo_id,
    provenance=None,
    metrics=(),
    metrics_step=None,
    license="mit",
    datasets=None,
    tags=None,
    base_model=None,
    language=None,
):
    """A `huggingface_hub.ModelCard` for an EmbGPT config, rendered from the `model_card.md` template."""
    from .formats.common import expected_shapes

    provenance = dict(provenance or {})
    datasets = [_shown_source(d) for d in datasets or provenance.get("datasets") or []] or None
    base_model = base_model or provenance.get("base_model")
    model_name = repo_id.split("/")[-1]
    shapes = expected_shapes(config)
    n_params = sum(math.prod(shape) for name, shape in shapes.items() if name != "lm_head.weight")  # tied
    eval_results = None
    if metrics and datasets:
        eval_results = [
            EvalResult(
                task_type="text-generation",
                dataset_type=datasets[0],
                dataset_name=datasets[0],
                metric_type=name,
                metric_value=round(float(value), 4),
            )
            for name, value in metrics
            if name in ("loss", "perplexity")
        ] or None
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="text-generation",
        license=license,
        tags=list(dict.fromkeys([*DEFAULT_TAGS, *(tags or [])])),
        datasets=datasets,
        base_model=base_model,
        language=language,
        model_name=model_name if eval_results else None,
        eval_results=eval_results,
    )
    return ModelCard.from_template(
        card_data,
        template_path=TEMPLATE,
        model_name=model_name,
        repo_id=repo_id,
        n_params=_count(n_params),
        n_layer=config.n_layer,
        n_head=config.n_head,
        n_embd=config.n_embd,
        block_size=config.block_size,
        vocab_size=config.vocab_size,
        bias="yes" if config.bias else "no (nanoGPT's bias=False variant)",
        activation={"gelu_new": "GELU, tanh approximation (GPT-2's)", "gelu": "GELU, exact erf form (nanoGPT's)"}[
            config.activation_function
        ],
        transformers_requirement=requirement("transformers"),
        torch_requirement=requirement("torch"),
        hf_embgpt_version=package_version("hf_embgpt"),
        provenance=_provenance_text(provenance, datasets, base_model),
        command=provenance.get("command"),
        metrics=[(name, _format_value(value)) for name, value in metrics],
        metrics_step=metrics_step,
    )


def _count(n):
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


def _format_value(value):
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def _shown_source(source):
    """A local path is shown by its last component only: the card is public, the user's directories are not."""
    if os.path.isabs(source) or os.path.exists(source):
        return os.path.basename(os.path.normpath(source))
    return source


def _provenance_text(provenance, datasets, base_model):
    lines = []
    kind, source = provenance.get("kind"), provenance.get("source")
    fmt = FORMAT_NAMES.get(provenance.get("source_format"), provenance.get("source_format") or "a")
    if kind == "converted" and source:
        lines.append(
            f"Converted with hf_embgpt from the {fmt} checkpoint `{_shown_source(source)}`, tensor for tensor."
        )
    elif kind == "trained":
        trained = "Trained with hf_embgpt"
        if datasets:
            trained += " on " + ", ".join(f"`{d}`" for d in datasets)
        if base_model:
            trained += f", starting from `{base_model}`"
        elif source:
            trained += f", starting from the {fmt} checkpoint `{_shown_source(source)}`"
        lines.append(trained + ".")
    if base_model and kind != "trained":
        lines.append(f"Base model: `{base_model}`.")
    if provenance.get("notes"):
        lines.append(provenance["notes"])
    if not lines:
        lines.append(f"No provenance record (`{PROVENANCE_FILE}`) was found with this checkpoint.")
    return "\n\n".join(lines)


def write_model_card(folder, repo_id, **card_options):
    """Render README.md into an EmbGPT folder from its config, provenance and trainer state; returns the card."""
    config = EmbGPTConfig.from_pretrained(folder)
    step, metrics = read_metrics(folder)
    card = render_model_card(
        config, repo_id, provenance=read_provenance(folder), metrics=metrics, metrics_step=step, **card_options
    )
    with atomic_file(os.path.join(folder, "README.md")) as path:
        card.save(path)
    return card


# ----------------------------------------------------------------------------------------------------------------
# The push folder and the upload.


def prepare_push_folder(source, folder, repo_id, tokenizer=None, **card_options):
    """Write into `folder` exactly what `push_to_hub` uploads; returns {file name: size in bytes}.

    `source` is any checkpoint `embgpt convert` reads. The tokenizer comes from `tokenizer` (a folder or Hub id) or
    from beside the source; there must be one, and it must fit the model's vocabulary.
    """
    from .formats.common import find_tokenizer, load_tokenizer
    from .formats.registry import check_source, read_checkpoint

    source = os.fspath(source)
    model, fmt = read_checkpoint(source)
    tok = load_tokenizer(check_source(tokenizer, "tokenizer")) if tokenizer else find_tokenizer(source, fmt)
    if tok is None:
        raise ValueError(
            f"no tokenizer found with {source}; pass one (--tokenizer FOLDER_OR_HUB_ID, e.g. openai-community/gpt2)"
        )
    if len(tok) > model.config.vocab_size:
        raise ValueError(
            f"the tokenizer has {len(tok)} tokens but the model's vocab_size is {model.config.vocab_size}; "
            f"token ids past {model.config.vocab_size - 1} would have no embedding"
        )
    local = os.path.isdir(source)
    provenance = read_provenance(source) if local else {}
    if not provenance and fmt != "embgpt":
        provenance = dict(kind="converted", source=source, source_format=fmt)
        if fmt == "hub":
            provenance["base_model"] = source
    step, metrics = read_metrics(source) if local else (None, [])
    card = render_model_card(
        model.config, repo_id, provenance=provenance, metrics=metrics, metrics_step=step, **card_options
    )
    if os.path.isdir(folder) and os.listdir(folder):
        raise ValueError(f"{folder} is not empty; the push folder must hold only what is uploaded")
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    card.save(os.path.join(folder, "README.md"))
    return {name: os.path.getsize(os.path.join(folder, name)) for name in sorted(os.listdir(folder))}


def push_to_hub(
    source,
    repo_id,
    private=False,
    revision=None,
    token=None,
    commit_message=None,
    dry_run=False,
    folder=None,
    tokenizer=None,
    **card_options,
):
    """Upload `source` to the Hub repo `repo_id` in one commit (created if needed; `revision` names a branch).

    Returns {"files": {name: bytes}, "card": str, "commit": CommitInfo or None}. With `dry_run` nothing is uploaded
    and no token is needed. `folder` keeps the prepared upload folder there instead of a temporary one.
    `card_options`: license, datasets, tags, base_model, language.
    """
    if not dry_run:
        token = token or huggingface_hub.get_token()
        if not token:
            raise ValueError(
                f"no Hugging Face token is configured, so {repo_id} can't be pushed: run `hf auth login`, set "
                f"HF_TOKEN, or pass token=; `--dry-run` shows what would be uploaded without one"
            )
    with tempfile.TemporaryDirectory(prefix="embgpt-push-") as staging:
        folder = folder or staging
        files = prepare_push_folder(source, folder, repo_id, tokenizer=tokenizer, **card_options)
        with open(os.path.join(folder, "README.md")) as f:
            card = f.read()
        commit = None
        if not dry_run:
            api = HfApi(token=token)
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            if revision:
                api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
            commit = api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                revision=revision,
                repo_type="model",
                commit_message=commit_message or f"Upload EmbGPT model with hf_embgpt {package_version('hf_embgpt')}",
            )
            logger.info("pushed %d files to %s (%s)", len(files), repo_id, getattr(commit, "commit_url", commit))
    return {"files": files, "card": card, "commit": commit}


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="embgpt push",
        description="Push a checkpoint (any format `embgpt convert` reads) to the Hugging Face Hub with its code, "
        "tokenizer and a model card, in one commit.",
    )
    parser.add_argument("source", help="checkpoint folder or file")
    parser.add_argument("repo_id", help="Hub repo, e.g. your-name/gpt2-shakespeare")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--revision", help="branch to push to (created from main if missing)")
    parser.add_argument("--token", help="Hub token (default: HF_TOKEN or `hf auth login`'s)")
    parser.add_argument("--commit-message")
    parser.add_argument("--tokenizer", help="tokenizer folder or Hub id, when none is beside the source")
    parser.add_argument("--license", default="mit", help="license id for the card (default: mit, GPT-2's)")
    parser.add_argument("--dataset", action="append", dest="datasets", help="dataset trained on (repeatable)")
    parser.add_argument("--tag", action="append", dest="tags", help="extra card tag (repeatable)")
    parser.add_argument("--base-model", help="Hub id of the model this one starts from")
    parser.add_argument("--folder", help="also keep the prepared upload folder here (must be empty)")
    parser.add_argument("--dry-run", action="store_true", help="print the file list and the card; upload nothing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = push_to_hub(
        args.source,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        token=args.token,
        commit_message=args.commit_message,
        dry_run=args.dry_run,
        folder=args.folder,
        tokenizer=args.tokenizer,
        license=args.license,
        datasets=args.datasets,
        tags=args.tags,
        base_model=args.base_model,
    )
    where = f"{args.repo_id}" + (f" (branch {args.revision})" if args.revision else "")
    print(f"{'would upload' if args.dry_run else 'uploaded'} to {where}:")
    for name, size in result["files"].items():
        print(f"  {name:<28} {size:>14,d} bytes")
    if args.dry_run:
        print("\n--- README.md ---\n" + result["card"])
    else:
        print(getattr(result["commit"], "commit_url", result["commit"]))
    return 0


__all__ = [
    "read_metrics",
    "render_model_card",
    "write_model_card",
    "prepare_push_folder",
    "push_to_hub",
]


if __name__ == "__main__":
    sys.exit(main())
