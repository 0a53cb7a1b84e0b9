"""ovserve-predict: classify numpy images over the TF Serving gRPC Predict API, like OVMS's grpc_predict_resnet.py.

Takes the flags of the OVMS sample and prints its report. On purpose it differs in three ways: images are sent as
float32 (the sample sends float64), per-iteration times are kept as float milliseconds (the sample truncates them
to int, which gives 0 ms and a division by zero against a fast server), and the per-call deadline is a flag.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from functools import cache
from importlib import resources
from typing import Protocol, TypeVar

import grpc
import numpy as np
import numpy.typing as npt

from ovserve._proto.tensorflow_serving.apis import predict_pb2
from ovserve.tfs import make_ndarray, make_tensor_proto

PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
MAX_MESSAGE_LENGTH = 1 << 30  # 1 GiB both ways
BACKGROUND_CLASS_COUNT = 1001  # ImageNet models with a background class at index 0

Images = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]


class _Message(Protocol):
    """What the gRPC serializers need of a protobuf message (google.protobuf ships no type stubs)."""

    def SerializeToString(self) -> bytes: ...

    @classmethod
    def FromString(cls, data: bytes) -> object: ...


RequestT = TypeVar("RequestT", bound=_Message)
ResponseT = TypeVar("ResponseT", bound=_Message)

# --- gRPC (shared with ovserve.clients.metadata) ----------------------------------------------------------------


def _read_file(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as file:
        return file.read()


def open_channel(
    address: str,
    port: int,
    tls: bool = False,
    server_cert: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
) -> grpc.Channel:
    """A channel to address:port allowing 1 GiB messages; with tls, secured with the given PEM files."""
    target = f"{address}:{port}"
    options = [
        ("grpc.max_send_message_length", MAX_MESSAGE_LENGTH),
        ("grpc.max_receive_message_length", MAX_MESSAGE_LENGTH),
    ]
    if not tls:
        return grpc.insecure_channel(target, options=options)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read_file(server_cert),
        private_key=_read_file(client_key),
        certificate_chain=_read_file(client_cert),
    )
    return grpc.secure_channel(target, credentials, options=options)


def unary_method(
    channel: grpc.Channel, method: str, request_type: type[RequestT], response_type: type[ResponseT], timeout: float
) -> Callable[[RequestT], ResponseT]:
    """A function calling one unary gRPC method with a deadline of timeout seconds."""
    stub = channel.unary_unary(
        method, request_serializer=request_type.SerializeToString, response_deserializer=response_type.FromString
    )

    def invoke(request: RequestT) -> ResponseT:
        response: ResponseT = stub(request, timeout=timeout)
        return response

    return invoke


def report_rpc_error(error: grpc.RpcError) -> int:
    """Print 'Request failed: CODE: details' to stderr; the exit status of a failed request (1)."""
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = error.details() if isinstance(error, grpc.Call) else str(error)
    print(f"Request failed: {code.name}: {details}", file=sys.stderr)
    return 1


# --- arguments ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The OVMS sample's flags (same names and defaults) plus --timeout."""
    parser = argparse.ArgumentParser(
        prog="ovserve-predict",
        description="Sends requests via TFS gRPC API using images in numpy format. It displays performance "
        "statistics and optionally the model accuracy. Images are rescaled to 0-255 and sent as float32 "
        "(OVMS's grpc_predict_resnet.py sends float64; the model input is FP32).",
    )
    add = parser.add_argument
    add("--images_numpy_path", required=True, help="numpy in shape [n,w,h,c] or [n,c,h,w]")
    add("--labels_numpy_path", help="numpy in shape [n,1] - can be used to check model accuracy")
    add("--grpc_address", default="localhost", help="Specify url to grpc service. default:localhost")
    add("--grpc_port", type=int, default=9000, help="Specify port to grpc service. default: 9000")
    add("--input_name", default="input", help="Specify input tensor name. default: input")
    add(
        "--output_name",
        default="resnet_v1_50/predictions/Reshape_1",
        help="Specify output name. default: resnet_v1_50/predictions/Reshape_1",
    )
    add(
        "--transpose_input",
        choices=["False", "True"],
        default="True",
        help="Set to False to skip NHWC>NCHW or NCHW>NHWC input transposing. default: True",
    )
    add(
        "--transpose_method",
        choices=["nchw2nhwc", "nhwc2nchw"],
        default="nhwc2nchw",
        help="How the input transposition should be executed: nhwc2nchw or nchw2nhwc",
    )
    add(
        "--iterations",
        type=int,
        default=0,
        help="Number of requests iterations, as default use number of images in numpy memmap. "
        "default: 0 (consume all frames)",
    )
    add("--batchsize", type=_positive_int, default=1, help="Number of images in a single request. default: 1")
    add("--model_name", default="resnet", help="Define model name, must be same as is in service. default: resnet")
    add("--pipeline_name", default="", help="Define pipeline name, must be same as is in service")
    add(
        "--dag-batch-size-auto",
        action="store_true",
        help="Add a demultiplexer dimension of 1 after the batch: request shape [N,1,...]",
    )
    add("--tls", action="store_true", help="use TLS communication with gRPC endpoint")
    add("--server_cert", help="Path to server certificate")
    add("--client_cert", help="Path to client certificate")
    add("--client_key", help="Path to client key")
    add("--timeout", type=float, default=10.0, help="Deadline of each request in seconds. default: 10")
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer: {text}")
    return value


