"""ovserve-predict and ovserve-metadata without a model server: report formats, data rules, flags, gRPC errors."""

from __future__ import annotations

import shlex
import socket
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest

from ovserve._proto.tensorflow.core.framework import tensor_shape_pb2, types_pb2
from ovserve._proto.tensorflow.core.protobuf import meta_graph_pb2
from ovserve._proto.tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2
from ovserve.clients import metadata, predict
from ovserve.tfs import make_ndarray, make_tensor_proto

GUIDE_ARGS = shlex.split(  # the guide's command line, with the file names shortened
    "--grpc_port 9000 --images_numpy_path x.npy --labels_numpy_path y.npy --input_name 0 --output_name 1463 "
    "--model_name resnet50DAG --dag-batch-size-auto --transpose_input False --batchsize 8"
)
NAMES = tuple(f"class{i}" for i in range(1000))
ANSWERS = (404, 279, 309)  # the classes of the three test images
GUIDE_TIMES = [21, 8, 104, 8, 19, 9, 7, 6, 6, 7]  # the int times behind the guide's b1.txt statistics


# --- statistics -------------------------------------------------------------------------------------------


def test_statistics_block_of_the_guide() -> None:
    assert predict.statistics_lines(GUIDE_TIMES, 1) == [
        "",
        "processing time for all iterations",
        "average time: 19.50 ms; average speed: 51.28 fps",
        "median time: 8.00 ms; median speed: 125.00 fps",
        "max time: 104.00 ms; min speed: 9.62 fps",
        "min time: 6.00 ms; max speed: 166.67 fps",
        "time percentile 90: 29.30 ms; speed percentile 90: 34.13 fps",
        "time percentile 50: 8.00 ms; speed percentile 50: 125.00 fps",
        "time standard deviation: 28.63",
        "time variance: 819.45",
    ]


def test_statistics_use_numpy_and_batch_size() -> None:
    times = [1.25, 3.5, 2.0, 10.75]
    lines = predict.statistics_lines(times, 8)
    p90 = np.percentile(times, 90)
    assert f"time percentile 90: {p90:.2f} ms; speed percentile 90: {8000 / p90:.2f} fps" in lines
    assert lines[-2:] == [f"time standard deviation: {np.std(times):.2f}", f"time variance: {np.var(times):.2f}"]
    assert lines[2] == f"average time: {np.average(times):.2f} ms; average speed: {8000 / np.average(times):.2f} fps"


def test_statistics_of_one_iteration_as_the_guide_b8() -> None:
    lines = predict.statistics_lines([121.0], 8)
    assert lines[2] == "average time: 121.00 ms; average speed: 66.12 fps"
    assert lines[-2:] == ["time standard deviation: 0.00", "time variance: 0.00"]


def test_float_times_are_kept_and_zero_does_not_divide() -> None:
    assert predict.iteration_line(1, 21.1634, 1) == "Iteration 1; Processing time: 21.16 ms; speed 47.25 fps"
    assert predict.iteration_line(3, 0.0, 1) == "Iteration 3; Processing time: 0.00 ms; speed inf fps"
    assert predict.statistics_lines([0.4, 0.6], 1)[2] == "average time: 0.50 ms; average speed: 2000.00 fps"


# --- classes ----------------------------------------------------------------------------------------------


def _one_hot(*indexes: int, classes: int = 1000, shape: tuple[int, ...] = (1,)) -> np.ndarray:
    output = np.zeros((len(indexes), *shape, classes), np.float32)
    for row, index in enumerate(indexes):
        output[(row, *[0] * len(shape), index)] = 1.0
    return output


def test_argmax_flattens_after_the_batch_dim_and_drops_the_background_class() -> None:
    assert predict.classify(_one_hot(404, 279)) == [404, 279]  # DAG output [N, 1, 1000]
    assert predict.classify(_one_hot(404, shape=())) == [404]  # model output [N, 1000]
    assert predict.classify(_one_hot(405, classes=1001)) == [404]  # background class at 0


def test_result_lines_with_labels() -> None:
    labels = np.array([404, 300], np.int64)
    assert predict.batch_lines([404, 279], labels, NAMES) == [
        "\t 0 class404 404 ; Correct match.",
        "\t 1 class279 279 ; Incorrect match. Should be 300 class300",
    ]
    assert predict.count_matches([404, 279], labels) == (1, 2)


def test_result_lines_without_labels_end_as_print_with_an_empty_mark() -> None:
    assert predict.batch_lines([404], None, NAMES) == ["\t 0 class404 404 "]
    assert predict.count_matches([404], None) == (0, 0)


def test_packaged_class_names() -> None:
    names = predict.class_names()
    assert len(names) == 1000
    assert (names[404], names[279]) == ("airliner", "Arctic fox, white fox, Alopex lagopus")


