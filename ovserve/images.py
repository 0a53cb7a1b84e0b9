"""Binary request inputs meeting an endpoint input (docs/apis.md#binary-inputs): encoded images decoded into tensors
exactly as OVMS's OpenCV path makes them (docs/apis.md#image-decoding), strings packed into zero-padded 2-D U8 arrays
and unpacked from them (docs/apis.md#strings-2d).

Protocol-neutral: the TF Serving and KServe decoders hand over the received byte strings, the request's declared
shape and the endpoint's TensorSpec. Work happens in OVMS's two phases: `binary_input` runs the request checks while
the decoder validates every input, and `finish` decodes the images afterwards, in a worker thread when there are
many bytes to decode.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np

from . import image_header
from .errors import ServingError
from .tensors import Dim, TensorSpec, dim_accepts, dim_text, precision_name, shape_text
from .types import ImageLimits

# Encoded bytes a request may bring to be decoded on the event loop; more go to a worker thread. OpenCV decodes
# 50-65 MB/s of PNG or JPEG on this machine's cores, so 64 KiB hold the loop about 1 ms, ten times the cost of the
# hop to a thread (~0.1 ms).
INLINE_DECODE_BYTES = 64 * 1024
MAX_STRINGS_BYTES = 1 << 30  # OVMS's limit for the 2-D U8 array made from strings

# What a decoder returns: the request's arrays, or them with images still to decode.
Decoded: TypeAlias = "dict[str, np.ndarray] | PendingImages"

_U8 = np.dtype(np.uint8)
_STRING = np.dtype(object)
# Precisions OpenCV's convertTo reaches (OVMS converts to these only).
_CONVERTIBLE = frozenset(
    np.dtype(t) for t in (np.float32, np.float64, np.float16, np.int32, np.int16, np.int8, np.uint8, np.uint16)
)
# Depths cv2.resize interpolates bilinearly; images of the others are resized through float32.
_RESIZABLE_DEPTHS = frozenset(np.dtype(t) for t in (np.uint8, np.uint16, np.int16, np.float32, np.float64))
# Endpoint layouts for which OVMS resizes images to the endpoint's height and width.
_RESIZABLE_LAYOUTS = ("NHWC", "N?HWC", "...")
_IMAGE_LAYOUT = "N...HWC"


def converts(spec: TensorSpec | None) -> bool:
    """Whether string or bytes data sent to this endpoint input is converted here: every input with a precision
    except STRING (native string tensors take the bytes as they are)."""
    return spec is not None and spec.dtype is not None and spec.dtype != _STRING


def binary_input(
    values: Sequence[bytes], shape: Sequence[int], spec: TensorSpec, kserve: bool = False
) -> np.ndarray | EncodedImages:
    """Check string/bytes request data (`values`, declared `shape`) for an endpoint input that `converts`: a U8
    input of rank 2 gets the strings packed now; an image input (rank 4, or 5 for a pipeline input demultiplexed at
    the request) gets its images checked and returned for `finish` to decode. Other inputs cannot take such data."""
    rank = len(spec.shape)
    if spec.dtype == _U8 and rank == 2 and not spec.demultiplexed:
        return _strings_2d(values, shape, spec, kserve)
    if rank == (5 if spec.demultiplexed else 4):
        _check_rank(shape, spec.name, kserve)
        _check_batch(shape, len(values), spec)
        if not values:
            raise ServingError("INVALID_BATCH_SIZE", f"Expected: at least 1 image; Actual: 0; input name: {spec.name}")
        return EncodedImages(values, spec, "BYTES_CONTENTS_EMPTY" if kserve else "STRING_VAL_EMPTY")
    demux = " (5 for a pipeline input demultiplexed at the request)"
    raise ServingError(
        "NOT_IMPLEMENTED",
        f"binary or string data is accepted by STRING inputs, U8 inputs of rank 2 and image inputs of rank 4{demux}; "
        f"this input is {precision_name(spec.dtype)} {shape_text(spec.shape)}; input name: {spec.name}",
    )


def finish(inputs: Mapping[str, np.ndarray | EncodedImages]) -> Decoded:
    """The request's arrays, or (when images are among them) the arrays with images left to decode."""
    if not any(isinstance(value, EncodedImages) for value in inputs.values()):
        return dict(inputs)  # type: ignore[arg-type]  # no EncodedImages among the values
    return PendingImages(inputs)


