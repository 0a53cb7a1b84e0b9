"""Generated protobuf modules; never edit, regenerate with scripts/gen_protos.py.

POOL is the private descriptor pool every module here registers into (not protobuf's default pool, where
tritonclient and ovmsclient register the same full names). json_format calls on messages with Any fields need
descriptor_pool=POOL.
"""

from google.protobuf import descriptor_pool as _descriptor_pool
from google.protobuf import any_pb2 as _any_pb2
from google.protobuf import wrappers_pb2 as _wrappers_pb2

POOL = _descriptor_pool.DescriptorPool()
POOL.AddSerializedFile(_any_pb2.DESCRIPTOR.serialized_pb)
POOL.AddSerializedFile(_wrappers_pb2.DESCRIPTOR.serialized_pb)
