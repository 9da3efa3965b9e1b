# transfer_lab: `make help` lists the targets. Everything runs inside .venv, built on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SWEEP ?=
ARGS ?=

# Hub lookups are opt-in: HF_HUB_OFFLINE=0 (the one switch; datasets follows it) streams the *_hub
# corpora. Offline by default: without it a lookup hangs ~50 s on a machine with no network.
export HF_HUB_OFFLINE ?= 1
export MPLBACKEND ?= Agg
export PYTHONUNBUFFERED := 1

.PHONY: help setup apt-lists data check-hub check-hub-shards slurm-cluster demo train fit plan predict atlas study budget-study mix test test-fast bench gpu-check clean-venv

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: 2.13.0 is a CPU build; an unpinned torch would pull several GB of CUDA packages
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP) apt-lists ## create .venv and install the pinned stack

# The embedded corpora come from Debian packages (apt-get download, never install): apt needs
# its package lists once. Skipped where they exist or where apt-get is absent.
apt-lists:
	@if command -v apt-get >/dev/null && ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q; else echo "run 'sudo apt-get update' once for the Debian corpora"; fi; \
	fi

data: setup ## prepare the demo's corpora, tokenizer and token files (prints sizes and MB/s)
	$(PY) -m transfer_lab.prepare experiment=demo $(ARGS)

check-hub: setup ## open every *_hub corpus and read a few records (HF_HUB_OFFLINE=0 to go online)
	$(PY) -m transfer_lab.data.corpora check --hub $(ARGS)

check-hub-shards: setup ## open every shard of every *_hub corpus at its parquet footer / gzip header, reading no data
	$(PY) -m transfer_lab.data.corpora check --hub --shards $(ARGS)

slurm-cluster: ## start a one-node SLURM cluster here, as root (then: eval $$(tools/slurm_cluster.sh env))
	tools/slurm_cluster.sh install
	tools/slurm_cluster.sh start

demo: data ## set up, run the demo sweep (English -> Python), fit the laws, write the report
	$(PY) train.py -m experiment=demo $(ARGS)
	$(PY) analyze.py sweep=demo

train: setup ## one run with the default config (ARGS='regime=scratch model=small ...')
	$(PY) train.py $(ARGS)

fit: setup ## fit the laws on the latest sweep (SWEEP=name for another) and write its report
	$(PY) analyze.py $(if $(SWEEP),sweep=$(SWEEP)) $(ARGS)

plan: setup ## the runs that would close the latest sweep's gaps, as train.py commands (SWEEP=name for another)
	$(PY) analyze.py action=plan $(if $(SWEEP),sweep=$(SWEEP)) $(ARGS)

atlas: setup ## every ordered pair of the six embedded corpora: train what is missing, then the atlas report
	$(PY) -m transfer_lab.prepare experiment=atlas
	$(PY) train.py -m experiment=atlas $(ARGS)
	$(PY) analyze.py action=atlas sweep=atlas

study: setup ## the CPU text->python study (~90 min on 2 cores, resumable), its report under docs/results/
	$(PY) -m transfer_lab.prepare experiment=text2python_cpu
	$(PY) train.py -m experiment=text2python_cpu $(ARGS)
	$(PY) analyze.py sweep=text2python_cpu paths.report_dir=docs/results/text2python_cpu html=false pdf=false

budget-study: setup ## pre-training as a measured axis: 3 sizes x 4 budgets, seeds, the plateau rule (resumable; reuses the atlas's runs)
	$(PY) -m transfer_lab.prepare experiment=pretrain_budget_cpu
	$(PY) train.py -m experiment=pretrain_budget_cpu $(ARGS)
	# the headline (largest) budget's D_F span widened to 2 decades: 3e3-3e5, its 3.2e7 source characters ≥ 100× D_F
	$(PY) train.py -m experiment=pretrain_budget_cpu pretrain.tokens=1.6e7 regime=finetune data.finetune_chars=3e3,3e5 $(ARGS)
	# seed noise, per regime and size, on the cheap cells: the smallest budget, D and D_F up to 3e4
	$(PY) train.py -m experiment=pretrain_budget_cpu pretrain.tokens=2e6 seed=1,2 \
	    data.finetune_chars=1e4,3e4 data.scratch_chars=1e4,3e4,1e5 $(ARGS)
	$(PY) train.py -m experiment=pretrain_rule_cpu $(ARGS)
	$(PY) analyze.py sweep=pretrain_budget_cpu paths.report_dir=docs/results/pretrain_budget_cpu html=false pdf=false
	$(PY) analyze.py action=compare 'compare.sweeps=[pretrain_budget_cpu,pretrain_rule_cpu]' compare.by=pretrain_rule \
	    paths.report_dir=docs/results/pretrain_budget_cpu/rule

mix: setup ## the best pre-training mix for Python: ratios, a 3-source simplex, held-out runs at the predictions (reuses the atlas's runs)
	$(PY) -m transfer_lab.prepare experiment=mix_text_code_python
	$(PY) train.py -m experiment=mix_text_code_python $(ARGS)
	$(PY) train.py -m experiment=mix_simplex_python $(ARGS)
	# predict, then verify: the analysis writes the held-out runs (experiment=mix_verify) that test it
	$(PY) analyze.py action=mix paths.report_dir=docs/results/mix
	PYTHON=$(PY) sh docs/results/mix/verify.sh
	$(PY) analyze.py action=mix paths.report_dir=docs/results/mix

predict: setup ## predicted D_T and loss, e.g. make predict ARGS='predict.n=1e6 predict.finetune_chars=1e6'
	$(PY) analyze.py action=predict $(if $(SWEEP),sweep=$(SWEEP)) $(ARGS)

# The fast tier (no model trained, no process started) runs on every core; the tier that trains,
# starts processes and sends signals runs one test at a time, as its timings assume. Exit 5 (no test
# selected, e.g. ARGS naming one file of the other tier) is not a failure.
FAST := not trains and not subprocess and not network

test: setup ## run every test: the fast tier on every core, then the training, subprocess and kill tests
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto -m "$(FAST)" --durations=10 $(ARGS) || [ $$? = 5 ]
	$(PY) -m pytest -q -m "not ($(FAST))" --durations=25 $(ARGS) || [ $$? = 5 ]

test-fast: setup ## the tier that trains no model and starts no process, on every core (< 3 min; make test runs everything)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto -m "$(FAST)" --durations=10 $(ARGS) || [ $$? = 5 ]

bench: setup ## speed benchmarks: prints a table, writes bench/results/latest.json
	$(PY) bench/run.py $(ARGS)

gpu-check: setup ## one GPU, under 10 min: MFU (gpt2_85m, bf16, compile), k packed runs, a 3-size grid -> docs/results/gpu/ (ARGS=--dry-run: CPU)
	$(PY) bench/gpu_check.py $(ARGS)

clean-venv: ## remove .venv (outputs/ is never deleted by make)
	rm -rf $(VENV)
