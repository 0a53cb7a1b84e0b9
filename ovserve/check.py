"""`ovserve-check CONFIG`: a config.json checked offline as the server would load it, one line per problem."""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openvino as ov

from . import graph, loading, repository, versions
from .config import ModelConfig, NodeConfig, S3Path, ServerConfig, load_config
from .custom import Library, open_library
from .errors import ConfigError, LoadError
from .metrics import FAMILIES
from .pipeline import PipelineDefinition, build_definition, model_node
from .ports import port_specs
from .repository import Repository, Storage
from .tensors import TensorSpec, precision_name
from .types import Signature


@dataclass(frozen=True)
class Problem:
    """What would not serve, and why: `kind` is config, model, library or pipeline; `name` the one it is about."""

    kind: str
    name: str
    message: str
    version: int | None = None

    def __str__(self) -> str:
        """One line: OpenVINO's messages span several (its C++ source locations, then the gist)."""
        where = self.kind if not self.name else f"{self.kind} {self.name}"
        where += f" version {self.version}" if self.version is not None else ""
        return f"{where}: {' '.join(self.message.split())}"

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "version": self.version, "message": self.message}


@dataclass(frozen=True)
class _Read:
    """A model version as read (not compiled): what pipeline validation needs of it."""

    name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]


@dataclass
class Report:
    config: Path
    problems: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)  # what could not be checked here; not a problem
    models: dict[str, dict[int, _Read]] = field(default_factory=dict)  # the versions that would serve
    pipelines: dict[str, graph.Picture] = field(default_factory=dict)  # every pipeline, to draw
    valid: list[str] = field(default_factory=list)  # the pipelines that would serve

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        return {
            "config": str(self.config),
            "ok": self.ok,
            "problems": [p.as_json() for p in self.problems],
            "notes": [n.as_json() for n in self.notes],
            "models": {
                name: {str(n): {"inputs": _specs(r.inputs), "outputs": _specs(r.outputs)} for n, r in read.items()}
                for name, read in self.models.items()
            },
            "pipelines": {
                name: {"ok": name in self.valid, "inputs": _specs(p.inputs), "outputs": _specs(p.outputs)}
                for name, p in self.pipelines.items()
            },
        }


def _specs(specs: Mapping[str, TensorSpec]) -> dict[str, Any]:
    return {n: {"datatype": precision_name(s.dtype), "shape": s.metadata_shape()} for n, s in specs.items()}


class _NotChecked(LoadError):
    """A pipeline node uses a model this run did not read (an s3:// one without --s3)."""


# --- models ------------------------------------------------------------------------------------------------------


def _read(core: ov.Core, config: ModelConfig, repo: Repository, number: int, stamp: repository.Stamp) -> _Read:
    path = repo.fetch(number, stamp)
    try:
        model, layouts, _ = loading.read(core, config, path)
        return _Read(config.name, port_specs(model.inputs, layouts), port_specs(model.outputs, layouts))
    finally:
        repo.release(number)


def _check_model(core: ov.Core, config: ModelConfig, storage: Storage, report: Report) -> None:
    """List the versions, apply the policy and read the chosen ones as the Manager does (a broken version
    under `latest` gives way to the next older one), without compiling them."""
    name = config.name
    if config.problems:
        report.problems += [Problem("model", name, p) for p in config.problems]
        return
    repo = repository.connect(config.base_path, storage)
    try:
        found = repo.scan()
    except LoadError as e:
        report.problems.append(Problem("model", name, str(e)))
        return
    if not found:
        local = config.base_path if isinstance(config.base_path, Path) else None
        report.problems.append(Problem("model", name, versions.no_versions(repo.where, local)))
        return
    served: dict[int, _Read] = {}
    failed: set[int] = set()
    while wanted := [n for n in versions.select(config.version_policy, found, failed) if n not in served]:
        for number in sorted(wanted, reverse=True):
            try:
                served[number] = _read(core, config, repo, number, found[number])
            except LoadError as e:
                report.problems.append(Problem("model", name, str(e), number))
                failed.add(number)
            except Exception as e:  # as the server: a failure not foreseen stays with this version
                report.problems.append(Problem("model", name, f"{type(e).__name__}: {e}", number))
                failed.add(number)
    report.models[name] = dict(sorted(served.items()))


# --- libraries and pipelines -----------------------------------------------------------------------------------


def _libraries(config: ServerConfig, report: Report) -> dict[str, Library | LoadError]:
    libraries: dict[str, Library | LoadError] = {}
    for name, location in config.libraries.items():
        try:
            libraries[name] = open_library(name, location)
        except LoadError as e:
            libraries[name] = e
            report.problems.append(Problem("library", name, str(e)))
    return libraries


