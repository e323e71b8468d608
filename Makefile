# Two commands for a new user: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_TASK ?= fetch_push
DEMO_DIR ?= data/demos/$(DEMO_TASK)

.PHONY: setup demo test bench clean

setup: $(STAMP)

# torch goes in first and pinned: an unpinned torch requirement would pull a CUDA build.
$(STAMP): setup.py setup.cfg package.xml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[ros,test]'
	touch $@

demo: $(STAMP)
	$(BIN)/hybrid-policy tasks
	$(BIN)/hybrid-policy demos --task $(DEMO_TASK) --episodes 20 --seed 0 --out $(DEMO_DIR)

test: $(STAMP)
	$(BIN)/python -m pytest -q test

bench: $(STAMP)
	$(BIN)/python bench/sim_speed.py

clean:
	rm -rf $(VENV) build install log *.egg-info
