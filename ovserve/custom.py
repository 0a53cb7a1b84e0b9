"""Custom pipeline nodes: OVMS custom node libraries (the C ABI of docs/pipelines.md#custom-nodes, over ctypes) and
Python classes."""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import importlib
import importlib.util
import logging
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .config import PYTHON_NODE
from .errors import LoadError, ServingError
from .tensors import Dim, TensorSpec, precision_name

log = logging.getLogger(__name__)

# CustomNodeTensorPrecision (docs/pipelines.md#c-abi): the C enum's values and the numpy dtypes they stand for.
_DTYPES: dict[int, np.dtype] = {
    1: np.dtype(np.float32), 2: np.dtype(np.float16), 3: np.dtype(np.uint8), 4: np.dtype(np.int8),
    5: np.dtype(np.int16), 6: np.dtype(np.uint16), 7: np.dtype(np.int32), 8: np.dtype(np.float64),
    9: np.dtype(np.int64),
}  # fmt: skip
_CODES: dict[np.dtype, int] = {dtype: code for code, dtype in _DTYPES.items()}


class _Tensor(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("data", ctypes.c_void_p),
        ("dataBytes", ctypes.c_uint64),
        ("dims", ctypes.POINTER(ctypes.c_uint64)),
        ("dimsCount", ctypes.c_uint64),
        ("precision", ctypes.c_int),
    ]


class _Info(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("dims", ctypes.POINTER(ctypes.c_uint64)),
        ("dimsCount", ctypes.c_uint64),
        ("precision", ctypes.c_int),
    ]


class _Param(ctypes.Structure):
    _fields_ = [("key", ctypes.c_char_p), ("value", ctypes.c_char_p)]


