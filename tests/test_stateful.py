"""Stateful models (docs/stateful.md#stateful-models): sequences keep their OpenVINO state between requests over all
four doors, interleave freely over the infer requests with the results raw OpenVINO gives each sequence alone, and every
sequence error of the spec comes with its message and code; the limit, the idle cleaner, reloads, LowLatency2 and the
config rules."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import models
import numpy as np
import openvino as ov
import pytest
import tritonclient.grpc as triton_grpc
from conftest import RunningServer, rpc_error, wait_for_versions
from prometheus_client.parser import text_string_to_metric_families

from ovserve import cli, tfs
from ovserve._proto import grpc_predict_v2_pb2 as pb
from ovserve._proto.tensorflow.core.framework import types_pb2
from ovserve._proto.tensorflow_serving.apis import predict_pb2
from ovserve.config import single_model_config
from ovserve.errors import ConfigError
from ovserve.sequences import END, NO_CONTROL, START
from ovserve.stateful import StatefulModelVersion

SHAPE = (1, 4)


def stateful(name: str, **settings: Any) -> dict[str, Any]:
    return {"config": {"name": name, "base_path": name, "stateful": True, "plugin_config": models.F32, **settings}}


def write_models(repository: Path) -> None:
    models.save(models.accumulator(SHAPE), repository, "acc")
    models.save(models.add_mul(SHAPE), repository, "plain")
    models.save(models.recurrent(SHAPE[1]), repository, "rnn")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repository = tmp_path_factory.mktemp("stateful")
    write_models(repository)
    document = {
        "model_config_list": [
            stateful("acc", nireq=2),
            stateful("small", base_path="acc", max_sequence_number=2),
            stateful("rnn_low_latency", base_path="rnn", low_latency_transformation=True),
            stateful("rnn"),
            {"config": {"name": "plain", "base_path": "plain", "plugin_config": models.F32}},
        ]
    }
    running = RunningServer(models.write_config(repository, document), sequence_cleaner_seconds=0)
    yield running
    running.stop()


def steps(seed: int, count: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(-8, 9, SHAPE).astype(np.float32) for _ in range(count)]


# --- the doors ------------------------------------------------------------------------------------------------


def tfs_request(
    name: str, x: np.ndarray | None, sequence_id: int | None = None, control: int | None = None
) -> predict_pb2.PredictRequest:
    """A Predict request with the special inputs as OVMS's clients send them: uint64_val / uint32_val, shape [1]."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if x is not None:
        request.inputs["x"].CopyFrom(tfs.make_tensor_proto(x))
    if sequence_id is not None:
        proto = request.inputs["sequence_id"]
        proto.dtype, proto.uint64_val[:] = types_pb2.DT_UINT64, [sequence_id]
        proto.tensor_shape.dim.add(size=1)
    if control is not None:
        proto = request.inputs["sequence_control_input"]
        proto.dtype, proto.uint32_val[:] = types_pb2.DT_UINT32, [control]
        proto.tensor_shape.dim.add(size=1)
    return request


def tfs_grpc(
    server: RunningServer, name: str, x: np.ndarray, sequence_id: int | None = None, control: int | None = None
) -> tuple[dict[str, np.ndarray], int]:
    response = server.predict_raw(tfs_request(name, x, sequence_id, control))
    answer = response.outputs["sequence_id"]
    assert answer.dtype == types_pb2.DT_UINT64 and [d.size for d in answer.tensor_shape.dim] == [1]
    assert len(answer.uint64_val) == 1  # where OVMS's clients read it
    outputs = {k: tfs.make_ndarray(v) for k, v in response.outputs.items() if k != "sequence_id"}
    return outputs, answer.uint64_val[0]


def tfs_rest(
    server: RunningServer, name: str, x: np.ndarray, sequence_id: int | None = None, control: int | None = None
) -> tuple[dict[str, np.ndarray], int]:
    inputs: dict[str, Any] = {"x": x.tolist()}
    if sequence_id is not None:
        inputs["sequence_id"] = [sequence_id]
    if control is not None:
        inputs["sequence_control_input"] = [control]
    status, _, body = server.http("POST", f"/v1/models/{name}:predict", json.dumps({"inputs": inputs}))
    assert status == 200, body
    outputs = json.loads(body)["outputs"]
    (sequence,) = outputs.pop("sequence_id")
    return {k: np.array(v, np.float32) for k, v in outputs.items()}, sequence


