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

run: install client
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
validate: install
	$(BIN)/pytest tests/cdk/test_validators.py

# The fault and security suite alone (marker `security`; `make test` runs it too).
.PHONY: test-security
test-security: install
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

client: $(CLIENT_DIST)

$(CLIENT_DIST): $(CLIENT_STAMP) $(CLIENT_SOURCES)
	cd client && npm run build

# Debian's chromium for the browser tests, installed only when missing (apt-get update
# only if the package lists cannot provide it).
chromium:
	@if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/lib/chromium/chromium ]; then \
		echo "Installing Debian's chromium for the browser tests..."; \
		APT="$$( [ "$$(id -u)" = 0 ] || echo sudo ) env DEBIAN_FRONTEND=noninteractive apt-get"; \
		$$APT install -y -q chromium >/dev/null 2>&1 || \
		{ $$APT update -q && $$APT install -y -q chromium; }; \
	fi

# The build (tsc strict + vite), vitest, then Playwright against a local cloud it starts.
test-client: install chromium
	cd client && npm run build
	cd client && npx vitest run
	cd client && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npx playwright test

test: test-client

# Every architecture against the per-token baseline, the concurrency sweep and the cost
# table; writes bench/results/ and prints the table.
bench: $(PY_STAMP) $(NODE_FN_STAMP)
	$(BIN)/python -m bench

synth: install
	cd cdk && npx cdk synth --quiet

deploy: install
	cd cdk && npx cdk deploy --require-approval broadening

clean:
	rm -rf $(VENV) cdk/node_modules node_function/node_modules cdk/cdk.out chalice.out .chalice/deployments .local
	rm -rf client/node_modules client/dist client/test-results
