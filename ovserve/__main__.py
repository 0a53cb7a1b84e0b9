"""`python -m ovserve` and the `ovserve` command: process set-up that must come before gRPC loads, then the CLI."""

import os
import sys


def run() -> int:
    # gRPC's core logs every refused TLS handshake (and other connection noise) at INFO, without limit; ovserve logs
    # refusals itself, at most once a second. GRPC_VERBOSITY=INFO (or DEBUG) brings gRPC's own lines back.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from .cli import main

    return main()


if __name__ == "__main__":
    sys.exit(run())
