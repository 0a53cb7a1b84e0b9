"""Triton's system shared-memory extension driven by tritonclient (gRPC and HTTP) and its own shared_memory helpers:
register, status, unregister; inputs read from and outputs written into regions for models and pipelines; every
error; regions truncated or unlinked by their client."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import models
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from conftest import RunningServer
from tritonclient.utils import InferenceServerException

from ovserve.errors import TABLE

IMAGE = (1, 3, 4, 4)
SCORES = (1, 10)


def config() -> dict[str, Any]:
    """The seed scenario (model 'resnet', pipeline 'resnet50DAG' demultiplexing at the request) plus 'resnetPlain',
    the same pipeline without a demultiplexer."""
    document = models.seed_config()
    plain = dict(document["pipeline_config_list"][0], name="resnetPlain")
    del plain["demultiply_count"]
    document["pipeline_config_list"].append(plain)
    return document


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repository = tmp_path_factory.mktemp("shm")
    models.save(models.classifier(), repository, "resnet")
    running = RunningServer(models.write_config(repository, config()), allow_client_shm=True)
    yield running
    running.stop()


Client = Any  # tritonclient.grpc or tritonclient.http InferenceServerClient


@pytest.fixture(params=["grpc", "http"])
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def client_for(server: RunningServer, protocol: str) -> Client:
    if protocol == "grpc":
        return grpcclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    return httpclient.InferenceServerClient(f"127.0.0.1:{server.rest_port}")


@pytest.fixture
def client(server: RunningServer, protocol: str) -> Iterator[Client]:
    triton = client_for(server, protocol)
    yield triton
    triton.unregister_system_shared_memory()
    triton.close()


@pytest.fixture
def regions() -> Iterator[Callable[[int], Any]]:
    """Create system shared-memory regions with tritonclient's helper (unique keys); destroyed afterwards."""
    made: list[Any] = []

    def create(byte_size: int) -> Any:
        name = f"ovserve-test-{uuid.uuid4().hex[:12]}"
        handle = shm.create_shared_memory_region(name, f"/{name}", byte_size)
        made.append(handle)
        return handle

    yield create
    for handle in made:
        with contextlib.suppress(FileNotFoundError):  # a test unlinked it itself
            shm.destroy_shared_memory_region(handle)


def name_of(handle: Any) -> str:
    return str(handle._triton_shm_name)


def key_of(handle: Any) -> str:
    return str(handle._shm_key)


def module(protocol: str) -> Any:
    return grpcclient if protocol == "grpc" else httpclient


def shm_input(
    protocol: str, name: str, handle: Any, array: np.ndarray, offset: int = 0, size: int | None = None
) -> Any:
    """An input whose bytes tritonclient put into `handle` at `offset`."""
    shm.set_shared_memory_region(handle, [array], offset=offset)
    return naming(protocol, handle, array, offset, size, name)


def naming(
    protocol: str, handle: Any, array: np.ndarray, offset: int = 0, size: int | None = None, name: str = "0"
) -> Any:
    """An input naming `array.nbytes` (or `size`) bytes of `handle` at `offset`, without writing them."""
    tensor = module(protocol).InferInput(name, list(array.shape), "FP32")
    tensor.set_shared_memory(name_of(handle), array.nbytes if size is None else size, offset=offset)
    return tensor


def shm_output(protocol: str, name: str, handle: Any, size: int, offset: int = 0) -> Any:
    output = module(protocol).InferRequestedOutput(name)
    output.set_shared_memory(name_of(handle), size, offset=offset)
    return output


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, *IMAGE)).astype(np.float32)


def refused(call: Callable[[], Any]) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


def status_of(error: InferenceServerException, protocol: str, entry: str) -> None:
    """The error has the gRPC code or HTTP status of `entry` in ovserve's error table."""
    expected = TABLE[entry]
    assert error.status() == (f"StatusCode.{expected.grpc}" if protocol == "grpc" else str(expected.http)), error


def write_register(client: Client, handle: Any, byte_size: int, offset: int = 0) -> None:
    client.register_system_shared_memory(name_of(handle), key_of(handle), byte_size, offset=offset)


# --- inference ---------------------------------------------------------------------------------------------


