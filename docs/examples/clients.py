"""The quickstart's client snippets, run against a server started on the quickstart's models (gRPC 9000, REST 8000).

Run: python docs/examples/clients.py [grpc_port rest_port]
"""

import sys

import numpy as np
import ovmsclient
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

GRPC, REST = (sys.argv[1], sys.argv[2]) if len(sys.argv) > 2 else ("9000", "8000")

# --- tritonclient (KServe v2), gRPC and HTTP ---------------------------------------------------------
rows = np.array([[[1, 2, 3, 4]], [[0, 0, 0, 1]], [[2, 2, 2, 2]]], np.float32)  # 3 requests of shape (1,4)
for module, url in ((grpcclient, f"localhost:{GRPC}"), (httpclient, f"localhost:{REST}")):
    client = module.InferenceServerClient(url)
    x = module.InferInput("x", list(rows.shape), "FP32")
    x.set_data_from_numpy(rows)
    result = client.infer("linear_batch", [x])
    print(module.__name__, result.as_numpy("y").tolist())  # (3,1,3): [[[5,10,6]], [[0.5,1,0.8]], [[4,8,4]]]

# --- ovmsclient (TF Serving API), gRPC and REST ------------------------------------------------------
for client in (ovmsclient.make_grpc_client(f"localhost:{GRPC}"), ovmsclient.make_http_client(f"localhost:{REST}")):
    print(client.get_model_status("linear"))  # {1: {'state': 'AVAILABLE', 'error_code': 0, 'error_message': 'OK'}}
    print(client.get_model_metadata("linear_batch")["inputs"])  # {'x': {'shape': [-1, 1, 4], 'dtype': 'DT_FLOAT'}}
    print(client.predict({"x": np.array([[1, 2, 3, 4]], np.float32)}, "linear").tolist())  # [[5.0, 10.0, 6.0]]
    print(client.predict({"x": rows}, "linear_batch").shape)  # (3, 1, 3)
