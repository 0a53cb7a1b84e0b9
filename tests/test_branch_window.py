"""One request of thousands of demultiplexed branches runs them a window at a time (--max_branches_in_flight), so
the event loop never holds thousands of its tasks and other clients keep being served; results keep their order,
and the first failing branch still ends the request."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import models
import numpy as np
import pytest
from conftest import RunningServer

from ovserve import gathering

N = 4000


def demux_document() -> dict[str, Any]:
    node = {
        "name": "n",
        "model_name": "tiny",
        "type": "DL model",
        "inputs": [{"x": {"node_name": "request", "data_item": "x"}}],
        "outputs": [{"data_item": "y", "alias": "y"}],
    }
    pipeline = {
        "name": "p",
        "demultiply_count": -1,
        "inputs": ["x"],
        "nodes": [node],
        "outputs": [{"y": {"node_name": "n", "data_item": "y"}}],
    }
    return {
        "model_config_list": [{"config": {"name": "tiny", "base_path": "tiny"}}],
        "pipeline_config_list": [pipeline],
    }


def most_tasks_during_a_big_request(repository: Path, window: int) -> int:
    """The most asyncio tasks the server's loop held while one request of N branches ran; checks its answer."""
    models.save(models.add_mul(shape=(1, 4)), repository, "tiny")
    server = RunningServer(models.write_config(repository, demux_document()), max_branches_in_flight=window)
    try:
        x = np.arange(N * 4, dtype=np.float32).reshape(N, 1, 4) % 7
        answer: dict[str, np.ndarray] = {}
        request = threading.Thread(target=lambda: answer.update(server.predict("p", {"x": x})))
        request.start()
        most = 0
        while request.is_alive():
            most = max(most, server.call(_count_tasks()))
        request.join()
        np.testing.assert_array_equal(answer["y"], (x + 1) * 2)  # add_mul: (x + 1) * 2, in branch order
        return most
    finally:
        server.stop()


async def _count_tasks() -> int:
    await asyncio.sleep(0.002)
    return len(asyncio.all_tasks())


def test_a_request_runs_its_branches_a_window_at_a_time(repository: Path) -> None:
    assert most_tasks_during_a_big_request(repository, window=16) < 100


def test_without_a_window_the_tasks_pile_up(repository: Path) -> None:
    """The probe above can see the difference: all branches started at once."""
    assert most_tasks_during_a_big_request(repository, window=N) > 1000


def test_lazy_gather_keeps_order_and_width() -> None:
    async def scenario() -> tuple[list[int], int]:
        running, most = 0, 0

        async def job(i: int) -> int:
            nonlocal running, most
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.001 * (i % 3))
            running -= 1
            return i * i

        results = await gathering.gather((job(i) for i in range(50)), 4)
        return results, most

    results, most = asyncio.run(scenario())
    assert results == [i * i for i in range(50)] and most == 4


def test_lazy_gather_stops_at_the_first_failure() -> None:
    async def scenario() -> tuple[list[int], BaseException | None]:
        began: list[int] = []

        async def job(i: int) -> int:
            began.append(i)
            await asyncio.sleep(0)
            if i == 5:
                raise ValueError("branch 5")
            return i

        try:
            await gathering.gather((job(i) for i in range(100)), 3)
        except ValueError as e:
            return began, e
        return began, None

    began, error = asyncio.run(scenario())
    assert str(error) == "branch 5" and max(began) < 10


def test_lazy_gather_of_nothing() -> None:
    async def scenario() -> list[int]:
        return await gathering.gather((), 4)

    assert asyncio.run(scenario()) == []


FAILING_NODE = """
import numpy as np

class Fail:
    started = 0

    def __init__(self, params):
        pass

    def inputs_info(self):
        return {"x": ((1, 4), "float32")}

    def outputs_info(self):
        return {"y": ((1, 4), "float32")}

    def execute(self, inputs):
        Fail.started += 1
        if inputs["x"].mean() > 10:
            raise ValueError("too large")
        return {"y": inputs["x"] * 2}
"""


@pytest.mark.parametrize("window", [1, 3])
def test_a_failing_branch_ends_the_request_and_nothing_more_starts(repository: Path, window: int) -> None:
    (repository / "fail.py").write_text(FAILING_NODE)
    document = demux_document()
    document["model_config_list"] = []
    document["custom_node_library_config_list"] = [{"name": "fails", "base_path": "fail.py:Fail"}]
    node = document["pipeline_config_list"][0]["nodes"][0]
    node.update({"type": "custom", "library_name": "fails"})
    del node["model_name"]
    server = RunningServer(models.write_config(repository, document), max_branches_in_flight=window)
    try:
        x = np.ones((20, 1, 4), np.float32)
        x[5] = 50
        status, _, body = server.http(
            "POST",
            "/v2/models/p/infer",
            json.dumps(
                {"inputs": [{"name": "x", "shape": [20, 1, 4], "datatype": "FP32", "data": x.ravel().tolist()}]}
            ),
        )
        assert (status, body) == (
            400,
            b'{"error":"Custom node failed during execution - node n (library fails): too large; branch 5"}',
        )
        fail = server.server.manager.pipelines["p"].definition.custom_nodes[0]._instance._object
        assert type(fail).started <= 6 + window  # the branches after the failure's window never started
        np.testing.assert_array_equal(server.predict("p", {"x": x[:5]})["y"], x[:5] * 2)
    finally:
        server.stop()
