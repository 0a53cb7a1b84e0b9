"""Protocol-neutral operations every frontend calls: infer, metadata, status (spec §4.4 lookup rules)."""

from __future__ import annotations

from .errors import ServingError
from .manager import Manager
from .runtime import Servable
from .tensors import check_inputs
from .types import Endpoint, InferRequest, InferResult, VersionStatus


class DataPlane:
    def __init__(self, manager: Manager) -> None:
        self.manager = manager

    async def servable(self, name: str, version: int | None) -> Servable:
        """A model by name (its version or the default), else a pipeline of that name (version ignored)."""
        if name in self.manager.models:
            return await self.manager.model_version(name, version)
        return await self.manager.pipeline(name)

    async def infer(self, request: InferRequest) -> InferResult:
        servable = await self.servable(request.target, request.version)
        check_inputs(request.inputs, servable.inputs)
        outputs = await servable.infer(request.inputs)
        return InferResult(servable.name, servable.version, outputs)

    async def endpoint(self, name: str, version: int | None) -> Endpoint:
        """Metadata of what is serving now (no waiting for a version that is still loading)."""
        if name in self.manager.models:
            servable: Servable = self.manager.model_version_now(name, version)
        elif name in self.manager.pipelines:
            servable = await self.manager.pipeline(name, wait=False)
        else:
            raise ServingError("MODEL_NAME_MISSING", name)
        return Endpoint(servable.name, servable.version, servable.inputs, servable.outputs)

    def status(self, name: str, version: int | None) -> list[VersionStatus]:
        return self.manager.status(name, version)

    @property
    def ready(self) -> bool:
        return self.manager.loaded.is_set()
