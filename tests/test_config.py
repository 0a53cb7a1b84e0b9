"""config.json validation: what is accepted, and messages that name the JSON path and the problem."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import models
import pytest

from ovserve.config import All, Latest, Specific, load_config, parse_config
from ovserve.errors import ConfigError


def seed() -> dict[str, Any]:
    return models.seed_config(plugin_config={"NUM_STREAMS": "1"})


def test_the_guides_config_parses(tmp_path: Path) -> None:
    config = parse_config(seed(), tmp_path)
    (model,) = config.models
    assert (model.name, model.base_path, model.plugin_config) == ("resnet", tmp_path / "resnet", {"NUM_STREAMS": "1"})
    (pipeline,) = config.pipelines
    assert pipeline.demultiply_count == -1 and pipeline.inputs == ("0",)
    (node,) = pipeline.nodes
    assert (node.name, node.model_name, node.inputs["0"].node, node.outputs) == (
        "resnetNode", "resnet", "request", {"1463": "1463"},
    )  # fmt: skip


def with_change(path: list[Any], value: Any, delete: bool = False) -> dict[str, Any]:
    document = copy.deepcopy(seed())
    target: Any = document
    for step in path[:-1]:
        target = target[step]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return document


INVALID = [
    (["extra"], 1, False, 'unknown key "extra"'),
    (["model_config_list"], None, True, 'missing required key "model_config_list"'),
    (
        ["model_config_list", 0, "config", "name"],
        None,
        True,
        'model_config_list[0].config: missing required key "name"',
    ),
    (["model_config_list", 0, "config", "nireq"], "2", False, "model_config_list[0].config.nireq: expected an integer"),
    (
        ["model_config_list", 0, "config", "allow_cache"],
        "yes",
        False,
        'model_config_list[0].config.allow_cache: expected true or false, got "yes"',
    ),
    (["model_config_list", 0, "config", "mean"], 1, False, 'model_config_list[0].config: unknown key "mean"'),
    (
        ["model_config_list", 0, "config", "model_version_policy"],
        {"newest": {}},
        False,
        'model_config_list[0].config.model_version_policy: unknown version policy "newest"',
    ),
    (
        ["pipeline_config_list", 0, "demultiply_count"],
        10001,
        False,
        "pipeline_config_list[0].demultiply_count: expected an integer from -1 to 10000, got 10001",
    ),
    (
        ["pipeline_config_list", 0, "nodes", 0, "type"],
        "python",
        False,
        'pipeline_config_list[0].nodes[0].type: unsupported node type "python"',
    ),
    (
        ["pipeline_config_list", 0, "nodes", 0, "model_name"],
        None,
        True,
        'pipeline_config_list[0].nodes[0]: a "DL model" node needs "model_name"',
    ),
    (["pipeline_config_list", 0, "inputs"], "0", False, "pipeline_config_list[0].inputs: expected an array"),
    (
        ["pipeline_config_list", 0, "outputs", 0],
        {"a": {"node_name": "x", "data_item": "y"}, "b": {"node_name": "x", "data_item": "y"}},
        False,
        "pipeline_config_list[0].outputs[0]: expected an object with exactly one key, got 2",
    ),
]


@pytest.mark.parametrize(("path", "value", "delete", "message"), INVALID)
def test_invalid_documents_name_the_path(
    tmp_path: Path, path: list[Any], value: Any, delete: bool, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(with_change(path, value, delete), tmp_path)
    assert message in str(info.value)


def test_value_problems_fail_only_that_model(tmp_path: Path) -> None:
    document = seed()
    document["model_config_list"].append({"config": {"name": "other", "shape": "[1,2]", "batch_size": "x"}})
    config = parse_config(document, tmp_path)
    assert config.models[0].problems == ()
    assert len(config.models[1].problems) == 2
    assert 'shape "[1,2]" must look like (1,3,224,224)' in " ".join(config.models[1].problems)


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ({"shape": "(1, 3, 224:256, -1)"}, {"shape": (1, 3, (224, 256), -1)}),
        ({"shape": {"a": "(1,2)", "b": "auto"}}, {"shape": {"a": (1, 2), "b": "auto"}}),
        ({"batch_size": 4}, {"batch_size": 4}),
        ({"batch_size": "1:8"}, {"batch_size": (1, 8)}),
        ({"layout": "nhwc:nchw"}, {"layout": "NHWC:NCHW"}),
        ({"model_version_policy": {"all": {}}}, {"version_policy": All()}),
        ({"model_version_policy": {"latest": {"num_versions": 2}}}, {"version_policy": Latest(2)}),
        ({"model_version_policy": {"specific": {"versions": [3, 1]}}}, {"version_policy": Specific((1, 3))}),
    ],
)
def test_model_settings(tmp_path: Path, setting: dict[str, Any], expected: dict[str, Any]) -> None:
    document = {"model_config_list": [{"config": {"name": "m", **setting}}]}
    model = parse_config(document, tmp_path).models[0]
    assert model.problems == ()
    for key, value in expected.items():
        assert getattr(model, key) == value


def test_demultiply_count_zero_means_dynamic(tmp_path: Path) -> None:
    assert (
        parse_config(with_change(["pipeline_config_list", 0, "demultiply_count"], 0), tmp_path)
        .pipelines[0]
        .demultiply_count
        == -1
    )


def test_duplicate_names_keep_the_first(tmp_path: Path) -> None:
    document = seed()
    document["model_config_list"].append({"config": {"name": "resnet", "base_path": "elsewhere"}})
    document["pipeline_config_list"].append(copy.deepcopy(document["pipeline_config_list"][0]))
    config = parse_config(document, tmp_path)
    assert [m.base_path.name for m in config.models] == ["resnet"]
    assert len(config.pipelines) == 1 and len(config.warnings) == 2


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Configuration file not found or cannot open"):
        load_config(tmp_path / "missing.json")
    bad = tmp_path / "config.json"
    bad.write_text('{"model_config_list": [}')
    with pytest.raises(ConfigError, match=r"The file is not valid json: .*line 1 column 24"):
        load_config(tmp_path)  # a directory means its config.json
    bad.write_text(json.dumps(seed()))
    assert load_config(tmp_path).models[0].base_path == tmp_path.resolve() / "resnet"
