"""Property test of live reloads (issue 10, row 14): a mutated config.json reloaded on a serving server answers one of
the spec's reload forms (docs/apis.md#config-api) and never a traceback; the valid file restored afterwards serves
again, every time.

OVSERVE_FUZZ_EXAMPLES sets the number of examples (`make fuzz` runs thousands); OVSERVE_FUZZ_SURVEY=1 keeps going
after a failure (on a fresh server) and ends with every kind of failure seen, instead of shrinking the first one."""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import models
import numpy as np
import pytest
from conftest import NODES, RunningServer
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("OVSERVE_FUZZ_EXAMPLES", "200"))
SURVEY = os.environ.get("OVSERVE_FUZZ_SURVEY", "") == "1"
SEED = os.environ.get("OVSERVE_FUZZ_SEED", "")  # another sequence of examples than the fixed one

RELOAD_TEXTS = {  # docs/apis.md#config-api: every text a failing POST /v1/config/reload may answer
    "Reloading config file failed. Check server logs for more info.",
    "Config file not found or cannot open.",
    "Reloading models versions failed. Check server logs for more info.",
}
ERROR_STATUSES = {400, 404, 412, 500}  # a reload's error takes the HTTP status of the load's first failure


def valid_document() -> dict[str, Any]:
    """Two models and a pipeline demultiplexing its request through both, then a Python custom node per branch."""
    model = {"plugin_config": models.F32}
    return {
        "model_config_list": [
            {"config": {"name": "adder", "base_path": "adder", **model}},
            {"config": {"name": "scaler", "base_path": "scaler", "nireq": 2, **model}},
        ],
        "custom_node_library_config_list": [{"name": "argmax", "base_path": "my_nodes.py:ArgMaxNode"}],
        "pipeline_config_list": [
            {
                "name": "chain",
                "inputs": ["x"],
                "demultiply_count": -1,
                "nodes": [
                    {
                        "name": "first",
                        "type": "DL model",
                        "model_name": "adder",
                        "inputs": [{"x": {"node_name": "request", "data_item": "x"}}],
                        "outputs": [{"data_item": "y", "alias": "added"}],
                    },
                    {
                        "name": "second",
                        "type": "DL model",
                        "model_name": "scaler",
                        "inputs": [{"x": {"node_name": "first", "data_item": "added"}}],
                        "outputs": [{"data_item": "y", "alias": "scaled"}],
                    },
                    {
                        "name": "best",
                        "type": "custom",
                        "library_name": "argmax",
                        "inputs": [{"scores": {"node_name": "second", "data_item": "scaled"}}],
                        "outputs": [{"data_item": "labels", "alias": "labels"}],
                    },
                ],
                "outputs": [
                    {"y": {"node_name": "second", "data_item": "scaled"}},
                    {"label": {"node_name": "best", "data_item": "labels"}},
                ],
            }
        ],
    }


VALID = valid_document()
SHAPE = (1, 1, 4)


def adder(x: np.ndarray) -> np.ndarray:
    return (x + 1) * 2


def scaler(x: np.ndarray) -> np.ndarray:
    return (x - 1) * 3


# --- mutations over the document tree ------------------------------------------------------------------------


