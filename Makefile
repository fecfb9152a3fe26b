# hanode — every target does its own set-up from a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: all setup test unit e2e lint typecheck demo bench clean proto llama-server

all: test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check hanode tests bench
	$(BIN)/ruff format --check hanode tests bench
	$(BIN)/lint-imports  # layer and forbidden-import contracts in pyproject.toml

typecheck: $(STAMP)
	$(BIN)/mypy hanode

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit $(PYTEST_ARGS)

e2e: $(STAMP) llama-server
	$(BIN)/pytest -q tests/e2e $(PYTEST_ARGS)

# Upstream llama.cpp's llama-server for tests/e2e/test_llamacpp.py, built from the llama.cpp
# source vendored in the llama-cpp-python sdist and cached under ~/.cache/hanode (once per
# machine, about 11 minutes on 2 cores); a no-op when the cached binary exists.
llama-server: $(STAMP)
	PYTHON=$(BIN)/python bash scripts/build_llama_server.sh

test: $(STAMP) lint typecheck llama-server chaos-deps ops-deps
	$(BIN)/pytest -q tests $(PYTEST_ARGS)

# Tools the operations tests check the shipped files with: systemd-analyze (the units) and
# promtool (the Prometheus alert rules in deploy/). From Debian, as root; the tests skip with
# a reason where they are missing.
.PHONY: ops-deps
ops-deps:
	@if command -v systemd-analyze >/dev/null && command -v promtool >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends systemd prometheus) || echo "ops-deps: apt-get failed"; \
	else echo "ops-deps: systemd-analyze or promtool missing and not root: those checks will skip"; fi

# The chaos suite (tests/chaos): three nodes in network namespaces, faults from nftables, link
# state, signals and libfaketime. Its tools come from Debian; a no-op when they are there, apt-get
# only as root. `make test` runs the short run (skipped with a reason without root or netns);
# `make chaos` runs every fault (bounded) and writes docs/chaos.md.
.PHONY: chaos chaos-deps
chaos-deps:
	@if command -v ip >/dev/null && command -v nft >/dev/null && command -v faketime >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			iproute2 nftables faketime) || echo "chaos-deps: apt-get failed"; \
	else echo "chaos-deps: ip, nft or faketime missing and not root: chaos tests will skip"; fi

chaos: $(STAMP) chaos-deps
	timeout --signal=TERM 1800 $(BIN)/python -m tests.chaos.run --report docs/chaos.md

demo: $(STAMP)
	$(BIN)/hanode demo

bench: $(STAMP)
	$(BIN)/python -m bench.run

# Regenerate the committed gRPC/protobuf code in hanode/_proto from proto/ (run after editing a
# .proto; tests/unit/test_proto_sync.py fails while they differ). Imports are rewritten so the
# generated modules import each other as hanode._proto.hanode.v1.*.
proto: $(STAMP)
	rm -rf hanode/_proto
	mkdir -p hanode/_proto
	$(BIN)/python -m grpc_tools.protoc -I proto --python_out=hanode/_proto \
		--pyi_out=hanode/_proto --grpc_python_out=hanode/_proto $$(find proto -name '*.proto' | sort)
	find hanode/_proto -type f \( -name '*.py' -o -name '*.pyi' \) -exec sed -i -E \
		's/^(from|import) hanode\.v1([. ])/\1 hanode._proto.hanode.v1\2/' {} +
	find hanode/_proto -type d -exec touch {}/__init__.py \;

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
