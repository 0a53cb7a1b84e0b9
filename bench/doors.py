"""The benchmarks' clients: raw OpenVINO, a gRPC call and a minimal HTTP/1.1 keep-alive client as "doors" that send
one prepared request back to back, plus the KServe gRPC request and the check of a first answer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Protocol

from common import HOST, INPUT, OUTPUT, REQUEST_TIMEOUT, RawDriver, Result, closed_loop, grpc_run, identity

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
Array = Any  # numpy arrays; numpy is imported lazily

# --- a minimal HTTP/1.1 keep-alive client -----------------------------------------------------------------------


def http_request(method: str, path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    """A complete HTTP/1.1 request, serialized once and sent as is on every call."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class HttpConnection:
    """One keep-alive connection: write a prepared request, read the status line, the headers and the body
    (Content-Length or chunked; uvicorn answers chunked when the application sets no length)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> HttpConnection:
        reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 20)
        return cls(reader, writer)

    async def send(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        self.writer.write(request)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._chunked()
        else:
            raise RuntimeError(f"HTTP {status} response with neither Content-Length nor chunked encoding")
        if headers.get("connection", "").lower() == "close":
            raise RuntimeError(f"the server closed the keep-alive connection (HTTP {status}: {body[:200]!r})")
        return status, headers, body

    async def _chunked(self) -> bytes:
        chunks = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                while await self.reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then the empty line
                    pass
                return b"".join(chunks)
            chunks.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):  # a connection the server has already closed: nothing left to do
            await self.writer.wait_closed()


# --- the doors --------------------------------------------------------------------------------------------------


class Door(Protocol):
    name: str
    request_bytes: int

    async def output(self) -> Array:
        """Send the request once and decode the model's output from the response."""

    async def run(self, clients: int, seconds: float) -> Result:
        """`clients` closed-loop clients sending the request back to back for `seconds`."""


class RawDoor:
    name = "raw"

    def __init__(self, compiled: Any, nireq: int, image: Array) -> None:
        self.compiled = compiled
        self.image = image
        self.request_bytes = image.nbytes
        self.driver = RawDriver(compiled, nireq, image[None])  # one job of one [1,3,224,224] image per request

    async def output(self) -> Array:
        return self.compiled({INPUT: self.image})[self.compiled.output(0)]

    async def run(self, clients: int, seconds: float) -> Result:
        return await asyncio.to_thread(self.driver.run, clients, seconds)


class GrpcDoor:
    """A unary call on one grpc.aio channel with bytes in and bytes out: serialized once, never parsed in the loop."""

    def __init__(self, name: str, call: Callable[..., Any], payload: bytes, decode: Callable[[bytes], Array]) -> None:
        self.name = name
        self.call = call
        self.payload = payload
        self.request_bytes = len(payload)
        self.decode = decode

    async def output(self) -> Array:
        return self.decode(await self.call(self.payload, timeout=REQUEST_TIMEOUT))

    async def run(self, clients: int, seconds: float) -> Result:
        return await grpc_run(self.call, [self.payload], 1, clients, seconds)


class HttpDoor:
    """A prepared HTTP request sent on one keep-alive connection per client; only the status is looked at."""

    def __init__(self, name: str, port: int, request: bytes, decode: Callable[[dict[str, str], bytes], Array]) -> None:
        self.name = name
        self.port = port
        self.request = request
        self.request_bytes = len(request)
        self.decode = decode
        self.connections: list[HttpConnection] = []

    async def _send(self, connection: HttpConnection) -> tuple[dict[str, str], bytes]:
        status, headers, body = await connection.send(self.request)
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {body[:300].decode(errors='replace')}")
        return headers, body

    async def output(self) -> Array:
        connection = await HttpConnection.open(self.port)
        try:
            return self.decode(*await asyncio.wait_for(self._send(connection), REQUEST_TIMEOUT))
        finally:
            await connection.close()

    async def run(self, clients: int, seconds: float) -> Result:
        # Fresh connections for each run: servers close keep-alive connections left idle between slices (uvicorn
        # after 5 s), and opening `clients` connections is nothing beside a slice of requests.
        self.connections = [await HttpConnection.open(self.port) for _ in range(clients)]

        async def send(client: int, _: int) -> None:
            await self._send(self.connections[client])

        try:
            return await asyncio.wait_for(closed_loop(send, clients, seconds), seconds + REQUEST_TIMEOUT)
        finally:
            await self.close()

    async def close(self) -> None:
        for connection in self.connections:
            await connection.close()
        self.connections.clear()


def kserve_grpc_request(model: str, image: Array) -> bytes:
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name=INPUT, datatype="FP32", shape=list(image.shape))
    request.outputs.add(name=OUTPUT)
    request.raw_input_contents.append(image.tobytes())
    return request.SerializeToString()