def _strings(value: Any) -> Iterator[str]:
    """Every key and string in a JSON document: names, paths, node references to graft elsewhere."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


TEXTS = sorted(set(_strings(VALID)))
KEYS = sorted(
    set(_strings(VALID))
    | {
        "batch_size", "shape", "layout", "model_version_policy", "target_device", "allow_cache", "stateful",
        "max_queue_size", "idle_sequence_cleanup", "low_latency_transformation", "max_sequence_number",
        "custom_loader_options", "graph_path", "subconfig", "version", "params", "gather_from_node", "all",
        "latest", "specific", "versions", "num_versions", "monitoring", "metrics", "enable", "metrics_list",
        "mediapipe_config_list", "custom_loader_config_list", "DEVICE_PROPERTIES", "NUM_STREAMS",
        "PERFORMANCE_HINT", "CPU_THROUGHPUT_STREAMS", "unknown",
    }
)  # fmt: skip
ODD_STRINGS = [
    "", " ", "auto", "-1", "0", "(1,1,4)", "(1,1,-1)", "(1,2:3,4)", "(3:1)", "[1,4]", "1:0", "N...C", "NCHW:NHWC",
    ".", "..", "../adder", "/", "/nonexistent/model", "adder/1", "adder/1/model.xml", "config.json", "my_nodes.py",
    "s3://", "s3://bucket/../x", "gs://bucket/model", "~no_such_user_here/model", "my_nodes.py:CropNode",
    "my_nodes.py:Missing", "missing.py:Node", "no_such_module_here:Node", "request", "response", "custom",
    "DL model", "CPU", "GPU", "NPU", "HETERO:CPU", "AUTO", "THROUGHPUT", "f32", "\u0000", "\n", "\t",
    "\ud800", "x\" : {}, \"injected", "\u00e9t\u00e9", "\u6a21\u578b", "\U0001f600", "a" * 5000, "%s%n", "${x}",
]  # fmt: skip
HAZARDS = ["", "\u0000", "\ud800", "/", "..", "request", "response", "a" * 5000]  # the likeliest trouble
NUMBERS = [
    0, 1, -1, 2, 3, 100000, 100001, 10000, 10001, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30,
    1.5, -0.0, 1e308, float("inf"), float("-inf"), float("nan"),
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(NUMBERS),
    st.integers(-3, 10),
    st.sampled_from(ODD_STRINGS),
    st.sampled_from(KEYS),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)

Path_ = tuple[str | int, ...]


def _paths(value: Any, path: Path_ = ()) -> Iterator[Path_]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*path, index))


def _at(document: Any, path: Path_) -> Any:
    for step in path:
        document = document[step]
    return document


# Weighted towards edits the schema may still accept (references, grafts, deletions), which reach the manager.
OPS = ["reference", "odd"] * 4 + ["graft"] * 3 + ["duplicate", "delete"] * 2 + ["replace", "add", "rename"]


def _mutate(draw: Any, document: Any) -> tuple[Any, str]:
    """One structural edit somewhere in the tree; returns the new document and what was done."""
    path = draw(st.sampled_from(list(_paths(document))))
    op = draw(st.sampled_from(OPS))
    where = "/".join(map(str, path)) or "<root>"
    if op == "replace" or (not path and op in ("delete", "rename")):
        new = draw(values)
        if not path:
            return new, f"root := {new!r:.80}"
        _at(document, path[:-1])[path[-1]] = new
        return document, f"{where} := {new!r:.80}"
    if op == "graft":  # another subtree of the valid document of the same type in this place
        alike = [p for p in _paths(VALID) if type(_at(VALID, p)) is type(_at(document, path))]
        source = draw(st.sampled_from(alike or list(_paths(VALID))))
        new = copy.deepcopy(_at(VALID, source))
        if not path:
            return new, f"root := valid {'/'.join(map(str, source))}"
        _at(document, path[:-1])[path[-1]] = new
        return document, f"{where} := valid {'/'.join(map(str, source))}"
    if op == "reference":  # a string (name, reference, path) swapped for another one of the document
        texts = [p for p in _paths(document) if p and isinstance(_at(document, p), str)]
        if texts:
            path = draw(st.sampled_from(texts))
            new = draw(st.sampled_from(TEXTS))
            _at(document, path[:-1])[path[-1]] = new
            return document, f"{'/'.join(map(str, path))} := {new!r}"
    if op == "odd":  # a value swapped for an odd one of its type: the schema still passes, the manager gets it
        leaves = [p for p in _paths(document) if p and not isinstance(_at(document, p), (dict, list))]
        if leaves:
            path = draw(st.sampled_from(leaves))
            old = _at(document, path)
            if isinstance(old, str):
                new = draw(st.sampled_from(HAZARDS) | st.sampled_from(ODD_STRINGS) | st.sampled_from(TEXTS))
            else:
                new = draw(st.sampled_from(NUMBERS) | st.integers(-2, 3) | st.booleans() | st.none())
            _at(document, path[:-1])[path[-1]] = new
            return document, f"{'/'.join(map(str, path))} := {new!r:.80}"
    target = _at(document, path)
    if op == "delete" and path:
        del _at(document, path[:-1])[path[-1]]
        return document, f"delete {where}"
    if op == "add" and isinstance(target, dict):
        key = draw(st.sampled_from(KEYS) | st.sampled_from(ODD_STRINGS))
        target[key] = draw(values)
        return document, f"{where}[{key!r:.40}] := {target[key]!r:.80}"
    if op == "add" and isinstance(target, list):
        index = draw(st.integers(0, len(target)))
        target.insert(index, draw(values))
        return document, f"{where} insert at {index}: {target[index]!r:.80}"
    if op == "rename" and path and isinstance(path[-1], str):
        parent = _at(document, path[:-1])
        key = draw(st.sampled_from(KEYS) | st.sampled_from(ODD_STRINGS))
        parent[key] = parent.pop(path[-1])
        return document, f"rename {where} to {key!r:.40}"
    if op == "duplicate" and path and isinstance(path[-1], int):  # duplicate names: models, nodes, pipelines
        parent = _at(document, path[:-1])
        parent.append(copy.deepcopy(target))
        return document, f"duplicate {where}"
    return document, f"{op} {where}: not applicable"


TEXT_EDITS = ["none"] * 20 + ["truncate", "garbage", "bad_utf8", "deep", "huge_number", "empty", "bom"]


@st.composite
def mutated_configs(draw: Any) -> tuple[bytes, list[str]]:
    """A config.json's bytes: the valid document after a few edits of its tree, and maybe of its text."""
    document: Any = copy.deepcopy(VALID)
    done = []
    for _ in range(draw(st.integers(1, 3))):
        document, what = _mutate(draw, document)
        done.append(what)
    text = json.dumps(document, indent=1).encode()
    edit = draw(st.sampled_from(TEXT_EDITS))
    if edit == "truncate":
        text = text[: draw(st.integers(0, len(text) - 1))]
    elif edit == "garbage":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from([b",", b"}", b"]", b'"', b"\\", b"\x00", b"/*", b"NaN"])) + text[at:]
    elif edit == "bad_utf8":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from([b"\xff", b"\xed\xa0\x80", b"\xc3"])) + text[at:]
    elif edit == "deep":
        depth = draw(st.sampled_from([50, 5000, 100000]))
        text = text[:-1] + b', "pipeline_config_list": ' + b"[" * depth + b"]" * depth + b"}"
    elif edit == "huge_number":
        text = text[:-1] + b', "x": ' + b"9" * draw(st.sampled_from([20, 400, 5000])) + b"}"
    elif edit == "empty":
        text = b""
    elif edit == "bom":
        text = b"\xef\xbb\xbf" + text
    if edit != "none":
        done.append(f"text: {edit}")
    return text, done


