"""Generated protobuf modules; never edit, regenerate with scripts/gen_protos.py."""
