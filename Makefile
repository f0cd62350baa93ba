# Two entry points for a fresh machine: `make demo` and `make test`.
# The virtualenv is big (torch), so it lives outside the clone, keyed by the
# hash of the lock file: reruns and CI reuse it, a new lock builds a new one.
SHELL := /bin/bash
PYTHON ?= python3
LOCK := requirements/lock.txt
VENV_ROOT ?= $(HOME)/.cache/walloc-audio
VENV := $(VENV_ROOT)/venv-$(shell cat $(LOCK) requirements/pip.txt | sha256sum | cut -c1-16)
BIN := $(VENV)/bin
APT_PACKAGES := ffmpeg libportaudio2 pulseaudio pulseaudio-utils fluidsynth fluid-soundfont-gm
STAMP := $(VENV)/.complete

.PHONY: demo test setup system-deps venv install bench clean-venv

demo: install
	$(BIN)/python -m walloc_audio.demo

test: install
	bash tests/run_tests.sh $(BIN)

bench: install
	$(BIN)/walloc-audio bench

setup: install

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi

# No file prerequisites: the venv's name already carries the hash of the lock, and a
# fresh clone's newer mtimes must not force a rebuild of an identical venv.
$(STAMP):
	rm -rf $(VENV) && mkdir -p $(VENV_ROOT)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements/pip.txt
	$(BIN)/pip install -q -r $(LOCK)
	touch $(STAMP)

venv: $(STAMP)

# The editable install is redone every time: it points the shared venv at this clone.
install: system-deps venv
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .

clean-venv:
	rm -rf $(VENV)
