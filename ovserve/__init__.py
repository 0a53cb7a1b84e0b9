"""ovserve: an OpenVINO Model Server compatible model server in Python (OVMS configs, TF Serving API, DAG pipelines)."""

__version__ = "0.1.0"