class PendingImages:
    """A request's arrays with images still to decode."""

    __slots__ = ("inputs",)

    def __init__(self, inputs: Mapping[str, np.ndarray | EncodedImages]) -> None:
        self.inputs = inputs

    async def finish(self, limits: ImageLimits) -> dict[str, np.ndarray]:
        """Check every image's header against `limits`, then decode them: here when they are few bytes, else in a
        worker thread (OpenCV releases the GIL) so the event loop keeps serving."""
        total = 0
        for images in self._images():
            total = images.check_sizes(limits, total)
        if self.inline:
            return self._decode_all(limits)
        return await asyncio.to_thread(self._decode_all, limits)

    @property
    def inline(self) -> bool:
        """Whether the images are few enough bytes to decode on the event loop."""
        return sum(images.size for images in self._images()) <= INLINE_DECODE_BYTES

    def _images(self) -> list[EncodedImages]:
        return [value for value in self.inputs.values() if isinstance(value, EncodedImages)]

    def _decode_all(self, limits: ImageLimits) -> dict[str, np.ndarray]:
        inputs = self.inputs.items()
        return {name: value.decode(limits) if isinstance(value, EncodedImages) else value for name, value in inputs}


# --- request checks (the validation phase) ----------------------------------------------------------------


def _check_rank(shape: Sequence[int], name: str, kserve: bool) -> None:
    if len(shape) != 1:
        what = "input shape dimensions" if kserve else "binary input shape dimensions"
        raise ServingError(
            "INVALID_NO_OF_SHAPE_DIMENSIONS", f"Expected number of {what}: 1; Actual: {len(shape)}; input name: {name}"
        )


def _check_batch(shape: Sequence[int], count: int, spec: TensorSpec) -> None:
    """The declared batch must be the number of values, and the endpoint's batch dimension (N of its layout, else
    dim 0) must accept it."""
    if shape[0] != count:
        raise ServingError(
            "INVALID_BATCH_SIZE", f"the request shape says {shape[0]} but holds {count} values; input name: {spec.name}"
        )
    index = spec.batch_index or 0
    if not dim_accepts(spec.shape[index], count):
        raise ServingError(
            "INVALID_BATCH_SIZE", f"Expected: {dim_text(spec.shape[index])}; Actual: {count}; input name: {spec.name}"
        )


def _strings_2d(values: Sequence[bytes], shape: Sequence[int], spec: TensorSpec, kserve: bool) -> np.ndarray:
    """Strings as a U8 array (N, longest + 1), each row zero padded (docs/apis.md#strings-2d)."""
    name = spec.name
    _check_rank(shape, name, kserve)
    strings = np.array(values, dtype=bytes) if len(values) else np.zeros(0, "S1")  # fixed width, zero padded
    count = len(strings)
    width = (int(np.char.str_len(strings).max()) if count else 0) + 1
    if count * width > MAX_STRINGS_BYTES:
        raise ServingError(
            "INVALID_STRING_MAX_SIZE_EXCEEDED", f"{count} strings of up to {width - 1} bytes; input name: {name}"
        )
    _check_batch(shape, count, spec)
    rows, columns = spec.shape
    if not (dim_accepts(rows, count) and dim_accepts(columns, width)):
        raise ServingError(
            "INVALID_SHAPE",
            f"Expected batch size: {dim_text(rows)}; got: {count}; Expected max null terminated string length: "
            f"{dim_text(columns)}; got: {width}; input name: {name}",
        )
    packed: np.ndarray = strings.astype(f"S{width}").view(np.uint8).reshape(count, width)
    return packed


STRING_OUTPUT_SUFFIX = "_string"


