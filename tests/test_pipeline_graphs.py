"""DAG shapes beyond the seed: nested and gathered demultiplexers, several inputs and outputs, shared models and
inputs, pinned versions, docs/pipelines.md#pipeline-metadata's worked examples, every docs/pipelines.md#load-time-rules
validation error, and many concurrent requests."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import models
import numpy as np
import pytest
from conftest import RunningServer, rpc_error
from test_custom_nodes import by_hand, counters, image_with, pipeline_config, save_models

from ovserve import tfs
from ovserve._proto.tensorflow.core.framework import types_pb2
from ovserve._proto.tensorflow_serving.apis import predict_pb2
from ovserve.errors import ServingError
from ovserve.pipeline_run import split_count

DT_FLOAT = types_pb2.DataType.DT_FLOAT
X = np.arange(4, dtype=np.float32).reshape(1, 4)


def node(name: str, model: str, inputs: dict[str, str], outputs: dict[str, str], **extra: Any) -> dict[str, Any]:
    """A DL node; inputs as {input: "source.item"}, outputs as {alias: data_item}."""
    return {
        "name": name,
        "model_name": model,
        "type": "DL model",
        "inputs": [{i: dict(zip(("node_name", "data_item"), s.split("."), strict=True))} for i, s in inputs.items()],
        "outputs": [{"data_item": d, "alias": a} for a, d in outputs.items()],
        **extra,
    }


def pipeline(name: str, inputs: list[str], nodes: list[dict[str, Any]], outputs: dict[str, str], **extra: Any) -> Any:
    out = [{o: dict(zip(("node_name", "data_item"), s.split("."), strict=True))} for o, s in outputs.items()]
    return {"name": name, "inputs": inputs, "nodes": nodes, "outputs": out, **extra}


MODELS = {
    "rep3": lambda: models.replicate(copies=3, shape=(1, 4)),  # (1,4) -> (3,1,4): x + i
    "rep2": lambda: models.replicate(copies=2, shape=(1, 4)),  # (1,4) -> (2,1,4): x + j
    "scale": lambda: models.add_mul(shape=(1, 4)),  # (x + 1) * 2
    "sum3": lambda: models.reduce_sum(3),  # (3,1,4) -> (1,4)
    "sum2": lambda: models.reduce_sum(2),  # (2,1,4) -> (1,4)
    "pair": lambda: models.pair(),  # x + z
    "half": lambda: models.add_mul(shape=(1, 4), dtype=np.float16),
    "twoout": lambda: models.two_outputs(3),
    "combine": lambda: models.combine(5),
}


def serve_graphs(repository: Path, serve: Any, pipelines: list[dict[str, Any]], **extra_models: Any) -> RunningServer:
    for name, build in MODELS.items():
        models.save(build(), repository, name)
    configs = [{"config": {"name": name, "base_path": name, "plugin_config": models.F32}} for name in MODELS]
    configs += [{"config": {"name": name, "base_path": name, **c}} for name, c in extra_models.items()]
    return serve({"model_config_list": configs, "pipeline_config_list": pipelines})  # type: ignore[no-any-return]


def scale(x: np.ndarray) -> np.ndarray:
    return (x + 1) * 2


def test_nested_fixed_demultiplexers_3x2(repository: Path, serve: Any) -> None:
    nodes = [
        node("A", "rep3", {"x": "request.x"}, {"a": "crops"}, demultiply_count=3),
        node("B", "rep2", {"x": "A.a"}, {"b": "crops"}, demultiply_count=2),
        node("C", "scale", {"x": "B.b"}, {"c": "y"}),
    ]
    p = pipeline("nested", ["x"], nodes, {"y": "C.c", "from_a": "A.a", "from_b": "B.b"})
    server = serve_graphs(repository, serve, [p])
    inputs, outputs = server.metadata("nested")
    assert inputs == {"x": ([1, 4], DT_FLOAT)}
    assert outputs == {
        "y": ([3, 2, 1, 4], DT_FLOAT),
        "from_a": ([3, 1, 4], DT_FLOAT),
        "from_b": ([3, 2, 1, 4], DT_FLOAT),
    }
    result = server.predict("nested", {"x": X})
    b = np.array([[X + i + j for j in range(2)] for i in range(3)])  # (3,2,1,4)
    np.testing.assert_array_equal(result["from_a"], np.array([X + i for i in range(3)]))
    np.testing.assert_array_equal(result["from_b"], b)
    np.testing.assert_array_equal(result["y"], scale(b))


def test_gather_from_node_in_the_middle_of_a_graph(repository: Path, serve: Any) -> None:
    nodes = [
        node("A", "rep3", {"x": "request.x"}, {"a": "crops"}, demultiply_count=3),
        node("C", "scale", {"x": "A.a"}, {"c": "y"}),
        node("D", "sum3", {"x": "C.c"}, {"d": "y"}, gather_from_node="A"),
        node("E", "scale", {"x": "D.d"}, {"e": "y"}),
    ]
    server = serve_graphs(repository, serve, [pipeline("middle", ["x"], nodes, {"y": "E.e"})])
    assert server.metadata("middle") == ({"x": ([1, 4], DT_FLOAT)}, {"y": ([1, 4], DT_FLOAT)})
    expected = scale(sum(scale(X + i) for i in range(3)))
    np.testing.assert_array_equal(server.predict("middle", {"x": X})["y"], expected)


def test_inner_gather_of_nested_demultiplexers_leaves_the_outer_to_the_response(repository: Path, serve: Any) -> None:
    nodes = [
        node("A", "rep3", {"x": "request.x"}, {"a": "crops"}, demultiply_count=3),
        node("B", "rep2", {"x": "A.a"}, {"b": "crops"}, demultiply_count=2),
        node("C", "scale", {"x": "B.b"}, {"c": "y"}),
        node("D", "sum2", {"x": "C.c"}, {"d": "y"}, gather_from_node="B"),
    ]
    server = serve_graphs(repository, serve, [pipeline("inner", ["x"], nodes, {"y": "D.d"})])
    assert server.metadata("inner")[1] == {"y": ([3, 1, 4], DT_FLOAT)}
    expected = np.array([sum(scale(X + i + j) for j in range(2)) for i in range(3)])
    np.testing.assert_array_equal(server.predict("inner", {"x": X})["y"], expected)


def test_spec_worked_examples_2_3_4(repository: Path, serve: Any) -> None:
    a = node("A", "twoout", {"x": "request.x"}, {"output_A": "output_A", "output_B": "output_B"}, demultiply_count=3)
    b = node("B", "combine", {"a": "A.output_A", "b": "A.output_B"}, {"output": "output"})
    example2 = pipeline("example2", ["x"], [a, b], {"out": "B.output"})
    c = node("C", "sum3", {"x": "B.output"}, {"y": "y"}, gather_from_node="A")
    example3_models = {"sum3of5": {"plugin_config": models.F32}}
    models.save(models.reduce_sum(3, (1, 5)), repository, "sum3of5")
    c["model_name"] = "sum3of5"
    example3 = pipeline("example3", ["x"], [a, b, c], {"out": "C.y"})
    example4 = pipeline("example4", ["x"], [a, b], {"out": "B.output", "raw": "A.output_A"})
    server = serve_graphs(repository, serve, [example2, example3, example4], **example3_models)
    assert server.metadata("example2")[1] == {"out": ([3, 1, 5], DT_FLOAT)}
    assert server.metadata("example3")[1] == {"out": ([1, 5], DT_FLOAT)}  # C's own output shape
    assert server.metadata("example4")[1] == {"out": ([3, 1, 5], DT_FLOAT), "raw": ([3, 1, 10, 10], DT_FLOAT)}
    total = X.sum()  # every element of output_A and output_B; B adds 100 + 52 of them
    np.testing.assert_allclose(server.predict("example2", {"x": X})["out"], np.full((3, 1, 5), 152 * total))
    np.testing.assert_allclose(server.predict("example3", {"x": X})["out"], np.full((1, 5), 3 * 152 * total))
    np.testing.assert_allclose(server.predict("example4", {"x": X})["raw"], np.full((3, 1, 10, 10), total))


def test_several_inputs_and_outputs_shared_models_and_inputs_and_the_request_as_a_source(
    repository: Path, serve: Any
) -> None:
    nodes = [
        node("s1", "scale", {"x": "request.x"}, {"y": "y"}),
        node("s2", "scale", {"x": "request.x"}, {"y": "y"}),  # one model, two nodes; one input, two nodes
        node("join", "pair", {"x": "s1.y", "z": "request.z"}, {"y": "y"}),
        node("again", "scale", {"x": "s2.y"}, {"y": "y"}),
    ]
    p = pipeline("many", ["x", "z"], nodes, {"joined": "join.y", "twice": "again.y", "echo": "request.z"})
    server = serve_graphs(repository, serve, [p])
    inputs, outputs = server.metadata("many")
    assert inputs == {"x": ([1, 4], DT_FLOAT), "z": ([1, 4], DT_FLOAT)}
    assert outputs["joined"] == ([1, 4], DT_FLOAT) and outputs["echo"] == ([], types_pb2.DataType.DT_INVALID)
    z = np.full((1, 4), 10, np.float32)
    result = server.predict("many", {"x": X, "z": z})
    np.testing.assert_array_equal(result["joined"], scale(X) + z)
    np.testing.assert_array_equal(result["twice"], scale(scale(X)))
    np.testing.assert_array_equal(result["echo"], z)


def test_an_input_only_the_response_takes_is_listed_unspecified_and_passed_through(
    repository: Path, serve: Any
) -> None:
    """Spec docs/pipelines.md#pipeline-metadata: a pipeline input connected only to the response has an unspecified info
    (DT_INVALID, no shape); it is still an input: a request sends it and gets it back (it was left out: refused, or a
    500 without it)."""
    nodes = [node("a", "scale", {"x": "request.x"}, {"y": "y"})]
    p = pipeline("echo", ["x", "z"], nodes, {"y": "a.y", "echo": "request.z"})
    server = serve_graphs(repository, serve, [p])
    inputs, _ = server.metadata("echo")
    assert inputs == {"x": ([1, 4], DT_FLOAT), "z": ([], types_pb2.DataType.DT_INVALID)}
    z = np.arange(6, dtype=np.int32).reshape(2, 3)
    result = server.predict("echo", {"x": X, "z": z})
    np.testing.assert_array_equal(result["echo"], z)
    np.testing.assert_array_equal(result["y"], scale(X))
    error = rpc_error(lambda: server.predict("echo", {"x": X}))
    assert (error.code(), error.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Invalid number of inputs - Expected: 2; Actual: 1",
    )


def test_a_node_pinned_to_a_model_version(repository: Path, serve: Any) -> None:
    models.save(models.add_mul(add=1, mul=1), repository, "versions", version=1)
    models.save(models.add_mul(add=100, mul=1), repository, "versions", version=2)
    nodes = [node("old", "versions", {"x": "request.x"}, {"y": "y"}, version=1)]
    latest = [node("new", "versions", {"x": "request.x"}, {"y": "y"})]
    server = serve_graphs(
        repository,
        serve,
        [pipeline("pinned", ["x"], nodes, {"y": "old.y"}), pipeline("latest", ["x"], latest, {"y": "new.y"})],
        versions={"model_version_policy": {"all": {}}},
    )
    np.testing.assert_array_equal(server.predict("pinned", {"x": X})["y"], X + 1)
    np.testing.assert_array_equal(server.predict("latest", {"x": X})["y"], X + 100)


# --- validation (docs/pipelines.md#load-time-rules)
# -------------------------------------------------------------------------------------

R = "request.x"


def n(name: str, model: str, source: str = R, alias: str = "y", item: str = "y", **extra: Any) -> dict[str, Any]:
    """A one-input DL node for the validation table: input x from `source`, output `item` as `alias`."""
    return node(name, model, {"x": source}, {alias: item}, **extra)


DEMUX3 = n("a", "rep3", alias="c", item="crops", demultiply_count=3)
CUSTOM = {"name": "a", "type": "custom", "library_name": "nope", "inputs": [{"x": {"node_name": "request",
          "data_item": "x"}}], "outputs": [{"data_item": "y", "alias": "y"}]}  # fmt: skip
TWICE = {**n("a", "scale"), "inputs": [{"x": {"node_name": "request", "data_item": "x"}}] * 2}
CASES: list[tuple[str, list[dict[str, Any]], dict[str, str], dict[str, Any], str]] = [
    ("same node name twice", [n("a", "scale"), n("a", "scale")], {"y": "a.y"}, {},
     "Pipeline definition has multiple nodes with the same name - a"),
    ("a node named request", [n("request", "scale")], {"y": "request.y"}, {},
     "Pipeline definition has multiple nodes with the same name - request"),
    ("dynamic and another demultiplexer",
     [n("a", "rep3", alias="c", item="crops", demultiply_count=-1), n("b", "scale", "a.c")], {"y": "b.y"},
     {"demultiply_count": 2}, "Functionality not implemented - pipeline p has a dynamic demultiplexer and another one"),
    ("missing model", [n("a", "nope")], {"y": "a.y"}, {},
     "Pipeline definition has reference to missing model - p: node a uses nope"),
    ("missing model version", [n("a", "scale", version=7)], {"y": "a.y"}, {},
     "Pipeline definition has reference to missing model - p: node a uses scale version 7"),
    ("auto batch model", [n("a", "auto")], {"y": "a.y"}, {},
     "Value of provided parameter is forbidden - p: node a uses model auto"),
    ("missing library", [CUSTOM], {"y": "a.y"}, {}, "Pipeline refers to incorrect library - p: node a uses nope"),
    ("demultiplexing a 2-D output", [n("a", "scale", demultiply_count=3)], {"y": "a.y"}, {},
     "Pipeline has not enough shape dimensions to demultiply - a output y has shape (1,4)"),
    ("count against first dimension", [n("a", "rep3", alias="c", item="crops", demultiply_count=2)], {"y": "a.c"}, {},
     "Demultiplication count does not match tensor first dimension - a output c: demultiply_count 2"),
    ("gather from a missing node", [n("a", "scale", gather_from_node="zz")], {"y": "a.y"}, {},
     "Gather node refers to not existing node - a gathers from zz"),
    ("gather from a plain node", [n("a", "scale"), n("b", "scale", "a.y", gather_from_node="a")], {"y": "b.y"}, {},
     "Gather node refers to node that isn't demultiplexer - b gathers from a"),
    ("gather from the request", [n("a", "sum3", gather_from_node="request")], {"y": "a.y"}, {"demultiply_count": 3},
     "Gathering from entry node is not allowed - a gathers from request"),
    ("missing source node", [n("a", "scale", "zz.y")], {"y": "a.y"}, {},
     "Pipeline definition has reference to missing node - a uses zz"),
    ("response as a source", [n("a", "scale", "response.y")], {"y": "a.y"}, {},
     "Pipeline definition has response node used as dependency node - a"),
    ("no such model input", [node("a", "scale", {"q": R}, {"y": "y"})], {"y": "a.y"}, {},
     "Pipeline definition has connection to non existing model input - a: q"),
    ("an input connected twice", [TWICE], {"y": "a.y"}, {},
     "Pipeline definition has multiple connections to the same input of underlying model - a: x"),
    ("undeclared alias", [n("a", "scale"), n("b", "scale", "a.q")], {"y": "b.y"}, {},
     "Pipeline definition has reference to missing data source - b input x takes a.q"),
    ("not a pipeline input", [n("a", "scale", "request.q")], {"y": "a.y"}, {},
     "Pipeline definition has reference to missing data source - a input x takes request.q, not a pipeline input"),
    ("alias of no model output", [n("a", "scale", item="nothing")], {"y": "a.y"}, {},
     "Pipeline definition has reference to missing model output - a (scale) has no output nothing"),
    ("shapes between nodes", [n("a", "rep3", alias="c", item="crops"), n("b", "scale", "a.c")], {"y": "b.y"}, {},
     "Invalid input shape - Node: b input: x Expected: (1,4); Actual: (3,1,4)"),
    ("precisions between nodes", [n("a", "scale"), n("b", "half", "a.y")], {"y": "b.y"}, {},
     "Invalid input precision - Node: b input: x Expected: FP16; Actual: FP32"),
    ("unconnected model input", [n("a", "pair")], {"y": "a.y"}, {},
     "Pipeline definition does not have connections for all inputs of underlying models - a (pair): z"),
    ("cycle", [n("a", "scale", "b.y"), n("b", "scale", "a.y")], {"y": "b.y"}, {},
     "Pipeline definition contains a cycle - "),
    ("unconnected node", [n("a", "scale"), n("b", "scale")], {"y": "a.y"}, {},
     "Pipeline definition has unconnected nodes - b"),
    ("LIFO: gathering the outer first",
     [DEMUX3, n("b", "rep3", "a.c", "c", "crops", demultiply_count=3), n("c", "sum3", "b.c", gather_from_node="a")],
     {"y": "c.y"}, {},
     "Demultiplexer and gather nodes are not in LIFO order - c gathers from a; the innermost open demultiplexer is b"),
    ("LIFO: inputs of two levels", [DEMUX3, node("b", "pair", {"x": "a.c", "z": R}, {"y": "y"})], {"y": "b.y"}, {},
     "Demultiplexer and gather nodes are not in LIFO order - b takes inputs from different demultiplexing levels"),
    ("one input, two metadata", [n("a", "scale"), n("b", "sum3")], {"y": "a.y", "z": "b.y"}, {},
     "Multiple nodes connected to the same pipeline input require different tensor metadata - x: FP32 (1,4) and "
     "FP32 (3,1,4)"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "nodes", "outputs", "extra", "message"), CASES, ids=[c[0] for c in CASES])
def test_validation_errors_in_spec_order_keep_everything_else_serving(
    repository: Path, serve: Any, case: str, nodes: Any, outputs: Any, extra: Any, message: str
) -> None:
    good = pipeline("good", ["x"], [node("a", "scale", {"x": R}, {"y": "y"})], {"y": "a.y"})
    models.save(models.add_mul(), repository, "auto")
    server = serve_graphs(
        repository, serve, [pipeline("p", ["x"], nodes, outputs, **extra), good], auto={"batch_size": "auto"}
    )
    entry = server.server.manager.pipelines["p"]
    assert entry.status().state == "LOADING" and entry.status().error_code == "FAILED_PRECONDITION"
    assert entry.error.startswith(message), entry.error
    error = rpc_error(lambda: server.predict("p", {"x": X}))
    assert error.code() == grpc.StatusCode.UNAVAILABLE and message in (error.details() or "")
    np.testing.assert_array_equal(server.predict("good", {"x": X})["y"], scale(X))


def test_a_pipeline_named_like_a_model_is_not_stored(repository: Path, serve: Any) -> None:
    clash = pipeline("scale", ["x"], [node("a", "scale", {"x": R}, {"y": "y"})], {"y": "a.y"})
    server = serve_graphs(repository, serve, [clash])
    assert "scale" not in server.server.manager.pipelines
    assert any("Pipeline has the same name as model - scale" in w for w in server.server.config.warnings)
    np.testing.assert_array_equal(server.predict("scale", {"x": X})["y"], scale(X))  # the model


# --- concurrency ------------------------------------------------------------------------------------------------


def test_hundreds_of_concurrent_requests_with_random_sizes_are_exact_and_leave_nothing_behind(
    repository: Path, serve: Any, libraries: dict[str, Path]
) -> None:
    server = serve_both_pipelines(repository, serve, libraries)
    loop_tasks = server.call(_task_count())
    failures: list[BaseException] = []

    def client(number: int) -> None:
        rng = random.Random(number)
        try:
            for i in range(40):
                if i % 2:
                    n = rng.randint(1, 24)
                    images = np.random.default_rng(number * 100 + i).uniform(0, 255, (n, 1, 3, 4, 4))
                    out = server.predict("resnet50DAG", {"0": images.astype(np.float32)})["1463"]
                    np.testing.assert_allclose(out, models.reference_classifier(images), rtol=1e-4, atol=1e-2)
                else:
                    bright = [rng.random() < 0.6 for _ in range(3)] + [True]
                    image = image_with(bright, number * 100 + i)
                    got = server.predict("find_and_classify", {"image": image})
                    np.testing.assert_array_equal(got["labels"], by_hand(image)["labels"])
        except BaseException as e:  # reported by the test below
            failures.append(e)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not failures, failures[0]
    assert_nothing_left(server, loop_tasks, libraries)


def serve_both_pipelines(repository: Path, serve: Any, libraries: dict[str, Path]) -> RunningServer:
    """The custom-node pipeline (find_and_classify) and the seed guide's (resnet50DAG) on one server."""
    save_models(repository)
    models.save(models.classifier(), repository, "resnet")
    document = pipeline_config(str(libraries["crop"]), str(libraries["argmax"]))
    seed = models.seed_config()
    document["model_config_list"] += seed["model_config_list"]
    document["pipeline_config_list"] += seed["pipeline_config_list"]
    return serve(document)


