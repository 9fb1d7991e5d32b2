# The two commands: `make run` (local cloud) and `make test` (every suite).
# Each installs whatever is missing first, so a fresh clone needs nothing else.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY_STAMP  := $(VENV)/.installed
CDK_STAMP := cdk/node_modules/.installed
NODE_FN_STAMP := node_function/node_modules/.installed

export AWS_DEFAULT_REGION ?= us-east-1
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION ?= 20
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install run test test-python test-node lint synth deploy bench clean

install: $(PY_STAMP) $(CDK_STAMP)

$(PY_STAMP): requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements-dev.txt
	@touch $@

$(CDK_STAMP): cdk/package.json cdk/package-lock.json
	cd cdk && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The Node.js streaming function (architecture 1), once it has a lockfile.
ifneq ($(wildcard node_function/package-lock.json),)
install: $(NODE_FN_STAMP)

$(NODE_FN_STAMP): node_function/package.json node_function/package-lock.json
	cd node_function && npm ci --no-audit --no-fund --loglevel=error
	@touch $@
endif

test-node: install
	cd node_function && npm test
	node --test cdk/appsync/resolvers.test.mjs

run: install
	$(BIN)/python -m local

lint: $(PY_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-python: $(PY_STAMP)
	$(BIN)/pytest

test: install lint test-python
ifneq ($(wildcard node_function/package.json),)
test: test-node
endif

bench: $(PY_STAMP)
	$(BIN)/python -m bench.latency

synth: install
	cd cdk && npx cdk synth --quiet

deploy: install
	cd cdk && npx cdk deploy --require-approval broadening

clean:
	rm -rf $(VENV) cdk/node_modules node_function/node_modules cdk/cdk.out chalice.out .chalice/deployments .local
