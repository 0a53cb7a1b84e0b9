"""Write the quickstart's model repository: models/linear/1/model.xml+bin and models/config.json.

The model `linear` takes x (1,4) FP32 and answers y (1,3) FP32 = x @ W; the pipeline `linear_batch` runs any number
of such rows at once through the demultiplexer. Run: python docs/examples/make_models.py models
"""

import json
import sys
from pathlib import Path

import numpy as np
import openvino as ov
from openvino import opset13 as ops

W = np.array([[0.5, 1.0, 0.2], [0.5, 1.0, 0.4], [0.5, 1.0, 0.6], [0.5, 1.0, 0.8]], np.float32)  # [1,2,3,4] -> [5,10,6]


def linear() -> ov.Model:
    x = ops.parameter([1, 4], np.float32, name="x")
    x.output(0).get_tensor().set_names({"x"})
    y = ops.matmul(x, ops.constant(W), False, False)
    y.output(0).get_tensor().set_names({"y"})
    return ov.Model([y], [x], "linear")


CONFIG = {
    "model_config_list": [
        {"config": {"name": "linear", "base_path": "linear", "plugin_config": {"INFERENCE_PRECISION_HINT": "f32"}}}
    ],
    "pipeline_config_list": [
        {
            "name": "linear_batch",
            "demultiply_count": -1,
            "inputs": ["x"],
            "nodes": [
                {
                    "name": "rows",
                    "type": "DL model",
                    "model_name": "linear",
                    "inputs": [{"x": {"node_name": "request", "data_item": "x"}}],
                    "outputs": [{"data_item": "y", "alias": "y"}],
                }
            ],
            "outputs": [{"y": {"node_name": "rows", "data_item": "y"}}],
        }
    ],
}


def main(root: Path) -> None:
    (root / "linear" / "1").mkdir(parents=True, exist_ok=True)
    ov.save_model(linear(), root / "linear" / "1" / "model.xml", compress_to_fp16=False)  # exact weights
    (root / "config.json").write_text(json.dumps(CONFIG, indent=2) + "\n")
    print(f"wrote {root}/config.json and {root}/linear/1/model.xml")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "models"))
