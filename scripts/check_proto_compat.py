"""Check wire compatibility of ``ovserve._proto`` with ovmsclient's TF Serving protos.

Developer check, not a pytest test. Run with the dev venv::

    .venv/bin/python scripts/check_proto_compat.py

ovmsclient bundles independently generated TensorFlow Serving code under
``ovmsclient.tfs_compat.protos``. The two sets of modules are never imported into
one process (they could collide in the default descriptor pool); instead this
script runs each side in its own subprocess:

1. ``write`` phase, once per side: build PredictRequest, PredictResponse,
   GetModelMetadataResponse (with an Any-packed SignatureDefMap) and
   GetModelStatusResponse with the same content, and write their deterministic
   serializations (plus the JSON of the status response) to a temp directory.
2. ``read`` phase, once per side: parse the *other* side's bytes and check every
   field.
3. The orchestrator finally compares both sides' bytes (and JSON) for equality.

The side processes are this same file run with ``--side {ours,ovmsclient}
--phase {write,read} --dir DIR``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SIDES = ("ovmsclient", "ours")
MESSAGES = ("predict_request", "predict_response", "metadata_response", "status_response")
SIGNATURE_DEF_MAP_URL = "type.googleapis.com/tensorflow.serving.SignatureDefMap"

# Test content shared by both sides.
FLOATS = [0.5, -1.25, 3.0, 1e-3, -7.5, 42.0]
HALF_BITS = [0x3C00, 0xC000, 0x7BFF, 0x0001]  # 1.0, -2.0, 65504.0, smallest subnormal
STRINGS = [b"abc", b"\xff\x00\x01", b""]
UINT64_BIG = 2**64 - 1
INT64_NEG = -(2**63)


def _load(side: str) -> SimpleNamespace:
    """Import one side's generated modules (and only those)."""
    if side == "ours":
        sys.path.insert(0, str(ROOT))
        from ovserve._proto.tensorflow.core.framework import types_pb2
        from ovserve._proto.tensorflow.core.protobuf import error_codes_pb2
        from ovserve._proto.tensorflow_serving.apis import (
            get_model_metadata_pb2,
            get_model_status_pb2,
            predict_pb2,
        )
    else:
        from ovmsclient.tfs_compat.protos.tensorflow.core.framework import types_pb2
        from ovmsclient.tfs_compat.protos.tensorflow.core.protobuf import error_codes_pb2
        from ovmsclient.tfs_compat.protos.tensorflow_serving.apis import (
            get_model_metadata_pb2,
            get_model_status_pb2,
            predict_pb2,
        )
    return SimpleNamespace(
        side=side,
        types=types_pb2,
        errors=error_codes_pb2,
        predict=predict_pb2,
        metadata=get_model_metadata_pb2,
        status=get_model_status_pb2,
    )


def _float_bytes() -> bytes:
    import numpy as np

    return np.asarray(FLOATS, dtype="<f4").tobytes()


def _set_shape(shape_msg: Any, dims: list[int], names: list[str] | None = None) -> None:
    for i, size in enumerate(dims):
        dim = shape_msg.dim.add()
        dim.size = size
        if names:
            dim.name = names[i]