# --- data ---------------------------------------------------------------------------------------------------


def rescale(images: npt.NDArray[np.generic]) -> Images:
    """Shift to 0 and stretch to 0..255 as the sample does (imgs - min, then / ptp * 255), as float32."""
    shifted = images - np.min(images)
    span = np.ptp(shifted)
    scaled = shifted / span * 255 if span else shifted
    return np.asarray(scaled, dtype=np.float32)


def load_images(path: str) -> Images:
    """The images of an .npy file (memory-mapped), rescaled."""
    return rescale(np.load(path, mmap_mode="r", allow_pickle=False))


def load_labels(path: str) -> Labels:
    """Class indexes of an .npy file of shape [n] or [n,1]."""
    labels = np.load(path, mmap_mode="r", allow_pickle=False)
    return np.asarray(labels).reshape(len(labels), -1)[:, 0].astype(np.int64)


def fit_to_batch(images: Images, labels: Labels | None, batch_size: int) -> tuple[Images, Labels | None]:
    """Double the images (and labels) until there are more images than batch_size."""
    if len(images) == 0:
        raise ValueError("the images file holds no images")
    while batch_size >= len(images):
        images = np.concatenate((images, images))
        if labels is not None:
            labels = np.concatenate((labels, labels))
    return images, labels


def iteration_count(image_count: int, batch_size: int, requested: int) -> int:
    """The requested number of iterations, or when 0 as many whole batches as there are images."""
    return requested or image_count // batch_size


def transpose(images: Images, method: str) -> Images:
    """nhwc2nchw or nchw2nhwc."""
    axes = (0, 3, 1, 2) if method == "nhwc2nchw" else (0, 2, 3, 1)
    return images.transpose(axes)


def batch_offsets(image_count: int, batch_size: int, iterations: int) -> Iterator[int]:
    """Start index of each iteration's batch, starting over from the first image when a pass is done."""
    batches_per_pass = image_count // batch_size
    for iteration in range(iterations):
        yield iteration % batches_per_pass * batch_size


# --- results ------------------------------------------------------------------------------------------------


@cache
def class_names() -> tuple[str, ...]:
    """ImageNet class names, index = line number of the packaged imagenet_classes.txt."""
    text = resources.files("ovserve.clients").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    return tuple(text.splitlines())


def top_class(row: npt.NDArray[np.generic]) -> int:
    """Argmax of one image's output (all dims flattened), less 1 when there are 1001 classes (background)."""
    flat = np.ravel(row)
    offset = 1 if flat.size == BACKGROUND_CLASS_COUNT else 0
    return int(np.argmax(flat)) - offset


def classify(output: npt.NDArray[np.generic]) -> list[int]:
    """The top class of each image of a batch output (dim 0 = image)."""
    return [top_class(row) for row in output]


def class_name(names: Sequence[str], index: int) -> str:
    return names[index] if 0 <= index < len(names) else "unknown"


def result_line(position: int, index: int, label: int | None, names: Sequence[str]) -> str:
    """One image's line, as the sample's print("\\t", i, class_name, class_index, mark)."""
    if label is None:
        mark = ""
    elif index == label:
        mark = "; Correct match."
    else:
        mark = f"; Incorrect match. Should be {label} {class_name(names, label)}"
    return " ".join(str(part) for part in ("\t", position, class_name(names, index), index, mark))


def batch_lines(classes: Sequence[int], labels: Labels | None, names: Sequence[str]) -> list[str]:
    """The result line of each image of a batch."""
    return [result_line(i, index, _label(labels, i), names) for i, index in enumerate(classes)]


def count_matches(classes: Sequence[int], labels: Labels | None) -> tuple[int, int]:
    """(correct, checked) over the images of a batch that have a label."""
    pairs = [(index, _label(labels, i)) for i, index in enumerate(classes)]
    checked = [index == label for index, label in pairs if label is not None]
    return sum(checked), len(checked)


def _label(labels: Labels | None, position: int) -> int | None:
    return int(labels[position]) if labels is not None and position < len(labels) else None


def speed(batch_size: int, milliseconds: float) -> float:
    """Images per second."""
    return 1000 * batch_size / milliseconds if milliseconds else float("inf")


