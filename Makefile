# One command each: `make test` and `make demo` create their own environment in .venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch/torchvision are pinned to the builds this project is tested with; pip takes them
# from the local wheel cache where one exists, else from the registry.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: venv test demo clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q tests

# Runs the main job end to end on CPU: weights -> dino-export -> dino-run -> runs/demo/report.md
demo: venv
	$(PY) scripts/demo.py

clean:
	rm -rf $(VENV) build *.egg-info
