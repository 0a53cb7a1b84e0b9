"""Builders of config.json documents for tests: models, pipelines and their nodes without hand-written JSON."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def _source(text: str) -> dict[str, str]:
    node, _, item = text.partition(".")
    return {"node_name": node, "data_item": item}


def model(name: str, base_path: str = "", **settings: Any) -> dict[str, Any]:
    """A model_config_list entry (base_path defaults to the name, relative to the config file)."""
    return {"config": {"name": name, "base_path": base_path or name, **settings}}


def node(
    name: str, inputs: Mapping[str, str], outputs: Iterable[str] | Mapping[str, str], *, model: str = "",
    library: str = "", **extra: Any
) -> dict[str, Any]:  # fmt: skip
    """A DL node (`model`) or a custom node (`library`): inputs {input: "node.item"}, outputs [item] or
    {alias: item}; `extra` adds keys as they are (demultiply_count, gather_from_node, params, version)."""
    aliases = outputs if isinstance(outputs, Mapping) else {item: item for item in outputs}
    kind = {"model_name": model, "type": "DL model"} if model else {"library_name": library, "type": "custom"}
    return {
        "name": name,
        **kind,
        "inputs": [{input_name: _source(source)} for input_name, source in inputs.items()],
        "outputs": [{"data_item": item, "alias": alias} for alias, item in aliases.items()],
        **extra,
    }


def pipeline(
    name: str, inputs: Iterable[str], nodes: Iterable[dict[str, Any]], outputs: Mapping[str, str], **extra: Any
) -> dict[str, Any]:
    """A pipeline_config_list entry: outputs {name: "node.item"}."""
    return {
        "name": name,
        "inputs": list(inputs),
        "nodes": list(nodes),
        "outputs": [{output: _source(source)} for output, source in outputs.items()],
        **extra,
    }


def document(
    models: Iterable[dict[str, Any]] = (),
    pipelines: Iterable[dict[str, Any]] = (),
    libraries: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A whole config.json document; `libraries` maps custom node library names to their base_path."""
    found: dict[str, Any] = {"model_config_list": list(models)}
    if libraries:
        found["custom_node_library_config_list"] = [{"name": n, "base_path": p} for n, p in libraries.items()]
    if pipelines:
        found["pipeline_config_list"] = list(pipelines)
    return found
