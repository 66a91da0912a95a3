# Two commands set everything up on a fresh machine:
#   make demo   venv + install + warm the JIT cache + train on sample data + predict
#   make test   venv + test extras + the whole suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO := demo_out

.PHONY: demo test bench bench-quick bench-scale accuracy lint venv clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	@mkdir -p $(DEMO)
	$(BIN)/lstm warmup
	$(BIN)/lstm train sample_data/a10_monthly.csv --target cost_million_aud --horizon 12 --out $(DEMO)/a10.lstm
	$(BIN)/lstm predict $(DEMO)/a10.lstm sample_data/a10_monthly.csv --out $(DEMO)/a10_forecast.csv
	@echo "--- forecast: next 12 months ($(DEMO)/a10_forecast.csv)"
	@cat $(DEMO)/a10_forecast.csv

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/bench_engine.py

bench-quick: $(VENV)/.installed-dev
	$(BIN)/python bench/bench_engine.py --quick

# 100k series x 60 points: lstm predict (local and dask) against a per-series loop
bench-scale: $(VENV)/.installed-dev
	$(BIN)/python bench/bench_many_series.py

# the accuracy study of docs/accuracy.md (its first tables): the default model at 3 origins x 3 seeds
# with naive and seasonal naive, with --calendar auto, insurance's tv_adverts as a past feature and
# left out (issue 16), the combination rules, then AutoETS/AutoARIMA at the same origins in
# their own venv (statsforecast needs pandas<3; the gasoline fits take many minutes)
STATS_VENV := .venv-stats
$(STATS_VENV)/bin/python:
	$(PYTHON) -m venv $(STATS_VENV)
	$(STATS_VENV)/bin/python -m pip install -q statsforecast "pandas<3"

accuracy: $(VENV)/.installed-dev $(STATS_VENV)/bin/python
	$(BIN)/python bench/accuracy.py --seeds 3 --origins 3 --skip-slow --no-stats
	$(BIN)/python bench/accuracy.py --seeds 3 --origins 3 --skip-slow --no-stats --set calendar=auto
	$(BIN)/python bench/accuracy.py --seeds 3 --origins 3 --only insurance --no-stats --known-as past
	$(BIN)/python bench/accuracy.py --seeds 3 --origins 3 --only insurance --no-stats --known-as none
	$(BIN)/python bench/blend_study.py --seeds 3 --origins 3
	$(STATS_VENV)/bin/python bench/stats_origins.py --origins 3

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check lstm_cli tests bench

clean:
	rm -rf $(VENV) $(STATS_VENV) $(DEMO) .numba_cache .pytest_cache
