"""config.json and single-model CLI settings → frozen dataclasses, validated with JSON-path messages
(docs/configuration.md#config-file)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import jsonio
from .errors import ConfigError
from .tensors import Dim, Shape

if TYPE_CHECKING:  # the preprocessing module needs OpenVINO, which configuration parsing does not
    from .preprocess import Preprocess


@dataclass(frozen=True)
class Latest:
    num_versions: int = 1


@dataclass(frozen=True)
class All:
    pass


@dataclass(frozen=True)
class Specific:
    versions: tuple[int, ...]


VersionPolicy = Latest | All | Specific
ShapeSetting = Shape | str  # a parsed tuple, or "auto"


@dataclass(frozen=True)
class S3Path:
    """`s3://bucket/prefix`: a model repository in S3-compatible object storage, kept as written (never resolved)."""

    bucket: str
    prefix: str  # key prefix without leading or trailing "/"; "" = the whole bucket

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


@dataclass(frozen=True)
class ModelConfig:
    name: str
    base_path: Path | S3Path
    batch_size: Dim | str | None = None  # a dimension, "auto", or unset
    shape: ShapeSetting | dict[str, ShapeSetting] | None = None
    layout: str | dict[str, str] | None = None
    # CLI-only --mean/--scale/--color_format/--precision (docs/configuration.md#cli-flags)
    preprocess: Preprocess | None = None
    nireq: int = 0
    target_device: str = "CPU"
    plugin_config: dict[str, Any] = field(default_factory=dict)
    version_policy: VersionPolicy = Latest()
    # use the model cache even for shape/batch_size "auto" (docs/configuration.md#model-cache)
    allow_cache: bool = False
    max_queue_size: int | None = None  # requests that may wait for an infer request; more are refused at once
    # requests belong to sequences, each with its own model state (docs/stateful.md#stateful-models)
    stateful: bool = False
    idle_sequence_cleanup: bool = True  # the sequence cleaner drops this model's idle sequences
    max_sequence_number: int = 500  # live sequences per version
    low_latency_transformation: bool = False  # OpenVINO's LowLatency2 before compiling
    problems: tuple[str, ...] = ()  # value errors that make this one model fail to load


@dataclass(frozen=True)
class Source:
    node: str
    item: str


@dataclass(frozen=True)
class NodeConfig:
    name: str
    kind: str  # "DL model" | "custom"
    inputs: dict[str, Source]  # node input name -> where its data comes from
    outputs: dict[str, str]  # alias -> model/library output name (data_item)
    model_name: str = ""
    version: int | None = None
    library_name: str = ""
    params: dict[str, str] = field(default_factory=dict)
    demultiply_count: int | None = None
    gather_from_node: str | None = None
    repeated_inputs: tuple[str, ...] = ()  # inputs connected more than once: the pipeline fails validation


@dataclass(frozen=True)
class PipelineConfig:
    name: str
    inputs: tuple[str, ...]
    outputs: dict[str, Source]  # pipeline output name -> source
    nodes: tuple[NodeConfig, ...]
    demultiply_count: int | None = None


@dataclass(frozen=True)
class ServerConfig:
    models: tuple[ModelConfig, ...] = ()
    pipelines: tuple[PipelineConfig, ...] = ()
    libraries: dict[str, str] = field(default_factory=dict)  # name -> .so path, or a Python node "module:Class"
    monitoring: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    source: Path | None = None  # the config.json this came from (None: CLI single-model mode)
    digest: str = ""  # MD5 of that file's bytes: a reload with the same digest changes no configuration


# --- reading typed JSON with paths -------------------------------------------------------------------


class _Json:
    """A JSON value with the path that leads to it, so every complaint names where it is."""

    def __init__(self, value: Any, path: str) -> None:
        self.value = value
        self.path = path

    def fail(self, problem: str) -> ConfigError:
        return ConfigError(f"{self.path or '<root>'}: {problem}")

    def _got(self) -> str:
        return json.dumps(self.value)[:60]

    def obj(self, allowed: set[str], required: set[str] = frozenset()) -> dict[str, _Json]:  # type: ignore[assignment]
        if not isinstance(self.value, dict):
            raise self.fail(f"expected an object, got {self._got()}")
        for key in self.value:
            if key not in allowed:
                raise self.fail(f'unknown key "{key}"; allowed: {", ".join(sorted(allowed))}')
        for key in sorted(required):
            if key not in self.value:
                raise self.fail(f'missing required key "{key}"')
        return {k: _Json(v, f"{self.path}.{k}" if self.path else k) for k, v in self.value.items()}

    def array(self) -> list[_Json]:
        if not isinstance(self.value, list):
            raise self.fail(f"expected an array, got {self._got()}")
        return [_Json(v, f"{self.path}[{i}]") for i, v in enumerate(self.value)]

    def string(self) -> str:
        if not isinstance(self.value, str):
            raise self.fail(f"expected a string, got {self._got()}")
        return self.value

    def name(self) -> str:
        """A model's, pipeline's, node's or library's name: a string without control characters (NUL, line breaks),
        which would cut or forge log lines and responses."""
        text = self.string()
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise self.fail(f"a name may not hold control characters, got {self._got()}")
        return text

    def integer(self, low: int | None = None, high: int | None = None) -> int:
        v = self.value
        ok = isinstance(v, int) and not isinstance(v, bool)
        if not ok or (low is not None and v < low) or (high is not None and v > high):
            bounds = f" from {low}" if low is not None else ""
            bounds += f" to {high}" if high is not None else ""
            raise self.fail(f"expected an integer{bounds}, got {self._got()}")
        return int(v)

    def boolean(self) -> bool:
        if not isinstance(self.value, bool):
            raise self.fail(f"expected true or false, got {self._got()}")
        return self.value

    def single(self) -> tuple[str, _Json]:
        entries = self.obj(set(self.value) if isinstance(self.value, dict) else set())
        if len(entries) != 1:
            raise self.fail(f"expected an object with exactly one key, got {len(entries)}")
        return next(iter(entries.items()))


# --- value grammars ------------------------------------------------------------------------------------

_DIM = re.compile(r"^(-1|\d+|\d+:\d+)$")


INT64_MAX = (1 << 63) - 1


def dynamic(config: ModelConfig) -> bool:
    """Shape or batch_size "auto": the model reshapes for requests, which pipelines do not allow
    (docs/pipelines.md#load-time-rules)."""
    shapes = config.shape.values() if isinstance(config.shape, dict) else [config.shape]
    return config.batch_size == "auto" or "auto" in shapes


def parse_dim(text: str) -> Dim:
    """'8', '-1' or 'min:max' → Dim; raises ValueError."""
    text = text.strip()
    if not _DIM.match(text):
        raise ValueError(f'"{text}" is not a dimension (N, -1 or min:max)')
    if ":" in text:
        low, high = (int(p) for p in text.split(":"))
        if not 0 <= low < high <= INT64_MAX:
            raise ValueError(f'range "{text}" needs 0 <= min < max <= {INT64_MAX}')
        return (low, high)
    if int(text) > INT64_MAX:
        raise ValueError(f'dimension "{text}" is beyond {INT64_MAX}, the largest OpenVINO takes')
    return int(text)


def parse_shape(text: str) -> ShapeSetting:
    """'(1,3,224,224)' with dims N, -1 or min:max, or 'auto'; raises ValueError."""
    compact = text.replace(" ", "")
    if compact == "auto":
        return "auto"
    if not (compact.startswith("(") and compact.endswith(")")) or compact.count("(") != 1:
        raise ValueError(f'shape "{text}" must look like (1,3,224,224)')
    inner = compact[1:-1]
    return tuple(parse_dim(d) for d in inner.split(",")) if inner else ()


_LAYOUT = re.compile(r"^[NCHWD?.]+(:[NCHWD?.]+)?$")


def parse_layout(text: str) -> str:
    layout = text.replace(" ", "").upper()
    if not _LAYOUT.match(layout):
        raise ValueError(f'layout "{text}" may only use N C H W D ? ... (optionally "tensor:model")')
    for part in layout.split(":"):
        rest = part.replace("...", "", 1)
        if "." in rest:
            raise ValueError(f'layout "{text}": dots only as one "..."')
        letters = [c for c in rest if c != "?"]
        if len(letters) != len(set(letters)):
            raise ValueError(f'layout "{text}": each of N C H W D at most once')
    return layout


# --- model entries ---------------------------------------------------------------------------------------

_MODEL_KEYS = {
    "name", "base_path", "batch_size", "shape", "layout", "model_version_policy", "plugin_config", "nireq",
    "max_queue_size",
    "target_device", "allow_cache", "stateful", "idle_sequence_cleanup", "low_latency_transformation",
    "max_sequence_number", "custom_loader_options", "graph_path", "subconfig",
}  # fmt: skip


def _version_policy(node: _Json) -> VersionPolicy:
    (kind, body) = node.single()
    if kind == "all":
        body.obj(set())
        return All()
    if kind == "latest":
        return Latest(body.obj({"num_versions"}, {"num_versions"})["num_versions"].integer(1))
    if kind == "specific":
        versions = body.obj({"versions"}, {"versions"})["versions"].array()
        return Specific(tuple(sorted({v.integer(1) for v in versions})))
    raise node.fail(f'unknown version policy "{kind}"; use all, latest or specific')


def _plugin_config(node: _Json) -> dict[str, Any]:
    entries = node.obj(set(node.value) if isinstance(node.value, dict) else set())
    out: dict[str, Any] = {}
    for key, value in entries.items():
        ok = isinstance(value.value, (str, bool, int, float)) or (
            key == "DEVICE_PROPERTIES" and isinstance(value.value, dict)
        )
        if not ok:
            raise value.fail(f"expected a string, number or boolean, got {value._got()}")
        out[key] = value.value
    return out


def _per_name(node: _Json, parse: Any, problems: list[str]) -> Any:
    """A 'shape'/'layout' setting: one string for the only input, or {name: string}."""
    try:
        if isinstance(node.value, str):
            return parse(node.value)
        entries = node.obj(set(node.value) if isinstance(node.value, dict) else set())
        return {name: parse(v.string()) for name, v in entries.items()}
    except ValueError as e:
        problems.append(f"{node.path}: {e}")
        return None


def _batch_size(node: _Json, problems: list[str]) -> Dim | str | None:
    value = node.value
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            problems.append(f"{node.path}: batch_size must be positive, got {value}")
            return None
        return value
    text = node.string().strip()
    if text == "auto":
        return "auto"
    try:
        return parse_dim(text)
    except ValueError as e:
        problems.append(f"{node.path}: {e}")
        return None


_CLOUD = ("gs://", "azure://", "azfs://", "az://")  # OVMS's other cloud prefixes (docs/configuration.md#file-handling)


def _base_path(text: str, root: Path, where: str, problems: list[str]) -> Path | S3Path:
    """A local directory (relative ones resolve against `root`) or an s3:// URL, which is kept as written."""
    if text.startswith("s3://"):
        bucket, _, prefix = text[len("s3://") :].partition("/")
        prefix = prefix.strip("/")
        if not bucket:
            problems.append(f'{where}: "{text}" names no bucket; expected s3://bucket/path')
        if ".." in prefix.split("/"):
            problems.append(f"{where}: path must not contain '..'")
        return S3Path(bucket, prefix)
    if text.startswith(_CLOUD):
        problems.append(f'{where}: "{text}": only local paths and s3:// repositories are supported by ovserve')
        return Path(text)
    try:
        base_path = Path(text).expanduser()
    except RuntimeError as e:  # ~user of a user this system does not know
        problems.append(f'{where}: "{text}": {e}')
        return Path(text)
    if ".." in base_path.parts:
        problems.append(f"{where}: path must not contain '..'")
    return base_path if base_path.is_absolute() else root / base_path


def model_config(node: _Json, root: Path) -> ModelConfig:
    keys = node.obj(_MODEL_KEYS, {"name"})
    problems: list[str] = []
    base = keys["base_path"].string() if "base_path" in keys else ""
    kwargs: dict[str, Any] = {
        "name": keys["name"].name(),
        "base_path": _base_path(base, root, f"{node.path}.base_path", problems),
    }
    if "batch_size" in keys:
        kwargs["batch_size"] = _batch_size(keys["batch_size"], problems)
    if "shape" in keys:
        kwargs["shape"] = _per_name(keys["shape"], parse_shape, problems)
    if "layout" in keys:
        kwargs["layout"] = _per_name(keys["layout"], parse_layout, problems)
    if "nireq" in keys:
        kwargs["nireq"] = keys["nireq"].integer(0, 100000)
    if "max_queue_size" in keys:  # beyond OVMS (Triton's max_queue_size)
        kwargs["max_queue_size"] = keys["max_queue_size"].integer(0, 1_000_000)
    if "target_device" in keys:
        kwargs["target_device"] = keys["target_device"].string()
    if "plugin_config" in keys:
        kwargs["plugin_config"] = _plugin_config(keys["plugin_config"])
    if "model_version_policy" in keys:
        kwargs["version_policy"] = _version_policy(keys["model_version_policy"])
    if "allow_cache" in keys:
        kwargs["allow_cache"] = keys["allow_cache"].boolean()
    kwargs.update(_stateful(node, keys, kwargs, problems))
    return ModelConfig(**kwargs, problems=tuple(problems))


_STATEFUL_DEFAULTS = {"idle_sequence_cleanup": True, "max_sequence_number": 500, "low_latency_transformation": False}


def _stateful(node: _Json, keys: dict[str, _Json], settings: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """The stateful keys (docs/configuration.md#model-keys, docs/stateful.md#stateful-models): the other three only with
    `stateful: true` (their defaults are accepted anyway), and no "auto" shape or batch size."""
    out: dict[str, Any] = {}
    if "stateful" in keys:
        out["stateful"] = keys["stateful"].boolean()
    if "idle_sequence_cleanup" in keys:
        out["idle_sequence_cleanup"] = keys["idle_sequence_cleanup"].boolean()
    if "low_latency_transformation" in keys:
        out["low_latency_transformation"] = keys["low_latency_transformation"].boolean()
    if "max_sequence_number" in keys:
        out["max_sequence_number"] = keys["max_sequence_number"].integer(0, (1 << 32) - 1)
    if not out.get("stateful"):
        for key, default in _STATEFUL_DEFAULTS.items():
            if out.get(key, default) != default:
                problems.append(
                    f"{node.path}.{key}: Stateful model config parameter used for non stateful model; "
                    'it needs "stateful": true'
                )
        return out
    shapes = settings.get("shape")
    shapes = shapes.values() if isinstance(shapes, dict) else [shapes]
    if settings.get("batch_size") == "auto" or "auto" in shapes:
        problems.append(
            f"{node.path}: Dynamic shape and dynamic batch size are not supported for stateful models "
            '(shape or batch_size "auto")'
        )
    return out


# --- pipelines -----------------------------------------------------------------------------------------


def _source(node: _Json) -> Source:
    keys = node.obj({"node_name", "data_item"}, {"node_name", "data_item"})
    return Source(keys["node_name"].string(), keys["data_item"].string())


def _connections(node: _Json, repeated: list[str] | None = None) -> dict[str, Source]:
    """Single-key objects {name: source}; a name given twice is an error here, or listed in `repeated`."""
    out: dict[str, Source] = {}
    for entry in node.array():
        name, src = entry.single()
        if name in out:
            if repeated is None:
                raise entry.fail(f'"{name}" is connected more than once')
            repeated.append(name)
        out[name] = _source(src)
    return out


_NODE_KEYS = {
    "name", "type", "model_name", "library_name", "version", "params", "inputs", "outputs",
    "demultiply_count", "gather_from_node",
}  # fmt: skip


def _demultiply_count(node: _Json) -> int:
    count = node.integer(-1, 10000)
    return -1 if count == 0 else count  # OVMS treats 0 as -1 (deprecated spelling)


def node_config(node: _Json) -> NodeConfig:
    keys = node.obj(_NODE_KEYS, {"name", "type", "inputs", "outputs"})
    kind = keys["type"].string()
    if kind not in ("DL model", "custom"):
        raise keys["type"].fail(f'unsupported node type "{kind}"; use "DL model" or "custom"')
    needed, forbidden = ("model_name", "library_name") if kind == "DL model" else ("library_name", "model_name")
    if needed not in keys:
        raise node.fail(f'a "{kind}" node needs "{needed}"')
    if forbidden in keys:
        raise node.fail(f'a "{kind}" node must not have "{forbidden}"')
    outputs: dict[str, str] = {}
    for entry in keys["outputs"].array():
        out = entry.obj({"data_item", "alias"}, {"data_item", "alias"})
        outputs[out["alias"].string()] = out["data_item"].string()
    given = keys["params"].value if "params" in keys else {}
    params = keys["params"].obj(set(given) if isinstance(given, dict) else set()) if "params" in keys else {}
    repeated: list[str] = []
    return NodeConfig(
        name=keys["name"].name(),
        kind=kind,
        inputs=_connections(keys["inputs"], repeated),
        outputs=outputs,
        model_name=keys["model_name"].string() if "model_name" in keys else "",
        version=keys["version"].integer(1) if "version" in keys else None,
        library_name=keys["library_name"].string() if "library_name" in keys else "",
        params={k: v.string() for k, v in params.items()},
        demultiply_count=_demultiply_count(keys["demultiply_count"]) if "demultiply_count" in keys else None,
        gather_from_node=keys["gather_from_node"].string() if "gather_from_node" in keys else None,
        repeated_inputs=tuple(repeated),
    )


def pipeline_config(node: _Json) -> PipelineConfig:
    keys = node.obj({"name", "inputs", "outputs", "nodes", "demultiply_count"}, {"name", "inputs", "outputs", "nodes"})
    return PipelineConfig(
        name=keys["name"].name(),
        inputs=tuple(i.string() for i in keys["inputs"].array()),
        outputs=_connections(keys["outputs"]),
        nodes=tuple(node_config(n) for n in keys["nodes"].array()),
        demultiply_count=_demultiply_count(keys["demultiply_count"]) if "demultiply_count" in keys else None,
    )


# --- the file ------------------------------------------------------------------------------------------

_ROOT_KEYS = {
    "model_config_list", "custom_node_library_config_list", "pipeline_config_list", "monitoring",
    "mediapipe_config_list", "custom_loader_config_list",
}  # fmt: skip


# A custom node library named "module.path:Class" or "file.py:Class" is a Python node (beyond OVMS,
# docs/pipelines.md#python-nodes).
PYTHON_NODE = re.compile(r"^(?P<module>[A-Za-z_][\w.]*|.+\.py):(?P<cls>[A-Za-z_]\w*)$")


def _library_location(base_path: str, root: Path) -> str:
    """A custom node library's location: a shared library's path, or a Python node as "module:Class" (kept as is)
    or "file.py:Class" (the file resolved like any path); relative paths resolve against the config directory."""
    python = PYTHON_NODE.match(base_path)
    if python is None:
        return str(root / base_path)
    module = python["module"]
    return f"{root / module}:{python['cls']}" if module.endswith(".py") else base_path


def parse_config(document: Any, root: Path) -> ServerConfig:
    """Validate a parsed config.json; relative paths resolve against `root` (the file's directory)."""
    keys = _Json(document, "").obj(_ROOT_KEYS, {"model_config_list"})
    warnings: list[str] = []
    models: list[ModelConfig] = []
    seen: set[str] = set()
    for entry in keys["model_config_list"].array():
        model = model_config(entry.obj({"config"}, {"config"})["config"], root)
        if model.name in seen:
            warnings.append(f'{entry.path}: model name "{model.name}" is already occupied; entry ignored')
            continue
        seen.add(model.name)
        models.append(model)
    pipelines: list[PipelineConfig] = []
    for entry in keys["pipeline_config_list"].array() if "pipeline_config_list" in keys else []:
        pipeline = pipeline_config(entry)
        if pipeline.name in seen:
            clash = "Pipeline definition with the same name already exists"
            if any(m.name == pipeline.name for m in models):
                clash = "Pipeline has the same name as model"
            warnings.append(f"{entry.path}: {clash} - {pipeline.name}; pipeline ignored")
            continue
        seen.add(pipeline.name)
        pipelines.append(pipeline)
    libraries: dict[str, str] = {}
    for entry in keys.get("custom_node_library_config_list", _Json([], "")).array():
        lib = entry.obj({"name", "base_path"}, {"name", "base_path"})
        libraries[lib["name"].name()] = _library_location(lib["base_path"].string(), root)
    for ignored in ("mediapipe_config_list", "custom_loader_config_list"):
        if keys.get(ignored) is not None and keys[ignored].array():
            warnings.append(f"{ignored}: not supported by ovserve; entries ignored")
    monitoring: dict[str, Any] = {}
    if "monitoring" in keys:
        metrics = keys["monitoring"].obj({"metrics"}, {"metrics"})["metrics"]
        fields = metrics.obj({"enable", "metrics_list"}, {"enable"})
        names = [item.string() for item in fields["metrics_list"].array()] if "metrics_list" in fields else None
        monitoring = {"metrics": {"enable": fields["enable"].boolean(), "metrics_list": names}}
    return ServerConfig(tuple(models), tuple(pipelines), libraries, monitoring, tuple(warnings))


def load_config(path: Path) -> ServerConfig:
    """Read and validate a config.json (or a directory holding one)."""
    if path.is_dir():
        path = path / "config.json"
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"Configuration file not found or cannot open: {path}: {e.strerror}") from e
    try:
        document = json.loads(data.decode("utf-8"))  # strict: json.loads(bytes) would pass bad UTF-8 through
        shown = jsonio.lone_surrogate(document)
        if shown is not None:
            raise ValueError(f'the string "{shown}" holds a lone surrogate escape, which is not Unicode')
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        if isinstance(e, json.JSONDecodeError):
            problem, where = e.msg, f"line {e.lineno} column {e.colno}"
        else:
            problem, where = f"not UTF-8 ({e.reason})", f"byte {e.start}"
        raise ConfigError(f"The file is not valid json: {path}: {problem} at {where}") from e
    except RecursionError as e:
        raise ConfigError(f"The file is not valid json: {path}: nested too deeply") from e
    except ValueError as e:
        raise ConfigError(f"The file is not valid json: {path}: {e}") from e
    try:
        config = parse_config(document, path.parent.resolve())
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e
    return replace(config, source=path, digest=hashlib.md5(data).hexdigest())


def single_model_config(name: str, base_path: Path | str, settings: Mapping[str, Any]) -> ServerConfig:
    """The ServerConfig of CLI single-model mode; `settings` holds config.json-style keys from flags."""
    document = {"model_config_list": [{"config": {"name": name, "base_path": str(base_path), **settings}}]}
    return parse_config(document, Path.cwd())
