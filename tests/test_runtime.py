"""The OpenVINO adapter: the infer-request pool under load, cancellation, failures inside OpenVINO."""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path

import models
import numpy as np
import openvino as ov
import pytest
from openvino import opset13 as ops

from ovserve import loading, runtime
from ovserve.config import ModelConfig
from ovserve.errors import LoadError, ServingError


def load(tmp_path: Path, model: ov.Model, **settings: object) -> runtime.ModelVersion:
    base = models.save(model, tmp_path, "m")
    config = ModelConfig("m", base, **settings)  # type: ignore[arg-type]
    return loading.load(ov.Core(), config, 1, base / "1" / "model.xml")


def test_many_concurrent_requests_share_a_small_pool(tmp_path: Path) -> None:
    version = load(tmp_path, models.add_mul(shape=(1, 4)), nireq=2)

    async def main() -> list[np.ndarray]:
        xs = [np.full((1, 4), i, np.float32) for i in range(200)]
        outs = await asyncio.gather(*(version.infer({"x": x}) for x in xs))
        assert len(version._pool._idle) == 2  # every request went back to the pool
        return [o["y"] for o in outs]

    results = asyncio.run(main())
    assert [float(r[0, 0]) for r in results] == [(i + 1) * 2.0 for i in range(200)]


def test_cancelled_callers_do_not_leak_infer_requests(tmp_path: Path) -> None:
    version = load(tmp_path, models.classifier(image=(1, 3, 64, 64), classes=1000), nireq=1)

    async def main() -> None:
        x = np.ones((1, 3, 64, 64), np.float32)
        tasks = [asyncio.ensure_future(version.infer({"0": x})) for _ in range(20)]
        await asyncio.sleep(0)
        for task in tasks[::2]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _ in range(100):  # an inference whose caller left returns its request when OpenVINO finishes
            if len(version._pool._idle) == 1:
                break
            await asyncio.sleep(0.01)
        assert len(version._pool._idle) == 1 and not version._pool._waiters
        assert (await version.infer({"0": x}))["1463"].shape == (1, 1000)

    asyncio.run(main())


def test_a_failure_inside_openvino_is_reported_not_hung(tmp_path: Path) -> None:
    """OpenVINO does not call the completion callback when inference fails; the poll must notice."""
    x = ops.parameter([-1], np.float32, name="x")
    x.output(0).get_tensor().set_names({"x"})
    y = ops.reshape(x, ops.constant(np.array([2, -1], np.int64)), special_zero=False)
    y.output(0).get_tensor().set_names({"y"})
    version = load(tmp_path, ov.Model([y], [x], "bad"), nireq=1)

    async def main() -> None:
        with pytest.raises(ServingError) as info:
            await asyncio.wait_for(version.infer({"x": np.zeros(3, np.float32)}), 10)
        assert info.value.status == "OV_INTERNAL_INFERENCE_ERROR"
        assert str(info.value).startswith("Internal inference error - model m version 1:")
        assert (await version.infer({"x": np.zeros(4, np.float32)}))["y"].shape == (2, 2)  # pool still works

    asyncio.run(main())


def test_shape_batch_and_layout_settings(tmp_path: Path) -> None:
    model = models.add_mul(shape=(1, 4))
    assert load(tmp_path, model, batch_size=(1, 8)).inputs["x"].shape == ((1, 8), 4)
    assert load(tmp_path, models.add_mul(shape=(1, 4)), shape=(-1, 4)).inputs["x"].metadata_shape() == [-1, 4]
    nhwc = load(tmp_path, models.classifier(image=(1, 3, 4, 6)), layout="NHWC:NCHW")
    assert nhwc.inputs["0"].shape == (1, 4, 6, 3) and nhwc.inputs["0"].layout == "NHWC"
    with pytest.raises(LoadError, match="Model could not be reshaped"):
        load(tmp_path, models.classifier(), shape=(1, 3, 5, 5))
    with pytest.raises(LoadError, match="Cannot compile model into target device"):
        load(tmp_path, models.add_mul(), plugin_config={"NOT_A_PROPERTY": "1"})