def test_model_reads_its_input_from_and_writes_its_output_into_shared_memory(
    client: Client, protocol: str, regions: Callable[[int], Any]
) -> None:
    image = images(1)[0]
    source, target = regions(image.nbytes), regions(4 * 10)
    write_register(client, source, image.nbytes)
    write_register(client, target, 4 * 10)
    result = client.infer(
        "resnet", [shm_input(protocol, "0", source, image)], outputs=[shm_output(protocol, "1463", target, 40)]
    )
    scores = shm.get_contents_as_numpy(target, np.float32, list(SCORES))
    np.testing.assert_allclose(scores, models.reference_classifier(image[None])[0], rtol=1e-4, atol=1e-2)
    output = result.get_output("1463")
    if protocol == "grpc":
        parameters = output.parameters
        assert list(output.shape) == list(SCORES) and output.datatype == "FP32"
        assert parameters["shared_memory_region"].string_param == name_of(target)
        assert parameters["shared_memory_byte_size"].int64_param == 40
        assert result.get_response().raw_output_contents == [b""]  # metadata only: the bytes are in the region
    else:
        assert output["shape"] == list(SCORES) and output["datatype"] == "FP32"
        assert "data" not in output and "parameters" not in output  # as Triton: perf_analyzer needs it so


@pytest.mark.parametrize("n", [1, 8, 64])
def test_demultiplexing_pipeline_over_shared_memory(
    client: Client, protocol: str, regions: Callable[[int], Any], n: int
) -> None:
    batch = images(n, seed=n)
    offset = 128  # inputs and outputs share one region, at offsets
    needed = 4 * 10 * n
    region = regions(offset + batch.nbytes + needed)
    write_register(client, region, offset + batch.nbytes + needed)
    inputs = [shm_input(protocol, "0", region, batch, offset=offset)]
    outputs = [shm_output(protocol, "1463", region, needed, offset=offset + batch.nbytes)]
    client.infer("resnet50DAG", inputs, outputs=outputs)
    scores = shm.get_contents_as_numpy(region, np.float32, [n, *SCORES], offset=offset + batch.nbytes)
    np.testing.assert_allclose(scores, models.reference_classifier(batch), rtol=1e-4, atol=1e-2)


def test_pipeline_without_demultiplexer_input_in_shared_memory_output_on_the_wire(
    client: Client, protocol: str, regions: Callable[[int], Any]
) -> None:
    image = images(1, seed=3)[0]
    region = regions(image.nbytes)
    write_register(client, region, image.nbytes)
    result = client.infer("resnetPlain", [shm_input(protocol, "0", region, image)])
    np.testing.assert_allclose(
        result.as_numpy("1463"), models.reference_classifier(image[None])[0], rtol=1e-4, atol=1e-2
    )


def test_the_server_reads_the_region_at_each_request(
    client: Client, protocol: str, regions: Callable[[int], Any]
) -> None:
    """No copy is kept: new bytes the client writes into a registered region are what the next request reads."""
    first, second = images(1, seed=4)[0], images(1, seed=5)[0]
    region = regions(first.nbytes)
    write_register(client, region, first.nbytes)
    for image in (first, second):
        result = client.infer("resnet", [shm_input(protocol, "0", region, image)])
        expected = models.reference_classifier(image[None])[0]
        np.testing.assert_allclose(result.as_numpy("1463"), expected, rtol=1e-4, atol=1e-2)


# --- register, status, unregister --------------------------------------------------------------------------


def regions_listed(client: Client, protocol: str, name: str = "") -> dict[str, tuple[str, int, int]]:
    status = client.get_system_shared_memory_status(name)
    if protocol == "grpc":
        return {k: (v.key, v.offset, v.byte_size) for k, v in status.regions.items()}
    return {r["name"]: (r["key"], r["offset"], r["byte_size"]) for r in status}


def test_register_status_unregister(client: Client, protocol: str, regions: Callable[[int], Any]) -> None:
    a, b = regions(64), regions(256)
    write_register(client, a, 64)
    write_register(client, b, 200, offset=56)
    assert regions_listed(client, protocol) == {name_of(a): (key_of(a), 0, 64), name_of(b): (key_of(b), 56, 200)}
    assert regions_listed(client, protocol, name_of(b)) == {name_of(b): (key_of(b), 56, 200)}
    client.unregister_system_shared_memory(name_of(a))
    assert list(regions_listed(client, protocol)) == [name_of(b)]
    client.unregister_system_shared_memory(name_of(a))  # unknown names are no error, as Triton
    client.unregister_system_shared_memory()  # every region
    assert regions_listed(client, protocol) == {}


