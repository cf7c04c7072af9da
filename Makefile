# Two entry points for a newcomer: `make demo` and `make test`.
# Both create .venv and install the project (with test extras) when needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
REDIS_PORT ?= 6379

.PHONY: venv demo test ensure-redis ensure-browser bench-latency bench-burst bench-cycle bench-requests bench-soak

$(BIN)/lighter-hedge: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	touch $(BIN)/lighter-hedge

venv: $(BIN)/lighter-hedge

ensure-redis:
	@bash scripts/ensure-redis.sh $(REDIS_PORT)

# Debian's chromium + chromium-driver for the console's browser test, only when missing (apt).
ensure-browser:
	@bash scripts/ensure-browser.sh

demo: venv ensure-redis
	$(BIN)/lighter-hedge demo

# Two test files at a time (pytest-xdist), each on a Redis db of its own (tests/conftest.py); the
# tests mostly wait on their processes, so two take about half the time on two cores.
# TEST_WORKERS=0 runs them one by one.
TEST_WORKERS ?= 2

test: venv ensure-redis ensure-browser
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# Benchmarks (README, "Benchmarks"): each prints key=value lines.
bench-latency: venv ensure-redis
	$(BIN)/python -m bench latency

bench-burst: venv ensure-redis
	$(BIN)/python -m bench burst

bench-cycle: venv ensure-redis
	$(BIN)/python -m bench cycle

bench-requests: venv ensure-redis
	$(BIN)/python -m bench requests

bench-soak: venv ensure-redis
	$(BIN)/python -m bench soak --fills 20000