# --- data -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("images", "batch", "fitted", "iterations"),
    [(10, 8, 10, 1), (5, 8, 10, 1), (10, 1, 10, 10), (1, 1, 2, 2), (3, 10, 12, 1), (10, 3, 10, 3)],
)
def test_doubling_and_iteration_count(images: int, batch: int, fitted: int, iterations: int) -> None:
    data = np.arange(images, dtype=np.float32).reshape(images, 1)
    labels = np.arange(images, dtype=np.int64)
    data, fitted_labels = predict.fit_to_batch(data, labels, batch)
    assert fitted_labels is not None
    assert len(data) == len(fitted_labels) == fitted
    assert list(fitted_labels[:images]) == list(fitted_labels[images : 2 * images]) or fitted == images
    assert predict.iteration_count(len(data), batch, 0) == iterations
    assert predict.iteration_count(len(data), batch, 7) == 7


def test_batches_start_over_when_iterations_exceed_the_images() -> None:
    assert list(predict.batch_offsets(10, 3, 5)) == [0, 3, 6, 0, 3]


def test_rescale_to_0_255_float32() -> None:
    images = predict.rescale(np.array([[-2, 0], [1, 2]], np.int16))
    assert images.dtype == np.float32
    assert images.tolist() == [[0.0, 127.5], [191.25, 255.0]]
    assert predict.rescale(np.full((2, 2), 7.0)).tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_transpose_methods() -> None:
    images = np.zeros((2, 224, 224, 3), np.float32)
    assert predict.transpose(images, "nhwc2nchw").shape == (2, 3, 224, 224)
    assert predict.transpose(images, "nchw2nhwc").shape == (2, 224, 3, 224)


def test_request_adds_the_demultiplexer_dimension_and_sends_float32() -> None:
    batch = np.ones((8, 3, 4, 4), np.float32)
    request = predict.predict_request("resnet50DAG", "0", batch, True)
    assert request.model_spec.name == "resnet50DAG"
    tensor = request.inputs["0"]
    assert tensor.dtype == types_pb2.DT_FLOAT
    assert len(tensor.tensor_content) == batch.nbytes
    assert make_ndarray(tensor).shape == (8, 1, 3, 4, 4)
    plain = predict.predict_request("resnet", "input", batch, False)
    assert make_ndarray(plain.inputs["input"]).shape == (8, 3, 4, 4)


# --- arguments --------------------------------------------------------------------------------------------


def test_the_guides_command_line() -> None:
    args = predict.build_parser().parse_args(GUIDE_ARGS)
    assert args.grpc_port == 9000 and args.grpc_address == "localhost"
    assert (args.images_numpy_path, args.labels_numpy_path) == ("x.npy", "y.npy")
    assert (args.input_name, args.output_name) == ("0", "1463")
    assert args.model_name == "resnet50DAG" and args.pipeline_name == ""
    assert args.dag_batch_size_auto is True
    assert args.transpose_input == "False" and args.transpose_method == "nhwc2nchw"
    assert args.batchsize == 8 and args.iterations == 0
    assert args.tls is False and args.timeout == 10.0


def test_predict_defaults() -> None:
    args = predict.build_parser().parse_args(["--images_numpy_path", "x.npy"])
    assert (args.input_name, args.output_name) == ("input", "resnet_v1_50/predictions/Reshape_1")
    assert (args.transpose_input, args.batchsize, args.model_name) == ("True", 1, "resnet")
    assert args.dag_batch_size_auto is False and args.labels_numpy_path is None


def test_metadata_command_line() -> None:
    args = metadata.build_parser().parse_args(["--grpc_port", "9000", "--model_name", "resnet50DAG"])
    assert (args.grpc_address, args.grpc_port, args.model_name, args.model_version) == (
        "localhost",
        9000,
        "resnet50DAG",
        None,
    )
    request = metadata.metadata_request("resnet", 2)
    assert request.model_spec.version.value == 2 and list(request.metadata_field) == ["signature_def"]
    assert not metadata.metadata_request("resnet", None).model_spec.HasField("version")


# --- gRPC -------------------------------------------------------------------------------------------------


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def images_file(tmp_path: Path) -> str:
    path = tmp_path / "imgs.npy"
    np.save(path, np.arange(3, dtype=np.float32).reshape(3, 1, 1, 1) * np.ones((3, 3, 8, 8), np.float32))  # image k: k
    np.save(tmp_path / "lbs.npy", np.array(ANSWERS, np.int64))
    return str(path)


