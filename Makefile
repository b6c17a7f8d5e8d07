# Set-up and the two entry points: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_ROOT ?= data/demo
DEMO_RUN ?= dlv3p_resnet50_os16_demo

.PHONY: demo test install install-dev clean-demo

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

demo: install
	$(PY) -m cityscapes.synthetic --out $(DEMO_ROOT)
	$(PY) -m cityscapes.generate_gt --data-root $(DEMO_ROOT)
	$(PY) -m cityscapes.generate_gt compare --data-root $(DEMO_ROOT) --split val --out outputs

test: install-dev
	$(PY) -m pytest

clean-demo:
	rm -rf $(DEMO_ROOT) saved/$(DEMO_RUN) outputs/$(DEMO_RUN)