async def _check_pipelines(
    config: ServerConfig, libraries: Mapping[str, Library | LoadError], unread: set[str], report: Report
) -> None:
    """Every pipeline validated as the server does (docs/pipelines.md#load-time-rules) on the versions read; one that
    uses a model in `unread` cannot be, and is noted."""
    models = {m.name: m for m in config.models}

    def model_of(pipeline: str, node: NodeConfig) -> Signature:
        if node.model_name in unread:
            raise _NotChecked("", f"node {node.name} uses model {node.model_name}, which was not read (s3://)")
        read = report.models.get(node.model_name, {})
        servable = read.get(node.version) if node.version else read[max(read)] if read else None
        return model_node(pipeline, node, models.get(node.model_name), servable)

    for pipeline in config.pipelines:
        definition: PipelineDefinition | None = None
        try:
            definition = await build_definition(pipeline, functools.partial(model_of, pipeline.name), libraries)
        except _NotChecked as e:
            report.notes.append(Problem("pipeline", pipeline.name, f"not validated: {e}; check again with --s3"))
            report.pipelines[pipeline.name] = graph.picture(pipeline, None)
            continue
        except LoadError as e:
            report.problems.append(Problem("pipeline", pipeline.name, str(e)))
            report.pipelines[pipeline.name] = graph.picture(pipeline, None, str(e))
            continue
        report.pipelines[pipeline.name] = graph.picture(pipeline, definition)
        report.valid.append(pipeline.name)
        definition.retire()  # its custom nodes are let go now


# --- the whole file ----------------------------------------------------------------------------------------------


def _monitoring(config: ServerConfig, report: Report) -> None:
    metrics = config.monitoring.get("metrics") or {}
    unknown = [n for n in metrics.get("metrics_list") or () if n not in FAMILIES]
    if unknown:
        message = f"monitoring.metrics.metrics_list: Invalid name in metrics_list: {', '.join(unknown)}"
        report.problems.append(Problem("config", "", message))


async def check(path: Path, core: ov.Core | None = None, s3: bool = False) -> Report:
    """Everything the server would load from `path`, checked in its load order (docs/operations.md#reload-order): the
    file and its schema, each model's versions (read, shaped and laid out as configured, not compiled), the custom node
    libraries, then every pipeline's validation (docs/pipelines.md#load-time-rules). s3:// repositories are listed and
    downloaded only with `s3`; otherwise their syntax alone is checked (the config parser does that)."""
    report = Report(path)
    try:
        config = load_config(path)
    except ConfigError as e:
        report.problems.append(Problem("config", "", str(e)))
        return report
    report.problems += [Problem("config", "", w) for w in config.warnings]
    _monitoring(config, report)
    core = core or ov.Core()
    storage = Storage()
    unread: set[str] = set()
    try:
        for model in config.models:
            if isinstance(model.base_path, S3Path) and not s3 and not model.problems:
                unread.add(model.name)
                note = f"{model.base_path}: only its syntax is checked (--s3 lists and reads it)"
                report.notes.append(Problem("model", model.name, note))
                continue
            await asyncio.to_thread(_check_model, core, model, storage, report)
    finally:
        storage.close()
    libraries = _libraries(config, report)
    await _check_pipelines(config, libraries, unread, report)
    return report


# --- the command -------------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ovserve-check",
        description="Check an OVMS config.json offline as ovserve would load it: schema, model folders and files "
        "(read with OpenVINO, not compiled), custom node libraries and pipelines. Exit status 0 when everything "
        "would serve, 1 otherwise.",
    )
    p.add_argument("config", type=Path, help="config.json (or a directory holding it)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of lines (for CI)")
    p.add_argument("--graph", type=Path, metavar="OUT.svg", help="draw every pipeline into one SVG file")
    p.add_argument("--s3", action="store_true", help="also list and read s3:// models (environment's credentials)")
    return p


def _summary(report: Report) -> str:
    served = sum(1 for r in report.models.values() if r)
    counts = f"{served} model(s) and {len(report.valid)} pipeline(s) would serve"
    if report.ok:
        return f"OK: {counts}"
    return f"{len(report.problems)} problem(s); {counts}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    report = asyncio.run(check(args.config, s3=args.s3))
    if args.json:
        print(json.dumps(report.as_json(), indent=2, ensure_ascii=False))
    else:
        for problem in report.problems:
            print(problem)
        for note in report.notes:
            print(f"note: {note}")
        print(_summary(report))
    if args.graph is not None:
        try:
            args.graph.write_bytes(graph.svg(graph.dot_all(list(report.pipelines.values()))))
        except (graph.LayoutError, OSError) as e:
            print(f"ovserve-check: error: {e}", file=sys.stderr)
            return 2
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
