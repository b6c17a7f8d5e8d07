# Set-up and the two entry points: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_ROOT ?= data/demo
DEMO_RUN ?= dlv3p_resnet50_os16_demo
DEMO_ITERS ?= 240
# bf16 autocast only where the CPU runs it natively (1.7x faster here); fp32 elsewhere
CPU_AMP = $$($(PY) -c "from deeplabv3plus.precision import cpu_supports_bfloat16 as s; print('--amp' if s() else '')")

.PHONY: demo test test-gpu test-fake-gpu gpu-check install install-dev clean-demo

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(VENV)/.installed: requirements.txt requirements-export.txt requirements-tensorboard.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-export.txt -r requirements-tensorboard.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

# mmseg's first import writes yapf's grammar caches (~/.cache/YAPF) whenever they are older than the installed
# grammar: done here once, so that two test workers importing it at once never read a half-written cache
$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -c "import mmseg"
	touch $@

# The whole pipeline on the synthetic data set (about 8 minutes on a 2-core CPU, installation aside):
# data -> masks -> check -> comparison -> training -> val metrics -> test submission -> prediction on images and
# a video -> ONNX export with parity -> figures -> GIF.
demo: install
	$(PY) -m cityscapes.synthetic --out $(DEMO_ROOT) --frames-per-split 24
	$(PY) -m cityscapes.generate_gt --data-root $(DEMO_ROOT)
	$(PY) -m cityscapes.check --data-root $(DEMO_ROOT)
	$(PY) -m cityscapes.generate_gt compare --data-root $(DEMO_ROOT) --split val --out outputs
	$(PY) train_dlv3p.py --data-root $(DEMO_ROOT) --run-name $(DEMO_RUN) --backbone resnet50 --output-stride 16 \
		--pretrained-backbone none --iters $(DEMO_ITERS) --batch-size 4 --crop-size 192 192 --scale-range 0.75 1.5 \
		--lr 0.02 --warmup-iters 10 --val-every 10 $(CPU_AMP) --channels-last --workers 1 --device cpu --overwrite
	$(PY) test_dlv3p.py --model_weights_path saved/$(DEMO_RUN)/best.pth --data-root $(DEMO_ROOT) --split val \
		--official-eval --save-color $(CPU_AMP) --workers 1 --device cpu
	$(PY) test_dlv3p.py --model_weights_path saved/$(DEMO_RUN)/best.pth --data-root $(DEMO_ROOT) --split test \
		$(CPU_AMP) --workers 1 --device cpu
	$(PY) -m deeplabv3plus.media $(DEMO_ROOT)/leftImg8bit/val outputs/demo_clip.mp4 --fps 4 --frames 12 --overwrite
	$(PY) predict_dlv3p.py --model_weights_path saved/$(DEMO_RUN)/best.pth '$(DEMO_ROOT)/leftImg8bit/test/berlin/*.png' \
		outputs/demo_clip.mp4 --out outputs/predict/$(DEMO_RUN) --batch-size 4 $(CPU_AMP) --device cpu --overwrite
	$(PY) -m deeplabv3plus.export --model_weights_path saved/$(DEMO_RUN)/best.pth --height 256 --width 512 \
		--data-root $(DEMO_ROOT) --num-images 4
	$(PY) run_notebook.py visualize_training.ipynb --param save_dir=saved --param out_dir=outputs \
		--param "runs=['$(DEMO_RUN)']" --output outputs/visualize_training.ipynb
	$(PY) run_notebook.py save_predictions.ipynb --param checkpoint=saved/$(DEMO_RUN)/best.pth \
		--param data_root=$(DEMO_ROOT) --param num_frames=12 --output outputs/save_predictions.ipynb
	@echo "demo done: see outputs/ (figures, GIF, outputs/$(DEMO_RUN)/) and saved/$(DEMO_RUN)/"

# The whole suite over every core (pytest-xdist). One file or one marker alone:
#   make test PYTEST_ARGS=tests/test_metrics.py      make test PYTEST_ARGS="-m fake_cuda"
PYTEST_ARGS ?=
test: install-dev
	@echo "make test: ruff, then pytest over every core; one file or marker alone: make test PYTEST_ARGS=tests/test_x.py (or PYTEST_ARGS=\"-m fake_cuda\")"
	$(PY) -m ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

# The GPU tier alone (tests marked cuda; they skip without a GPU, so make test stays CPU-only), in one process: the
# tests share the GPU and time it.
test-gpu: install-dev
	$(PY) -m pytest -n 0 -m cuda

# The GPU tier on the fake CUDA device of tests/fake_cuda.py (no GPU needed; tests that need the hardware skip).
test-fake-gpu: install-dev
	$(PY) -m pytest -m cuda --fake-cuda

# The one prepared GPU check (benchmarks/gpu_check.py): the GPU tier with sync debug mode "error", inference at
# 1024x2048, training throughput (model, loader, loader alone) and the real training command, in at most 8 minutes
# on one GPU; six files in $(GPU_CHECK_OUT) and one table. On a machine with torch but without this project's
# venv (a lent GPU machine): make gpu-check PY=python3 (see docs/testing.md).
GPU_CHECK_OUT ?= outputs/gpu_check
gpu-check: $(if $(filter $(VENV)/bin/python,$(PY)),install-dev,)
	PYTHONPATH=. $(PY) benchmarks/gpu_check.py --out $(GPU_CHECK_OUT)

clean-demo:
	rm -rf $(DEMO_ROOT) saved/$(DEMO_RUN) outputs/$(DEMO_RUN)