def _build(m: SimpleNamespace) -> dict[str, Any]:
    t = m.types
    req = m.predict.PredictRequest()
    req.model_spec.name = "resnet"
    req.model_spec.version.value = 3
    req.model_spec.signature_name = "serving_default"
    req.output_filter.extend(["1463", "probs"])
    x = req.inputs["0"]
    x.dtype = t.DT_FLOAT
    _set_shape(x.tensor_shape, [1, 2, 3], ["N", "C", "W"])
    x.tensor_content = _float_bytes()
    s = req.inputs["s"]
    s.dtype = t.DT_STRING
    _set_shape(s.tensor_shape, [len(STRINGS)])
    s.string_val.extend(STRINGS)
    h = req.inputs["h"]
    h.dtype = t.DT_HALF
    _set_shape(h.tensor_shape, [len(HALF_BITS)])
    h.half_val.extend(HALF_BITS)
    v = req.inputs["vals"]
    v.dtype = t.DT_INT64
    v.tensor_shape.unknown_rank = True
    v.version_number = 7
    v.int64_val.extend([INT64_NEG, -1, 0, 2**62])
    v.int_val.extend([-5, 2**31 - 1])
    v.uint64_val.extend([UINT64_BIG, 1])
    v.uint32_val.append(2**32 - 1)
    v.bool_val.extend([True, False, True])
    v.double_val.append(-2.5)
    v.float_val.append(0.25)

    resp = m.predict.PredictResponse()
    resp.model_spec.name = "resnet"
    resp.model_spec.version.value = 3
    resp.model_spec.signature_name = "serving_default"
    o = resp.outputs["1463"]
    o.dtype = t.DT_FLOAT
    _set_shape(o.tensor_shape, [1, 6])
    o.tensor_content = _float_bytes()
    o2 = resp.outputs["names"]
    o2.dtype = t.DT_STRING
    _set_shape(o2.tensor_shape, [len(STRINGS)])
    o2.string_val.extend(STRINGS)

    sig_map = m.metadata.SignatureDefMap()
    sig = sig_map.signature_def["serving_default"]
    sig.method_name = "tensorflow/serving/predict"
    inp = sig.inputs["0"]
    inp.name = "0"
    inp.dtype = t.DT_FLOAT
    _set_shape(inp.tensor_shape, [1, 3, 224, 224])
    out = sig.outputs["1463"]
    out.name = "1463"
    out.dtype = t.DT_FLOAT
    _set_shape(out.tensor_shape, [-1, 1000])
    meta = m.metadata.GetModelMetadataResponse()
    meta.model_spec.name = "resnet"
    meta.model_spec.version.value = 1
    any_value = meta.metadata["signature_def"]
    if m.side == "ours":
        # Our package is the original one, so Pack() must produce TF Serving's URL.
        any_value.Pack(sig_map, deterministic=True)
    else:
        # ovmsclient renames the proto packages (ovmsclient.serving.*), so Pack() would give a
        # different URL; fill the Any the way OVMS/TF Serving put it on the wire.
        any_value.type_url = SIGNATURE_DEF_MAP_URL
        any_value.value = sig_map.SerializeToString(deterministic=True)

    status = m.status.GetModelStatusResponse()
    for version, state, code, message in (
        (1, m.status.ModelVersionStatus.AVAILABLE, m.errors.OK, "OK"),
        (2, m.status.ModelVersionStatus.LOADING, m.errors.OK, "OK"),
        (3, m.status.ModelVersionStatus.END, m.errors.NOT_FOUND, "Model with requested version is retired"),
        (4, m.status.ModelVersionStatus.UNLOADING, m.errors.UNKNOWN, ""),
    ):
        mvs = status.model_version_status.add()
        mvs.version = version
        mvs.state = state
        mvs.status.error_code = code
        mvs.status.error_message = message

    return {
        "predict_request": req,
        "predict_response": resp,
        "metadata_response": meta,
        "status_response": status,
    }


