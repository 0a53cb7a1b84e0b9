"""Manager.lease, the rules of holding what serves: a request holds a model version or a pipeline from its lookup
to its end, and what a reload retires meanwhile serves it to the end, then lets go (a real Manager, tiny models)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import configs
import models
import numpy as np
import pytest

from ovserve.config import parse_config
from ovserve.errors import ServingError
from ovserve.manager import Manager

X = np.ones((1, 4), np.float32)


def run(coroutine: Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await coroutine

    return asyncio.run(main())


def config(repository: Path, *, pipeline: bool = True, versions: list[int] | None = None) -> Any:
    model = configs.model("m", str(repository / "m"), plugin_config=models.F32)
    if versions is not None:
        model["config"]["model_version_policy"] = {"specific": {"versions": versions}}
    nodes = [configs.node("n", {"x": "request.x"}, ["y"], model="m")]
    pipelines = [configs.pipeline("p", ["x"], nodes, {"y": "n.y"})] if pipeline else []
    return parse_config(configs.document([model], pipelines), repository)


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    models.save(models.add_mul(add=1), tmp_path, "m", version=1)
    models.save(models.add_mul(add=2), tmp_path, "m", version=2)
    return tmp_path


def states(manager: Manager, name: str) -> list[str]:
    return [row.state for row in manager.status(name, None)]


def test_a_version_retired_while_held_serves_to_the_end_then_ends(repository: Path) -> None:
    async def scenario() -> None:
        manager = Manager()
        await manager.load(config(repository, versions=[1, 2]))
        async with manager.lease("m", 1) as held:
            await manager.reconcile(config(repository, versions=[2]))
            assert states(manager, "m") == ["UNLOADING", "AVAILABLE"]
            with pytest.raises(ServingError, match="Model with requested version is retired - model m version 1"):
                async with manager.lease("m", 1):
                    pass
            np.testing.assert_array_equal((await held.infer({"x": X}))["y"], (X + 1) * 2)
        assert states(manager, "m") == ["END", "AVAILABLE"]
        async with manager.lease("m", None) as default:
            assert default.version == 2

    run(scenario())


def test_a_version_not_held_ends_at_once(repository: Path) -> None:
    async def scenario() -> None:
        manager = Manager()
        await manager.load(config(repository, versions=[1, 2]))
        async with manager.lease("m", 2):
            pass
        await manager.reconcile(config(repository, versions=[2]))
        assert states(manager, "m") == ["END", "AVAILABLE"]

    run(scenario())


def test_a_pipeline_retired_while_held_serves_on_its_definition(repository: Path) -> None:
    async def scenario() -> None:
        manager = Manager()
        await manager.load(config(repository))
        async with manager.lease("p", None) as held:
            await manager.reconcile(config(repository, pipeline=False))
            assert states(manager, "p") == ["END"]
            with pytest.raises(ServingError, match="Pipeline is retired - pipeline p"):
                async with manager.lease("p", None):
                    pass
            np.testing.assert_array_equal((await held.infer({"x": X}))["y"], (X + 2) * 2)  # on m's default, 2

    run(scenario())


@pytest.mark.parametrize(
    ("name", "version", "missing", "status", "text"),
    [
        ("nothing", None, "PIPELINE_DEFINITION_NAME_MISSING", "PIPELINE_DEFINITION_NAME_MISSING", "nothing"),
        ("nothing", None, "MODEL_NAME_MISSING", "MODEL_NAME_MISSING", "nothing"),
        ("m", 3, "MODEL_NAME_MISSING", "MODEL_VERSION_MISSING", "model m version 3"),
        ("p", 7, "MODEL_NAME_MISSING", None, ""),  # a pipeline ignores the version
    ],
)
def test_what_a_lease_refuses(
    repository: Path, name: str, version: int | None, missing: str, status: str | None, text: str
) -> None:
    async def scenario() -> None:
        manager = Manager()
        await manager.load(config(repository))
        if status is None:
            async with manager.lease(name, version, missing) as held:
                assert held.name == name
            return
        with pytest.raises(ServingError) as info:
            async with manager.lease(name, version, missing):
                pass
        assert (info.value.status, info.value.details) == (status, text)

    run(scenario())


def test_a_failed_request_lets_go_too(repository: Path) -> None:
    async def scenario() -> None:
        manager = Manager()
        await manager.load(config(repository, versions=[1, 2]))
        with pytest.raises(RuntimeError):
            async with manager.lease("m", 1):
                raise RuntimeError("the request failed")
        await manager.reconcile(config(repository, versions=[2]))
        assert states(manager, "m") == ["END", "AVAILABLE"]

    run(scenario())