def _triton_inputs(module: Any, x: np.ndarray, sequence_id: int | None, control: int | None) -> list[Any]:
    inputs = [module.InferInput("x", list(x.shape), "FP32")]
    inputs[0].set_data_from_numpy(x)
    for name, value, kind, dtype in (
        ("sequence_id", sequence_id, "UINT64", np.uint64),
        ("sequence_control_input", control, "UINT32", np.uint32),
    ):
        if value is not None:
            inputs.append(module.InferInput(name, [1], kind))
            inputs[-1].set_data_from_numpy(np.array([value], dtype))
    return inputs


def kserve_grpc(
    server: RunningServer, name: str, x: np.ndarray, sequence_id: int | None = None, control: int | None = None
) -> tuple[dict[str, np.ndarray], int]:
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{server.port}")
    result = client.infer(name, _triton_inputs(triton_grpc, x, sequence_id, control))
    names = [o.name for o in result.get_response().outputs]
    sequence = result.as_numpy("sequence_id")
    assert sequence.dtype == np.uint64 and sequence.shape == (1,)
    return {n: result.as_numpy(n) for n in names if n != "sequence_id"}, int(sequence[0])


def kserve_rest(
    server: RunningServer, name: str, x: np.ndarray, sequence_id: int | None = None, control: int | None = None
) -> tuple[dict[str, np.ndarray], int]:
    """JSON data (no binary extension), as a plain HTTP client writes it."""
    inputs = [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]
    if sequence_id is not None:
        inputs.append({"name": "sequence_id", "shape": [1], "datatype": "UINT64", "data": [sequence_id]})
    if control is not None:
        inputs.append({"name": "sequence_control_input", "shape": [1], "datatype": "UINT32", "data": [control]})
    status, _, body = server.http("POST", f"/v2/models/{name}/infer", json.dumps({"inputs": inputs}))
    assert status == 200, body
    outputs = {o["name"]: o for o in json.loads(body)["outputs"]}
    sequence = outputs.pop("sequence_id")
    assert sequence["datatype"] == "UINT64" and sequence["shape"] == [1]
    arrays = {n: np.array(o["data"], np.float32).reshape(o["shape"]) for n, o in outputs.items()}
    return arrays, sequence["data"][0]


Door = Callable[..., tuple[dict[str, np.ndarray], int]]
DOORS: list[Door] = [tfs_grpc, tfs_rest, kserve_grpc, kserve_rest]


def rest_error(server: RunningServer, path: str, body: Any) -> tuple[int, str]:
    status, _, text = server.http("POST", path, json.dumps(body))
    return status, json.loads(text)["error"]


def check(outputs: dict[str, np.ndarray], expected: tuple[np.ndarray, np.ndarray]) -> None:
    np.testing.assert_array_equal(outputs["acc"], expected[0])
    np.testing.assert_array_equal(outputs["count"].reshape(1, 1), expected[1])


def raw_openvino(model_xml: Path, sequences: list[list[np.ndarray]]) -> list[list[dict[str, np.ndarray]]]:
    """Each sequence alone, in process: one infer request of its own, its steps in order."""
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(model_xml)), "CPU", models.F32)
    answers = []
    for sequence in sequences:
        request = compiled.create_infer_request()
        results = [request.infer({"x": x}) for x in sequence]
        answers.append([{name: result[name].copy() for name in ("acc", "count")} for result in results])
    return answers


# --- sequences ------------------------------------------------------------------------------------------------