class Checker:
    """Collects field comparisons; prints one line per failed comparison."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.checks = 0
        self.failures: list[str] = []

    def eq(self, what: str, actual: Any, expected: Any) -> None:
        self.checks += 1
        if actual != expected:
            self.failures.append(f"{what}: got {actual!r}, expected {expected!r}")


def _unknown(msg: Any) -> int:
    """Number of unknown fields directly in msg (fields the parser did not recognise)."""
    from google.protobuf.unknown_fields import UnknownFieldSet

    return len(UnknownFieldSet(msg))


def _check_shape(c: Checker, what: str, shape: Any, dims: list[int], names: list[str] | None = None) -> None:
    c.eq(f"{what}.dim sizes", [d.size for d in shape.dim], dims)
    c.eq(f"{what}.dim names", [d.name for d in shape.dim], names or [""] * len(dims))
    c.eq(f"{what}.unknown_rank", shape.unknown_rank, False)


def _check_model_spec(c: Checker, what: str, spec: Any, name: str, version: int, signature: str) -> None:
    c.eq(f"{what}.name", spec.name, name)
    c.eq(f"{what}.version_choice", spec.WhichOneof("version_choice"), "version")
    c.eq(f"{what}.version.value", spec.version.value, version)
    c.eq(f"{what}.signature_name", spec.signature_name, signature)


def _check_all(m: SimpleNamespace, data: dict[str, bytes], c: Checker) -> None:
    t = m.types

    req = m.predict.PredictRequest()
    req.ParseFromString(data["predict_request"])
    _check_model_spec(c, "PredictRequest.model_spec", req.model_spec, "resnet", 3, "serving_default")
    c.eq("PredictRequest.output_filter", list(req.output_filter), ["1463", "probs"])
    c.eq("PredictRequest.inputs keys", sorted(req.inputs), ["0", "h", "s", "vals"])
    x = req.inputs["0"]
    c.eq("inputs[0].dtype", t.DataType.Name(x.dtype), "DT_FLOAT")
    _check_shape(c, "inputs[0].tensor_shape", x.tensor_shape, [1, 2, 3], ["N", "C", "W"])
    c.eq("inputs[0].tensor_content", x.tensor_content, _float_bytes())
    s = req.inputs["s"]
    c.eq("inputs[s].dtype", t.DataType.Name(s.dtype), "DT_STRING")
    _check_shape(c, "inputs[s].tensor_shape", s.tensor_shape, [len(STRINGS)])
    c.eq("inputs[s].string_val", list(s.string_val), STRINGS)
    h = req.inputs["h"]
    c.eq("inputs[h].dtype", t.DataType.Name(h.dtype), "DT_HALF")
    _check_shape(c, "inputs[h].tensor_shape", h.tensor_shape, [len(HALF_BITS)])
    c.eq("inputs[h].half_val", list(h.half_val), HALF_BITS)
    v = req.inputs["vals"]
    c.eq("inputs[vals].dtype", t.DataType.Name(v.dtype), "DT_INT64")
    c.eq("inputs[vals].tensor_shape.unknown_rank", v.tensor_shape.unknown_rank, True)
    c.eq("inputs[vals].version_number", v.version_number, 7)
    c.eq("inputs[vals].int64_val", list(v.int64_val), [INT64_NEG, -1, 0, 2**62])
    c.eq("inputs[vals].int_val", list(v.int_val), [-5, 2**31 - 1])
    c.eq("inputs[vals].uint64_val", list(v.uint64_val), [UINT64_BIG, 1])
    c.eq("inputs[vals].uint32_val", list(v.uint32_val), [2**32 - 1])
    c.eq("inputs[vals].bool_val", list(v.bool_val), [True, False, True])
    c.eq("inputs[vals].double_val", list(v.double_val), [-2.5])
    c.eq("inputs[vals].float_val", list(v.float_val), [0.25])
    for name, tensor in req.inputs.items():
        c.eq(f"inputs[{name}] unknown fields", _unknown(tensor), 0)
    c.eq("PredictRequest unknown fields", _unknown(req), 0)

    resp = m.predict.PredictResponse()
    resp.ParseFromString(data["predict_response"])
    _check_model_spec(c, "PredictResponse.model_spec", resp.model_spec, "resnet", 3, "serving_default")
    c.eq("PredictResponse.outputs keys", sorted(resp.outputs), ["1463", "names"])
    o = resp.outputs["1463"]
    c.eq("outputs[1463].dtype", t.DataType.Name(o.dtype), "DT_FLOAT")
    _check_shape(c, "outputs[1463].tensor_shape", o.tensor_shape, [1, 6])
    c.eq("outputs[1463].tensor_content", o.tensor_content, _float_bytes())
    o2 = resp.outputs["names"]
    c.eq("outputs[names].dtype", t.DataType.Name(o2.dtype), "DT_STRING")
    c.eq("outputs[names].string_val", list(o2.string_val), STRINGS)
    c.eq("PredictResponse unknown fields", _unknown(resp), 0)

    meta = m.metadata.GetModelMetadataResponse()
    meta.ParseFromString(data["metadata_response"])
    _check_model_spec(c, "GetModelMetadataResponse.model_spec", meta.model_spec, "resnet", 1, "")
    c.eq("GetModelMetadataResponse.metadata keys", sorted(meta.metadata), ["signature_def"])
    any_value = meta.metadata["signature_def"]
    c.eq("metadata[signature_def].type_url", any_value.type_url, SIGNATURE_DEF_MAP_URL)
    sig_map = m.metadata.SignatureDefMap()
    if m.side == "ours":
        c.eq("Any.Unpack(SignatureDefMap)", any_value.Unpack(sig_map), True)
    else:
        # What ovmsclient's GrpcModelMetadataResponse does: parse Any.value directly.
        sig_map.ParseFromString(any_value.value)
        print(
            f"  [ovmsclient] received Any.type_url = {any_value.type_url}; "
            f"ovmsclient's own SignatureDefMap is {sig_map.DESCRIPTOR.full_name}, so "
            f"Any.Is() = {any_value.Is(sig_map.DESCRIPTOR)} (ovmsclient parses Any.value instead)"
        )
    c.eq("SignatureDefMap keys", sorted(sig_map.signature_def), ["serving_default"])
    sig = sig_map.signature_def["serving_default"]
    c.eq("serving_default.method_name", sig.method_name, "tensorflow/serving/predict")
    c.eq("serving_default.inputs keys", sorted(sig.inputs), ["0"])
    c.eq("serving_default.outputs keys", sorted(sig.outputs), ["1463"])
    inp, out = sig.inputs["0"], sig.outputs["1463"]
    c.eq("inputs[0].encoding", inp.WhichOneof("encoding"), "name")
    c.eq("inputs[0].name", inp.name, "0")
    c.eq("inputs[0].dtype", t.DataType.Name(inp.dtype), "DT_FLOAT")
    _check_shape(c, "inputs[0].tensor_shape", inp.tensor_shape, [1, 3, 224, 224])
    c.eq("outputs[1463].name", out.name, "1463")
    c.eq("outputs[1463].dtype", t.DataType.Name(out.dtype), "DT_FLOAT")
    _check_shape(c, "outputs[1463].tensor_shape", out.tensor_shape, [-1, 1000])
    c.eq("SignatureDefMap unknown fields", _unknown(sig_map), 0)

    status = m.status.GetModelStatusResponse()
    status.ParseFromString(data["status_response"])
    state_name = m.status.ModelVersionStatus.State.Name
    got = [
        (
            s.version,
            state_name(s.state),
            m.errors.Code.Name(s.status.error_code),
            s.status.error_message,
        )
        for s in status.model_version_status
    ]
    c.eq(
        "GetModelStatusResponse.model_version_status",
        got,
        [
            (1, "AVAILABLE", "OK", "OK"),
            (2, "LOADING", "OK", "OK"),
            (3, "END", "NOT_FOUND", "Model with requested version is retired"),
            (4, "UNLOADING", "UNKNOWN", ""),
        ],
    )
    c.eq("state numbers", [int(s.state) for s in status.model_version_status], [30, 20, 50, 40])
    c.eq("error_code numbers", [int(s.status.error_code) for s in status.model_version_status], [0, 0, 5, 2])


def _side_main(side: str, phase: str, directory: Path) -> int:
    m = _load(side)
    foreign = "ovmsclient" if side == "ours" else "ovserve"
    if phase == "write":
        from google.protobuf import json_format

        messages = _build(m)
        for name, msg in messages.items():
            (directory / f"{side}.{name}.bin").write_bytes(msg.SerializeToString(deterministic=True))
        (directory / f"{side}.status_response.json").write_text(
            json_format.MessageToJson(messages["status_response"]), encoding="utf-8"
        )
        print(f"  [{side}] wrote {len(messages)} messages")
        rc = 0
    else:
        other = "ovmsclient" if side == "ours" else "ours"
        data = {name: (directory / f"{other}.{name}.bin").read_bytes() for name in MESSAGES}
        c = Checker(f"{other} -> {side}")
        _check_all(m, data, c)
        for failure in c.failures:
            print(f"  [{side}] FAIL {failure}")
        print(f"  [{side}] parsed {other}'s bytes: {c.checks - len(c.failures)}/{c.checks} checks passed")
        rc = 1 if c.failures else 0
    if any(mod == foreign or mod.startswith(foreign + ".") for mod in sys.modules):
        print(f"  [{side}] FAIL {foreign} was imported into this process")
        rc = 1
    return rc


def _run_side(side: str, phase: str, directory: Path) -> int:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--phase", phase, "--dir", str(directory)]
    return subprocess.run(cmd, cwd=ROOT, check=False).returncode


def _orchestrate() -> int:
    failed = False
    with tempfile.TemporaryDirectory(prefix="proto-compat-") as tmp:
        directory = Path(tmp)
        for phase in ("write", "read"):
            print(f"{phase} phase")
            for side in SIDES:
                if _run_side(side, phase, directory) != 0:
                    failed = True
            if failed:
                break
        if not failed:
            print("byte comparison (deterministic serialization)")
            for name in MESSAGES:
                a = (directory / f"ovmsclient.{name}.bin").read_bytes()
                b = (directory / f"ours.{name}.bin").read_bytes()
                same = a == b
                failed |= not same
                print(f"  {name}: {len(b)} bytes, {'identical' if same else 'DIFFERENT'}")
            a_json = (directory / "ovmsclient.status_response.json").read_text(encoding="utf-8")
            b_json = (directory / "ours.status_response.json").read_text(encoding="utf-8")
            failed |= a_json != b_json
            print(f"  status_response JSON: {'identical' if a_json == b_json else 'DIFFERENT'}")
    print("FAILED" if failed else "OK: ovserve._proto is wire compatible with ovmsclient's TF Serving protos")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=SIDES, help="internal: run one side")
    parser.add_argument("--phase", choices=("write", "read"), help="internal: phase of the side run")
    parser.add_argument("--dir", type=Path, help="internal: exchange directory")
    args = parser.parse_args()
    if args.side:
        if not args.phase or not args.dir:
            parser.error("--side needs --phase and --dir")
        return _side_main(args.side, args.phase, args.dir)
    return _orchestrate()


if __name__ == "__main__":
    sys.exit(main())