def kserve_grpc_output(data: bytes) -> Array:
    import numpy as np
    from tritonclient.grpc import service_pb2

    response = service_pb2.ModelInferResponse.FromString(data)
    for i, output in enumerate(response.outputs):
        if output.name == OUTPUT:
            if output.datatype != "FP32":
                raise RuntimeError(f"output {OUTPUT} is {output.datatype}, expected FP32")
            return np.frombuffer(response.raw_output_contents[i], np.float32).reshape(list(output.shape))
    raise RuntimeError(f"no output {OUTPUT} in {[o.name for o in response.outputs]}")


def check_output(door: str, output: Array, reference: Array) -> None:
    """Same top-1 class and values close to raw OpenVINO's (the REST JSON carries 6 significant digits)."""
    import numpy as np

    if output.size != reference.size:
        raise RuntimeError(f"{door}: output shape {output.shape}, raw OpenVINO gives {reference.shape}")
    output = output.reshape(reference.shape)
    top, expected = int(np.argmax(output)), int(np.argmax(reference))
    tolerance = 1e-4 * float(np.abs(reference).max())
    if top != expected or not np.allclose(output, reference, rtol=1e-3, atol=tolerance):
        worst = float(np.abs(output - reference).max())
        raise RuntimeError(f"{door}: top-1 {top} (raw OpenVINO {expected}), largest difference {worst:.3g}")


# --- KServe gRPC through system shared memory -------------------------------------------------------------------

SHM_RPC = "/inference.GRPCInferenceService/SystemSharedMemory"


class ShmGrpcDoor:
    """KServe gRPC ModelInfer with the input and the output in system shared memory (the server needs
    --allow_client_shm): one region per client holding its input, written once as perf_analyzer does, and room for
    its output; each request names its client's region and its answer carries no tensor bytes."""

    name = "shm"

    def __init__(self, channel: Any, model: str, batch: Array, output_bytes: int) -> None:
        self.channel = channel
        self.model = model
        self.batch = batch
        self.output_bytes = output_bytes
        self.request_bytes = 0
        self.call = channel.unary_unary(MODEL_INFER, request_serializer=identity, response_deserializer=identity)
        self.handles: list[Any] = []
        self.payloads: list[bytes] = []

    async def open(self, clients: int) -> None:
        """Create, fill and register one region per client, and each client's request."""
        import os

        import tritonclient.utils.shared_memory as shm
        from tritonclient.grpc import service_pb2

        register = self.channel.unary_unary(
            SHM_RPC + "Register", request_serializer=identity, response_deserializer=identity
        )
        for client in range(clients):
            name = f"bench-{os.getpid()}-{client}"
            handle = shm.create_shared_memory_region(name, f"/{name}", self.batch.nbytes + self.output_bytes)
            shm.set_shared_memory_region(handle, [self.batch])
            self.handles.append(handle)
            message = service_pb2.SystemSharedMemoryRegisterRequest(
                name=name, key=f"/{name}", byte_size=self.batch.nbytes + self.output_bytes
            )
            await register(message.SerializeToString(), timeout=REQUEST_TIMEOUT)
            request = service_pb2.ModelInferRequest(model_name=self.model)
            tensor = request.inputs.add(name=INPUT, datatype="FP32", shape=list(self.batch.shape))
            tensor.parameters["shared_memory_region"].string_param = name
            tensor.parameters["shared_memory_byte_size"].int64_param = self.batch.nbytes
            output = request.outputs.add(name=OUTPUT)
            output.parameters["shared_memory_region"].string_param = name
            output.parameters["shared_memory_offset"].int64_param = self.batch.nbytes
            output.parameters["shared_memory_byte_size"].int64_param = self.output_bytes
            self.payloads.append(request.SerializeToString())
        self.request_bytes = len(self.payloads[0])

    async def output(self) -> Array:
        """Send client 0's request once and read its output out of the region, shaped as the response says."""
        import numpy as np
        import tritonclient.utils.shared_memory as shm
        from tritonclient.grpc import service_pb2

        response = service_pb2.ModelInferResponse.FromString(await self.call(self.payloads[0], timeout=REQUEST_TIMEOUT))
        shape = list(response.outputs[0].shape)
        if response.raw_output_contents and any(response.raw_output_contents):
            raise RuntimeError("an output in shared memory came back with bytes on the wire")
        return shm.get_contents_as_numpy(self.handles[0], np.float32, shape, offset=self.batch.nbytes)

    async def run(self, clients: int, seconds: float) -> Result:
        if clients > len(self.payloads):
            raise ValueError(f"{len(self.payloads)} regions opened for {clients} clients")

        def send(client: int, _: int) -> Any:
            return self.call(self.payloads[client], timeout=REQUEST_TIMEOUT)

        return await closed_loop(send, clients, seconds, len(self.batch))

    async def close(self) -> None:
        import tritonclient.utils.shared_memory as shm
        from tritonclient.grpc import service_pb2

        unregister = self.channel.unary_unary(
            SHM_RPC + "Unregister", request_serializer=identity, response_deserializer=identity
        )
        with contextlib.suppress(Exception):  # the server may be gone already
            await unregister(service_pb2.SystemSharedMemoryUnregisterRequest().SerializeToString(), timeout=10)
        for handle in self.handles:
            shm.destroy_shared_memory_region(handle)
        self.handles.clear()
        self.payloads.clear()
