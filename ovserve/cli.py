"""The `ovserve` command: OVMS's command-line flags (docs/configuration.md#cli-flags) → ServerConfig and Settings →
serve."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import __version__, logs, preprocess, tls
from .config import ServerConfig, load_config, single_model_config
from .errors import ConfigError
from .grpc_server import MAX_MESSAGE_BYTES
from .http_app import Cors
from .http_protocol import HttpLimits
from .metrics import FAMILIES, parse_families
from .pipeline_run import BRANCH_WINDOW
from .server import Settings, serve
from .tls import Tls
from .types import ImageLimits

MODEL_FLAGS = (
    "batch_size", "shape", "layout", "nireq", "target_device", "plugin_config", "model_version_policy", "max_queue_size"
)  # fmt: skip
STATEFUL_FLAGS = ("stateful", "idle_sequence_cleanup", "max_sequence_number", "low_latency_transformation")


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0-65535)")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 86400:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 or more, below a day)")
    return value


def _byte_count(text: str) -> int:
    value = int(text) if text.strip().isdigit() else 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of bytes (1 or more)")
    return value


def _positive(text: str) -> int:
    value = int(text) if text.strip().isdigit() else 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value


def _boolean(text: str) -> bool:
    """OVMS's boolean flags: given alone they mean true, or take true/false."""
    if text.lower() in ("true", "1"):
        return True
    if text.lower() in ("false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def _uint32(text: str) -> int:
    value = int(text) if text.strip().isdigit() else -1
    if not 0 <= value < 1 << 32:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 0 to {(1 << 32) - 1}")
    return value


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON: {e.msg}") from e
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ovserve", description="OpenVINO Model Server compatible model server")
    p.add_argument("--version", action="version", version=f"ovserve {__version__}")
    p.add_argument("--config_path", help="config.json (or a directory holding it): multi-model mode")
    p.add_argument("--port", type=_port, default=0, help="gRPC port; 0 = gRPC not started")
    p.add_argument("--rest_port", type=_port, default=0, help="HTTP port (TF Serving and KServe REST, /metrics)")
    p.add_argument("--grpc_bind_address", default="0.0.0.0", help="comma-separated addresses for gRPC")
    p.add_argument("--rest_bind_address", default="0.0.0.0")
    p.add_argument("--grpc_workers", type=int, default=1, help="accepted for compatibility; one event loop serves all")
    p.add_argument("--rest_workers", type=int, help="accepted for compatibility; one event loop serves all")
    p.add_argument(
        "--file_system_poll_wait_seconds", type=int, default=1, help="check config.json and version folders; 0 = off"
    )
    p.add_argument(
        "--sequence_cleaner_poll_wait_minutes",
        type=_uint32,
        default=5,
        help="drop the idle sequences of stateful models this often (a sequence idle since the last scan); 0 = off",
    )
    p.add_argument("--cache_dir", type=Path, help="OpenVINO compiled-model cache directory")
    p.add_argument("--metrics_enable", action="store_true", help="serve /metrics on the REST port")
    p.add_argument("--metrics_list", help="comma-separated metric families (default: OVMS's default set)")
    p.add_argument("--allowed_origins", default="*", help="CORS Access-Control-Allow-Origin")
    p.add_argument("--allowed_methods", default="*", help="CORS Access-Control-Allow-Methods")
    p.add_argument("--allowed_headers", default="*", help="CORS Access-Control-Allow-Headers")
    p.add_argument("--allow_credentials", action="store_true", help="CORS Access-Control-Allow-Credentials: true")
    p.add_argument(
        "--drain_seconds",
        type=_seconds,
        default=5.0,
        help="after SIGTERM: seconds to keep serving while readiness is false, so load balancers move away first",
    )
    p.add_argument(
        "--shutdown_grace_seconds",
        type=_seconds,
        default=30.0,
        help="then: seconds requests in flight may take to finish before they are cancelled",
    )
    p.add_argument(
        "--grpc_max_connection_age_seconds",
        type=_seconds,
        default=0.0,
        help="send each gRPC connection a GOAWAY at this age, so clients an L4 balancer pins here reconnect "
        "elsewhere during a drain (below --drain_seconds minus the balancer's delay); 0 = never",
    )
    _limit_flags(p)
    p.add_argument("--tls_cert", type=Path, help="PEM certificate (chain): serve gRPC and REST over TLS only")
    p.add_argument("--tls_key", type=Path, help="PEM private key of --tls_cert")
    p.add_argument("--tls_client_ca", type=Path, help="PEM CA: clients must present a certificate it signed (mTLS)")
    p.add_argument(
        "--ready_requires_all_models",
        action="store_true",
        help="readiness stays false while any configured model or pipeline is not serving (default: as OVMS, "
        "ready once the first load is done)",
    )
    p.add_argument(
        "--allow_client_shm",
        action="store_true",
        help="let KServe clients register system shared memory regions (Triton's extension): any client may then "
        "read and write the server user's shared memory objects by key",
    )
    p.add_argument(
        "--log_level",
        default="INFO",
        type=str.upper,
        choices=logs.LEVELS,
        help="any case; DEBUG shows ovserve's own events (requests in and out, reload decisions, version changes), "
        "TRACE also asyncio's, gRPC's and uvicorn's",
    )
    p.add_argument("--log_path", type=Path, help="write the log to this file")
    p.add_argument(
        "--log_format", default="text", choices=logs.FORMATS, help="json: one object per line, for log shippers"
    )
    p.add_argument(
        "--access_log", action="store_true", help="log one line per request: door, target, status, duration, bytes"
    )
    single = p.add_argument_group("single-model mode")
    single.add_argument("--model_name")
    single.add_argument("--model_path", help="a directory of version folders, or s3://bucket/path")
    single.add_argument("--batch_size", help='N, -1, "min:max" or auto')
    single.add_argument("--shape", help='"(1,3,224,224)", auto, or a JSON object {input: shape}')
    single.add_argument("--layout", help='"NHWC:NCHW", "NCHW", or a JSON object {tensor: layout}')
    single.add_argument("--nireq", type=int, help="infer requests in the pool; 0 = OpenVINO's optimal number")
    single.add_argument(
        "--max_queue_size", type=int, help="requests that may wait for an infer request; more get 429 at once"
    )
    single.add_argument("--target_device", help="CPU, GPU, AUTO, ...")
    single.add_argument("--plugin_config", type=_json_object, help='JSON, e.g. {"NUM_STREAMS": "2"}')
    single.add_argument("--model_version_policy", type=_json_object, help='JSON, e.g. {"latest": {"num_versions": 1}}')
    single.add_argument("--mean", help='subtract from the input: a number or one per channel, "[123.7,116.3,103.5]"')
    single.add_argument("--scale", help='then divide the input by: a number or one per channel, "[58.4,57.1,57.4]"')
    single.add_argument("--color_format", help="<target>:<source>, e.g. RGB:BGR (the client sends BGR)")
    single.add_argument("--precision", help="<target>:<source>, e.g. FP32:UINT8 (the client sends UINT8)")
    flag: dict[str, Any] = {"type": _boolean, "nargs": "?", "const": True}
    single.add_argument("--stateful", **flag, help="requests belong to sequences, each keeping its model state")
    single.add_argument("--idle_sequence_cleanup", **flag, help="drop idle sequences (default true; needs --stateful)")
    single.add_argument("--max_sequence_number", type=_uint32, help="live sequences at most (500; needs --stateful)")
    single.add_argument(
        "--low_latency_transformation", **flag, help="apply OpenVINO's LowLatency2 (default false; needs --stateful)"
    )
    return p


def _limit_flags(p: argparse.ArgumentParser) -> None:
    """What a client may send and how slowly (docs: README, "Limits"); 0 seconds = no limit."""
    rest = HttpLimits()
    group = p.add_argument_group("limits")
    group.add_argument(
        "--rest_max_body_bytes",
        type=_byte_count,
        default=rest.max_body_bytes,
        help="REST request bodies larger than this are refused (413) before they are read; default 1 GiB as OVMS",
    )
    group.add_argument(
        "--rest_body_timeout_seconds",
        type=_seconds,
        default=rest.body_seconds,
        help="a REST client that sends no byte of its body for this long is answered 408 and disconnected",
    )
    group.add_argument(
        "--rest_max_header_bytes",
        type=_byte_count,
        default=rest.max_header_bytes,
        help="a REST request line and headers larger than this are refused (431) and the connection closed",
    )
    group.add_argument(
        "--rest_max_headers", type=_positive, default=rest.max_headers, help="more REST headers than this: 431"
    )
    group.add_argument(
        "--rest_header_timeout_seconds",
        type=_seconds,
        default=rest.header_seconds,
        help="a REST request whose headers take longer than this to arrive is answered 408 and disconnected",
    )
    group.add_argument(
        "--rest_idle_timeout_seconds",
        type=_seconds,
        default=rest.idle_seconds,
        help="REST connections with no request under way for this long are closed",
    )
    group.add_argument(
        "--grpc_max_message_bytes",
        type=_byte_count,
        default=MAX_MESSAGE_BYTES,
        help="largest gRPC message received or sent; default 1 GiB as OVMS",
    )
    images = ImageLimits()
    group.add_argument(
        "--max_image_pixels",
        type=_positive,
        default=images.max_pixels,
        help="encoded images with more pixels are refused (413), from their header where the format allows, "
        "before they are decoded",
    )
    group.add_argument(
        "--max_image_bytes",
        type=_byte_count,
        default=images.max_bytes,
        help="a request whose images together take more bytes decoded (at their input's precision) is refused",
    )
    group.add_argument(
        "--max_branches_in_flight",
        type=_positive,
        default=BRANCH_WINDOW,
        help="branches of one demultiplexer that one request runs at a time; the rest start as these end",
    )
    group.add_argument(
        "--grpc_max_connection_idle_seconds",
        type=_seconds,
        default=0.0,
        help="gRPC connections with no call for this long are sent a GOAWAY; 0 = never",
    )


def _maybe_json(text: str) -> Any:
    return json.loads(text) if text.lstrip().startswith("{") else text


def build(args: argparse.Namespace) -> tuple[ServerConfig, Settings]:
    """Check the flags' combinations as OVMS does and produce what the server runs; raises ConfigError."""
    given = [flag for flag in (*MODEL_FLAGS, *preprocess.FLAGS, *STATEFUL_FLAGS) if getattr(args, flag) is not None]
    if args.config_path and (args.model_name or args.model_path):
        raise ConfigError("Use either config_path or model_path with model_name")
    if args.config_path and given:
        raise ConfigError(f"Model parameters in CLI are exclusive with the config file: --{given[0]}")
    needs_stateful = [flag for flag in STATEFUL_FLAGS[1:] if getattr(args, flag) is not None]
    if needs_stateful and not args.stateful:
        raise ConfigError(f"--{needs_stateful[0]} requires --stateful")
    if args.rest_port and args.rest_port == args.port:
        raise ConfigError("--port and --rest_port must differ")
    if args.config_path:
        config = load_config(Path(args.config_path))
    elif args.model_name and args.model_path:
        if not args.port and not args.rest_port:
            raise ConfigError("in single-model mode --port and --rest_port cannot both be 0")
        settings: dict[str, Any] = {}
        for flag in (flag for flag in given if flag not in preprocess.FLAGS):
            value = getattr(args, flag)
            settings[flag] = _maybe_json(value) if flag in ("shape", "layout") else value
        path = args.model_path if "://" in args.model_path else Path(args.model_path).resolve()  # URLs as written
        config = _with_preprocess(single_model_config(args.model_name, path, settings), args)
        if config.models[0].problems:
            raise ConfigError("; ".join(config.models[0].problems))
    else:
        raise ConfigError("give --config_path, or --model_name with --model_path")
    return config, Settings(
        port=args.port or None,
        rest_port=args.rest_port or None,
        grpc_bind_address=args.grpc_bind_address,
        rest_bind_address=args.rest_bind_address,
        cache_dir=args.cache_dir,
        fatal_load_errors=not args.config_path,
        poll_seconds=max(0, args.file_system_poll_wait_seconds),
        metrics=_metrics(args, config),
        cors=Cors(args.allowed_origins, args.allowed_methods, args.allowed_headers, args.allow_credentials),
        drain_seconds=args.drain_seconds,
        shutdown_grace=args.shutdown_grace_seconds,
        ready_needs_all=args.ready_requires_all_models,
        grpc_max_connection_age=args.grpc_max_connection_age_seconds,
        rest_limits=HttpLimits(
            args.rest_max_body_bytes,
            args.rest_body_timeout_seconds,
            args.rest_max_header_bytes,
            args.rest_max_headers,
            args.rest_header_timeout_seconds,
            args.rest_idle_timeout_seconds,
        ),
        grpc_max_message=args.grpc_max_message_bytes,
        max_branches_in_flight=args.max_branches_in_flight,
        image_limits=ImageLimits(args.max_image_pixels, args.max_image_bytes),
        grpc_max_connection_idle=args.grpc_max_connection_idle_seconds,
        tls=_tls(args),
        sequence_cleaner_seconds=60.0 * args.sequence_cleaner_poll_wait_minutes,
        allow_client_shm=args.allow_client_shm,
        access_log=args.access_log,
    )


def _with_preprocess(config: ServerConfig, args: argparse.Namespace) -> ServerConfig:
    """The single model with the CLI-only preprocessing flags (not config.json keys:
    docs/configuration.md#model-keys)."""
    pre = preprocess.parse(args.mean, args.scale, args.color_format, args.precision, args.layout)
    return config if pre is None else replace(config, models=(replace(config.models[0], preprocess=pre),))


def _tls(args: argparse.Namespace) -> Tls | None:
    if args.tls_cert is None and args.tls_key is None:
        if args.tls_client_ca is not None:
            raise ConfigError("--tls_client_ca needs --tls_cert and --tls_key: mutual TLS is TLS first")
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise ConfigError("--tls_cert and --tls_key go together")
    return tls.load(args.tls_cert, args.tls_key, args.tls_client_ca)


def _metrics(args: argparse.Namespace, config: ServerConfig) -> tuple[str, ...] | None:
    """Enabled metric families from the CLI or the config's `monitoring` (read once per start,
    docs/configuration.md#monitoring)."""
    monitoring = config.monitoring.get("metrics") if isinstance(config.monitoring, dict) else None
    if args.metrics_list and not args.metrics_enable:
        raise ConfigError("--metrics_list requires --metrics_enable")
    if args.metrics_enable and monitoring is not None:
        raise ConfigError("Configuration file not found or cannot open: metrics are set both in the config and the CLI")
    if args.metrics_enable:
        listed = parse_families(args.metrics_list)
    elif isinstance(monitoring, dict) and monitoring.get("enable") is True:
        listed = parse_families(monitoring.get("metrics_list"))
    else:
        return ()
    if not args.rest_port:
        raise ConfigError("Missing rest_port parameter in server CLI: metrics are served on the REST port")
    unknown = [name for name in listed or () if name not in FAMILIES]
    if unknown:
        raise ConfigError(f"Invalid name in metrics_list: {', '.join(unknown)}")
    return listed


# glibc's malloc options (malloc.h) and the largest mmap threshold it accepts on 64-bit systems.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 << 20


def keep_freed_memory(environ: Mapping[str, str] = os.environ) -> bool:
    """Let glibc's malloc keep freed blocks of up to 32 MiB for reuse instead of handing them back to the kernel.

    Every request allocates and frees a few blocks the size of its tensors (gRPC's message, protobuf's copy, the
    bytes of tensor_content). With glibc's defaults a block above the mmap threshold is mapped and unmapped each
    time, and the heap top is trimmed once more than twice that is free, so each request faulted in its memory anew:
    about 300 page faults for one 600 KB image, half the server's CPU per request on small models. These are the
    values glibc's own adaptive threshold stops at (mmap threshold 32 MiB, trim threshold twice that). Settings the
    user made with glibc's MALLOC_*_ variables are left alone; elsewhere than glibc nothing changes. Returns whether
    the options were set."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    if any(name in environ for name in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")) or any(
        name in tunables for name in ("glibc.malloc.trim_threshold", "glibc.malloc.mmap_threshold")
    ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no C library symbols to look up, or not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, 2 * _MMAP_THRESHOLD))


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logs.configure(args.log_level, args.log_path, args.log_format, args.access_log)
    keep_freed_memory()
    try:
        config, settings = build(args)
    except ConfigError as e:
        print(f"ovserve: error: {e}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(serve(config, settings))
    except OSError as e:
        print(f"ovserve: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
