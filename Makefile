# Set-up and everyday commands. `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test fuzz test-tfserving test-perf-analyzer lint bench bench-api bench-pipeline bench-images bench-batch bench-peers bench-overload soak protos \
	bench-stateful \
	clean image test-container
.DEFAULT_GOAL := test

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

include demo/demo.mk

## The guide's scenario on the real classifier: server, pipeline metadata, batch 1 and batch 8 clients at once.
demo: $(VENV)/.installed $(DEMO_CACHE)/.ready
	DEMO_CACHE=$(DEMO_CACHE) VENV=$(VENV) bash demo/run_demo.sh

## The whole test suite (real servers on loopback, real OpenVINO, real clients, nginx, Graphviz and headless Chromium
## from Debian), then lint and types.
test: $(VENV)/.installed
	bash scripts/debian-packages.sh nginx:nginx /usr/lib/nginx/modules/ngx_stream_module.so:libnginx-mod-stream \
		dot:graphviz chromium:chromium chromedriver:chromium-driver
	$(PY) -m pytest -q -m "not tfserving and not perf_analyzer and not container"
	$(MAKE) --no-print-directory lint

## Long property tests: 5,000 mutated config.json files reloaded live (the valid one restored after each), and 5,000
## requests of every kind through each decoder and the config loader (FUZZ_EXAMPLES=N).
FUZZ_EXAMPLES ?= 5000
fuzz: $(VENV)/.installed
	OVSERVE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) OVSERVE_PROPERTY_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q -p no:timeout \
		tests/test_reload_fuzz.py tests/test_decoder_properties.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check ovserve tests bench scripts
	$(VENV)/bin/mypy ovserve

## TensorFlow Serving's own client (pulls ~2 GB of TensorFlow): kept out of `make test`.
TFS_VENV := .cache/tfserving-venv
$(TFS_VENV)/.installed:
	$(PYTHON) -m venv $(TFS_VENV)
	$(TFS_VENV)/bin/pip install -q tensorflow-serving-api numpy
	touch $@

test-tfserving: $(VENV)/.installed $(TFS_VENV)/.installed
	TFSERVING_PYTHON=$(TFS_VENV)/bin/python $(PY) -m pytest -q -m tfserving

## Triton's perf_analyzer (a C++ binary from an older tritonclient wheel, plus two libraries it loads).
PERF_ANALYZER := .cache/perf_analyzer/perf_analyzer
$(PERF_ANALYZER): scripts/get_perf_analyzer.sh $(VENV)/.installed
	PIP=$(VENV)/bin/pip bash scripts/get_perf_analyzer.sh .cache/perf_analyzer

test-perf-analyzer: $(VENV)/.installed $(PERF_ANALYZER)
	PERF_ANALYZER=$(PERF_ANALYZER) $(PY) -m pytest -q -m perf_analyzer

## Container image from Containerfile, with podman or docker (whichever engine works); BASE_IMAGE=... changes the base.
IMAGE ?= localhost/ovserve:latest
BASE_IMAGE ?=
image:
	IMAGE=$(IMAGE) BASE_IMAGE=$(BASE_IMAGE) bash scripts/container/build-image.sh

## The image run for real with podman (installed from Debian if missing) on a local debootstrap base (cached).
CONTAINER_CACHE := .cache/container
CONTAINER_BASE := localhost/ovserve-base:bookworm
test-container: $(VENV)/.installed $(DEMO_CACHE)/.ready
	bash scripts/container/ensure-podman.sh
	BASE_TAG=$(CONTAINER_BASE) bash scripts/container/base-image.sh $(CONTAINER_CACHE)
	ENGINE=podman IMAGE=$(IMAGE) BASE_IMAGE=$(CONTAINER_BASE) bash scripts/container/build-image.sh
	OVSERVE_IMAGE=$(IMAGE) DEMO_CACHE=$(DEMO_CACHE) $(PY) -m pytest -q -m container tests/container

## Demultiplexing pipeline over gRPC, and with the images in system shared memory, against raw in-process OpenVINO
## (needs the demo cache for the real model); then the small-model stand-in at N=8 and 64; the server's CPU per request.
bench: $(VENV)/.installed $(DEMO_CACHE)/.ready
	$(PY) bench/bench_demux.py --shm
	$(PY) bench/bench_demux.py --models tiny --n 8,64 --concurrency 4 --shm

## The four front doors (TF Serving and KServe, gRPC and REST) against raw in-process OpenVINO.
bench-api: $(VENV)/.installed $(DEMO_CACHE)/.ready
	$(PY) bench/bench_api.py

## Detector -> crops (C or Python custom node) -> classifier per crop -> arg-max, against the same work in-process.
bench-pipeline: $(VENV)/.installed $(DEMO_CACHE)/.ready
	$(PY) bench/bench_pipeline.py

## Binary image inputs: latency of JPEG vs raw tensors, and event-loop responsiveness while batches decode.
bench-images: $(VENV)/.installed
	$(PY) bench/bench_images.py

## A change of batch size: demultiplexer, dynamic batch and batch_size "auto" (reload), against raw OpenVINO.
bench-batch: $(VENV)/.installed $(DEMO_CACHE)/.ready
	$(PY) bench/bench_batch_change.py

## A stateful model: 16 sequences interleaved over TF Serving gRPC against raw OpenVINO running the same sequences.
bench-stateful: $(VENV)/.installed
	$(PY) bench/bench_stateful.py

## Peers: ovserve, MLServer and KServe's Python server running the same OpenVINO model, driven by the same clients.
PEERS_VENV := .cache/peers-venv
$(PEERS_VENV)/.installed: bench/peers/requirements.txt
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install -q -r bench/peers/requirements.txt
	touch $@

bench-peers: $(VENV)/.installed $(DEMO_CACHE)/.ready $(PEERS_VENV)/.installed
	PEERS_PYTHON=$(PEERS_VENV)/bin/python $(PY) bench/bench_peers.py

## Overload: 256 clients against max_queue_size (fast refusals, admitted latency, memory) and a 10,000-branch request
## beside other clients (--max_branches_in_flight 64 vs unbounded), against raw OpenVINO. About 4-5 minutes.
bench-overload: $(VENV)/.installed $(DEMO_CACHE)/.ready
	DEMO_CACHE=$(abspath $(DEMO_CACHE)) $(PY) bench/bench_overload.py

## Mixed traffic (four doors, demultiplexing pipelines, PNG/JPEG, metrics, a reload a minute) against one server for
## SOAK_MINUTES (default 30): fails if resident memory grows 5 % or more after minute 1, fds grow, or a request fails.
SOAK_MINUTES ?= 30
soak: $(VENV)/.installed
	$(PY) bench/soak.py --minutes $(SOAK_MINUTES)

## Regenerate ovserve/_proto from proto/ (the generated code is committed).
protos: $(VENV)/.installed
	$(PY) scripts/gen_protos.py

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