def test_a_compiled_model_no_longer_served_is_freed(tmp_path: Path) -> None:
    """Each infer request's completion callback lives in OpenVINO's C++; it must not keep its compiled model alive
    once a reshape (or a retirement) leaves no one serving on it."""
    version = load(tmp_path, models.add_mul(shape=(1, 4)), batch_size="auto", nireq=2)

    async def main() -> None:
        await version.infer({"x": np.ones((1, 4), np.float32)})
        old = [weakref.ref(slot) for slot in version._pool._idle]  # each holds an infer request
        assert len(old) == 2
        await version.infer({"x": np.ones((3, 4), np.float32)})  # reshaped: a new compiled model serves
        gc.collect()
        assert [ref() for ref in old] == [None, None]

    asyncio.run(main())


@pytest.mark.parametrize(("elements", "kept"), [(1 << 20, True), (24 << 20, False)])
def test_infer_requests_do_not_keep_the_tensors_of_a_big_request(tmp_path: Path, elements: int, kept: bool) -> None:
    """A dynamically shaped model's infer request keeps the tensors of its last run: after one that moved more than
    KEEP_TENSOR_BYTES (24 Mi float32 in and out: 192 MiB) the pool holds a fresh request instead."""
    version = load(tmp_path, models.add_mul(shape=(1, -1)), nireq=1)

    async def main() -> int:
        x = np.ones((1, elements), np.float32)
        assert float((await version.infer({"x": x}))["y"][0, -1]) == 4.0
        (slot,) = version._pool._idle
        return int(slot.request.get_input_tensor(0).byte_size)

    held = asyncio.run(main())
    assert (held == 4 * elements) if kept else held == 0


def test_inputs_are_read_in_place_and_let_go_after_the_run(tmp_path: Path) -> None:
    """A statically shaped input is handed to OpenVINO as it is (also a read-only view of a request's bytes), or
    copied when it is not contiguous; after the run the request holds none of them."""
    version = load(tmp_path, models.add_mul(shape=(1, 4)), nireq=1)
    writeable = np.arange(4, dtype=np.float32).reshape(1, 4)
    read_only = np.frombuffer(writeable.tobytes(), np.float32).reshape(1, 4)
    strided = np.arange(8, dtype=np.float32).reshape(1, 8)[:, ::2]
    assert not read_only.flags.writeable and not strided.flags.c_contiguous

    async def run(x: np.ndarray) -> tuple[np.ndarray, bool]:
        shared: list[bool] = []

        def during(request: ov.InferRequest) -> None:  # just after the run, before the request goes back
            shared.append(np.shares_memory(request.get_input_tensor(0).data, x))

        outputs = await version._run(version._current, {"x": x}, after=during)
        (slot,) = version._pool._idle
        assert not np.shares_memory(slot.request.get_input_tensor(0).data, x) and not slot.held
        return outputs["y"], shared[0]

    for x, in_place in ((writeable, True), (read_only, True), (strided, False)):
        y, shared = asyncio.run(run(x))
        np.testing.assert_array_equal(y, (x + 1) * 2)
        assert shared == in_place


def test_a_request_keeps_the_arrays_it_reads_in_place_until_its_run_ends(tmp_path: Path) -> None:
    """OpenVINO's tensor does not keep a shared array alive: the slot does, until `finish` after the run, so a caller
    that gives up mid-run (and drops its arrays) cannot leave OpenVINO reading freed memory."""
    version = load(tmp_path, models.add_mul(shape=(1, 4)), nireq=1)

    async def main() -> None:
        slot = version._current._slot()
        slot.loop = asyncio.get_running_loop()
        slot.future = slot.loop.create_future()
        x = np.full((1, 4), 3, np.float32)
        alive = weakref.ref(x)
        slot.start({"x": x})
        del x
        gc.collect()
        assert alive() is not None
        await slot.future
        np.testing.assert_array_equal(slot.request.get_output_tensor(0).data, [[8, 8, 8, 8]])
        slot.finish()
        gc.collect()
        assert alive() is None

    asyncio.run(main())