def strings_out(outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs as responses carry them: a U8 output of rank 2 whose exposed name ends in "_string" becomes its N
    rows as byte strings, each cut at its first zero byte (docs/apis.md#strings-2d, output side); the rest are left as
    they are."""
    result = dict(outputs)
    for name, array in outputs.items():
        if name.endswith(STRING_OUTPUT_SUFFIX) and array.dtype == _U8 and array.ndim == 2:
            zero = array == 0
            lengths = np.where(zero.any(axis=1), zero.argmax(axis=1), array.shape[1])
            rows = np.empty(array.shape[0], dtype=object)
            rows[:] = [row[:length].tobytes() for row, length in zip(array, lengths.tolist(), strict=True)]
            result[name] = rows
    return result


# --- decoding (the conversion phase) ----------------------------------------------------------------------


def _letters(layout: str, rank: int) -> list[str] | None:
    """A layout's letter for each of `rank` dimensions ('?' where unknown); None if it cannot have that rank."""
    head, dots, tail = layout.partition("...")
    if not dots:
        return list(layout) if len(layout) == rank else None
    fill = rank - len(head) - len(tail)
    return [*head, *("?" * fill), *tail] if fill >= 0 else None


def accepts_images(layout: str, rank: int) -> bool:
    """Whether an endpoint layout (empty: the default N...) is compatible with N...HWC at `rank` dimensions: no
    position holds two different letters and no letter lands twice (NCHW fails: C and H clash)."""
    mine, wanted = _letters(layout or "N...", rank), _letters(_IMAGE_LAYOUT, rank)
    if mine is None or wanted is None:
        return False
    merged = []
    for a, b in zip(mine, wanted, strict=True):
        if "?" not in (a, b) and a != b:
            return False
        merged.append(b if a == "?" else a)
    letters = [c for c in merged if c != "?"]
    return len(letters) == len(set(letters))


def _target(dim: Dim, size: int) -> int:
    """The height or width images get: a static dimension's value; -1 takes the image's; a range clamps it."""
    if isinstance(dim, tuple):
        return min(max(size, dim[0]), dim[1])
    return size if dim == -1 else dim


def _convert(image: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    """OpenCV's convertTo: values kept (no scaling), rounded to nearest and saturated into integer types."""
    if image.dtype == dtype:
        return image
    converted: np.ndarray
    if dtype.kind not in "iu":
        converted = image.astype(dtype)
    elif image.dtype.kind == "f":
        target = np.iinfo(dtype)
        converted = np.clip(np.rint(image), target.min, target.max).astype(dtype)
    else:
        target, source = np.iinfo(dtype), np.iinfo(image.dtype)
        low, high = max(source.min, target.min), min(source.max, target.max)
        converted = (image if (low, high) == (source.min, source.max) else np.clip(image, low, high)).astype(dtype)
    return converted


class EncodedImages:
    """The images sent to one image input, checked against the request but not decoded yet."""

    __slots__ = ("empty_status", "items", "spec")

    def __init__(self, items: Sequence[bytes], spec: TensorSpec, empty_status: str) -> None:
        self.items = items
        self.spec = spec
        self.empty_status = empty_status  # STRING_VAL_EMPTY (TF Serving) or BYTES_CONTENTS_EMPTY (KServe)

    @property
    def size(self) -> int:
        return sum(len(item) for item in self.items)

    def check_sizes(self, limits: ImageLimits, total: int) -> int:
        """Refuse an image whose header shows more pixels than `limits` allow, or that would bring the request's
        decoded images (`total` bytes so far) past them; the new total. Formats without a readable header are
        checked once decoded."""
        itemsize = 1 if self.spec.dtype is None else self.spec.dtype.itemsize
        for i, item in enumerate(self.items):
            size = image_header.read(item)
            if size is not None:
                self._check_pixels(limits, i, size.height, size.width)
                total += size.pixels * size.channels * max(size.sample_bytes, itemsize)
                self._check_total(limits, total)
        return total

    def _check_pixels(self, limits: ImageLimits, index: int, height: int, width: int) -> None:
        if height * width > limits.max_pixels:
            raise ServingError(
                "IMAGE_TOO_LARGE",
                f"image {index} is {height}x{width} (height x width), over {limits.max_pixels} pixels; "
                f"input name: {self.spec.name}",
            )

    def _check_total(self, limits: ImageLimits, total: int) -> None:
        if total > limits.max_bytes:
            raise ServingError(
                "IMAGE_TOO_LARGE",
                f"the request's images take over {limits.max_bytes} bytes decoded; input name: {self.spec.name}",
            )

    def decode(self, limits: ImageLimits) -> np.ndarray:
        """Decode every image with OpenCV (IMREAD_UNCHANGED: BGR/BGRA/gray, 8 or 16 bits as stored), check it,
        convert it to the endpoint precision, resize it where OVMS does, and stack (N,H,W,C) or (N,1,H,W,C). The
        checks come in OVMS's order: layout, empty images, then per image parsing, resolution, channels,
        precision and size."""
        import cv2  # ~0.1 s to import: only servers that receive images pay it

        spec, name = self.spec, self.spec.name
        if not accepts_images(spec.layout, len(spec.shape)):
            raise ServingError(
                "UNSUPPORTED_LAYOUT", f"input name: {name} has layout {spec.layout or 'N...'}; images need N...HWC"
            )
        for i, item in enumerate(self.items):
            if not len(item):
                raise ServingError(self.empty_status, f"image {i} has no bytes; input name: {name}")
        height, width, channels = spec.shape[-3:]
        # OVMS resizes only for these exact layouts and when no dimension is -1 ("any"); ranges still resize.
        resizable = spec.layout in _RESIZABLE_LAYOUTS and all(d != -1 for d in spec.shape)
        out = np.empty(0)
        first = (0, 0, 0)  # the first image's height, width and channels
        size = (0, 0)  # the height and width every image gets, set by the first image
        for i, item in enumerate(self.items):
            image = self._read(cv2, item, i)
            shape = image.shape
            self._check_pixels(limits, i, shape[0], shape[1])  # formats whose header was not read
            if i and not resizable and shape[:2] != first[:2]:
                raise ServingError(
                    "BINARY_IMAGES_RESOLUTION_MISMATCH",
                    f"image 0 is {first[0]}x{first[1]}, image {i} is {shape[0]}x{shape[1]} (height x width); "
                    f"input name: {name}",
                )
            expected = first[2] if i else channels
            if not dim_accepts(expected, shape[2]):
                raise ServingError(
                    "INVALID_NO_OF_CHANNELS",
                    f"Expected: {dim_text(expected)}; Actual: {shape[2]} in image {i}; input name: {name}",
                )
            if not i:
                first, size = shape, (_target(height, shape[0]), _target(width, shape[1]))
            if spec.dtype is None or spec.dtype not in _CONVERTIBLE:
                raise ServingError(
                    "INVALID_PRECISION",
                    f"images convert to FP32, FP64, FP16, I32, I16, I8, U8 or U16, not "
                    f"{precision_name(spec.dtype)}; input name: {name}",
                )
            image = _convert(image, spec.dtype)  # before resizing, as OVMS does: a float input resizes in float
            if shape[:2] != size:
                if not resizable:
                    raise ServingError(
                        "INVALID_SHAPE",
                        f"Expected: {shape_text(spec.shape)}; Actual: image {i} of {shape[0]}x{shape[1]} (height x "
                        f"width); images are resized only for layouts NHWC, N?HWC and ... without -1 dimensions; "
                        f"input name: {name}",
                    )
                image = self._resize(cv2, image, size)
            if not i:
                batch = (len(self.items), 1) if spec.demultiplexed else (len(self.items),)
                out = np.empty((*batch, *size, first[2]), spec.dtype)
            out[i] = image.reshape(out.shape[1:])  # the one copy of each image
        return out

    def _read(self, cv2: Any, item: bytes, index: int) -> np.ndarray:
        """One image as OpenCV decodes it, always (H, W, C)."""
        try:
            image = cv2.imdecode(np.frombuffer(item, np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error:
            image = None
        if image is None:
            raise ServingError(
                "IMAGE_PARSING_FAILED", f"image {index} is no image OpenCV reads; input name: {self.spec.name}"
            )
        result: np.ndarray = image[:, :, np.newaxis] if image.ndim == 2 else image
        return result

    @staticmethod
    def _resize(cv2: Any, image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """cv2.resize (bilinear) to (height, width); depths it cannot interpolate (I8, I32, FP16) go through
        float32 and back (OVMS fails on them)."""
        height, width = size
        if image.dtype in _RESIZABLE_DEPTHS:
            resized: np.ndarray = cv2.resize(image, (width, height))
        else:
            resized = _convert(cv2.resize(image.astype(np.float32), (width, height)), image.dtype)
        return resized.reshape(height, width, image.shape[2])
