"""Generate the protobuf message modules in ``ovserve/_proto`` from ``proto/``.

Run from anywhere with the dev dependencies installed (needs ``grpcio-tools``)::

    python scripts/gen_protos.py

The ``.proto`` files under ``proto/`` keep TensorFlow Serving's file paths and
packages, so protoc emits modules such as ``tensorflow_serving/apis/predict_pb2.py``
that import each other as ``tensorflow...``/``tensorflow_serving...``. After
running protoc (``--python_out`` and ``--pyi_out``; no ``*_pb2_grpc.py``, the
server registers generic handlers itself) this script rewrites those Python import
paths to ``ovserve._proto.tensorflow...``. The descriptor file names stay the
original ``tensorflow/...`` paths, which keeps the full message names, gRPC method
paths and ``Any`` type URLs identical to TensorFlow Serving's.

Every generated module registers its descriptors into ovserve's private pool
``ovserve._proto.POOL`` instead of protobuf's default pool (the script rewrites
``_descriptor_pool.Default()``): tritonclient registers the same ``inference.*``
full names in the default pool, and ovmsclient the same ``tensorflow.*`` ones, and
both may be imported into one process with ovserve. ``POOL`` is pre-loaded with the
well-known types the protos import (``google/protobuf/*.proto``). Code that prints
or parses protobuf JSON with ``Any`` fields must pass ``descriptor_pool=POOL`` to
``json_format``.

The output directory is wiped and recreated on every run, so the script is
idempotent.
"""

from __future__ import annotations

import re
import shutil
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "ovserve" / "_proto"
PY_PACKAGE = "ovserve._proto"
TOP_LEVEL_PACKAGES = ("tensorflow", "tensorflow_serving")
ROOT_INIT = '''"""Generated protobuf modules; never edit, regenerate with scripts/gen_protos.py.

POOL is the private descriptor pool every module here registers into (not protobuf's default pool, where
tritonclient and ovmsclient register the same full names). json_format calls on messages with Any fields need
descriptor_pool=POOL.
"""

from google.protobuf import descriptor_pool as _descriptor_pool
{imports}

POOL = _descriptor_pool.DescriptorPool()
{loads}
'''

# `from tensorflow.core.framework import tensor_pb2 as ...` / `import tensorflow_serving...`
_IMPORT_RE = re.compile(
    r"^(?P<indent>\s*)(?P<kw>from|import)\s+(?P<pkg>" + "|".join(TOP_LEVEL_PACKAGES) + r")(?P<rest>[.\s])",
    re.MULTILINE,
)
# Module name passed to the builder, e.g. `_builder.BuildTopDescriptorsAndMessages(DESCRIPTOR,
# 'tensorflow.core.framework.tensor_pb2', _globals)`: it becomes the classes' __module__.
_MODULE_NAME_RE = re.compile(
    r"(?P<head>BuildTopDescriptorsAndMessages\(DESCRIPTOR, )(?P<q>['\"])(?P<mod>\w+(?:\.\w+)*_pb2)(?P=q)"
)
# The default pool the generated code registers into, replaced by ovserve's private pool.
_DEFAULT_POOL = "_descriptor_pool.Default()"
_POOL_IMPORT = f"from {PY_PACKAGE} import POOL as _ovserve_pool\n"
_IMPORTS_MARK = "# @@protoc_insertion_point(imports)\n"
# `import "google/protobuf/any.proto";` in a .proto file: a well-known type POOL must hold first.
_WKT_IMPORT_RE = re.compile(r'^import\s+"google/protobuf/(?P<name>\w+)\.proto";', re.MULTILINE)


def _protoc_include_dir() -> Path:
    """Directory holding google/protobuf/*.proto as bundled with grpc_tools."""
    return Path(str(resources.files("grpc_tools") / "_proto"))


def _run_protoc(proto_files: list[Path]) -> None:
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{_protoc_include_dir()}",
        f"--python_out={OUT_DIR}",
        f"--pyi_out={OUT_DIR}",
        *(str(p.relative_to(PROTO_DIR)) for p in proto_files),
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")


def _qualified_module(m: re.Match[str]) -> str:
    module = m["mod"] if m["mod"].startswith(PY_PACKAGE + ".") else f"{PY_PACKAGE}.{m['mod']}"
    return f"{m['head']}{m['q']}{module}{m['q']}"


def _rewrite_imports(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    new = _IMPORT_RE.sub(
        lambda m: f"{m['indent']}{m['kw']} {PY_PACKAGE}.{m['pkg']}{m['rest']}",
        text,
    )
    if path.suffix == ".py":
        new = _MODULE_NAME_RE.sub(_qualified_module, new)
        if _DEFAULT_POOL not in new or _IMPORTS_MARK not in new:
            raise SystemExit(f"{path}: no {_DEFAULT_POOL} to redirect to the private pool")
        new = new.replace(_DEFAULT_POOL, "_ovserve_pool").replace(_IMPORTS_MARK, _IMPORTS_MARK + _POOL_IMPORT, 1)
    if new != text:
        path.write_text(new, encoding="utf-8")


def _well_known_types(proto_files: list[Path]) -> list[str]:
    """Names of the google/protobuf/*.proto files the protos import (any, wrappers, ...), sorted."""
    return sorted({m["name"] for p in proto_files for m in _WKT_IMPORT_RE.finditer(p.read_text(encoding="utf-8"))})


def _write_init_files(well_known: list[str]) -> None:
    imports = "\n".join(f"from google.protobuf import {name}_pb2 as _{name}_pb2" for name in well_known)
    loads = "\n".join(f"POOL.AddSerializedFile(_{name}_pb2.DESCRIPTOR.serialized_pb)" for name in well_known)
    (OUT_DIR / "__init__.py").write_text(ROOT_INIT.format(imports=imports, loads=loads), encoding="utf-8")
    for directory in sorted(p for p in OUT_DIR.rglob("*") if p.is_dir()):
        init = directory / "__init__.py"
        if not init.exists():
            init.write_text("", encoding="utf-8")


def main() -> int:
    proto_files = sorted(PROTO_DIR.rglob("*.proto"))
    if not proto_files:
        raise SystemExit(f"no .proto files under {PROTO_DIR}")
    if OUT_DIR.exists():
        shutil.rmtree(OUT_DIR)
    OUT_DIR.mkdir(parents=True)
    _run_protoc(proto_files)
    generated = sorted([*OUT_DIR.rglob("*.py"), *OUT_DIR.rglob("*.pyi")])
    for path in generated:
        _rewrite_imports(path)
    _write_init_files(_well_known_types(proto_files))
    print(f"generated {len(generated)} files from {len(proto_files)} protos into {OUT_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
