# Urban Stack — the two commands that matter: `make demo` and `make test`.
# Both install what is missing (a virtualenv in .venv; builds and downloads
# cached under ~/.cache/urbanstack) and are safe to run twice.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: install demo test unit screenshots up down purge status serve crds images clean conformance-sta conformance-features

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

## install: the virtualenv, and the web front end (npm ci + esbuild into
## runtime/web/static/dist; skipped when its inputs did not change)
install: $(STAMP)
	$(BIN)/python -m urbanstack.webassets build

## demo: bring the local platform up, let the operator provision the example
## municipalities, and show what runs where
demo: install
	$(BIN)/urbanstack dev up
	$(BIN)/urbanstack demo

## test: bring up what the tests need and run the whole suite
test: install
	$(BIN)/urbanstack dev up
	$(BIN)/python -c 'from urbanstack.devplatform.debian import ensure_installed; ensure_installed("chromium", provides="/usr/bin/chromium", what="browser tests")'
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## unit: the tests that need no running service
unit: install
	URBANSTACK_TEST_NO_PLATFORM=1 $(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

## screenshots: refresh the pictures in docs/screenshots/ by running the browser tests with
## URBANSTACK_SCREENSHOTS_DIR pointing there (an ordinary test run writes them under the state
## folder, <state>/screenshots, and leaves the source tree alone)
screenshots: install
	$(BIN)/urbanstack dev up
	$(BIN)/python -c 'from urbanstack.devplatform.debian import ensure_installed; ensure_installed("chromium", provides="/usr/bin/chromium", what="browser tests")'
	URBANSTACK_SCREENSHOTS_DIR=$(CURDIR)/docs/screenshots $(BIN)/python -m pytest tests/browser $(PYTEST_ARGS)

## conformance-sta: the OGC SensorThings test suite (Sensing Core) against /v1.1 on a
## sample warehouse of its own (needs Maven and Java; ~1 minute; docs/sensorthings.md);
## STA_ETS_ARGS="--level 3" adds Create-Update-Delete and Filtering on the local platform (~5 min)
conformance-sta: install
	$(BIN)/python tests/conformance/sta_ets.py $(STA_ETS_ARGS)

## conformance-features: the OGC API – Features test suite against /ogcapi on the same sample
## warehouse (needs Java and the suite's -aio jar: URBANSTACK_FEATURES_ETS_JAR=path, else it is
## fetched from Maven Central; docs/features.md)
conformance-features: install
	$(BIN)/python tests/conformance/features_ets.py $(FEATURES_ETS_ARGS)

up: install
	$(BIN)/urbanstack dev up

down: install
	$(BIN)/urbanstack dev down

purge: install
	$(BIN)/urbanstack dev down --purge

status: install
	$(BIN)/urbanstack dev status

## serve: the data plane (sink + API, and the operator with the embedded warehouse) on 127.0.0.1:8080
serve: install
	$(BIN)/urbanstack dev up
	$(BIN)/urbanstack serve

## crds: regenerate crds/ from the Python models
crds: install
	$(BIN)/python -m urbanstack.operator.crdgen

## images: build the operator and runtime images where a Docker engine runs
IMAGE_REGISTRY ?= registry.local/urbanstack
IMAGE_VERSION  ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
images:
	@if docker info >/dev/null 2>&1; then \
	  docker build -f docker/operator.Dockerfile -t $(IMAGE_REGISTRY)/operator:$(IMAGE_VERSION) . && \
	  docker build -f docker/runtime.Dockerfile  -t $(IMAGE_REGISTRY)/runtime:$(IMAGE_VERSION) . ; \
	else \
	  echo "images: no Docker engine here ('docker info' failed); build docker/*.Dockerfile where one runs (docs/deploy.md)"; \
	  exit 1; \
	fi

clean:
	rm -rf $(VENV) build *.egg-info
