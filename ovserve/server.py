"""Composition root: builds the manager, data plane and gRPC frontend, starts them and stops them cleanly."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import openvino as ov

from . import grpc_health, grpc_kserve, grpc_server, grpc_tfs, http_routes
from .config import ServerConfig, load_config
from .dataplane import DataPlane
from .errors import ConfigError, ServingError, http_status
from .http_app import Cors, HttpApp, HttpServer
from .http_protocol import HttpLimits
from .manager import Manager, Reconciled
from .metrics import Metrics
from .pipeline_run import BRANCH_WINDOW
from .shm import Regions
from .tls import Tls
from .types import ImageLimits

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
    drain_seconds: float = 0  # after SIGTERM: not ready, still serving, so load balancers can take the server out
    shutdown_grace: float = 30  # then: how long requests in flight may take to finish before they are cancelled
    ready_needs_all: bool = False  # readiness waits for every configured model and pipeline to serve
    grpc_max_connection_age: float = 0  # seconds; 0 = gRPC connections live as long as their clients keep them
    rest_limits: HttpLimits = field(default_factory=HttpLimits)  # what REST clients may send, and how slowly
    grpc_max_message: int = grpc_server.MAX_MESSAGE_BYTES  # largest gRPC message in or out
    grpc_max_connection_idle: float = 0  # seconds without a call before a GOAWAY; 0 = never
    tls: Tls | None = None  # TLS (and mutual TLS) on both doors
    max_branches_in_flight: int = BRANCH_WINDOW  # of one demultiplexer in one request
    image_limits: ImageLimits = field(default_factory=ImageLimits)  # encoded images in requests, once decoded
    sequence_cleaner_seconds: float = 300  # scan stateful models for idle sequences this often; 0 = never
    allow_client_shm: bool = False  # clients may register system shared memory regions (Triton's extension)
    access_log: bool = False  # one log line per request (logger ovserve.access)


class Server:
    """One ovserve process: every frontend on one event loop over one manager."""

    def __init__(self, config: ServerConfig, settings: Settings, core: ov.Core | None = None) -> None:
        self.config = config
        self.settings = settings
        core = core or ov.Core()
        if settings.cache_dir is not None:
            core.set_property({"CACHE_DIR": str(settings.cache_dir)})
        self.metrics = Metrics(settings.metrics)
        self.manager = Manager(core, self.metrics, branch_window=settings.max_branches_in_flight)
        self.dataplane = DataPlane(
            self.manager,
            ready_needs_all=settings.ready_needs_all,
            image_limits=settings.image_limits,
            regions=Regions(settings.allow_client_shm),
            access_log=settings.access_log,
        )
        self.health = grpc_health.Health(self.dataplane)
        self.grpc: grpc.aio.Server | None = None
        self.grpc_port: int | None = None
        self.http: HttpServer | None = None
        self.app: HttpApp | None = None
        self.rest_port: int | None = None
        self._loading: asyncio.Task[None] | None = None
        self._watching: asyncio.Task[None] | None = None
        self._cleaning: asyncio.Task[None] | None = None
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
            services = [
                *grpc_tfs.handlers(grpc_tfs.TfServing(self.dataplane)),
                *grpc_kserve.handlers(grpc_kserve.KServe(self.dataplane)),
                *grpc_health.handlers(self.health),
            ]
            for host in hosts:  # gRPC's own failure to bind comes with a log line of its C++ core
                _check_free(host, self.settings.port, "gRPC")
            self.grpc, ports = grpc_server.create(addresses, services, self._grpc_options())
            if not ports or 0 in ports:
                failed = [a for a, p in zip(addresses, ports, strict=True) if not p] or addresses
                raise OSError(f"cannot bind the gRPC port {', '.join(failed)}: is it in use, or the address not here?")
            self.grpc_port = ports[0]
            await self.grpc.start()
            log.info("gRPC server listening on %s (port %d)", ", ".join(hosts), self.grpc_port)
        if self.settings.rest_port is not None:
            table = http_routes.routes(self.dataplane, self.metrics, self.reload, lambda: self._reload_error)
            app = HttpApp(table, self.settings.cors, self.settings.rest_limits, self.dataplane.requests)
            self.app = app
            try:
                tls = None if self.settings.tls is None else self.settings.tls.context
                self.http = HttpServer(app, self.settings.rest_bind_address, self.settings.rest_port, tls)
            except OSError as e:
                where = f"{self.settings.rest_bind_address}:{self.settings.rest_port}"
                raise OSError(f"cannot bind the REST port {where}: {e.strerror or e}") from e
            await self.http.start()
            self.rest_port = self.http.port
            log.info("REST server listening on %s (port %d)", self.settings.rest_bind_address, self.rest_port)
        self._loading = asyncio.create_task(self.manager.load(self.config))
        if self.settings.poll_seconds > 0:
            self._watching = asyncio.create_task(self._watch(self.settings.poll_seconds))
        if self.settings.sequence_cleaner_seconds > 0:
            self._cleaning = asyncio.create_task(self._clean_sequences(self.settings.sequence_cleaner_seconds))

    def _grpc_options(self) -> grpc_server.Options:
        s = self.settings
        return grpc_server.Options(s.grpc_max_message, s.grpc_max_connection_age, s.grpc_max_connection_idle, s.tls)

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

    async def _clean_sequences(self, seconds: float) -> None:
        """--sequence_cleaner_poll_wait_minutes: drop the sequences of stateful models that went idle."""
        while True:
            await asyncio.sleep(seconds)
            try:
                self.manager.sweep_sequences()
            except Exception:
                log.exception("the idle sequence cleaner failed; retrying in %s s", seconds)

    async def reload(self) -> bool:
        """Re-read config.json and serve what it says (docs/apis.md#config-api); True if anything changed. A file that
        cannot be read or does not validate raises ServingError and changes nothing: the running config keeps
        serving."""
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
            raise ServingError(status, _relative(str(e), source)) from e
        self._reload_error = ""
        if config.digest == self.config.digest:  # same file: rescan version folders
            log.debug("config reload: %s unchanged; rescanning version folders", source)
            outcome = await self.manager.reconcile(self.config)
            if self._load_failed:  # the last load failed (maybe applied by the watcher): its result until it loads
                outcome = Reconciled(outcome.changed, self.manager.failure(m.name for m in self.config.models))
        else:
            log.debug("config reload: %s changed; applying it", source)
            for warning in config.warnings:
                log.warning("config: %s", warning)
            outcome = await self.manager.reconcile(config)
            self.config = config
            done = "changes applied" if outcome.changed else "nothing to change"
            log.info("config reloaded from %s: %s", source, done)
        self._load_failed = outcome.failure is not None
        # applied, but the reload answers its first failure (docs/operations.md#reload-order, docs/apis.md#config-api)
        if outcome.failure is not None:
            failure = outcome.failure
            detail = _relative(str(failure), source)
            raise ServingError("RELOAD_CONFIG_FAILED", detail, http=http_status(failure.status))
        return outcome.changed

    async def hurry(self) -> None:
        """Cut a stop short: requests still in flight are cancelled now."""
        if self.http is not None:
            self.http.hurry()
        if self.grpc is not None:
            await self.grpc.stop(None)

    async def loaded(self) -> None:
        """Wait for the initial load; in single-model mode raise if the model did not load."""
        assert self._loading is not None
        await self._loading
        if self.settings.fatal_load_errors:
            for name in self.manager.not_loaded():
                raise RuntimeError(f"Couldn't start model manager: model {name} did not load")

    def drain(self) -> None:
        """Turn not-ready (HTTP readiness, gRPC ServerReady and health) while serving on: every HTTP response from
        now on closes its connection, so clients and proxies open their next one to a server that stays."""
        self.dataplane.draining = True
        if self.app is not None:
            self.app.closing = True

    async def stop(self, grace: float = 5.0) -> None:
        """Close the ports, tell gRPC clients to go elsewhere (GOAWAY), let requests in flight finish (up to `grace`
        seconds, then they are cancelled), then unload everything."""
        self.drain()
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        for task in (self._watching, self._cleaning):
            if task is not None:
                task.cancel()
        self.health.close()  # ends Watch streams, which would otherwise hold the gRPC server for all of `grace`
        await asyncio.gather(
            *([self.http.stop(grace)] if self.http is not None else []),
            *([self.grpc.stop(grace)] if self.grpc is not None else []),
        )
        self.dataplane.regions.close()
        self.manager.stop()
        self.manager.close()  # here, not in a worker thread: those may all be held by loads that never end
        log.info("server stopped")


def _check_free(host: str, port: int, door: str) -> None:
    """Raise a one-line OSError if `port` cannot be bound on `host` now (in use, or not an address of this host)."""
    if port == 0:
        return
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        socket.create_server((host, port), family=family).close()
    except OSError as e:
        raise OSError(f"cannot bind the {door} port {host}:{port}: {e.strerror or e}") from e


def _relative(message: str, config: Path) -> str:
    """A reload's failure as clients see it: paths under the config's directory relative to it (the server's own
    layout is for its log)."""
    return message.replace(f"{config.parent}/", "")


async def _until_signal(work: Awaitable[Any], signals: asyncio.Queue[int]) -> int | None:
    """Run `work` unless a signal arrives first: None once it is done, else the signal (`work` is cancelled)."""
    task, signalled = asyncio.ensure_future(work), asyncio.ensure_future(signals.get())
    try:
        await asyncio.wait((task, signalled), return_when=asyncio.FIRST_COMPLETED)
    finally:
        task.cancel()
        signalled.cancel()
    if not task.done() or task.cancelled():
        return signalled.result()
    if signalled.done() and not signalled.cancelled():
        signals.put_nowait(signalled.result())  # both at once: the signal is kept for the next wait
    task.result()  # its exception, if any
    return None


async def serve(config: ServerConfig, settings: Settings) -> int:
    """Run until SIGINT/SIGTERM; returns the process exit code.

    SIGTERM (Kubernetes' stop) drains: the server turns not-ready at once and keeps serving for `drain_seconds`
    (endpoints and load balancers take time to notice), then closes its ports, sends gRPC clients a GOAWAY and lets
    requests in flight finish for up to `shutdown_grace` seconds. SIGINT, or SIGTERM before the server is ready,
    skips the drain. A second signal ends the drain, and then the grace, at once."""
    loop = asyncio.get_running_loop()
    signals: asyncio.Queue[int] = asyncio.Queue()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, signals.put_nowait, sig)  # before anything starts: obeyed at any point
    server = Server(config, settings)
    code, urgent = 0, False
    try:
        await server.start()
        if await _until_signal(server.loaded(), signals) is None:
            log.info("server ready")
            if await signals.get() == signal.SIGTERM and settings.drain_seconds > 0:
                server.drain()
                log.info("SIGTERM: not ready now; serving on for %g s while clients move away", settings.drain_seconds)
                urgent = await _until_signal(asyncio.sleep(settings.drain_seconds), signals) is not None
    except RuntimeError as e:
        log.error("%s", e)
        code = 1
    finally:
        stopping = asyncio.ensure_future(server.stop(0 if urgent else settings.shutdown_grace))
        if not urgent and await _until_signal(asyncio.shield(stopping), signals) is not None:
            urgent = True
            await server.hurry()
        await stopping
    if urgent:
        log.warning("second signal: stopped without waiting for requests in flight")
    elif not await _threads_done(loop, THREADS_EXIT_WAIT_S):
        log.warning("worker threads still busy (a model load, a custom node): exiting without them")
        urgent = True
    if urgent:  # a worker thread cannot be cancelled, and asyncio.run and the interpreter would wait for it
        logging.shutdown()
        os._exit(code)
    return code


THREADS_EXIT_WAIT_S = 3.0  # after a stop, how long worker threads (loads, custom nodes) may take to finish


async def _threads_done(loop: asyncio.AbstractEventLoop, seconds: float) -> bool:
    """Shut the loop's worker threads down; False if some are still busy after `seconds` (e.g. a load blocked in
    OpenVINO or on storage: no one waits for its result any more)."""
    try:
        await asyncio.wait_for(asyncio.shield(loop.shutdown_default_executor()), seconds)
    except TimeoutError:
        return False
    return True
