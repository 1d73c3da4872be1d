# Two entry points on a fresh machine: `make demo` and `make test`.
# Both create .venv under the repository and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# make demo needs the runtime and the trainer; make test adds the dev tools (pytest, netcal, ...).
STAMP_RUN := $(VENV)/.reefwatch-run-installed
STAMP := $(VENV)/.reefwatch-installed
# Nothing may reach the network at run time: ultralytics is kept offline and its
# settings file stays inside the repository's venv.
export YOLO_OFFLINE := 1
export YOLO_AUTOINSTALL := false
export YOLO_CONFIG_DIR := $(CURDIR)/$(VENV)/ultralytics-config
export MPLBACKEND := Agg

# The Jetson Nano runs edge/ on Python 3.6.9 with numpy 1.19: where a Python 3.6 exists
# (pyenv here), the edge tests run on it too, with the JetPack-era numpy and ONNX Runtime.
PYTHON36 ?= $(shell (python3.6 -c pass >/dev/null 2>&1 && command -v python3.6) || ls -d $$HOME/.pyenv/versions/3.6*/bin/python3.6 2>/dev/null | head -1)
VENV36 := .venv36
STAMP36 := $(VENV36)/.reefwatch-installed

.PHONY: test test-py36 demo install clean native

$(STAMP_RUN): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[onnx,train]'
	mkdir -p $(YOLO_CONFIG_DIR)
	$(BIN)/python -m edge.native.build
	touch $(STAMP_RUN)

$(STAMP): $(STAMP_RUN)
	$(BIN)/pip install -q -e '.[onnx,train,dev]'
	touch $(STAMP)

install: $(STAMP)

# The C kernels of edge/native (plain C via ctypes: one library serves .venv and .venv36).
native: $(STAMP_RUN)
	$(BIN)/python -m edge.native.build

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --durations=15 tests
	$(MAKE) --no-print-directory test-py36

$(STAMP36):
	$(PYTHON36) -m venv $(VENV36)
	$(VENV36)/bin/pip install -q "pip==21.3.1"
	$(VENV36)/bin/pip install -q --only-binary=:all: "numpy==1.19.5" "opencv-python-headless==4.5.5.64" \
		"onnxruntime==1.10.0" "pytest==7.0.1" "ensemble-boxes==1.0.9" "numba==0.53.1" "pandas==1.1.5"
	test -f edge/native/lib/_reefwatch_kernels.so || $(VENV36)/bin/python -m edge.native.build
	touch $(STAMP36)

test-py36:
	@if [ -z "$(PYTHON36)" ]; then echo "test-py36: no Python 3.6 found; the Jetson-Python run is skipped"; \
	else $(MAKE) --no-print-directory $(STAMP36) && $(VENV36)/bin/python -m pytest -q -p no:cacheprovider tests; fi

# trainer run-all --preset demo into out/demo, then edge's daemon on a synthetic clip; a rerun resumes.
# `make demo DATA=path/data.yaml` runs the same chain on a real dataset.
DATA ?=
demo: $(STAMP_RUN)
	$(BIN)/python -m benchmarks.demo --out out/demo $(if $(DATA),--data $(DATA))

clean:
	rm -rf $(VENV) $(VENV36) out .pytest_cache