def test_interleaved_sequences_match_raw_openvino(server: RunningServer, tmp_path: Path) -> None:
    """Twelve sequences on two infer requests, every round's requests in flight together and in a shuffled order:
    each sequence gets what raw OpenVINO gives it alone (and what numpy computes)."""
    count, length = 12, 5
    inputs = [steps(seed) for seed in range(count)]
    models.save(models.accumulator(SHAPE), tmp_path, "acc")
    expected = raw_openvino(tmp_path / "acc" / "1" / "model.xml", inputs)
    call = server.channel.unary_unary(
        "/tensorflow.serving.PredictionService/Predict",
        request_serializer=predict_pb2.PredictRequest.SerializeToString,
        response_deserializer=predict_pb2.PredictResponse.FromString,
    )
    ids: list[int] = [0] * count
    rng = np.random.default_rng(7)
    for step in range(length):
        control = START if step == 0 else END if step == length - 1 else NO_CONTROL
        order = rng.permutation(count)
        futures = {int(i): call.future(tfs_request("acc", inputs[i][step], ids[i] or None, control), timeout=60)
                   for i in order}  # fmt: skip
        for i, future in futures.items():
            response = future.result()
            ids[i] = response.outputs["sequence_id"].uint64_val[0]
            for name in ("acc", "count"):
                np.testing.assert_array_equal(tfs.make_ndarray(response.outputs[name]), expected[i][step][name])
            check({n: tfs.make_ndarray(response.outputs[n]) for n in ("acc", "count")},
                  models.reference_accumulator(inputs[i])[step])  # fmt: skip
    assert len(set(ids)) == count and 0 not in ids
    assert not any(i in version(server, "acc").sequences for i in ids)  # every sequence ended


def version(server: RunningServer, name: str) -> StatefulModelVersion:
    servable = server.server.manager.model_version_now(name, None)
    assert isinstance(servable, StatefulModelVersion)
    return servable


@pytest.mark.parametrize("door", DOORS, ids=lambda d: d.__name__)
def test_one_sequence_over_each_door(server: RunningServer, door: Door) -> None:
    """Start without an id (the server picks one), go on and end with it; every answer carries the id."""
    xs = steps(3)
    expected = models.reference_accumulator(xs)
    outputs, sequence_id = door(server, "acc", xs[0], None, START)
    assert sequence_id > 0
    check(outputs, expected[0])
    for i in range(1, len(xs) - 1):
        outputs, same = door(server, "acc", xs[i], sequence_id)
        assert same == sequence_id
        check(outputs, expected[i])
    outputs, same = door(server, "acc", xs[-1], sequence_id, END)
    assert same == sequence_id
    check(outputs, expected[-1])
    assert sequence_id not in version(server, "acc").sequences


def test_one_sequence_across_all_doors_with_its_own_id(server: RunningServer) -> None:
    """A client-chosen id (beyond int64), its requests sent through the four doors in turn: one state."""
    xs = steps(4, count=6)
    expected = models.reference_accumulator(xs)
    chosen = (1 << 64) - 5
    for i, x in enumerate(xs):
        control = START if i == 0 else END if i == len(xs) - 1 else None
        outputs, sequence_id = DOORS[i % 4](server, "acc", x, chosen, control)
        assert sequence_id == chosen
        check(outputs, expected[i])


def test_rest_row_format_and_kserve_typed_contents(server: RunningServer) -> None:
    """The other spellings: TF Serving REST rows (the special inputs as numbers in the instance, the answer's rows
    carrying sequence_id) and KServe gRPC values in uint64_contents / uint_contents instead of raw buffers."""
    xs = steps(5, count=2)
    body = {"instances": [{"x": xs[0][0].tolist(), "sequence_control_input": START}]}
    status, _, text = server.http("POST", "/v1/models/acc:predict", json.dumps(body))
    assert status == 200, text
    (row,) = json.loads(text)["predictions"]
    assert row["acc"] == xs[0][0].tolist() and row["count"] == [1.0]
    sequence_id = row["sequence_id"]
    request = pb.ModelInferRequest(model_name="acc")
    request.inputs.add(name="x", datatype="FP32", shape=list(SHAPE)).contents.fp32_contents.extend(xs[1].ravel())
    request.inputs.add(name="sequence_id", datatype="UINT64", shape=[1]).contents.uint64_contents.append(sequence_id)
    request.inputs.add(name="sequence_control_input", datatype="UINT32", shape=[1]).contents.uint_contents.append(END)
    call = server.channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelInferResponse.FromString,
    )
    response = call(request, timeout=60)
    outputs = {o.name: raw for o, raw in zip(response.outputs, response.raw_output_contents, strict=True)}
    assert np.frombuffer(outputs["sequence_id"], np.uint64).tolist() == [sequence_id]
    expected = models.reference_accumulator(xs)[1][0]
    np.testing.assert_array_equal(np.frombuffer(outputs["acc"], np.float32).reshape(SHAPE), expected)


