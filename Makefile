# Two entry points on a fresh machine: `make demo` and `make test`.
# Both create .venv under the repository and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.reefwatch-installed
# Nothing may reach the network at run time: ultralytics is kept offline and its
# settings file stays inside the repository's venv.
export YOLO_OFFLINE := 1
export YOLO_AUTOINSTALL := false
export YOLO_CONFIG_DIR := $(CURDIR)/$(VENV)/ultralytics-config
export MPLBACKEND := Agg

.PHONY: test demo install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[onnx,train,dev]'
	mkdir -p $(YOLO_CONFIG_DIR)
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --durations=15 tests

demo: $(STAMP)
	$(BIN)/python -m demo --out out/demo

clean:
	rm -rf $(VENV) out .pytest_cache
