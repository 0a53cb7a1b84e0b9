"""The test libraries crop.c and argmax.c as Python custom nodes: the same contract on numpy arrays."""

from __future__ import annotations

from typing import Any

import numpy as np


class CropNode:
    """crop_height x crop_width windows of `image` (1,C,H,W) at the boxes (1,K,3: score, y, x) above `threshold`."""

    def __init__(self, params: dict[str, str]) -> None:
        self.height = int(params.get("crop_height", "4"))
        self.width = int(params.get("crop_width", "4"))
        self.threshold = float(params.get("threshold", "0.5"))
        self.shift = int(params.get("shift", "0"))  # moves boxes down (off the image, for tests)

    def inputs_info(self) -> dict[str, Any]:
        return {"image": ((1, -1, -1, -1), "float32"), "boxes": ((1, -1, 3), "float32")}

    def outputs_info(self) -> dict[str, Any]:
        return {"crops": ((-1, 1, -1, self.height, self.width), "float32"), "scores": ((-1, 1, 1), "float32")}

    def execute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        image, boxes = inputs["image"], inputs["boxes"][0]
        kept = boxes[boxes[:, 0] > self.threshold]
        corners = kept[:, 1:].astype(np.int64) + np.array([self.shift, 0])
        _, _, h, w = image.shape
        if np.any(corners < 0) or np.any(corners[:, 0] + self.height > h) or np.any(corners[:, 1] + self.width > w):
            raise ValueError(f"a box is off the {h}x{w} image")
        crops = [image[:, :, y : y + self.height, x : x + self.width] for y, x in corners]
        stacked = np.stack(crops) if crops else np.empty((0, 1, image.shape[1], self.height, self.width), np.float32)
        return {"crops": stacked, "scores": kept[:, :1].reshape(-1, 1, 1).copy()}


class ArgMaxNode:
    """Each row's best class of gathered scores (N,1,K) -> labels (N,1) int32."""

    def __init__(self, params: dict[str, str]) -> None:
        self.closed = False

    def inputs_info(self) -> dict[str, Any]:
        return {"scores": ((-1, 1, -1), "float32")}

    def outputs_info(self) -> dict[str, Any]:
        return {"labels": ((-1, 1), "int32")}

    def execute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"labels": inputs["scores"].argmax(axis=2).astype(np.int32)}

    def close(self) -> None:
        self.closed = True