def iteration_line(iteration: int, milliseconds: float, batch_size: int) -> str:
    fps = speed(batch_size, milliseconds)
    return f"Iteration {iteration}; Processing time: {milliseconds:.2f} ms; speed {fps:.2f} fps"


def statistics_lines(times: Sequence[float], batch_size: int) -> list[str]:
    """The sample's closing statistics block over per-iteration times in milliseconds."""
    values = np.asarray(times, dtype=np.float64)
    rows = (
        ("average time", "average speed", np.average(values)),
        ("median time", "median speed", np.median(values)),
        ("max time", "min speed", np.max(values)),
        ("min time", "max speed", np.min(values)),
        ("time percentile 90", "speed percentile 90", np.percentile(values, 90)),
        ("time percentile 50", "speed percentile 50", np.percentile(values, 50)),
    )
    lines = ["", "processing time for all iterations"]
    lines += [f"{name}: {t:.2f} ms; {rate}: {speed(batch_size, float(t)):.2f} fps" for name, rate, t in rows]
    lines.append(f"time standard deviation: {np.std(values):.2f}")
    lines.append(f"time variance: {np.var(values):.2f}")
    return lines


# --- requests -----------------------------------------------------------------------------------------------


def predict_request(servable: str, input_name: str, batch: Images, demultiplexer: bool) -> predict_pb2.PredictRequest:
    """A PredictRequest with the batch as float32 tensor_content; demultiplexer adds a dim of 1 after the batch."""
    if demultiplexer:
        batch = batch.reshape((*batch.shape[:1], 1, *batch.shape[1:]))
    request = predict_pb2.PredictRequest()
    request.model_spec.name = servable
    request.inputs[input_name].CopyFrom(make_tensor_proto(batch.astype(np.float32, copy=False)))
    return request


def print_lines(lines: Sequence[str]) -> None:
    for line in lines:
        print(line)


def prepare(args: argparse.Namespace) -> tuple[Images, Labels | None, int]:
    """Load, fit and transpose the data, printing the header; (images, labels, iterations)."""
    images = load_images(args.images_numpy_path)
    print("Image data range:", np.amin(images), ":", np.amax(images))
    labels = load_labels(args.labels_numpy_path) if args.labels_numpy_path is not None else None
    images, labels = fit_to_batch(images, labels, args.batchsize)
    iterations = iteration_count(len(images), args.batchsize, args.iterations)
    print("Start processing:")
    print(f"\tModel name: {args.pipeline_name or args.model_name}")
    print(f"\tIterations: {iterations}")
    print(f"\tImages numpy path: {args.images_numpy_path}")
    if args.transpose_input == "True":
        images = transpose(images, args.transpose_method)
    print(f"\tNumpy file shape: {images.shape}\n")
    return images, labels, iterations


def process(
    send: Callable[[predict_pb2.PredictRequest], predict_pb2.PredictResponse],
    args: argparse.Namespace,
    images: Images,
    labels: Labels | None,
    iterations: int,
) -> int:
    """Run the iterations and print their results and the statistics; the exit status."""
    batch_size: int = args.batchsize
    names = class_names()
    times: list[float] = []
    correct = checked = 0
    for iteration, start in enumerate(batch_offsets(len(images), batch_size, iterations), start=1):
        window = slice(start, start + batch_size)
        request = predict_request(
            args.pipeline_name or args.model_name, args.input_name, images[window], args.dag_batch_size_auto
        )
        began = time.perf_counter()
        response = send(request)
        milliseconds = (time.perf_counter() - began) * 1000
        if args.output_name not in response.outputs:
            print_lines([f"Invalid output name {args.output_name}", "Available outputs:", *response.outputs])
            return 1
        times.append(milliseconds)
        classes = classify(make_ndarray(response.outputs[args.output_name], args.output_name))
        batch_labels = labels[window] if labels is not None else None
        print(iteration_line(iteration, milliseconds, batch_size))
        print("imagenet top results in a single batch:")
        print_lines(batch_lines(classes, batch_labels, names))
        matched, labelled = count_matches(classes, batch_labels)
        correct, checked = correct + matched, checked + labelled
    print_lines(statistics_lines(times, batch_size))
    if labels is not None:
        print(f"Classification accuracy: {100 * correct / checked if checked else 0.0:.2f}")
    return 0


def run(args: argparse.Namespace) -> int:
    """The whole client run for parsed arguments; the exit status."""
    images, labels, iterations = prepare(args)
    channel = open_channel(
        args.grpc_address, args.grpc_port, args.tls, args.server_cert, args.client_cert, args.client_key
    )
    with channel:
        send = unary_method(
            channel, PREDICT_METHOD, predict_pb2.PredictRequest, predict_pb2.PredictResponse, args.timeout
        )
        try:
            return process(send, args, images, labels, iterations)
        except grpc.RpcError as error:
            return report_rpc_error(error)


def main(argv: list[str] | None = None) -> int:
    """Console script ovserve-predict."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
