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

.PHONY: setup setup-synth synth test clean pcluster-venv
# Independent setup steps (pip, npm) run side by side.
MAKEFLAGS += --jobs=2

# The app's own dependencies: all that `make synth` needs.
$(VENV)/.runtime: requirements.txt pyproject.toml
	$(PYTHON_BOOTSTRAP) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

# The test tools on top of them.
$(VENV)/.installed: $(VENV)/.runtime requirements-dev.txt
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

# ParallelCluster's own schema for the Slurm tests. aws-parallelcluster pins CDK v1 and jsii 1.85,
# so it gets a virtual environment of its own, at the version the kit deploys.
PCLUSTER_VENV := .venv-pcluster
PCLUSTER_VERSION_FILE := constructs/slurm/parallelcluster-version

$(PCLUSTER_VENV)/.installed: $(PCLUSTER_VERSION_FILE)
	rm -rf $(PCLUSTER_VENV)
	$(PYTHON_BOOTSTRAP) -m venv $(PCLUSTER_VENV)
	$(PCLUSTER_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		"aws-parallelcluster==$$(cat $(PCLUSTER_VERSION_FILE))"
	touch $@

pcluster-venv: $(PCLUSTER_VENV)/.installed

# checkov for the compliance tests; its dependency pins clash with the app's, so it lives apart too.
CHECKOV_VENV := .venv-checkov

$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	rm -rf $(CHECKOV_VENV)
	$(PYTHON_BOOTSTRAP) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	touch $@

setup-synth: $(VENV)/.runtime node_modules/.installed
setup: setup-synth $(VENV)/.installed $(PCLUSTER_VENV)/.installed $(CHECKOV_VENV)/.installed

# ARGS go to cdk synth, e.g. make synth ARGS="-c orchestrator=eks -c instanceType=trn2.48xlarge".
synth: setup-synth
	cdk synth TrnClusterStack --quiet $(ARGS)
	@echo "Synthesized: cdk.out/TrnClusterStack.template.json and cdk.out/TrnClusterStackInfra.template.json"

test: setup
	$(PYTHON) -m pytest -n 2 --dist loadfile

clean:
	rm -rf cdk.out .pytest_cache

# Capacity Block offerings for the purchase configured in cdk.json, cheapest first; buys nothing.
# Uses your AWS credentials, an instance role included. More options: ARGS="--availability-zone=".
.PHONY: offerings
offerings: export AWS_EC2_METADATA_DISABLED := false
offerings: setup-synth
	$(PYTHON) -m trn_constructs.capacity_purchase.offerings_cli --from-cdk-json $(ARGS)

# The handover's state for the configured stack (staged, burning in k of n, ready, not ready with
# the failed nodes), from its SSM parameter, with your AWS credentials. More: ARGS="--region=...".
.PHONY: handover
handover: export AWS_EC2_METADATA_DISABLED := false
handover: setup-synth
	$(PYTHON) -m trn_constructs.handover.status_cli $(ARGS)
