# Two entry points for a fresh machine: `make synth` and `make test`. Each sets up what it needs.
SHELL := /bin/bash
VENV := .venv
PYTHON := $(VENV)/bin/python
PYTHON_BOOTSTRAP ?= python3

# The pinned CDK CLI and Node 22 from package.json come first on PATH; jsii uses the same node.
export PATH := $(CURDIR)/node_modules/.bin:$(PATH)
# Offline by design: no credential probing of instance metadata, no CLI telemetry.
export AWS_EC2_METADATA_DISABLED := true
export CDK_DISABLE_CLI_TELEMETRY := true

.PHONY: setup synth test clean

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON_BOOTSTRAP) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

setup: $(VENV)/.installed node_modules/.installed

synth: setup
	cdk synth TrnClusterStack --quiet
	@echo "Synthesized: cdk.out/TrnClusterStack.template.json"

test: setup
	$(PYTHON) -m pytest -n 2 --dist loadfile

clean:
	rm -rf cdk.out .pytest_cache
