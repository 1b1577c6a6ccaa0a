# The README's two commands are `make demo` and `make test`; .ci/run calls `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lmalloc-installed
RUN ?= runs/demo
EXTRAS ?= dev,hf,eval,report,ray,postgres

.PHONY: setup demo test test-scaleout lint bench clean

setup: $(STAMP)

# constraints.txt pins torch==2.13.0: the local CPU wheel here, the CUDA build on a GPU box.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

# The main job on the built-in default corpus (no network, no ../shared needed).
demo: setup
	$(BIN)/lmalloc run --run $(RUN)

# The test suite CI runs: everything but the GPU tests. The Ray and PostgreSQL tests start
# their servers through scripts/ensure_{ray,postgres}.sh (skipping with the reason when they
# cannot), Ray inside a loopback-only network namespace (tests/integration/test_closed_doors.py);
# both are stopped afterwards, whatever pytest's outcome.
# It prints its own wall time (setup excluded: a fresh clone adds the install, ~4 min).
# The full interval-coverage study is a benchmark, bench/interval_coverage.py, not run here.
test: setup
	start=$$(date +%s); sh scripts/ensure_chromium.sh; \
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(BIN)/python -m pytest -q -m "not gpu" --timeout=600 --durations=15; \
	rc=$$?; sh scripts/ensure_ray.sh stop >/dev/null 2>&1; sh scripts/ensure_postgres.sh stop >/dev/null 2>&1; \
	s=$$(( $$(date +%s) - start )); echo "make test: wall time $$((s / 60)) min $$((s % 60)) s (exit $$rc)"; \
	exit $$rc

# Only the scale-out tests (Ray head with 2 workers, PostgreSQL with 3 workers, torchrun).
test-scaleout: setup
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(BIN)/python -m pytest -q -m "ray or postgres" tests/integration --timeout=600; \
	rc=$$?; sh scripts/ensure_ray.sh stop >/dev/null 2>&1; sh scripts/ensure_postgres.sh stop >/dev/null 2>&1; exit $$rc

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src/lmalloc/scaling src/lmalloc/cost src/lmalloc/plan

clean:
	rm -rf $(VENV) runs .pytest_cache .services .ray
