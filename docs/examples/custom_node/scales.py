"""The "scales" custom node in Python: x (1,N) FP32 -> scaled (copies,1,N) = x*1, ..., x*copies."""

import numpy as np


class Scales:
    def __init__(self, params: dict[str, str]) -> None:  # once per pipeline node, with the node's "params"
        self.copies = int(params.get("copies", "3"))
        if not 0 <= self.copies <= 10000:
            raise ValueError(f"copies must be from 0 to 10000, got {self.copies}")  # the pipeline fails to load

    def inputs_info(self) -> dict:
        return {"x": ((1, -1), "float32")}  # -1 (or 0): any size

    def outputs_info(self) -> dict:
        return {"scaled": ((-1, 1, -1), "float32")}

    def execute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        if not np.isfinite(x).all():
            raise ValueError("x holds NaN or infinity")  # the client gets INVALID_ARGUMENT / 400 with this text
        factors = np.arange(1, self.copies + 1, dtype=np.float32).reshape(-1, 1, 1)
        return {"scaled": factors * x}  # (copies, 1, N)

    def close(self) -> None:  # optional: when the pipeline node goes away
        pass