def test_registration_errors(client: Client, protocol: str, regions: Callable[[int], Any]) -> None:
    region = regions(64)
    write_register(client, region, 64)
    again = refused(lambda: write_register(client, region, 32))
    status_of(again, protocol, "SHM_REGION_ALREADY_EXISTS")
    assert name_of(region) in again.message()
    unknown = refused(lambda: client.get_system_shared_memory_status("nowhere"))
    status_of(unknown, protocol, "SHM_REGION_NOT_FOUND")
    missing = refused(lambda: client.register_system_shared_memory("m", "/ovserve-test-no-such-key", 8))
    status_of(missing, protocol, "SHM_REGISTER_FAILED")
    assert "/ovserve-test-no-such-key" in missing.message()
    beyond = refused(lambda: client.register_system_shared_memory("b", key_of(region), 64, offset=8))
    status_of(beyond, protocol, "SHM_REGISTER_FAILED")
    assert "exceeds the 64 bytes" in beyond.message()
    for key in ("../etc/passwd", "/a/b", "", "/"):
        status_of(refused(lambda key=key: client.register_system_shared_memory("k", key, 8)), protocol,
                  "SHM_REGISTER_FAILED")  # fmt: skip
    assert list(regions_listed(client, protocol)) == [name_of(region)]


def test_cuda_shared_memory_is_not_supported(client: Client, protocol: str) -> None:
    error = refused(lambda: client.get_cuda_shared_memory_status())
    status_of(error, protocol, "CUDA_SHM_UNSUPPORTED")
    assert "CUDA shared memory is not supported" in error.message()
    status_of(refused(lambda: client.unregister_cuda_shared_memory()), protocol, "CUDA_SHM_UNSUPPORTED")


def test_server_metadata_lists_the_extension(client: Client, protocol: str) -> None:
    metadata = client.get_server_metadata()
    extensions = list(metadata.extensions) if protocol == "grpc" else metadata["extensions"]
    assert extensions == ["system_shared_memory"]


# --- request errors ----------------------------------------------------------------------------------------


def test_request_errors_name_the_input_and_the_region(
    client: Client, protocol: str, regions: Callable[[int], Any]
) -> None:
    image = images(1)[0]
    region = regions(image.nbytes + 64)
    write_register(client, region, image.nbytes + 64)
    name = name_of(region)

    def infer(tensor: Any, outputs: Any = None) -> InferenceServerException:
        return refused(lambda: client.infer("resnet", [tensor], outputs=outputs))

    nowhere = module(protocol).InferInput("0", list(IMAGE), "FP32")
    nowhere.set_shared_memory("unregistered", image.nbytes)
    error = infer(nowhere)
    status_of(error, protocol, "SHM_REGION_MISSING")
    assert "input 0" in error.message() and "'unregistered'" in error.message()

    error = infer(naming(protocol, region, image, offset=128))  # 128 + image > the region
    status_of(error, protocol, "SHM_OUT_OF_RANGE")
    assert "input 0" in error.message() and name in error.message()

    error = infer(shm_input(protocol, "0", region, image, size=image.nbytes - 4))
    status_of(error, protocol, "INVALID_CONTENT_SIZE")
    assert "input name: 0" in error.message() and name in error.message()

    error = infer(shm_input(protocol, "0", region, image), [shm_output(protocol, "1463", region, 8)])
    status_of(error, protocol, "SHM_OUTPUT_TOO_SMALL")
    assert "output 1463" in error.message() and name in error.message()

    error = infer(shm_input(protocol, "0", region, image), [shm_output(protocol, "1463", region, 40, offset=1 << 20)])
    status_of(error, protocol, "SHM_OUT_OF_RANGE")
    assert "output 1463" in error.message() and name in error.message()


