"""CLI-only input preprocessing of single-model mode (--mean, --scale, --color_format, --precision;
docs/configuration.md#cli-flags): parsed from the flags, built into the model with OpenVINO's PrePostProcessor at
load."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import openvino as ov
from openvino.preprocess import ColorFormat, PrePostProcessor

from .errors import ConfigError, LoadError

FLAGS = ("mean", "scale", "color_format", "precision")

# OVMS's color format names (docs/configuration.md#cli-flags); which ones a conversion may end in is OpenVINO's rule.
COLOR_FORMATS = {
    "RGB": ColorFormat.RGB,
    "BGR": ColorFormat.BGR,
    "GRAY": ColorFormat.GRAY,
    "NV12": ColorFormat.NV12_SINGLE_PLANE,
    "NV12_2": ColorFormat.NV12_TWO_PLANES,
    "I420": ColorFormat.I420_SINGLE_PLANE,
    "I420_3": ColorFormat.I420_THREE_PLANES,
}
COLOR_TARGETS = ("RGB", "BGR", "GRAY")
# The input planes of the multi-plane formats: the model then takes inputs "<name>/y", "<name>/uv" and so on.
_PLANES = {"NV12_2": ["y", "uv"], "I420_3": ["y", "u", "v"]}

# OVMS's precision names. Clients can send only those with a numpy type, so only those may be the source.
PRECISIONS = {
    "FP64": ov.Type.f64, "FP32": ov.Type.f32, "FP16": ov.Type.f16, "BF16": ov.Type.bf16,
    "INT64": ov.Type.i64, "INT32": ov.Type.i32, "INT16": ov.Type.i16, "INT8": ov.Type.i8, "INT4": ov.Type.i4,
    "UINT64": ov.Type.u64, "UINT32": ov.Type.u32, "UINT16": ov.Type.u16, "UINT8": ov.Type.u8,
    "UINT4": ov.Type.u4, "UINT1": ov.Type.u1,
}  # fmt: skip
SENDABLE = tuple(name for name in PRECISIONS if name not in ("BF16", "INT4", "UINT4", "UINT1"))


@dataclass(frozen=True)
class Preprocess:
    """What the flags ask for; steps run in this order: color conversion, precision conversion, mean, scale."""

    mean: tuple[float, ...] = ()
    scale: tuple[float, ...] = ()
    color: tuple[str, str] | None = None  # (target, source) names of COLOR_FORMATS
    precision: tuple[str, str] | None = None  # (target, source) names of PRECISIONS

    def flags(self) -> str:
        """The flags as given, for messages."""
        parts = [f"--mean {_values_text(self.mean)}" if self.mean else "",
                 f"--scale {_values_text(self.scale)}" if self.scale else "",
                 f"--color_format {':'.join(self.color)}" if self.color else "",
                 f"--precision {':'.join(self.precision)}" if self.precision else ""]  # fmt: skip
        return " ".join(part for part in parts if part)


# --- parsing the flags -----------------------------------------------------------------------------------


def parse(
    mean: str | None, scale: str | None, color_format: str | None, precision: str | None, layout: object
) -> Preprocess | None:
    """The preprocessing the flags ask for (None when none is given); raises ConfigError naming the flag."""
    values = (mean, scale, color_format, precision)
    given = [flag for flag, value in zip(FLAGS, values, strict=True) if value is not None]
    if not given:
        return None
    if layout is None:
        raise ConfigError(f"--{given[0]} requires --layout: preprocessing needs to know where the channels are")
    return Preprocess(
        mean=_values("mean", mean) if mean is not None else (),
        scale=_values("scale", scale) if scale is not None else (),
        color=_color(color_format) if color_format is not None else None,
        precision=_precision(precision) if precision is not None else None,
    )


def _values(flag: str, text: str) -> tuple[float, ...]:
    """A number, or one per channel as [a,b,c] or (a,b,c)."""
    expected = f"--{flag} expects a number or one per channel as [a,b,c] or (a,b,c), got {text!r}"
    body = text.replace(" ", "")
    listed = len(body) >= 2 and (body[0], body[-1]) in (("[", "]"), ("(", ")"))
    items = body[1:-1].split(",") if listed else [body]
    try:
        values = tuple(float(item) for item in items)
    except ValueError:
        raise ConfigError(expected) from None
    if not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{expected}: values must be finite")
    if flag == "scale" and 0.0 in values:
        raise ConfigError(f"--scale divides by its values: they must not be 0, got {text!r}")
    return values


def _pair(flag: str, text: str, names: tuple[str, ...]) -> tuple[str, str]:
    target, colon, source = text.replace(" ", "").upper().partition(":")
    expected = f"--{flag} expects <target>:<source>, each one of {', '.join(names)}, got {text!r}"
    if not colon or target not in names or source not in names:
        raise ConfigError(expected)
    return target, source


def _color(text: str) -> tuple[str, str]:
    target, source = _pair("color_format", text, tuple(COLOR_FORMATS))
    if target not in COLOR_TARGETS:
        raise ConfigError(f"--color_format converts to {', '.join(COLOR_TARGETS)} only, got target {target}")
    return target, source


def _precision(text: str) -> tuple[str, str]:
    target, source = _pair("precision", text, tuple(PRECISIONS))
    if source not in SENDABLE:
        raise ConfigError(f"--precision source {source} cannot be sent by clients; use one of {', '.join(SENDABLE)}")
    return target, source


def _values_text(values: tuple[float, ...]) -> str:
    return f"{values[0]:g}" if len(values) == 1 else "[" + ",".join(f"{v:g}" for v in values) + "]"


# --- applying them at load -------------------------------------------------------------------------------


def apply(model: ov.Model, pre: Preprocess | None, layouts: Mapping[str, str]) -> tuple[ov.Model, dict[str, str]]:
    """`model` (its layouts applied) with the preprocessing built in before its single input, and the layouts
    clients see: the input's layout also for the planes a multi-plane color format makes. Raises LoadError."""
    if pre is None:
        return model, dict(layouts)
    if len(model.inputs) != 1:
        raise LoadError(
            "MODEL_NOT_LOADED", f"{pre.flags()}: preprocessing applies to a model with one input; this one has "
            f"{len(model.inputs)}: {', '.join(sorted(p.get_any_name() for p in model.inputs))}",
        )  # fmt: skip
    port = model.input(0)
    name = port.get_any_name()
    layout = layouts.get(name) or "N..."
    _check_channels(pre, name, layout, port.get_partial_shape())
    ppp = PrePostProcessor(model)
    step = ppp.input()
    step.model().set_layout(ov.Layout(layout))
    if pre.color is not None:
        target, source = pre.color
        step.tensor().set_color_format(COLOR_FORMATS[source], _PLANES.get(source, []))
        step.preprocess().convert_color(COLOR_FORMATS[target])
    if pre.precision is not None:
        target, source = pre.precision
        step.tensor().set_element_type(PRECISIONS[source])
        step.preprocess().convert_element_type(PRECISIONS[target])
    if pre.mean:
        step.preprocess().mean(list(pre.mean))
    if pre.scale:
        step.preprocess().scale(list(pre.scale))
    try:
        model = ppp.build()
    except Exception as e:  # e.g. a mean on integer input, or a color conversion OpenVINO does not have
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise LoadError("MODEL_NOT_LOADED", f"{pre.flags()} cannot be applied to input {name}: {reason}") from e
    seen = dict(layouts)
    for plane in model.inputs:
        seen.setdefault(plane.get_any_name(), layout)
    return model, seen


def _check_channels(pre: Preprocess, name: str, layout: str, shape: ov.PartialShape) -> None:
    """Per-channel mean/scale values must match the input's C dimension (when it is known)."""
    ov_layout = ov.Layout(layout)
    for flag, values in (("mean", pre.mean), ("scale", pre.scale)):
        if len(values) <= 1:
            continue
        if not ov_layout.has_name("C"):
            raise LoadError(
                "MODEL_NOT_LOADED",
                f"--{flag} has {len(values)} values, one per channel, but the layout {layout} of input {name} "
                "has no C; give --layout with C, or one value",
            )
        index = ov.layout_helpers.channels_idx(ov_layout)
        channels = shape[index] if shape.rank.is_static and -len(shape) <= index < len(shape) else None
        if channels is not None and channels.is_static and channels.get_length() != len(values):
            raise LoadError(
                "MODEL_NOT_LOADED",
                f"--{flag} has {len(values)} values, but input {name} has {channels.get_length()} channels "
                f"(C of layout {layout}); give one value or one per channel",
            )
