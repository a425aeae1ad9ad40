"""`embgpt_provenance.json`: where a checkpoint folder came from (converted from what, trained on what, by which
command), written by `embgpt convert` and `embgpt train` and shown by `embgpt push` in the model card."""

import datetime
import importlib.metadata
import json
import os

from .common import atomic_file

PROVENANCE_FILE = "embgpt_provenance.json"
# The provenance record: field -> (accepted types, meaning). `hf_embgpt_version` and `updated` are added on write.
PROVENANCE_FIELDS = {
    "kind": ((str,), "'converted' (weights from another format) or 'trained' (by a training run)"),
    "source": ((str,), "the checkpoint the weights came from: a path or a Hub id"),
    "source_format": ((str,), "its format: embgpt, gpt2, nanogpt, llmc, tf or hub"),
    "base_model": ((str,), "Hub id of the model this one starts from"),
    "datasets": ((list, tuple), "names or Hub ids of the data trained on"),
    "command": ((str,), "the command line that produced the folder"),
    "notes": ((str,), "anything else worth a line in the card"),
}
PROVENANCE_KINDS = ("converted", "trained")


def write_provenance(folder, **info):
    """Record where a checkpoint folder came from, merged over any earlier record; returns the record.

    Fields (all optional): kind ('converted' | 'trained'), source, source_format, base_model, datasets (list of
    str), command, notes. Example: `write_provenance(out_dir, kind="trained", datasets=["tinyshakespeare"],
    command="embgpt train --preset tiny")`.
    """
    for name, value in info.items():
        if name not in PROVENANCE_FIELDS:
            raise ValueError(f"unknown provenance field {name!r}; known fields: {', '.join(PROVENANCE_FIELDS)}")
        types, meaning = PROVENANCE_FIELDS[name]
        if value is not None and not isinstance(value, types):
            raise TypeError(f"provenance field {name} must be {types[0].__name__} ({meaning}), got {value!r}")
    if info.get("kind") not in (None, *PROVENANCE_KINDS):
        raise ValueError(f"provenance kind {info['kind']!r} must be one of {', '.join(PROVENANCE_KINDS)}")
    if info.get("datasets") is not None:
        info["datasets"] = [str(d) for d in info["datasets"]]
    record = {**read_provenance(folder), **{k: v for k, v in info.items() if v is not None}}
    record["hf_embgpt_version"] = package_version("hf_embgpt")
    record["updated"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    os.makedirs(folder, exist_ok=True)
    with atomic_file(os.path.join(folder, PROVENANCE_FILE)) as temp, open(temp, "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)
    return record


def read_provenance(folder):
    """The folder's provenance record, or {} when it has none."""
    path = os.path.join(os.fspath(folder), PROVENANCE_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        try:
            record = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(record, dict):
        raise ValueError(f"{path} must hold a JSON object, not {type(record).__name__}")
    return record


def package_version(package):
    """The installed version of `package`, or 'unknown'."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
