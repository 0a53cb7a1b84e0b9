"""ovserve-metadata: print a servable's inputs and outputs over the TF Serving gRPC GetModelMetadata API.

Takes the flags of OVMS's grpc_get_model_metadata.py sample (plus --timeout) and prints its report.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping

import grpc

from ovserve._proto.tensorflow.core.framework import types_pb2
from ovserve._proto.tensorflow.core.protobuf import meta_graph_pb2
from ovserve._proto.tensorflow_serving.apis import get_model_metadata_pb2
from ovserve.clients.predict import open_channel, report_rpc_error, unary_method

METADATA_METHOD = "/tensorflow.serving.PredictionService/GetModelMetadata"
SIGNATURE_FIELD = "signature_def"
SERVING_DEFAULT = "serving_default"


def build_parser() -> argparse.ArgumentParser:
    """The OVMS sample's flags (same names and defaults) plus --timeout."""
    parser = argparse.ArgumentParser(prog="ovserve-metadata", description="Get information about served models")
    add = parser.add_argument
    add("--grpc_address", default="localhost", help="Specify url to grpc service. default:localhost")
    add("--grpc_port", type=int, default=9000, help="Specify port to grpc service. default: 9000")
    add("--model_name", default="resnet", help="Define model name, must be same as is in service. default: resnet")
    add("--model_version", type=int, default=None, help="Define model version - must be numerical")
    add("--timeout", type=float, default=10.0, help="Deadline of the request in seconds. default: 10")
    return parser


def metadata_request(model_name: str, model_version: int | None) -> get_model_metadata_pb2.GetModelMetadataRequest:
    """A GetModelMetadataRequest for the signature_def field, with a version only when one is given."""
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = model_name
    if model_version is not None:
        request.model_spec.version.value = model_version
    request.metadata_field.append(SIGNATURE_FIELD)
    return request


def serving_signature(response: get_model_metadata_pb2.GetModelMetadataResponse) -> meta_graph_pb2.SignatureDef:
    """The 'serving_default' SignatureDef packed in the response's signature_def metadata."""
    signatures = get_model_metadata_pb2.SignatureDefMap()
    signatures.ParseFromString(response.metadata[SIGNATURE_FIELD].value)
    signature: meta_graph_pb2.SignatureDef = signatures.signature_def[SERVING_DEFAULT]
    return signature


def tensor_lines(kind: str, tensors: Mapping[str, meta_graph_pb2.TensorInfo]) -> list[str]:
    """'\\t{kind} name: N; shape: [..]; dtype: DT_..' for each tensor."""
    return [
        f"\t{kind} name: {name}; shape: {[dim.size for dim in info.tensor_shape.dim]}; "
        f"dtype: {types_pb2.DataType.Name(info.dtype)}"
        for name, info in tensors.items()
    ]


def report_lines(signature: meta_graph_pb2.SignatureDef) -> list[str]:
    """The inputs and outputs sections of the report."""
    return [
        "Inputs metadata:",
        *tensor_lines("Input", signature.inputs),
        "Outputs metadata:",
        *tensor_lines("Output", signature.outputs),
    ]


def run(args: argparse.Namespace) -> int:
    """The whole client run for parsed arguments; the exit status."""
    print("Getting model metadata for model:", args.model_name)
    request = metadata_request(args.model_name, args.model_version)
    with open_channel(args.grpc_address, args.grpc_port) as channel:
        get_metadata = unary_method(
            channel,
            METADATA_METHOD,
            get_model_metadata_pb2.GetModelMetadataRequest,
            get_model_metadata_pb2.GetModelMetadataResponse,
            args.timeout,
        )
        try:
            response = get_metadata(request)
        except grpc.RpcError as error:
            return report_rpc_error(error)
    for line in report_lines(serving_signature(response)):
        print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console script ovserve-metadata."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