def assert_nothing_left(server: RunningServer, loop_tasks: int, libraries: dict[str, Path]) -> None:
    """No task left on the server's loop, every infer request back in its pool, every library buffer released."""
    assert server.call(_task_count()) == loop_tasks
    for name in ("detector", "classifier", "resnet"):
        version = server.server.manager.models[name].versions[1].servable
        assert len(version._pool._idle) == version.nireq and not version._pool._waiters
    assert counters(libraries["crop"]) == (0, 1) and counters(libraries["argmax"]) == (0, 1)


async def _task_count() -> int:
    await asyncio.sleep(0.05)  # let finished requests' tasks be collected
    return len(asyncio.all_tasks()) - 1  # not counting this one


def test_clients_that_give_up_mid_request_leave_nothing_behind(
    repository: Path, serve: Any, libraries: dict[str, Path]
) -> None:
    """gRPC deadlines of 0.2-4 ms and HTTP clients that hang up cancel requests at every stage of both pipelines;
    afterwards every task, infer request and library buffer is back and the next answers are exact."""
    server = serve_both_pipelines(repository, serve, libraries)
    loop_tasks = server.call(_task_count())
    predict = server.channel.unary_unary(
        "/tensorflow.serving.PredictionService/Predict",
        request_serializer=predict_pb2.PredictRequest.SerializeToString,
        response_deserializer=predict_pb2.PredictResponse.FromString,
    )
    rng = random.Random(7)
    batch = np.random.default_rng(7).uniform(0, 255, (24, 1, 3, 4, 4)).astype(np.float32)
    requests = [
        predict_request("resnet50DAG", {"0": batch}),
        predict_request("find_and_classify", {"image": image_with([True, True, False, True], 7)}),
    ]
    outcomes = {"answered": 0, "deadline": 0}
    for i in range(200):
        future = predict.future(requests[i % 2], timeout=rng.uniform(0.0002, 0.004))
        try:
            future.result()
            outcomes["answered"] += 1
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e  # the only failure a given-up request may show
            outcomes["deadline"] += 1
    body = json.dumps({"inputs": [{"name": "0", "shape": list(batch.shape), "datatype": "FP32",
                                   "data": batch.ravel().tolist()}]}).encode()  # fmt: skip
    head = f"POST /v2/models/resnet50DAG/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", server.rest_port)) as connection:
            connection.sendall(head + body)  # and hang up without reading the answer
    assert outcomes["deadline"] >= 20, outcomes  # enough requests were given up on to mean something

    deadline = time.monotonic() + 20
    while server.call(_task_count()) != loop_tasks and time.monotonic() < deadline:
        time.sleep(0.05)  # branches already running finish on their own
    assert_nothing_left(server, loop_tasks, libraries)
    out = server.predict("resnet50DAG", {"0": batch})["1463"]
    np.testing.assert_allclose(out, models.reference_classifier(batch), rtol=1e-4, atol=1e-2)
    image = image_with([True, False, True, True], 8)
    np.testing.assert_array_equal(
        server.predict("find_and_classify", {"image": image})["labels"], by_hand(image)["labels"]
    )


