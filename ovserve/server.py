"""Composition root: builds the manager, data plane and gRPC frontend, starts them and stops them cleanly."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import openvino as ov

from . import grpc_server, http_routes
from .config import ServerConfig, load_config
from .dataplane import DataPlane
from .errors import ConfigError, ServingError, http_status
from .http_app import Cors, HttpApp, HttpServer
from .manager import Manager, Reconciled
from .metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    port: int | None = None  # gRPC port; None = no gRPC server, 0 = any free port
    rest_port: int | None = None  # HTTP port; None = no HTTP server, 0 = any free port
    grpc_bind_address: str = "0.0.0.0"
    rest_bind_address: str = "0.0.0.0"
    cache_dir: Path | None = None
    fatal_load_errors: bool = False  # single-model mode: a model that fails to load stops the server
    poll_seconds: float = 0  # watch config.json and version folders this often; 0 = only on request
    metrics: tuple[str, ...] | None = ()  # enabled metric families: () = off, None = OVMS's defaults
    cors: Cors = field(default_factory=Cors)


class Server:
    """One ovserve process: every frontend on one event loop over one manager."""

    def __init__(self, config: ServerConfig, settings: Settings, core: ov.Core | None = None) -> None:
        self.config = config
        self.settings = settings
        core = core or ov.Core()
        if settings.cache_dir is not None:
            core.set_property({"CACHE_DIR": str(settings.cache_dir)})
        self.metrics = Metrics(settings.metrics)
        self.manager = Manager(core, self.metrics)
        self.dataplane = DataPlane(self.manager)
        self.grpc: grpc.aio.Server | None = None
        self.grpc_port: int | None = None
        self.http: HttpServer | None = None
        self.rest_port: int | None = None
        self._loading: asyncio.Task[None] | None = None
        self._watching: asyncio.Task[None] | None = None
        self._reload_error = ""
        self._load_failed = False  # the last load of a changed config.json had a model fail

    async def start(self) -> None:
        """Register what is configured, open the gRPC port, then load models in the background (OVMS order)."""
        for warning in self.config.warnings:
            log.warning("config: %s", warning)
        self.manager.register(self.config)
        if self.settings.port is not None:
            hosts = [h.strip() for h in self.settings.grpc_bind_address.split(",") if h.strip()]
            addresses = [f"[{h}]:{self.settings.port}" if ":" in h else f"{h}:{self.settings.port}" for h in hosts]
            self.grpc, ports = grpc_server.create(self.dataplane, addresses)
            if not ports or 0 in ports:
                raise OSError(f"cannot bind gRPC to {', '.join(addresses)}")
            self.grpc_port = ports[0]
            await self.grpc.start()
            log.info("gRPC server listening on %s (port %d)", ", ".join(hosts), self.grpc_port)
        if self.settings.rest_port is not None:
            table = http_routes.routes(self.dataplane, self.metrics, self.reload, lambda: self._reload_error)
            app = HttpApp(table, self.settings.cors)
            self.http = HttpServer(app, self.settings.rest_bind_address, self.settings.rest_port)
            await self.http.start()
            self.rest_port = self.http.port
            log.info("REST server listening on %s (port %d)", self.settings.rest_bind_address, self.rest_port)
        self._loading = asyncio.create_task(self.manager.load(self.config))
        if self.settings.poll_seconds > 0:
            self._watching = asyncio.create_task(self._watch(self.settings.poll_seconds))

    async def _watch(self, seconds: float) -> None:
        """--file_system_poll_wait_seconds: reload config.json when its content changes, rescan version folders."""
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.reload()
            except ServingError:
                pass  # logged by reload; the running config keeps serving
            except Exception:
                log.exception("watching the model repository failed; retrying in %s s", seconds)

    async def reload(self) -> bool:
        """Re-read config.json and serve what it says (spec §4.8); True if anything changed. A file that cannot be
        read or does not validate raises ServingError and changes nothing: the running config keeps serving."""
        if self._loading is not None and not self._loading.done():
            await asyncio.shield(self._loading)
        source = self.config.source
        if source is None:  # single-model mode: version folders only
            return (await self.manager.reconcile(self.config)).changed
        try:
            config = load_config(source)
        except ConfigError as e:
            if str(e) != self._reload_error:  # a watched file that stays broken is reported once
                log.error("config reload failed; the running config keeps serving: %s", e)
            self._reload_error = str(e)
            unreadable = isinstance(e.__cause__, OSError)  # load_config raises from the OSError of reading the file
            status = "RELOAD_CONFIG_FILE_MISSING" if unreadable else "RELOAD_CONFIG_FAILED"
            raise ServingError(status, str(e)) from e
        self._reload_error = ""
        if config.digest == self.config.digest:  # same file: rescan version folders
            outcome = await self.manager.reconcile(self.config)
            if self._load_failed:  # the last load failed (maybe applied by the watcher): its result until it loads
                outcome = Reconciled(outcome.changed, self.manager.failure(m.name for m in self.config.models))
        else:
            for warning in config.warnings:
                log.warning("config: %s", warning)
            outcome = await self.manager.reconcile(config)
            self.config = config
            done = "changes applied" if outcome.changed else "nothing to change"
            log.info("config reloaded from %s: %s", source, done)
        self._load_failed = outcome.failure is not None
        if outcome.failure is not None:  # applied, but the reload answers its first failure (spec §1.9, §4.8)
            failure = outcome.failure
            raise ServingError("RELOAD_CONFIG_FAILED", str(failure), http=http_status(failure.status))
        return outcome.changed

    async def loaded(self) -> None:
        """Wait for the initial load; in single-model mode raise if the model did not load."""
        assert self._loading is not None
        await self._loading
        if self.settings.fatal_load_errors:
            for entry in self.manager.models.values():
                if entry.error or not any(v.state == "AVAILABLE" for v in entry.versions.values()):
                    raise RuntimeError(f"Couldn't start model manager: model {entry.config.name} did not load")

    async def stop(self, grace: float = 5.0) -> None:
        """Stop taking requests, let running ones finish (up to `grace` seconds)."""
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        if self._watching is not None:
            self._watching.cancel()
        if self.http is not None:
            await self.http.stop()
        if self.grpc is not None:
            await self.grpc.stop(grace)
        self.manager.stop()
        await asyncio.to_thread(self.manager.close)
        log.info("server stopped")


async def serve(config: ServerConfig, settings: Settings) -> int:
    """Run until SIGINT/SIGTERM; returns the process exit code."""
    server = Server(config, settings)
    await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    code = 0
    try:
        await server.loaded()
        log.info("server ready")
        await stopping.wait()
    except RuntimeError as e:
        log.error("%s", e)
        code = 1
    finally:
        await server.stop()
    return code
