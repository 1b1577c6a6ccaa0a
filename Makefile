# The README's two commands are `make demo` and `make test`; .ci/run calls `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lmalloc-installed
RUN ?= runs/demo
EXTRAS ?= dev,hf,eval,report

.PHONY: setup demo test test-all lint bench clean

setup: $(STAMP)

# constraints.txt pins torch==2.13.0: the local CPU wheel here, the CUDA build on a GPU box.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

# The main job on the built-in default corpus (no network, no ../shared needed).
demo: setup
	$(BIN)/lmalloc run --run $(RUN)

# The test suite CI runs (GPU, Ray and PostgreSQL tests carry markers and run elsewhere).
test: setup
	sh scripts/ensure_chromium.sh
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(BIN)/python -m pytest -q -m "not gpu and not ray and not postgres" --timeout=600 --durations=15

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src/lmalloc/scaling src/lmalloc/cost src/lmalloc/plan

clean:
	rm -rf $(VENV) runs .pytest_cache