def test_predict_to_a_closed_port(closed_port: int, images_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--grpc_address", "127.0.0.1", "--grpc_port", str(closed_port), "--images_numpy_path", images_file]
    assert predict.main([*argv, "--transpose_input", "False"]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("Request failed: UNAVAILABLE: ")
    assert "Traceback" not in captured.err


def test_metadata_to_a_closed_port(closed_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert metadata.main(["--grpc_address", "127.0.0.1", "--grpc_port", str(closed_port)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "Getting model metadata for model: resnet\n"
    assert captured.err.startswith("Request failed: UNAVAILABLE: ")


# An in-process stand-in for the guide's resnet50DAG pipeline: the client's side of the wire, end to end.


def _fake_predict(request: predict_pb2.PredictRequest, context: grpc.ServicerContext) -> predict_pb2.PredictResponse:
    if request.model_spec.name != "resnet50DAG":
        context.abort(grpc.StatusCode.NOT_FOUND, "Pipeline with requested name is not found")
    images = make_ndarray(request.inputs["0"])
    assert images.shape[1:] == (1, 3, 8, 8) and images.dtype == np.float32
    output = np.zeros((images.shape[0], 1, 1000), np.float32)
    for row in range(images.shape[0]):  # image k (rescaled to k * 127.5) shows class ANSWERS[k]
        output[row, 0, ANSWERS[round(float(images[row, 0, 0, 0, 0]) / 127.5)]] = 1.0
    response = predict_pb2.PredictResponse()
    response.outputs["1463"].CopyFrom(make_tensor_proto(output))
    return response


def _fake_metadata(
    request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    signature = meta_graph_pb2.SignatureDef()
    specs = ((signature.inputs, "0", (-1, 1, 3, 224, 224)), (signature.outputs, "1463", (-1, 1, 1000)))
    for tensors, name, shape in specs:
        tensors[name].dtype = types_pb2.DT_FLOAT
        tensors[name].tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in shape)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    signatures.signature_def["serving_default"].CopyFrom(signature)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = request.model_spec.name
    response.metadata["signature_def"].Pack(signatures)
    return response


@pytest.fixture
def fake_server() -> Iterator[int]:
    handler = grpc.method_handlers_generic_handler(
        "tensorflow.serving.PredictionService",
        {
            "Predict": grpc.unary_unary_rpc_method_handler(
                _fake_predict, predict_pb2.PredictRequest.FromString, predict_pb2.PredictResponse.SerializeToString
            ),
            "GetModelMetadata": grpc.unary_unary_rpc_method_handler(
                _fake_metadata,
                get_model_metadata_pb2.GetModelMetadataRequest.FromString,
                get_model_metadata_pb2.GetModelMetadataResponse.SerializeToString,
            ),
        },
    )
    with futures.ThreadPoolExecutor(2) as pool:
        server = grpc.server(pool)
        server.add_generic_rpc_handlers((handler,))
        port: int = server.add_insecure_port("127.0.0.1:0")
        server.start()
        yield port
        server.stop(None).wait()


def _guide_argv(port: int, images_file: str, batch: int) -> list[str]:
    argv = [a.replace("x.npy", images_file).replace("y.npy", images_file.replace("imgs", "lbs")) for a in GUIDE_ARGS]
    return [*argv[2:], "--grpc_address", "127.0.0.1", "--grpc_port", str(port), "--batchsize", str(batch)]


def test_predict_report_as_the_guide(fake_server: int, images_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert predict.main(_guide_argv(fake_server, images_file, 2)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:7] == [
        "Image data range: 0.0 : 255.0",
        "Start processing:",
        "\tModel name: resnet50DAG",
        "\tIterations: 1",
        f"\tImages numpy path: {images_file}",
        "\tNumpy file shape: (3, 3, 8, 8)",
        "",
    ]
    assert lines[7].startswith("Iteration 1; Processing time: ") and lines[7].endswith(" fps")
    assert lines[8:11] == [
        "imagenet top results in a single batch:",
        "\t 0 airliner 404 ; Correct match.",
        "\t 1 Arctic fox, white fox, Alopex lagopus 279 ; Correct match.",
    ]
    assert lines[11:13] == ["", "processing time for all iterations"]
    assert lines[-1] == "Classification accuracy: 100.00"
    assert len(lines) == 22


def test_predict_doubles_images_for_a_large_batch(
    fake_server: int, images_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert predict.main(_guide_argv(fake_server, images_file, 4)) == 0
    out = capsys.readouterr().out
    assert "\tNumpy file shape: (6, 3, 8, 8)\n" in out
    assert "\t 3 airliner 404 ; Correct match.\n" in out


def test_predict_invalid_output_name(fake_server: int, images_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert predict.main([*_guide_argv(fake_server, images_file, 1), "--output_name", "prob"]) == 1
    assert capsys.readouterr().out.endswith("\nInvalid output name prob\nAvailable outputs:\n1463\n")


def test_predict_unknown_servable(fake_server: int, images_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert predict.main([*_guide_argv(fake_server, images_file, 1), "--pipeline_name", "nope"]) == 1
    captured = capsys.readouterr()
    assert "\tModel name: nope\n" in captured.out
    assert captured.err == "Request failed: NOT_FOUND: Pipeline with requested name is not found\n"


def test_metadata_report_as_the_guide(fake_server: int, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--grpc_address", "127.0.0.1", "--grpc_port", str(fake_server), "--model_name", "resnet50DAG"]
    assert metadata.main(argv) == 0
    assert capsys.readouterr().out == (
        "Getting model metadata for model: resnet50DAG\n"
        "Inputs metadata:\n"
        "\tInput name: 0; shape: [-1, 1, 3, 224, 224]; dtype: DT_FLOAT\n"
        "Outputs metadata:\n"
        "\tOutput name: 1463; shape: [-1, 1, 1000]; dtype: DT_FLOAT\n"
    )
