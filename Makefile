# Two entry points for a fresh machine: `make demo` and `make test`.
# Two virtualenvs live outside the clone, each keyed by the hash of its lock file
# (reruns and CI reuse them, a new lock builds a new one): the lean runtime
# (requirements/lean.txt, no torch, what `make demo` needs) and the full one
# (requirements/lock.txt: training, evaluation, separation, tests).
SHELL := /bin/bash
PYTHON ?= python3
LOCK := requirements/lock.txt
VENV_ROOT ?= $(HOME)/.cache/walloc-audio
VENV := $(VENV_ROOT)/venv-$(shell cat $(LOCK) requirements/pip.txt | sha256sum | cut -c1-16)
BIN := $(VENV)/bin
APT_PACKAGES := ffmpeg libportaudio2 pulseaudio pulseaudio-utils fluidsynth fluid-soundfont-gm
STAMP := $(VENV)/.complete
LEAN_LOCK := requirements/lean.txt
LEAN_VENV := $(VENV_ROOT)/lean-$(shell cat $(LEAN_LOCK) requirements/pip.txt | sha256sum | cut -c1-16)
LEAN_BIN := $(LEAN_VENV)/bin
LEAN_STAMP := $(LEAN_VENV)/.complete

REF_VENV := $(VENV_ROOT)/reference-$(shell cat requirements/reference.txt $(LOCK) | sha256sum | cut -c1-16)

.PHONY: demo test setup system-deps venv install install-lean bench bench-reference clean-venv

demo: install-lean
	$(LEAN_BIN)/python -m walloc_audio.demo

# The suite runs in the full venv; the lean venv runs the codec commands for real (test_runtime.py).
test: install install-lean
	WALLOC_LEAN_BIN=$(LEAN_BIN) bash tests/run_tests.sh $(BIN)

bench: install
	$(BIN)/walloc-audio bench

# Encoder speed beside the reference WaLLoC (walloc 1.2.1) in one process. The reference and
# its image-side dependencies go into a side venv layered on the full one (its site folder,
# .pth files included, so the editable walloc-audio too), never into it.
$(REF_VENV)/.complete: | venv
	rm -rf $(REF_VENV) && $(PYTHON) -m venv $(REF_VENV)
	echo "import site; site.addsitedir('$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')')" \
	  > "$$($(REF_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/full-venv.pth"
	$(REF_VENV)/bin/pip install -q --no-deps -r requirements/reference.txt
	touch $@

bench-reference: install $(REF_VENV)/.complete
	$(REF_VENV)/bin/python recipes/codec/bench_reference.py

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
# $(call make_venv,FOLDER,LOCK): a fresh virtualenv with pip pinned, then the lock, then its stamp.
define make_venv
	rm -rf $(1) && mkdir -p $(VENV_ROOT)
	$(PYTHON) -m venv $(1)
	$(1)/bin/pip install -q -r requirements/pip.txt
	$(1)/bin/pip install -q -r $(2)
	touch $(1)/.complete
endef

$(STAMP):
	$(call make_venv,$(VENV),$(LOCK))

venv: $(STAMP)

# The editable install is redone every time: it points the shared venv at this clone. It compiles
# the C kernels (walloc_audio/_kernels.c) into the tree; the old module goes first, so a failed build
# (the extension is optional) leaves none behind and the tests that need it say so.
KERNELS_SO = walloc_audio/_kernels*.so
install: system-deps venv
	rm -f $(KERNELS_SO)
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .

$(LEAN_STAMP):
	$(call make_venv,$(LEAN_VENV),$(LEAN_LOCK))

# (build isolation: the lean venv holds no setuptools of its own)
install-lean: system-deps $(LEAN_STAMP)
	rm -f $(KERNELS_SO)
	$(LEAN_BIN)/pip install -q --no-deps -e .

clean-venv:
	rm -rf $(VENV) $(LEAN_VENV)