# --- the property --------------------------------------------------------------------------------------------


class Tracebacks(logging.Handler):
    """Log records that carry an exception: a failure nobody foresaw."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info is not None or "Traceback" in record.getMessage():
            self.seen.append(f"{record.getMessage()} ({record.exc_info[1]!r})" if record.exc_info else record.msg)


def check_reload_answer(status: int, body: bytes) -> None:
    """One of docs/apis.md#config-api's forms: the servables' statuses (200/201) or an error object with a reload
    text."""
    try:
        answer = json.loads(body)
    except ValueError as e:
        raise AssertionError(f"reload answered {status} with a body that is not JSON: {body[:200]!r}") from e
    if status in (200, 201):
        assert isinstance(answer, dict), answer
        for name, servable in answer.items():
            assert isinstance(servable["model_version_status"], list), (name, servable)
        return
    assert status in ERROR_STATUSES, f"reload answered {status}: {body[:300]!r}"
    assert isinstance(answer, dict) and set(answer) <= {"error", "detail"}, f"{status}: {body[:300]!r}"
    assert answer.get("error") in RELOAD_TEXTS, f"{status}: error text not a reload text: {body[:300]!r}"
    assert isinstance(answer.get("detail", ""), str), body[:300]
    assert body.startswith(b'{\n\t"error": '), body[:300]


def check_serving(server: RunningServer) -> None:
    """The valid configuration serves: each model and the pipeline answer right, /v1/config is JSON."""
    x = np.arange(4, dtype=np.float32).reshape(SHAPE)
    np.testing.assert_array_equal(server.predict("adder", {"x": x})["y"], adder(x))
    np.testing.assert_array_equal(server.predict("scaler", {"x": x})["y"], scaler(x))
    batch = np.stack([x, x[..., ::-1].copy()])
    out = server.predict("chain", {"x": batch})
    np.testing.assert_array_equal(out["y"], scaler(adder(batch)))
    np.testing.assert_array_equal(out["label"], scaler(adder(batch)).argmax(axis=-1).astype(np.int32))
    status, _, body = server.http("GET", "/v1/config")
    assert status == 200, body[:300]
    states = {name: [v["state"] for v in s["model_version_status"]] for name, s in json.loads(body).items()}
    for name in ("adder", "scaler", "chain"):
        assert states[name][-1] == "AVAILABLE", states


OUTCOMES: dict[int, int] = {}  # how the mutated reloads were answered, by HTTP status (shown by the survey)


def one_round(server: RunningServer, config: Path, texts: list[bytes], tracebacks: Tracebacks) -> None:
    """Reload each mutated file in turn (what one leaves behind meets the next), then the valid one."""
    for text in texts:
        config.write_bytes(text)
        status, _, body = server.http("POST", "/v1/config/reload")
        OUTCOMES[status] = OUTCOMES.get(status, 0) + 1
        check_reload_answer(status, body)
        assert not tracebacks.seen, f"traceback in the log after the mutated reload: {tracebacks.seen[0]}"
    models.write_config(config.parent, VALID)
    status, _, body = server.http("POST", "/v1/config/reload")
    assert status in (200, 201), f"restoring the valid config answered {status}: {body[:400]!r}"
    check_reload_answer(status, body)
    check_serving(server)
    assert not tracebacks.seen, f"traceback in the log after the restore: {tracebacks.seen[0]}"


def prepare(repository: Path) -> Path:
    models.save(models.add_mul(SHAPE, add=1, mul=2), repository, "adder")
    models.save(models.add_mul(SHAPE, add=-1, mul=3), repository, "scaler")
    shutil.copy(NODES / "python_nodes.py", repository / "my_nodes.py")
    return models.write_config(repository, VALID)


@pytest.mark.timeout(max(300, EXAMPLES * 3))
def test_mutated_configs_reload_cleanly_and_the_valid_one_always_serves_again(tmp_path: Path) -> None:
    config = prepare(tmp_path)
    tracebacks = Tracebacks()
    logging.getLogger("ovserve").addHandler(tracebacks)
    server = RunningServer(config)
    failures: dict[str, list[str]] = {}
    try:
        check_serving(server)

        @seed(int(SEED or 0))
        @settings(
            max_examples=EXAMPLES,
            derandomize=not SEED,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(st.lists(mutated_configs(), min_size=1, max_size=3))
        def reload_then_restore(mutations: list[tuple[bytes, list[str]]]) -> None:
            nonlocal server
            texts, done = [m[0] for m in mutations], [m[1] for m in mutations]
            try:
                one_round(server, config, texts, tracebacks)
            except BaseException as e:
                tracebacks.seen.clear()
                server.stop()  # what the failure left behind must not spoil the next examples (nor the shrinking)
                models.write_config(tmp_path, VALID)
                server = RunningServer(config)
                if not SURVEY:
                    raise
                kind = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
                failures.setdefault(kind, []).append(f"{done} {[t[:120] for t in texts]!r}")

        reload_then_restore()
    finally:
        server.stop()
        logging.getLogger("ovserve").removeHandler(tracebacks)
    if SURVEY:
        print(f"\n{EXAMPLES} examples; mutated reloads answered {dict(sorted(OUTCOMES.items()))}")
    kinds = sorted(failures.items(), key=lambda kind: -len(kind[1]))
    report = "\n".join(f"{len(seen)} x {kind}\n    e.g. {seen[0]}" for kind, seen in kinds)
    assert not failures, f"{sum(map(len, failures.values()))} of {EXAMPLES} examples failed:\n{report}"
