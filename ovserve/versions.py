"""Model repository on disk: version folders, which model file each holds, and version-policy selection."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from pathlib import Path

from .config import All, Latest, Specific, VersionPolicy
from .errors import LoadError

MAX_VERSION = 2**63 - 1  # versions are int64 in every API


def number(name: str) -> int | None:
    """The version a folder name gives: a positive integer written plainly (ASCII digits, no leading zero, within
    int64), else None. A folder is found again by `str(version)`, so "01" is not version 1."""
    if not (name.isascii() and name.isdigit()) or name.startswith("0"):
        return None
    value = int(name)
    return value if value <= MAX_VERSION else None


def scan(base_path: Path) -> dict[int, Path]:
    """Version folders of a model: sub-directories named by a positive integer (others are ignored)."""
    if not base_path.is_dir():
        hint = ""
        if base_path.is_file() and number(base_path.parent.name) is not None:
            hint = f" (a model file: the base path is the folder above its version folder, {base_path.parent.parent})"
        elif base_path.is_file():
            hint = f" (a model file: it must be in a version folder; {expected_layout(str(base_path.parent))})"
        raise LoadError("PATH_INVALID", f"The provided base path is invalid or doesn't exists: {base_path}{hint}")
    found: dict[int, Path] = {}
    for entry in base_path.iterdir():
        version = number(entry.name)
        if version is not None and entry.is_dir():
            found[version] = entry
    return found


def expected_layout(base: str) -> str:
    """How a model's base path must look, for messages."""
    example = f"{base}/1/model.xml with {base}/1/model.bin, or {base}/1/model.onnx"
    return f"expected numbered version folders holding the model: {example}"


def no_versions(where: str, base_path: Path | None = None) -> str:
    """Why a base path that lists no version folder serves nothing, and how it should look (a local `base_path` is
    looked into: a version folder given itself, or model files not in a version folder)."""
    hint = expected_layout(where)
    try:
        if base_path is not None and number(base_path.name) is not None:
            hint = f"{base_path} looks like a version folder itself: the base path is {base_path.parent}"
        elif base_path is not None and any(p.suffix in (".xml", ".onnx") for p in base_path.iterdir()):
            hint = f"its model files must move into a version folder: {expected_layout(where)}"
    except OSError:
        pass
    return f"no version directories in {where}; {hint}"


def select(policy: VersionPolicy, available: Iterable[int], failed: Collection[int] = ()) -> list[int]:
    """Versions a policy asks to serve among those available, ascending. Versions that `failed` to load are left
    out: `latest` takes the next older ones instead, as OVMS re-applies the policy."""
    versions = sorted(v for v in available if v not in failed)
    match policy:
        case Latest(num_versions=n):
            return versions[-n:]
        case Specific(versions=wanted):
            return [v for v in versions if v in wanted]
        case All():
            return versions
    raise AssertionError(policy)


def model_file(version_dir: Path, shown: str = "") -> Path:
    """The model file of a version folder, by OVMS's priority: IR (.xml+.bin), ONNX, Paddle (.pdmodel+.pdiparams),
    SavedModel/.pb, TFLite.
    `shown` names the folder in the error instead of `version_dir` (a download of a remote version)."""
    files = sorted(p for p in version_dir.iterdir() if p.is_file())

    def first(suffix: str) -> Path | None:
        return next((p for p in files if p.suffix == suffix), None)

    xml = first(".xml")
    if xml is not None and xml.with_suffix(".bin").exists():
        return xml
    onnx = first(".onnx")
    if onnx is not None:
        return onnx
    paddle = first(".pdmodel")
    if paddle is not None and paddle.with_suffix(".pdiparams").exists():
        return paddle
    pb = first(".pb")
    if pb is not None:
        return version_dir if pb.name == "saved_model.pb" else pb
    tflite = first(".tflite")
    if tflite is not None:
        return tflite
    message = f"File not found or cannot open: no model file (.xml+.bin, .onnx, ...) in {shown or version_dir}"
    raise LoadError("FILE_INVALID", message)
