# One command each: `make test` and `make demo` create their own environment in .venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch/torchvision are pinned to the builds this project is tested with; pip takes them
# from the local wheel cache where one exists, else from the registry.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: venv sysdeps test demo clean

# System packages some tests need: the C example (cmake, a C compiler with its sanitizer
# runtimes), the display test (Xvfb, xdotool, xwd), the no-telemetry test (strace), the RTSP
# test (GStreamer's RTSP server through the system Python: python3-gi and the gir binding, the
# demuxer, parser and payloader plugins) and the live page test (headless Chromium and its
# WebDriver). Installed when missing and we may (root + apt); otherwise those tests skip and
# name what is missing.
SYSDEPS := cmake gcc xvfb xdotool x11-apps strace \
	python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
	gstreamer1.0-plugins-bad chromium chromium-driver

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e ".[all,test]"
	touch $@

venv: $(VENV)/.installed

sysdeps:
	@missing=$$(for p in $(SYSDEPS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else echo "note: missing system packages ($$missing): the tests that need them will skip"; fi

# One pytest process, as a user's notebook is one process: the OpenVINO crash that once split it
# in two (issue 31) is fixed where it starts, in how the backend holds OpenVINO's CPU plugin,
# and tests/runtime/test_openvino_signals.py runs that sequence.
test: venv sysdeps
	$(PY) -m pytest -q tests

# Runs the main job end to end on CPU: weights -> dino-export -> dino-run -> runs/demo/report.md
demo: venv
	$(PY) scripts/demo.py

clean:
	rm -rf $(VENV) build *.egg-info