class _Instance(Protocol):
    """One node's live state in a library; its calls block, so they run in worker threads."""

    def inputs_info(self) -> dict[str, TensorSpec]: ...
    def outputs_info(self) -> dict[str, TensorSpec]: ...
    def execute(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...
    def close(self) -> None: ...


class Library(Protocol):
    """A loaded library entry of custom_node_library_config_list; `instance` initialises one pipeline node."""

    location: str

    def instance(self, node: str, params: Mapping[str, str]) -> _Instance: ...

    def renewed(self) -> Library | None:
        """The library again with the code on disk now if that changed since it was loaded, else None; raises the
        LoadError of changed code that cannot be used (and this one keeps serving)."""
        ...


def open_library(name: str, location: str) -> Library:
    """Load a library entry: a shared library path, or a Python class as "module:Class" / "file.py:Class"."""
    match = PYTHON_NODE.match(location)
    if match:
        return PythonLibrary(name, location, match["module"], match["cls"])
    return CLibrary(name, location)


def _text(name: bytes) -> str:
    """A name from the library: bytes that are not UTF-8 are kept as escapes, so the name shows in the error about
    it (no configured name matches it) instead of a decoding failure."""
    return name.decode(errors="backslashreplace")


def _spec(name: str, dims: tuple[int, ...], dtype: np.dtype) -> TensorSpec:
    shape: tuple[Dim, ...] = tuple(-1 if d <= 0 else d for d in dims)  # 0 (C) and -1 (Python) mean dynamic
    return TensorSpec(name, dtype, shape, "...")  # no batch position: the whole shape is compared


# --- C libraries ---------------------------------------------------------------------------------------------------

_SYMBOLS = ("initialize", "deinitialize", "execute", "getInputsInfo", "getOutputsInfo", "release")


class CLibrary:
    """An OVMS custom node shared library (`custom_node_interface.h`): its six functions, typed for ctypes."""

    def __init__(self, name: str, location: str) -> None:
        self.name, self.location = name, location
        try:
            self._dll = ctypes.CDLL(location, mode=ctypes.RTLD_LOCAL)
        except OSError as e:
            raise LoadError("NODE_LIBRARY_LOAD_FAILED_OPEN", f"Custom node library failed to open - {name}: {e}") from e
        missing = [s for s in _SYMBOLS if not hasattr(self._dll, s)]
        if missing:
            raise LoadError(
                "NODE_LIBRARY_LOAD_FAILED_SYM",
                f"Custom node library failed to load symbol - {name} ({location}): {', '.join(missing)}",
            )
        c = ctypes
        params = (c.POINTER(_Param), c.c_int)
        self.initialize = self._typed("initialize", c.POINTER(c.c_void_p), *params)
        self.deinitialize = self._typed("deinitialize", c.c_void_p)
        self.execute = self._typed(
            "execute", c.POINTER(_Tensor), c.c_int, c.POINTER(c.POINTER(_Tensor)), c.POINTER(c.c_int), *params,
            c.c_void_p,
        )  # fmt: skip
        info = (c.POINTER(c.POINTER(_Info)), c.POINTER(c.c_int), *params, c.c_void_p)
        self.inputs_info = self._typed("getInputsInfo", *info)
        self.outputs_info = self._typed("getOutputsInfo", *info)
        self.release = self._typed("release", c.c_void_p, c.c_void_p)

    def _typed(self, symbol: str, *argtypes: Any) -> Any:
        function = getattr(self._dll, symbol)
        function.argtypes, function.restype = list(argtypes), ctypes.c_int
        return function

    def instance(self, node: str, params: Mapping[str, str]) -> _CInstance:
        return _CInstance(self, node, params)

    def renewed(self) -> None:
        """Never: a shared library stays mapped (unloading one that may still run is not safe; a restart is)."""
        return None


class _Owned:
    """Library-owned output memory as the base of numpy arrays: the library's release() runs when the last view
    of it is gone (docs/pipelines.md#c-abi: outputs are zero-copy and released once nothing downstream needs them)."""

    def __init__(self, instance: _CInstance, address: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.__array_interface__ = {"data": (address, True), "shape": shape, "typestr": dtype.str, "version": 3}
        self._instance, self._address = instance, address
        instance.hold()

    def __del__(self) -> None:
        self._instance.free(self._address)


class _CInstance:
    """One pipeline node's manager in a C library; deinitialised once closed and its last output is released."""

    def __init__(self, library: CLibrary, node: str, params: Mapping[str, str]) -> None:
        self.library, self.node = library, node
        self._keep = [(k.encode(), v.encode()) for k, v in params.items()]  # C strings live as long as the node
        self._params = (_Param * max(1, len(self._keep)))(*(_Param(k, v) for k, v in self._keep))
        self._count = len(self._keep)
        self._params_arg = self._params if self._count else None  # OVMS passes NULL when there are no params
        self._manager = ctypes.c_void_p()
        self._lock = threading.Lock()
        self._live = 0  # output buffers not yet released
        self._closed = False
        code = library.initialize(ctypes.byref(self._manager), self._params_arg, self._count)
        if code != 0:
            raise LoadError(
                "NODE_LIBRARY_INITIALIZE_FAILED",
                f"Failure during custom node library initialization - node {node} (library {library.name}): "
                f"initialize returned {code}",
            )

    def _where(self) -> str:
        return f"node {self.node} (library {self.library.name})"

    def _info(self, function: Any, call: str) -> dict[str, TensorSpec]:
        info, count = ctypes.POINTER(_Info)(), ctypes.c_int(0)
        code = function(ctypes.byref(info), ctypes.byref(count), self._params_arg, self._count, self._manager)
        if code != 0:
            raise LoadError(
                "NODE_LIBRARY_METADATA_FAILED",
                f"Custom node failed on metadata call - {self._where()}: {call} returned {code}",
            )
        if not info:
            raise LoadError(
                "NODE_LIBRARY_OUTPUTS_CORRUPTED",
                f"Custom node library has returned corrupted outputs handle - {self._where()}: {call}",
            )
        entries = []  # (name, dims, precision), read and their dims released before anything is checked
        for i in range(max(0, count.value)):
            entry = info[i]
            dims = tuple(entry.dims[d] for d in range(entry.dimsCount)) if entry.dims else ()
            if entry.dims:
                self.library.release(ctypes.cast(entry.dims, ctypes.c_void_p), self._manager)
            if entry.name is not None:
                entries.append((_text(entry.name), dims, entry.precision))
        self.library.release(ctypes.cast(info, ctypes.c_void_p), self._manager)
        if count.value <= 0:
            raise LoadError(
                "NODE_LIBRARY_OUTPUTS_CORRUPTED_COUNT",
                f"Custom node library has produced corrupted number of outputs - {self._where()}: {call} "
                f"returned {count.value} entries",
            )
        specs: dict[str, TensorSpec] = {}
        for name, dims, precision in entries:
            dtype = _DTYPES.get(precision)
            if dtype is None:
                raise LoadError(
                    "NODE_LIBRARY_INVALID_PRECISION",
                    f"Custom node has produced tensor with unspecified precision - {self._where()}: {call} "
                    f"{name} has precision {precision}",
                )
            specs[name] = _spec(name, dims, dtype)
        return specs

    def inputs_info(self) -> dict[str, TensorSpec]:
        return self._info(self.library.inputs_info, "getInputsInfo")

    def outputs_info(self) -> dict[str, TensorSpec]:
        return self._info(self.library.outputs_info, "getOutputsInfo")

    def execute(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays = [(name.encode(), np.ascontiguousarray(value)) for name, value in inputs.items()]
        dims = [(ctypes.c_uint64 * max(1, a.ndim))(*a.shape) for _, a in arrays]
        tensors = (_Tensor * max(1, len(arrays)))()
        for tensor, (name, array), shape in zip(tensors, arrays, dims, strict=False):
            code = _CODES.get(array.dtype)
            if code is None:
                raise ServingError("INVALID_PRECISION", f"{self._where()}: no C precision for {array.dtype}")
            tensor.name, tensor.data, tensor.dataBytes = name, array.ctypes.data, array.nbytes
            tensor.dims, tensor.dimsCount, tensor.precision = shape, array.ndim, code
        outputs, count = ctypes.POINTER(_Tensor)(), ctypes.c_int(0)
        code = self.library.execute(
            tensors, len(arrays), ctypes.byref(outputs), ctypes.byref(count), self._params_arg, self._count,
            self._manager,
        )  # fmt: skip
        if code != 0:
            raise ServingError("NODE_LIBRARY_EXECUTION_FAILED", f"{self._where()}: execute returned {code}")
        if not outputs:
            raise ServingError("NODE_LIBRARY_OUTPUTS_CORRUPTED", self._where())
        try:
            if count.value <= 0:
                raise ServingError("NODE_LIBRARY_OUTPUTS_CORRUPTED_COUNT", f"{self._where()}: {count.value}")
            return self._outputs(outputs, count.value)
        finally:
            self.library.release(ctypes.cast(outputs, ctypes.c_void_p), self._manager)

    def _outputs(self, outputs: Any, count: int) -> dict[str, np.ndarray]:
        """Every output as a zero-copy array; on the first broken one, the remaining buffers are released too."""
        result: dict[str, np.ndarray] = {}
        error: ServingError | None = None
        for i in range(count):
            tensor = outputs[i]
            shape = tuple(tensor.dims[d] for d in range(tensor.dimsCount)) if tensor.dims else ()
            if tensor.dims:
                self.library.release(ctypes.cast(tensor.dims, ctypes.c_void_p), self._manager)
            try:
                if error is None:
                    result_name, array = self._output(tensor, shape)
                    result[result_name] = array
                    continue
            except ServingError as e:
                error = e
            if tensor.data:
                self.library.release(tensor.data, self._manager)
        if error is not None:
            raise error
        return result

    def _output(self, tensor: _Tensor, shape: tuple[int, ...]) -> tuple[str, np.ndarray]:
        if tensor.name is None:
            raise ServingError("NODE_LIBRARY_OUTPUT_MISSING_NAME", self._where())
        name = _text(tensor.name)
        dtype = _DTYPES.get(tensor.precision)
        if dtype is None:
            raise ServingError(
                "NODE_LIBRARY_INVALID_PRECISION", f"{self._where()}: output {name} has precision {tensor.precision}"
            )
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if tensor.dataBytes != expected or (not tensor.data and expected):
            raise ServingError(
                "NODE_LIBRARY_INVALID_CONTENT_SIZE",
                f"{self._where()}: output {name} of shape {shape} and precision {precision_name(dtype)} needs "
                f"{expected} bytes; the library gave {tensor.dataBytes}",
            )
        if not tensor.data:  # an empty tensor (e.g. no boxes found) may come without memory
            return name, np.empty(shape, dtype)
        return name, np.asarray(_Owned(self, tensor.data, shape, dtype))

    def hold(self) -> None:
        with self._lock:
            self._live += 1

    def free(self, address: int) -> None:
        self.library.release(address, self._manager)
        with self._lock:
            self._live -= 1
            last = self._closed and self._live == 0
        if last:
            self._deinitialize()

    def close(self) -> None:
        """Deinitialise now, or when the last output buffer the node gave is released."""
        with self._lock:
            self._closed = True
            last = self._live == 0
        if last:
            self._deinitialize()

    def _deinitialize(self) -> None:
        code = self.library.deinitialize(self._manager)
        if code != 0:  # docs/pipelines.md#c-abi: only logged
            log.warning("custom %s: deinitialize returned %d", self._where(), code)


# --- Python nodes --------------------------------------------------------------------------------------------------


class PythonLibrary:
    """A Python node class named as "module.path:Class" (importable) or "/path/file.py:Class". A file's class is
    imported again when the file changes (`renewed`); a module named by its import path is not (see `renewed`)."""

    def __init__(self, name: str, location: str, module: str, cls: str) -> None:
        self.name, self.location = name, location
        self._module, self._class_name = module, cls
        self._refused: tuple[str, LoadError] | None = None  # changed code that failed to import, by its digest
        self._warned = ""  # the digest of an importable module's change, logged as not taken
        try:
            loaded = _import(module)
            self._cls = getattr(loaded, cls)
        except Exception as e:  # any import-time failure of user code is that library's load error
            raise LoadError(
                "NODE_LIBRARY_LOAD_FAILED_OPEN", f"Custom node library failed to open - {name} ({location}): {e!r}"
            ) from e
        missing = [m for m in ("inputs_info", "outputs_info", "execute") if not callable(getattr(self._cls, m, None))]
        if missing:
            raise LoadError(
                "NODE_LIBRARY_LOAD_FAILED_SYM",
                f"Custom node library failed to load symbol - {name} ({location}): {', '.join(missing)}",
            )
        self._file = Path(loaded.__file__) if getattr(loaded, "__file__", None) else None
        self.digest = getattr(loaded, _DIGEST, None) or _digest(self._file)  # of the code imported

    def instance(self, node: str, params: Mapping[str, str]) -> _PythonInstance:
        return _PythonInstance(self, node, params)

    def renewed(self) -> PythonLibrary | None:
        """A "file.py:Class" whose file changed: imported again as a new module object under the same private name
        in sys.modules. Requests running hold their node objects, whose class keeps the old module alive: they finish
        on the old code; pipelines built from now on get the new class. A change that fails (import, class, methods)
        raises its LoadError, again on each call while the file stays so, without importing it again.
        An importable "module.path:Class" is not imported again: importlib.reload re-runs the code in the module
        object requests are running (a half-failed reload leaves it half-changed), other modules keep what they
        imported from it, and its submodules stay as they were; its change is logged once: a restart takes it."""
        digest = _digest(self._file)
        if digest is None or digest == self.digest:
            return None
        if not self._module.endswith(".py"):
            if self._warned != digest:
                log.warning("custom node library %s: %s changed, but a Python module named by its import path is not "
                            "imported again while serving: restart ovserve to use the new code (or name the file "
                            "itself, path/to/file.py:%s, to have it reloaded)", self.name, self._file,
                            self._class_name)  # fmt: skip
                self._warned = digest
            return None
        if self._refused is not None and self._refused[0] == digest:
            raise self._refused[1]
        try:
            return PythonLibrary(self.name, self.location, self._module, self._class_name)
        except LoadError as e:
            self._refused = (digest, e)
            raise


_DIGEST = "__ovserve_digest__"  # set on the modules _import loads from files: the digest of the code they ran


def _digest(path: Path | None) -> str | None:
    """The digest of a source file now; None when there is none or it cannot be read."""
    if path is None:
        return None
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _import(module: str) -> Any:
    if not module.endswith(".py"):
        return importlib.import_module(module)
    path = Path(module)
    source = path.read_bytes()  # read once: the code run is the code whose digest is kept
    digest = hashlib.sha256(source).hexdigest()
    key = f"ovserve_node_{abs(hash(str(path)))}_{path.stem}"  # one module per file, never a name clash
    previous = sys.modules.get(key)
    if previous is not None and getattr(previous, _DIGEST, None) == digest:
        return previous
    spec = importlib.util.spec_from_file_location(key, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    loaded = importlib.util.module_from_spec(spec)
    setattr(loaded, _DIGEST, digest)
    sys.modules[key] = loaded  # while it runs, as import does (dataclasses and the like look it up)
    try:
        exec(compile(source, str(path), "exec"), loaded.__dict__)
    except BaseException:
        if previous is not None:  # the code loaded before keeps its name
            sys.modules[key] = previous
        else:
            sys.modules.pop(key, None)
        raise
    return loaded


class _PythonInstance:
    """One pipeline node's object of a Python node class."""

    def __init__(self, library: PythonLibrary, node: str, params: Mapping[str, str]) -> None:
        self.library, self.node = library, node
        try:
            self._object = library._cls(dict(params))
        except Exception as e:
            raise LoadError(
                "NODE_LIBRARY_INITIALIZE_FAILED",
                f"Failure during custom node library initialization - {self._where()}: {e!r}",
            ) from e

    def _where(self) -> str:
        return f"node {self.node} (library {self.library.name})"

    def _info(self, call: str) -> dict[str, TensorSpec]:
        try:
            table = getattr(self._object, call)()
            specs = {str(n): _spec(str(n), tuple(int(d) for d in s), np.dtype(t)) for n, (s, t) in table.items()}
        except Exception as e:
            raise LoadError(
                "NODE_LIBRARY_METADATA_FAILED", f"Custom node failed on metadata call - {self._where()}: {call}: {e!r}"
            ) from e
        if not specs:
            raise LoadError(
                "NODE_LIBRARY_OUTPUTS_CORRUPTED_COUNT",
                f"Custom node library has produced corrupted number of outputs - {self._where()}: {call} is empty",
            )
        return specs

    def inputs_info(self) -> dict[str, TensorSpec]:
        return self._info("inputs_info")

    def outputs_info(self) -> dict[str, TensorSpec]:
        return self._info("outputs_info")

    def execute(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            produced = self._object.execute(dict(inputs))
        except ValueError as e:  # the node's way to say "this input is wrong"
            raise ServingError("NODE_LIBRARY_INPUT_REJECTED", f"{self._where()}: {e}") from e
        except Exception as e:
            raise ServingError("NODE_LIBRARY_EXECUTION_FAILED", f"{self._where()}: {e!r}") from e
        if not isinstance(produced, Mapping) or not produced:
            raise ServingError(
                "NODE_LIBRARY_OUTPUTS_CORRUPTED_COUNT", f"{self._where()}: execute must return a non-empty dict"
            )
        outputs: dict[str, np.ndarray] = {}
        for name, value in produced.items():
            array = np.asarray(value)
            if array.dtype not in _CODES:
                raise ServingError(
                    "NODE_LIBRARY_INVALID_PRECISION", f"{self._where()}: output {name} has dtype {array.dtype}"
                )
            outputs[str(name)] = array
        return outputs

    def close(self) -> None:
        """The node's close(), if any; what it raises is logged (as a C library's deinitialize result is): it runs
        while a reload retires pipelines, or after a request's last output is let go, and must not stop them."""
        close: Callable[[], Any] | None = getattr(self._object, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                log.exception("custom %s: close() failed", self._where())


# --- what pipelines use --------------------------------------------------------------------------------------------


class CustomNode:
    """A pipeline node's library instance as pipelines see it: metadata read once at load, `infer` per branch in a
    worker thread. Shared by the definitions that keep the node unchanged; closed when the last one lets go."""

    def __init__(self, library: Library, node: str, params: Mapping[str, str]) -> None:
        self.name = node
        self.library = library
        self.params = dict(params)
        self._instance = library.instance(node, params)
        self.inputs: dict[str, TensorSpec] = {}
        self.outputs: dict[str, TensorSpec] = {}
        self.error: LoadError | None = None  # a failed metadata call, reported when validation reaches this node
        try:
            self.inputs = self._instance.inputs_info()
            self.outputs = self._instance.outputs_info()
        # docs/pipelines.md#load-time-rules: initialize is step 2, the metadata calls are node checks of step 3
        except LoadError as e:
            self.error = e
        except BaseException:
            self._instance.close()
            raise
        self._holders = 0

    def same(self, library: Library, params: Mapping[str, str]) -> bool:
        """Whether this node can serve a new definition unchanged (same library file or class, same params)."""
        return self.library is library and self.params == dict(params)

    def hold(self) -> None:
        self._holders += 1

    def discard(self) -> None:
        """Close a node that no definition took (its pipeline failed validation)."""
        if self._holders == 0:
            self._instance.close()

    def drop(self) -> None:
        self._holders -= 1
        if self._holders == 0:
            self._instance.close()

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Execute once; if the caller is cancelled the call still runs to its end before the cancellation goes on,
        so a failing pipeline never answers while one of its nodes is still running."""
        future = asyncio.get_running_loop().run_in_executor(None, self._instance.execute, inputs)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            await asyncio.wait([future])
            raise
