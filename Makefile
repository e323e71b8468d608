# Two commands for a new user: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_TASK ?= fetch_push
DEMO_EPISODES ?= 50

.PHONY: setup demo test bench clean

setup: $(STAMP)

# torch goes in first and pinned: an unpinned torch requirement would pull a CUDA build.
$(STAMP): setup.py setup.cfg package.xml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[ros,test]'
	touch $@

DEMO_LINK ?= 5g_embb
DEMO_ROS_EPISODES ?= 10
DEMO_RUN := runs/demo/$(DEMO_TASK)
# The fleet part: config/fleet.yaml (4 fetch_push robots, one edge server), in process and
# over ROS 2; it runs when DEMO_TASK is the fleet's task.
DEMO_FLEET ?= config/fleet.yaml
DEMO_FLEET_TASK ?= fetch_push
DEMO_FLEET_EPISODES ?= 10
# The early-exit family: one net split across robot, edge and cloud (config/early_exit.yaml).
DEMO_EXITS ?= config/early_exit.yaml
DEMO_EXIT_EPISODES ?= 3
# Federated training of the early-exit net over config/federated.yaml's robots (Flower
# simulation engine): a short run; bench/federated.py compares the methods.
DEMO_FL ?= config/federated.yaml
DEMO_FL_ROUNDS ?= 4
# RoCoIn: students distilled from the target on redundant groups of edge devices, against
# its baselines (config/rocoin.yaml); bench/rocoin.py adds device failures.
DEMO_ROCOIN ?= config/rocoin.yaml
DEMO_ROCOIN_EPISODES ?= 3
# The inference delivery network: policy variants of two tasks placed on robots, cells, a
# regional node and the cloud by INFIDA and its baselines as the workload moves
# (config/idn.yaml); bench/idn.py runs the long trace and more episodes.
DEMO_IDN ?= config/idn.yaml
DEMO_IDN_EPISODES ?= 25

# Default models are trained on first use (a few minutes) and cached under models/.
# In process: calibrate, then every mode on the same episodes; then the draft distilled from
# the target (made and calibrated on first use, ~3 min) against verifying every step. Over ROS 2: every mode as its
# own graph of node processes, each recorded to a bag, then one table from the bags. Then
# the fleet: hybrid and adahi for every robot, in process and over ROS 2 (one bag each);
# then the early-exit family (early_exit, dto_ee and baselines) on its fleet, in process;
# then a few rounds of federated training of the early-exit net over the fleet's robots;
# then RoCoIn's students (distilled on first use) and its baselines on their edge devices;
# then the inference delivery network's placement modes (fetch_reach's models trained and
# both tasks' catalogues measured on first use).
demo: $(STAMP)
	$(BIN)/hybrid-policy tasks
	$(BIN)/hybrid-policy calibrate --task $(DEMO_TASK) --link $(DEMO_LINK)
	$(BIN)/hybrid-policy eval --task $(DEMO_TASK) --link $(DEMO_LINK) --modes all \
		--episodes $(DEMO_EPISODES) --seed 0 --json $(DEMO_RUN)/eval.json
	$(BIN)/hybrid-policy eval --task $(DEMO_TASK) --link $(DEMO_LINK) --draft-kind distilled \
		--modes draft_only,hybrid,adahi --episodes $(DEMO_EPISODES) --seed 0 \
		--json $(DEMO_RUN)/distilled.json
	rm -rf $(DEMO_RUN)/bags
	$(BIN)/hybrid-policy bringup --task $(DEMO_TASK) --link $(DEMO_LINK) --mode all \
		--episodes $(DEMO_ROS_EPISODES) --seed 0 --bag $(DEMO_RUN)/bags
	$(BIN)/hybrid-policy analyze $(DEMO_RUN)/bags/* --json $(DEMO_RUN)/ros.json
ifeq ($(DEMO_TASK),$(DEMO_FLEET_TASK))
	$(BIN)/hybrid-policy eval --task $(DEMO_TASK) --link $(DEMO_LINK) --modes hybrid,adahi \
		--episodes $(DEMO_FLEET_EPISODES) --seed 0 --topology $(DEMO_FLEET) \
		--json $(DEMO_RUN)/fleet.json
	rm -rf $(DEMO_RUN)/fleet_bags
	$(BIN)/hybrid-policy bringup --topology $(DEMO_FLEET) --task $(DEMO_TASK) \
		--link $(DEMO_LINK) --mode hybrid,adahi --episodes 2 --seed 0 --bag $(DEMO_RUN)/fleet_bags
	$(BIN)/hybrid-policy eval --task $(DEMO_TASK) --link $(DEMO_LINK) --modes exits \
		--episodes $(DEMO_EXIT_EPISODES) --seed 0 --topology $(DEMO_EXITS) \
		--json $(DEMO_RUN)/early_exit.json
	$(BIN)/hybrid-policy fl-train --topology $(DEMO_FL) --method serving_rate \
		--rounds $(DEMO_FL_ROUNDS) --eval-episodes 5 --out $(DEMO_RUN)/federated
	$(BIN)/hybrid-policy eval --task $(DEMO_TASK) --link $(DEMO_LINK) --modes students \
		--episodes $(DEMO_ROCOIN_EPISODES) --seed 0 --topology $(DEMO_ROCOIN) \
		--json $(DEMO_RUN)/rocoin.json
	$(BIN)/hybrid-policy eval --topology $(DEMO_IDN) --modes placement \
		--episodes $(DEMO_IDN_EPISODES) --seed 0 --json $(DEMO_RUN)/idn.json
endif

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile test

bench: $(STAMP)
	$(BIN)/python bench/sim_speed.py
	$(BIN)/python bench/policy_speed.py
	$(BIN)/python bench/bc_success.py
	$(BIN)/python bench/deviation_signals.py
	$(BIN)/python bench/deviation_signals.py --draft-kind distilled
	$(BIN)/python bench/skip_signals.py
	$(BIN)/python bench/distilled_draft.py --tasks fetch_push,fetch_pick_place,mw_assembly \
		--json docs/distilled_draft.json
	$(BIN)/python bench/hybrid_results.py --tasks fetch_push,fetch_pick_place,mw_assembly \
		--links 5g_embb,6g_hrllc --draft-kinds demonstrations,distilled
	$(BIN)/python bench/frontier.py --tasks fetch_push,fetch_pick_place,mw_assembly \
		--json docs/frontier_bench.json --plot-dir docs/img
	$(BIN)/python bench/realtime_loops.py --json docs/realtime_bench.json
	$(BIN)/python bench/ros_overhead.py
	$(BIN)/python bench/node_startup.py
	$(BIN)/python bench/robot_interface.py
	$(BIN)/python bench/batch_speed.py
	$(BIN)/python bench/fleet_capacity.py --plot docs/img/fleet_capacity.png
	$(BIN)/python bench/threshold_under_load.py --price-ms 10 --episodes 16
	$(BIN)/python bench/early_exit.py --plot docs/img/early_exit_delay.png
	$(BIN)/python bench/federated.py --json docs/federated_bench.json
	$(BIN)/python bench/federated.py --local-epochs 2 --rounds 14 \
		--out runs/bench_federated_e2 --json docs/federated_bench_e2.json
	$(BIN)/python bench/rocoin.py --json docs/rocoin_bench.json --plot docs/img/rocoin.png
	$(BIN)/python bench/idn.py --json docs/idn_bench.json --plot docs/img/idn.png
	$(BIN)/python bench/dds_floor.py

clean:
	rm -rf $(VENV) build install log *.egg-info
