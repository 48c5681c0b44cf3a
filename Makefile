# Herald: two commands. `make demo` runs the main job, `make test` the whole suite.
# Both build .venv from uv.lock first (only Python and make are needed: uv itself is
# bootstrapped with pip into .tools/, pinned below).

PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin

# Nothing calls home: Prefect's and GX's usage analytics stay off, uv never fetches a Python.
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export GX_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1
# A Prefect server (`make server`, or the temporary one) records task runs 100 at a time, at
# least once a second, not one transaction per event (herald/__init__.py says why).
export PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE ?= 100
export PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL ?= 1
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
# Compile every module once at install: each `herald` command then starts from bytecode,
# not from source (about 6 s of compiling on a 2-core machine when Python cannot cache it).
export UV_COMPILE_BYTECODE := 1
# Prefect keeps its ephemeral database and settings inside the project, not in ~/.prefect.
export PREFECT_HOME ?= $(CURDIR)/var/prefect

.PHONY: demo test test-load bench chaos lint typecheck docs install clean catalogs i18n-extract i18n-update i18n-init server deploy worker cluster-up cluster-down

install: $(VENV)/.synced catalogs

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --locked --python $(PYTHON)
	@touch $@

# Translations (docs/translations.md): the templates' sentences, extracted by Babel into
# templates/locales/messages.pot, one gettext catalog per language beside it (the .po files
# are in the repository), each compiled into its .mo here (not in the repository: built by
# every target that installs, and rebuilt when its .po changes).
LOCALES := templates/locales
CATALOG_PO := $(wildcard $(LOCALES)/*/LC_MESSAGES/messages.po)
CATALOG_MO := $(CATALOG_PO:.po=.mo)

catalogs: $(CATALOG_MO)

$(LOCALES)/%/LC_MESSAGES/messages.mo: $(LOCALES)/%/LC_MESSAGES/messages.po | $(VENV)/.synced
	$(BIN)/pybabel compile --statistics -l $* -i $< -o $@

# After changing a template's sentences: extract them, then bring every catalog up to date
# (a changed sentence comes back fuzzy, a new one empty: `herald templates check` names
# both until they are translated).
i18n-extract: $(VENV)/.synced
	$(BIN)/pybabel extract -F babel.cfg --add-location=file --sort-by-file --omit-header \
		-o $(LOCALES)/messages.pot .

i18n-update: $(VENV)/.synced
	$(BIN)/pybabel update -i $(LOCALES)/messages.pot -d $(LOCALES) --ignore-obsolete

# A catalog for a new language: make i18n-init LANG=it (then add it to campaign.locales).
i18n-init: $(VENV)/.synced
	$(BIN)/pybabel init -i $(LOCALES)/messages.pot -d $(LOCALES) -l $(LANG)

demo: install
	@mkdir -p "$(PREFECT_HOME)"
	$(BIN)/herald demo

# Running on a schedule (docs/deploy.md): a Prefect server, the deployments built from
# config/campaign.yaml and registered with it, a process worker that runs them from here.
PREFECT_API_URL ?= http://127.0.0.1:4200/api
server: install
	@mkdir -p "$(PREFECT_HOME)"
	$(BIN)/prefect server start

deploy: install
	PREFECT_API_URL=$(PREFECT_API_URL) $(BIN)/herald deploy

worker: install
	HERALD_HOME=$(CURDIR) PREFECT_API_URL=$(PREFECT_API_URL) $(BIN)/prefect worker start --pool herald

# Scale-out on this machine (docs/deploy.md#scale-out): a Prefect server on Postgres, the
# deployments, WORKERS process workers, each in its own session; pids, logs and an `env` file
# to source under var/cluster/. `cluster-down` stops them and the flow runs they started.
WORKERS ?= 2
cluster-up: install
	$(BIN)/herald cluster up --workers $(WORKERS)

cluster-down: install
	$(BIN)/herald cluster down

# The whole suite: lint, strict types, then every test (SQLite and, where it answers, Postgres),
# in TEST_WORKERS processes (pytest-xdist; a test file stays in one process).
TEST_WORKERS ?= 2
test: install
	@mkdir -p "$(PREFECT_HOME)"
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# `make test` while another process keeps every core busy (tests/support/load.py: one busy loop per
# core, normal priority, started before the suite and always stopped after it, on failure or
# Ctrl-C too): nothing in the suite may depend on timing. Its exit status is the suite's.
test-load: install
	$(BIN)/python -m tests.support.load -- $(MAKE) --no-print-directory test

# Not part of `make test`: a 1M-contact phase on SQLite and Postgres against the floor and the
# naive way (about half an hour on 2 cores). Results in bench/results/<date>.json.
BENCH_ARGS ?=
bench: install
	@mkdir -p "$(PREFECT_HOME)"
	$(BIN)/python bench/phase.py $(BENCH_ARGS)

# Not part of `make test` (which runs each of these in short): the ledger's state machine over
# 1,000 Hypothesis examples, the bad-input corpus, then the chaos run: a phase over 50,000
# contacts killed with SIGKILL 3 times in each of 20 trials (plus 5 trials without webhook
# evidence), on SQLite and Postgres. Ends with one `chaos:` line per database.
CHAOS_ARGS ?=
chaos: install
	@mkdir -p "$(PREFECT_HOME)"
	HERALD_MODEL_EXAMPLES=1000 $(BIN)/python -m pytest -q -p no:cacheprovider tests/delivery/test_ledger_model.py
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_bad_inputs.py
	$(BIN)/python -m tests.support.chaos $(CHAOS_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# The runbook (docs/) as a site in site/: MkDocs from the `docs` dependency group, added to
# .venv without removing anything (the next exact `uv sync` of `make install` drops it again).
# The build itself needs no network; --strict fails it on a broken link or anchor.
docs: install
	$(UV) sync --locked --inexact --group docs --python $(PYTHON)
	$(BIN)/mkdocs build --strict --clean

clean:
	rm -rf $(VENV) $(TOOLS) var site .pytest_cache .mypy_cache .ruff_cache $(CATALOG_MO)