def predict_request(name: str, inputs: dict[str, np.ndarray]) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tfs.make_tensor_proto(value))
    return request


@pytest.mark.parametrize(
    ("outputs", "count", "message"),
    [
        ({"a": np.zeros((10001, 1), np.float32)}, -1,  # too large comes before the rank
         "Too large dynamic demultiplication requested. - node d: 10001 branches, at most 10000"),
        ({"a": np.array([[[b"x"]]], object)}, -1,
         "Demultiplication is not supported for string precision - node d: a"),
        ({"a": np.zeros((2, 1), np.float32)}, 2,  # rank before the count
         "Wrong number of dimensions in a tensor to be sharded - node d: a has shape (2,1); demultiplexing needs at "
         "least 3 dimensions"),
        ({"a": np.zeros((3, 1, 1), np.float32)}, 2,
         "Wrong dimension size. Should match demultiply count - node d: a has first dimension 3, "
         "demultiply_count is 2"),
        ({"a": np.zeros((2, 1, 1), np.float32), "b": np.zeros((3, 1, 1), np.float32)}, -1,
         "Wrong dimension size. Should match demultiply count - node d: first dimensions differ (a: 2, b: 3)"),
        ({"a": np.zeros((0, 1, 1), np.float32)}, -1,
         "Pipeline execution aborted due to no content from custom node - node d produced 0 branches"),
    ],
)  # fmt: skip
def test_demultiplexer_checks_in_the_order_of_spec_5_4(
    outputs: dict[str, np.ndarray], count: int, message: str
) -> None:
    with pytest.raises(ServingError) as raised:
        split_count(outputs, count, "node d")
    assert str(raised.value) == message
    assert split_count({"a": np.zeros((4, 1, 1), np.float32), "b": np.zeros((4, 1, 2), np.float32)}, -1, "node d") == 4