def test_requests_of_one_sequence_run_one_at_a_time_in_arrival_order(server: RunningServer) -> None:
    """Three requests of one sequence queue while it is busy; they run in the order they came."""
    _, sequence_id = tfs_grpc(server, "acc", np.zeros(SHAPE, np.float32), None, START)
    sequence = version(server, "acc").sequences._sequences[sequence_id]
    server.call(sequence.lock.acquire())  # the sequence is busy
    xs = [np.full(SHAPE, v, np.float32) for v in (1, 2, 3)]
    call = server.channel.unary_unary(
        "/tensorflow.serving.PredictionService/Predict",
        request_serializer=predict_pb2.PredictRequest.SerializeToString,
        response_deserializer=predict_pb2.PredictResponse.FromString,
    )
    futures = []
    for i, x in enumerate(xs):
        futures.append(call.future(tfs_request("acc", x, sequence_id, END if i == 2 else None), timeout=60))
        wait_until(lambda n=i + 1: len(sequence.lock._waiters or ()) == n)
    server.loop.call_soon_threadsafe(sequence.lock.release)
    answers = [tfs.make_ndarray(f.result().outputs["acc"]) for f in futures]
    expected = models.reference_accumulator([np.zeros(SHAPE, np.float32), *xs])[1:]
    for answer, (acc, _) in zip(answers, expected, strict=True):
        np.testing.assert_array_equal(answer, acc)


