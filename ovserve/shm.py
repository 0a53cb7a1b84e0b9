"""System shared memory (Triton's extension): regions clients register by name, mapped from the OS's shared-memory
namespace; request inputs are read as views of them and outputs written into them.

A region is checked at every use: the object of its key must still be the one mapped (not unlinked, not replaced) and
still hold the registered bytes (not truncated); one that fails is unregistered. Reading a mapped page that a client
truncated away raises SIGBUS, which kills the process: the check at use makes a truncation between requests a clean
error, but a client that shrinks its region while its own request is being read can still bring the server down (see
docs/shared-memory.md). Copying inputs out with read(2) instead would close that window at the cost of a second copy
(5 GB/s here, against zero for a view).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import ServingError

SHM_DIR = Path("/dev/shm")  # where shm_open(3) keeps its objects on Linux


@dataclass(frozen=True, slots=True)
class RegionStatus:
    name: str
    key: str
    offset: int
    byte_size: int


def object_path(directory: Path, key: str) -> Path:
    """The file of a shm_open key: one name, leading slashes optional (as shm_open takes it), nothing else."""
    name = key.lstrip("/")
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise ServingError("SHM_REGISTER_FAILED", f"invalid key {key!r}: a shared memory key is one name, like /data")
    return directory / name


class Region:
    """[offset, offset + byte_size) of the shared-memory object `key`, mapped read-write."""

    def __init__(self, name: str, key: str, offset: int, byte_size: int, directory: Path) -> None:
        self.status = RegionStatus(name, key, offset, byte_size)
        self.path = object_path(directory, key)
        if byte_size <= 0 or offset < 0:
            raise ServingError("SHM_REGISTER_FAILED", f"region {name!r}: byte_size must be > 0 and offset >= 0")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO or device: no wait
        except OSError as e:
            raise ServingError("SHM_REGISTER_FAILED", f"region {name!r}: cannot open key {key!r}: {e.strerror}") from e
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ServingError("SHM_REGISTER_FAILED", f"region {name!r}: key {key!r} is not a shared memory object")
            if offset + byte_size > info.st_size:
                raise ServingError(
                    "SHM_REGISTER_FAILED",
                    f"region {name!r}: offset {offset} + byte_size {byte_size} exceeds the {info.st_size} bytes of "
                    f"key {key!r}",
                )
            self._map = mmap.mmap(fd, offset + byte_size)  # the mapping keeps its own descriptor
        finally:
            os.close(fd)
        self._identity = (info.st_dev, info.st_ino)

    def problem(self) -> str | None:
        """Why the region cannot be used now (its object unlinked, replaced or truncated), or None."""
        try:
            info = os.stat(self.path, follow_symlinks=False)
        except OSError:
            return "its key no longer exists (unlinked)"
        if (info.st_dev, info.st_ino) != self._identity:
            return "its key now names another object (unlinked and created again)"
        size = self._map.size()  # fstat of the mapped object itself
        end = self.status.offset + self.status.byte_size
        if size < end:
            return f"its object was truncated to {size} bytes (registered up to byte {end})"
        return None

    def view(self, offset: int, byte_size: int) -> memoryview:
        start = self.status.offset + offset
        return memoryview(self._map)[start : start + byte_size]

    def close(self) -> None:
        """Unmap now, or, while requests still hold views of it, when the last of them is released."""
        with contextlib.suppress(BufferError):
            self._map.close()


@dataclass(frozen=True, slots=True)
class Target:
    """The bytes of a region a request wants an output written into."""

    region: Region
    view: memoryview
    tensor: str  # the output's name
    offset: int  # within the region, as requested

    def write(self, data: memoryview) -> int:
        """Copy `data` (C-contiguous bytes) to the start of the target; returns its size. The region is checked
        again first: the client may have truncated it while the request ran."""
        name = self.region.status.name
        size = data.nbytes
        if size > self.view.nbytes:
            raise ServingError(
                "SHM_OUTPUT_TOO_SMALL",
                f"output {self.tensor} needs {size} bytes; shared_memory_byte_size in region {name!r}: "
                f"{self.view.nbytes}",
            )
        problem = self.region.problem()
        if problem is not None:
            raise ServingError("SHM_REGION_UNUSABLE", f"region {name!r} named by output {self.tensor}: {problem}")
        self.view[:size] = data.cast("B")
        return size


class Regions:
    """The registered system shared-memory regions of one server, by name."""

    def __init__(self, enabled: bool = False, directory: Path = SHM_DIR) -> None:
        self.enabled = enabled  # clients may register regions (--allow_client_shm)
        self.directory = directory
        self._regions: dict[str, Region] = {}

    def _allowed(self) -> None:
        if not self.enabled:
            raise ServingError("SHM_NOT_ALLOWED", "start the server with --allow_client_shm to let clients use it")

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        self._allowed()
        if not name:
            raise ServingError("SHM_REGISTER_FAILED", "a region needs a name")
        self._sweep()
        if name in self._regions:
            raise ServingError("SHM_REGION_ALREADY_EXISTS", f"region {name!r}")
        self._regions[name] = Region(name, key, offset, byte_size, self.directory)

    def unregister(self, name: str = "") -> None:
        """Unregister one region, or every region for ""; unknown names are no error (as Triton)."""
        self._allowed()
        names = [name] if name else list(self._regions)
        for each in names:
            region = self._regions.pop(each, None)
            if region is not None:
                region.close()

    def status(self, name: str = "") -> list[RegionStatus]:
        """One region's status (unknown: SHM_REGION_NOT_FOUND), or every region's for "" (sorted by name)."""
        self._allowed()
        self._sweep()
        if not name:
            return [self._regions[n].status for n in sorted(self._regions)]
        region = self._regions.get(name)
        if region is None:
            raise ServingError("SHM_REGION_NOT_FOUND", f"region {name!r}")
        return [region.status]

    def input(self, name: str, offset: int, byte_size: int, tensor: str) -> memoryview:
        """The bytes a request names for input `tensor`, read-only."""
        return self._slice(name, offset, byte_size, f"input {tensor}")[1].toreadonly()

    def output(self, name: str, offset: int, byte_size: int, tensor: str) -> Target:
        """Where a request wants output `tensor` written."""
        region, view = self._slice(name, offset, byte_size, f"output {tensor}")
        return Target(region, view, tensor, offset)

    def _slice(self, name: str, offset: int, byte_size: int, tensor: str) -> tuple[Region, memoryview]:
        """The bytes a request names for `tensor` ("input x" / "output y"), checked: the region is registered and
        usable, and the bytes lie within it."""
        self._allowed()
        region = self._regions.get(name)
        if region is None:
            raise ServingError("SHM_REGION_MISSING", f"region {name!r} named by {tensor} is not registered")
        problem = region.problem()
        if problem is not None:
            self.unregister(name)
            raise ServingError("SHM_REGION_UNUSABLE", f"region {name!r} named by {tensor}: {problem}; unregistered")
        size = region.status.byte_size
        if offset < 0 or byte_size < 0 or offset + byte_size > size:
            raise ServingError(
                "SHM_OUT_OF_RANGE",
                f"{tensor}: offset {offset} + byte_size {byte_size} is beyond the {size} bytes of region {name!r}",
            )
        return region, region.view(offset, byte_size)

    def _sweep(self) -> None:
        """Unregister regions whose object is gone, so a client that left without unregistering frees its memory."""
        for name in [n for n, r in self._regions.items() if r.problem() is not None]:
            self._regions.pop(name).close()

    def close(self) -> None:
        """Unmap everything (server stop)."""
        for region in self._regions.values():
            region.close()
        self._regions.clear()
