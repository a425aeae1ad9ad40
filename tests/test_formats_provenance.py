"""formats/provenance.py: the `embgpt_provenance.json` record, written merged over the earlier one, read back as
JSON; the version and the time come from importlib.metadata and the UTC clock, the layout from the json module."""

import datetime
import importlib.metadata
import json

import pytest

from hf_embgpt.formats.provenance import (
    PROVENANCE_FIELDS,
    PROVENANCE_FILE,
    PROVENANCE_KINDS,
    package_version,
    read_provenance,
    write_provenance,
)


def test_a_record_is_written_as_sorted_json_and_merged_over_the_earlier_one(tmp_path):
    folder = tmp_path / "new"  # made
    assert read_provenance(folder) == {}
    first = write_provenance(folder, kind="converted", source="gpt2", source_format="hub", notes="first")
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    second = write_provenance(folder, kind="trained", datasets=("tinyshakespeare", 7), notes=None, command="c")
    after = datetime.datetime.now(datetime.timezone.utc)
    text = (folder / PROVENANCE_FILE).read_text()
    assert text == json.dumps(second, indent=2, sort_keys=True)
    assert read_provenance(folder) == second
    assert second == {
        **first,
        "kind": "trained",
        "datasets": ["tinyshakespeare", "7"],
        "command": "c",
        "updated": second["updated"],
    }  # None leaves the earlier notes; the later kind wins
    assert second["hf_embgpt_version"] == importlib.metadata.version("hf_embgpt")
    updated = datetime.datetime.fromisoformat(second["updated"])
    assert updated.utcoffset() == datetime.timedelta(0) and before <= updated <= after


def test_bad_fields_are_named_with_the_rule(tmp_path):
    with pytest.raises(
        ValueError, match=rf"^unknown provenance field 'author'; known fields: {', '.join(PROVENANCE_FIELDS)}$"
    ):
        write_provenance(tmp_path, author="me")
    with pytest.raises(TypeError, match=r"^provenance field source must be str \(the checkpoint .*\), got 3$"):
        write_provenance(tmp_path, source=3)
    with pytest.raises(TypeError, match=r"^provenance field datasets must be list \(.*\), got 'wiki'$"):
        write_provenance(tmp_path, datasets="wiki")
    with pytest.raises(ValueError, match=rf"^provenance kind 'made' must be one of {', '.join(PROVENANCE_KINDS)}$"):
        write_provenance(tmp_path, kind="made")
    assert not (tmp_path / PROVENANCE_FILE).exists()


@pytest.mark.parametrize(
    "content, problem", [("{", "is not valid JSON: "), ("[1]", "must hold a JSON object, not list")]
)
def test_a_broken_record_is_named(tmp_path, content, problem):
    (tmp_path / PROVENANCE_FILE).write_text(content)
    with pytest.raises(ValueError, match=f"^{tmp_path / PROVENANCE_FILE} {problem}"):
        read_provenance(tmp_path)


def test_package_version_is_importlib_metadatas_or_unknown():
    assert package_version("torch") == importlib.metadata.version("torch")
    assert package_version("no-such-package-for-embgpt") == "unknown"