def wait_until(condition: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# --- metadata, status, the special inputs as inputs -------------------------------------------------------------


def test_metadata_lists_only_the_models_inputs(server: RunningServer) -> None:
    inputs, outputs = server.metadata("acc")
    assert inputs == {"x": ([1, 4], types_pb2.DT_FLOAT)}
    assert set(outputs) == {"acc", "count"}
    status, _, body = server.http("GET", "/v2/models/acc")
    assert status == 200 and [i["name"] for i in json.loads(body)["inputs"]] == ["x"]
    assert [(r.version, r.state) for r in server.status("acc").model_version_status] == [(1, 30)]  # AVAILABLE


def test_metrics_count_stateful_requests_as_any(server: RunningServer) -> None:
    def samples() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        status, _, body = server.http("GET", "/metrics")
        assert status == 200
        return {(s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(body.decode()) for s in family.samples}  # fmt: skip

    labels = {"api": "KServe", "interface": "REST", "method": "ModelInfer", "name": "acc", "version": "1"}
    success, fail = (("ovms_requests_success_total", frozenset(labels.items())),
                     ("ovms_requests_fail_total", frozenset(labels.items())))  # fmt: skip
    inference = ("ovms_inference_time_us_count", frozenset({"name": "acc", "version": "1"}.items()))
    before = samples()
    x = np.zeros(SHAPE, np.float32)
    _, sequence_id = kserve_rest(server, "acc", x, None, START)
    kserve_rest(server, "acc", x, sequence_id, END)
    rest_error(server, "/v2/models/acc/infer", {"inputs": [
        {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]},
        {"name": "sequence_id", "shape": [1], "datatype": "UINT64", "data": [sequence_id]}]})  # fmt: skip
    after = samples()
    assert after[success] - before[success] == 2 and after[fail] - before[fail] == 1
    assert after[inference] - before[inference] == 2


def test_a_stateless_model_takes_the_special_inputs_as_unknown_inputs(server: RunningServer) -> None:
    """As OVMS: for a model that is not stateful sequence_id is just one input too many."""
    error = rpc_error(lambda: server.predict_raw(tfs_request("plain", np.zeros(SHAPE, np.float32), 5, START)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "Invalid number of inputs - Expected: 1; Actual: 3"


def test_the_model_inputs_are_still_validated(server: RunningServer) -> None:
    before = len(version(server, "acc").sequences)
    error = rpc_error(lambda: server.predict_raw(tfs_request("acc", None, None, START)))
    assert error.details() == "Invalid number of inputs - Expected: 2; Actual: 1"
    error = rpc_error(lambda: server.predict_raw(tfs_request("acc", np.zeros((1, 5), np.float32), None, START)))
    assert error.details() == "Invalid input shape - Expected: (1,4); Actual: (1,5); input name: x"
    assert len(version(server, "acc").sequences) == before  # a refused start opens no sequence


# --- the error table ------------------------------------------------------------------------------------------


def test_sequence_errors_over_grpc(server: RunningServer) -> None:
    x = np.zeros(SHAPE, np.float32)
    missing = "Sequence ID has not been provided in request inputs"
    cases = [
        (tfs_request("acc", x), grpc.StatusCode.INVALID_ARGUMENT, missing),
        (tfs_request("acc", x, 0, END), grpc.StatusCode.INVALID_ARGUMENT, missing),
        (tfs_request("acc", x, 987654321), grpc.StatusCode.NOT_FOUND, "Sequence with provided ID does not exist"),
        (tfs_request("acc", x, 987654321, END), grpc.StatusCode.NOT_FOUND, "Sequence with provided ID does not exist"),
        (tfs_request("acc", x, 1, 3), grpc.StatusCode.INVALID_ARGUMENT, "Unexpected value of sequence control input"),
    ]  # fmt: skip
    for request, code, message in cases:
        error = rpc_error(lambda r=request: server.predict_raw(r))
        assert (error.code(), error.details().split(" - ")[0]) == (code, message)
    _, taken = tfs_grpc(server, "acc", x, None, START)
    error = rpc_error(lambda: server.predict_raw(tfs_request("acc", x, taken, START)))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error.details() == f"Sequence with provided ID already exists - model acc version 1: sequence {taken}"
    tfs_grpc(server, "acc", x, taken, END)


def test_special_inputs_in_the_wrong_field_or_shape(server: RunningServer) -> None:
    before = len(version(server, "acc").sequences)
    x = np.zeros(SHAPE, np.float32)
    wrong_id = tfs_request("acc", x, None, START)
    wrong_id.inputs["sequence_id"].dtype = types_pb2.DT_UINT32
    wrong_id.inputs["sequence_id"].uint32_val.append(5)
    wrong_id.inputs["sequence_id"].tensor_shape.dim.add(size=1)
    wrong_control = tfs_request("acc", x, 5)
    wrong_control.inputs["sequence_control_input"].dtype = types_pb2.DT_UINT64
    wrong_control.inputs["sequence_control_input"].uint64_val.append(START)
    wrong_control.inputs["sequence_control_input"].tensor_shape.dim.add(size=1)
    no_shape = tfs_request("acc", x, 5, START)
    no_shape.inputs["sequence_id"].ClearField("tensor_shape")
    two_values = tfs_request("acc", x, 5, START)
    two_values.inputs["sequence_id"].tensor_shape.dim[0].size = 2
    rank_two = tfs_request("acc", x, 5, START)
    rank_two.inputs["sequence_control_input"].tensor_shape.dim.add(size=1)
    cases = [
        (wrong_id, "Could not find sequence id in expected tensor proto field uint64_val - input name: sequence_id"),
        (wrong_control, "Could not find sequence control input in expected tensor proto field uint32_val - "
                        "input name: sequence_control_input"),
        (no_shape, "Special input proto does not contain tensor shape information - input name: sequence_id"),
        (two_values, "Invalid input shape - Required shape for sequence_id is: (1)"),
        (rank_two, "Invalid number of shape dimensions - Required shape for sequence_control_input is: (1)"),
    ]  # fmt: skip
    for request, message in cases:
        error = rpc_error(lambda r=request: server.predict_raw(r))
        assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)
    assert len(version(server, "acc").sequences) == before


def test_the_id_in_tensor_content_as_ovserves_own_client_writes_it(server: RunningServer) -> None:
    """Beyond OVMS (which reads uint64_val only): a uint64 tensor_content of one value is taken too."""
    xs = steps(9, count=2)
    first = server.predict("acc", {"x": xs[0], "sequence_control_input": np.array([START], np.uint32)})
    sequence_id = int(first["sequence_id"][0])
    second = server.predict(
        "acc", {"x": xs[1], "sequence_id": first["sequence_id"], "sequence_control_input": np.array([END], np.uint32)}
    )
    np.testing.assert_array_equal(second["acc"], models.reference_accumulator(xs)[1][0])
    assert int(second["sequence_id"][0]) == sequence_id


def test_sequence_errors_over_rest(server: RunningServer) -> None:
    x = np.zeros(SHAPE, np.float32).tolist()
    _, taken = tfs_rest(server, "acc", np.zeros(SHAPE, np.float32), None, START)
    tfs_cases = [
        ({"x": x}, 400, "Sequence ID has not been provided in request inputs"),
        ({"x": x, "sequence_id": [424242]}, 404, "Sequence with provided ID does not exist"),
        ({"x": x, "sequence_id": [taken], "sequence_control_input": [1]}, 409,
         "Sequence with provided ID already exists"),
        ({"x": x, "sequence_id": [taken], "sequence_control_input": [7]}, 400,
         "Unexpected value of sequence control input"),
        ({"x": x, "sequence_id": [-1]}, 400, "Could not parse input content. Not valid ndarray detected"),
        ({"x": x, "sequence_id": [[taken]]}, 400, "Could not parse input content. Not valid ndarray detected"),
        ({"x": x, "sequence_id": taken}, 400, "Could not parse input content. Not valid ndarray detected"),
    ]  # fmt: skip
    for inputs, code, message in tfs_cases:
        status, text = rest_error(server, "/v1/models/acc:predict", {"inputs": inputs})
        assert (status, text.split(" - ")[0]) == (code, message), text
    flat = np.zeros(SHAPE, np.float32).ravel().tolist()

    def kserve(sequence: dict[str, Any]) -> dict[str, Any]:
        return {"inputs": [{"name": "x", "shape": list(SHAPE), "datatype": "FP32", "data": flat}, sequence]}

    kserve_cases = [
        ({"name": "sequence_id", "shape": [1], "datatype": "INT64", "data": [taken]}, 400,
         "Could not find sequence id in expected tensor proto field uint64_val"),
        ({"name": "sequence_control_input", "shape": [1], "datatype": "UINT64", "data": [1]}, 400,
         "Could not find sequence control input in expected tensor proto field uint32_val"),
        ({"name": "sequence_id", "shape": [], "datatype": "UINT64", "data": [taken]}, 400,
         "Special input proto does not contain tensor shape information"),
        ({"name": "sequence_id", "shape": [1], "datatype": "UINT64", "data": [77]}, 404,
         "Sequence with provided ID does not exist"),
    ]  # fmt: skip
    for sequence, code, message in kserve_cases:
        status, text = rest_error(server, "/v2/models/acc/infer", kserve(sequence))
        assert (status, text.split(" - ")[0]) == (code, message), text
    tfs_rest(server, "acc", np.zeros(SHAPE, np.float32), taken, END)


def test_kserve_grpc_wrong_datatype(server: RunningServer) -> None:
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{server.port}")
    inputs = _triton_inputs(triton_grpc, np.zeros(SHAPE, np.float32), None, None)
    inputs.append(triton_grpc.InferInput("sequence_id", [1], "INT64"))
    inputs[-1].set_data_from_numpy(np.array([3], np.int64))
    with pytest.raises(Exception) as info:
        client.infer("acc", inputs)
    assert "Could not find sequence id in expected tensor proto field uint64_val" in str(info.value)
    assert "INVALID_ARGUMENT" in str(info.value)


def test_a_request_to_an_ending_sequence(server: RunningServer) -> None:
    """Once its END request has arrived (it waits here behind a busy sequence) nothing else may join the sequence,
    not even a new start with its id: FAILED_PRECONDITION / 412 until the END is done, then the id is free."""
    x = np.zeros(SHAPE, np.float32)
    _, sequence_id = tfs_grpc(server, "acc", x, None, START)
    sequence = version(server, "acc").sequences._sequences[sequence_id]
    server.call(sequence.lock.acquire())
    ending = server.channel.unary_unary(
        "/tensorflow.serving.PredictionService/Predict",
        request_serializer=predict_pb2.PredictRequest.SerializeToString,
        response_deserializer=predict_pb2.PredictResponse.FromString,
    ).future(tfs_request("acc", x, sequence_id, END), timeout=60)
    wait_until(lambda: sequence.ending)
    message = "Sequence last request is being processed and it's not available anymore"
    error = rpc_error(lambda: server.predict_raw(tfs_request("acc", x, sequence_id)))
    assert (error.code(), error.details().split(" - ")[0]) == (grpc.StatusCode.FAILED_PRECONDITION, message)
    restart = {"x": x.tolist(), "sequence_id": [sequence_id], "sequence_control_input": [START]}
    status, text = rest_error(server, "/v1/models/acc:predict", {"inputs": restart})
    assert (status, text.split(" - ")[0]) == (412, message)
    server.loop.call_soon_threadsafe(sequence.lock.release)
    assert ending.result().outputs["sequence_id"].uint64_val[0] == sequence_id
    _, again = tfs_grpc(server, "acc", x, sequence_id, START)  # the id is free again
    assert again == sequence_id
    tfs_grpc(server, "acc", x, sequence_id, END)


def test_the_sequence_limit(server: RunningServer) -> None:
    x = np.zeros(SHAPE, np.float32)
    ids = [tfs_grpc(server, "small", x, None, START)[1] for _ in range(2)]
    error = rpc_error(lambda: server.predict_raw(tfs_request("small", x, None, START)))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error.details() == (
        "Max sequence number has been reached. Could not create new sequence. - model small version 1: 2 sequences "
        "(max_sequence_number)"
    )
    status, text = rest_error(server, "/v2/models/small/infer", {"inputs": [
        {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]},
        {"name": "sequence_control_input", "shape": [1], "datatype": "UINT32", "data": [1]}]})  # fmt: skip
    assert status == 503 and text.startswith("Max sequence number has been reached.")
    tfs_grpc(server, "small", x, ids[0], END)
    _, fresh = tfs_grpc(server, "small", x, None, START)  # room again
    assert fresh not in ids  # ids are not reused at once
    for sequence_id in (ids[1], fresh):
        tfs_grpc(server, "small", x, sequence_id, END)


# --- LowLatency2 ---------------------------------------------------------------------------------------------


def test_low_latency_transformation_turns_a_loop_into_state(server: RunningServer) -> None:
    xs = [np.full((1, 1, 4), v, np.float32) for v in (1, 2, 3)]
    for name, expected in (("rnn_low_latency", [3, 6]), ("rnn", [2, 3])):
        _, sequence_id = tfs_grpc(server, name, xs[0], None, START)
        middle, _ = tfs_grpc(server, name, xs[1], sequence_id)
        last, _ = tfs_grpc(server, name, xs[2], sequence_id, END)
        assert [middle["y"][0, 0], last["y"][0, 0]] == expected, name


# --- idle cleanup, reload ---------------------------------------------------------------------------------------


def test_idle_sequences_are_dropped_where_cleanup_is_on(tmp_path: Path) -> None:
    write_models(tmp_path)
    document = {"model_config_list": [stateful("acc"), stateful("kept", base_path="acc", idle_sequence_cleanup=False)]}
    server = RunningServer(models.write_config(tmp_path, document), sequence_cleaner_seconds=0.05)
    try:
        x = np.zeros(SHAPE, np.float32)
        _, dropped = tfs_grpc(server, "acc", x, None, START)
        _, kept = tfs_grpc(server, "kept", x, None, START)
        wait_until(lambda: dropped not in version(server, "acc").sequences)
        error = rpc_error(lambda: server.predict_raw(tfs_request("acc", x, dropped)))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert tfs_grpc(server, "kept", x, kept, END)[1] == kept  # the other model's scans skip it
    finally:
        server.stop()


def test_a_reload_ends_the_sequences_of_the_old_version(tmp_path: Path) -> None:
    """A request waiting in its sequence when the model reloads still runs on the version it came to; after that the
    sequence is gone (NOT_FOUND, the spec's answer for an unknown id) and new sequences start on the new version."""
    write_models(tmp_path)
    config = models.write_config(tmp_path, {"model_config_list": [stateful("acc")]})
    server = RunningServer(config)
    try:
        xs = steps(11, count=2)
        _, sequence_id = tfs_grpc(server, "acc", xs[0], None, START)
        old = version(server, "acc")
        sequence = old.sequences._sequences[sequence_id]
        server.call(sequence.lock.acquire())
        waiting = server.channel.unary_unary(
            "/tensorflow.serving.PredictionService/Predict",
            request_serializer=predict_pb2.PredictRequest.SerializeToString,
            response_deserializer=predict_pb2.PredictResponse.FromString,
        ).future(tfs_request("acc", xs[1], sequence_id), timeout=60)
        wait_until(lambda: bool(sequence.lock._waiters))
        models.write_config(tmp_path, {"model_config_list": [stateful("acc", max_sequence_number=10)]})
        status, _, body = server.http("POST", "/v1/config/reload")
        assert status == 201, body
        assert version(server, "acc") is not old and len(old.sequences) == 0
        server.loop.call_soon_threadsafe(sequence.lock.release)
        answer = tfs.make_ndarray(waiting.result().outputs["acc"])
        np.testing.assert_array_equal(answer, models.reference_accumulator(xs)[1][0])
        error = rpc_error(lambda: server.predict_raw(tfs_request("acc", xs[0], sequence_id, END)))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert error.details().startswith("Sequence with provided ID does not exist")
        assert tfs_grpc(server, "acc", xs[0], sequence_id, START)[1] == sequence_id  # the new version takes it
    finally:
        server.stop()


# --- configuration ----------------------------------------------------------------------------------------------


def test_stateful_is_refused_with_auto_shapes_and_in_pipelines(tmp_path: Path) -> None:
    write_models(tmp_path)
    document = {
        "model_config_list": [stateful("auto", base_path="acc", shape="auto"), stateful("acc")],
        "pipeline_config_list": [{
            "name": "p", "inputs": ["x"], "outputs": [{"acc": {"node_name": "n", "data_item": "acc"}}],
            "nodes": [{"name": "n", "model_name": "acc", "type": "DL model",
                       "inputs": [{"x": {"node_name": "request", "data_item": "x"}}],
                       "outputs": [{"data_item": "acc", "alias": "acc"}]}],
        }],
    }  # fmt: skip
    server = RunningServer(models.write_config(tmp_path, document))
    try:
        entry = server.server.manager.models["auto"]
        assert "Dynamic shape and dynamic batch size are not supported for stateful models" in entry.error
        pipeline = server.server.manager.pipelines["p"]
        assert pipeline.error.startswith("Stateful model cannot be subscribed to pipeline - p: node n uses model acc")
        error = rpc_error(lambda: server.predict_raw(tfs_request("p", np.zeros(SHAPE, np.float32))))
        assert error.code() == grpc.StatusCode.UNAVAILABLE  # the pipeline is not loaded
    finally:
        server.stop()


def test_the_stateful_flag_of_a_loaded_model_does_not_change(tmp_path: Path) -> None:
    write_models(tmp_path)
    config = models.write_config(tmp_path, {"model_config_list": [stateful("acc")]})
    server = RunningServer(config)
    try:
        before = version(server, "acc")
        models.write_config(tmp_path, {"model_config_list": [{"config": {"name": "acc", "base_path": "acc"}}]})
        status, _, _ = server.http("POST", "/v1/config/reload")
        assert status == 200  # nothing changed
        assert version(server, "acc") is before
        wait_for_versions(server, "acc", [(1, 30, "OK")])
    finally:
        server.stop()


def test_stateful_keys_need_stateful() -> None:
    config = single_model_config("m", "/nowhere", {"idle_sequence_cleanup": False})
    assert config.models[0].problems == (
        "model_config_list[0].config.idle_sequence_cleanup: Stateful model config parameter used for non stateful "
        'model; it needs "stateful": true',
    )
    quiet = single_model_config("m", "/nowhere", {"low_latency_transformation": False, "max_sequence_number": 500})
    assert quiet.models[0].problems == ()  # the defaults ask for nothing
    model = single_model_config("m", "/nowhere", {"stateful": True, "max_sequence_number": 3}).models[0]
    assert (model.stateful, model.max_sequence_number, model.idle_sequence_cleanup) == (True, 3, True)


def test_cli_flags() -> None:
    base = ["--model_name", "m", "--model_path", "/nowhere", "--port", "9000"]
    config, settings = cli.build(cli.parser().parse_args(
        [*base, "--stateful", "--idle_sequence_cleanup", "false", "--max_sequence_number", "7",
         "--low_latency_transformation", "--sequence_cleaner_poll_wait_minutes", "2"]))  # fmt: skip
    model = config.models[0]
    assert (model.stateful, model.idle_sequence_cleanup, model.max_sequence_number) == (True, False, 7)
    assert model.low_latency_transformation and settings.sequence_cleaner_seconds == 120
    assert cli.build(cli.parser().parse_args(base))[1].sequence_cleaner_seconds == 300
    with pytest.raises(ConfigError, match="--max_sequence_number requires --stateful"):
        cli.build(cli.parser().parse_args([*base, "--max_sequence_number", "7"]))
    with pytest.raises(ConfigError, match="exclusive with the config file: --stateful"):
        cli.build(cli.parser().parse_args(["--config_path", "/nowhere", "--port", "9000", "--stateful", "true"]))
    with pytest.raises(ConfigError, match="not supported for stateful models"):
        cli.build(cli.parser().parse_args([*base, "--stateful", "--batch_size", "auto"]))
