"""OVMS-sample compatible command-line clients of a TF Serving gRPC endpoint: ovserve-predict, ovserve-metadata."""