def test_a_region_without_its_byte_size_is_refused(server: RunningServer, regions: Callable[[int], Any]) -> None:
    """tritonclient always sends both; a hand-made request with the region alone gets INVALID_ARGUMENT."""
    region = regions(64)
    triton = client_for(server, "http")
    write_register(triton, region, 64)
    body = {"inputs": [{"name": "0", "shape": list(IMAGE), "datatype": "FP32",
                        "parameters": {"shared_memory_region": name_of(region)}}]}  # fmt: skip
    status, _, answer = server.http("POST", "/v2/models/resnet/infer", json.dumps(body))
    assert status == 400 and "shared_memory_byte_size" in json.loads(answer)["error"]
    triton.unregister_system_shared_memory()


def test_a_truncated_region_is_an_error_and_is_unregistered(
    client: Client, protocol: str, regions: Callable[[int], Any]
) -> None:
    image = images(1)[0]
    region = regions(image.nbytes)
    write_register(client, region, image.nbytes)
    os.truncate(f"/dev/shm/{key_of(region).lstrip('/')}", 16)  # the client shrinks it behind the server's back
    error = refused(lambda: client.infer("resnet", [naming(protocol, region, image)]))
    status_of(error, protocol, "SHM_REGION_UNUSABLE")
    assert "truncated to 16 bytes" in error.message() and name_of(region) in error.message()
    assert regions_listed(client, protocol) == {}
    other = regions(image.nbytes)  # the server serves on
    write_register(client, other, image.nbytes)
    client.infer("resnet", [shm_input(protocol, "0", other, image)])


def test_an_unlinked_region_is_an_error_and_is_unmapped(
    client: Client, protocol: str, regions: Callable[[int], Any]
) -> None:
    image = images(1)[0]
    region = regions(image.nbytes)
    write_register(client, region, image.nbytes)
    path = f"/dev/shm/{key_of(region).lstrip('/')}"
    shm.set_shared_memory_region(region, [image])
    assert mappings(path) == 2  # the client's and the server's (one process here)
    os.unlink(path)
    error = refused(lambda: client.infer("resnet", [naming(protocol, region, image)]))
    status_of(error, protocol, "SHM_REGION_UNUSABLE")
    assert "unlinked" in error.message()
    assert mappings(path) == 1  # only the client's own
    assert regions_listed(client, protocol) == {}


def mappings(path: str) -> int:
    """How many mappings of the file `path` this process has (client and in-process server alike)."""
    return sum(line.rstrip().endswith(path) or line.rstrip().endswith(f"{path} (deleted)")
               for line in Path("/proc/self/maps").read_text().splitlines())  # fmt: skip


def test_unregister_and_server_stop_unmap(tmp_path: Path, regions: Callable[[int], Any]) -> None:
    models.save(models.classifier(), tmp_path, "resnet")
    running = RunningServer(models.write_config(tmp_path, config()), allow_client_shm=True)
    triton = client_for(running, "grpc")
    a, b = regions(4096), regions(4096)
    paths = [f"/dev/shm/{key_of(h).lstrip('/')}" for h in (a, b)]
    write_register(triton, a, 4096)
    write_register(triton, b, 4096)
    assert [mappings(p) for p in paths] == [2, 2]
    triton.unregister_system_shared_memory(name_of(a))
    assert [mappings(p) for p in paths] == [1, 2]
    triton.close()
    running.stop()
    assert [mappings(p) for p in paths] == [1, 1]


def test_disabled_unless_allowed(repository: Path, serve: Callable[[dict[str, Any]], RunningServer],
                                 regions: Callable[[int], Any]) -> None:  # fmt: skip
    models.save(models.classifier(), repository, "resnet")
    running = serve(config())  # without allow_client_shm
    region = regions(64)
    for protocol in ("grpc", "http"):
        triton = client_for(running, protocol)
        status_of(refused(lambda triton=triton: write_register(triton, region, 64)), protocol, "SHM_NOT_ALLOWED")
        tensor = module(protocol).InferInput("0", list(IMAGE), "FP32")
        tensor.set_shared_memory(name_of(region), 4 * 48)
        error = refused(lambda triton=triton, tensor=tensor: triton.infer("resnet", [tensor]))
        status_of(error, protocol, "SHM_NOT_ALLOWED")
        assert "--allow_client_shm" in error.message()
        metadata = triton.get_server_metadata()
        assert not (metadata.extensions if protocol == "grpc" else metadata.get("extensions"))
        triton.close()
