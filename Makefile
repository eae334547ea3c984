# Two commands on a fresh machine: `make demo` and `make test`. Both set up first (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
export GRADIO_ANALYTICS_ENABLED := False
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup test demo lint bench clean t2i-imagenet

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest -q -x --durations=15 $(PYTEST_ARGS)

demo: setup
	$(PY) scripts/demo.py

# Reproduce the embedded t2i-imagenet resolver from offline data (prepare -> MiniLM states -> train -> judge).
t2i-imagenet: setup
	$(PY) scripts/train_resolver.py

lint: setup
	$(PY) -m ruff check src tests bench scripts

bench: setup
	$(PY) bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf runs outputs .pytest_cache
