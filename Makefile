# Two commands on a fresh machine: `make demo` (install, generate data, train 5 folds, classify
# held-out photos, then assess held-out claims: several photos of one car) and `make test`. EXTRAS=gpu installs the CUDA build of TensorFlow instead.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
EXTRAS ?= cpu
BIN := $(VENV)/bin
DEMO_DATA := data/demo
DEMO_RUN := runs/demo

.PHONY: install demo test test-quick fuzz lint docs

$(BIN)/cardamage: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[$(EXTRAS),dev]"
	touch $@

install: $(BIN)/cardamage

demo: install
	$(BIN)/cardamage synth --out $(DEMO_DATA)/train --n 1825 --size 224 --seed 0
	$(BIN)/cardamage synth --out $(DEMO_DATA)/heldout --n 300 --size 224 --seed 1
	$(BIN)/cardamage train --config configs/demo.json --overwrite
	$(BIN)/cardamage evaluate --model $(DEMO_RUN) --data $(DEMO_DATA)/heldout/labels.csv \
		--show 15 --out $(DEMO_RUN)/heldout
	$(BIN)/cardamage synth --claims --out $(DEMO_DATA)/claims --n 100 --size 224 --seed 2
	$(BIN)/cardamage evaluate --model $(DEMO_RUN) --data $(DEMO_DATA)/claims/labels.csv \
		--claim-labels $(DEMO_DATA)/claims/claims.csv --out $(DEMO_RUN)/heldout_claims
	@echo
	@echo "Results: $(DEMO_RUN)/results_*.txt, $(DEMO_RUN)/summary.json, curves in $(DEMO_RUN)/curves/"
	@echo "Model:   $(DEMO_RUN)/model (model.keras + model.json with labels and thresholds)"
	@echo "Report:  $(DEMO_RUN)/report.html (one self-contained page)"
	@echo "Labels:  $(DEMO_RUN)/label_issues.csv, the likeliest wrong labels: $(BIN)/cardamage data review $(DEMO_RUN)"
	@echo "Classify: $(BIN)/python main.py --config application_config.json --debug False"
	@echo "          $(BIN)/cardamage predict $(DEMO_DATA)/heldout/images --model $(DEMO_RUN)"
	@echo "Claims:  $(BIN)/cardamage assess --manifest $(DEMO_DATA)/claims/labels.csv --out claims_out"
	@echo "App:     $(BIN)/cardamage serve --config application_config.json  (http://127.0.0.1:8000/)"

# The Ray extra (`predict --ray`, `train --ray`): the suite installs it, `make demo` does not.
RAY_STAMP := $(VENV)/.ray-extra

$(RAY_STAMP): $(BIN)/cardamage
	$(BIN)/pip install --quiet -e ".[$(EXTRAS),dev,ray]"
	touch $@

# The suite CI runs, slow end-to-end tests (kill-and-resume, exports, original models, Ray)
# included.
test: install $(RAY_STAMP)
	$(BIN)/python -m pytest -q

# The quick loop while developing: everything but the tests marked slow.
test-quick: install
	$(BIN)/python -m pytest -q -m "not slow"

# A longer fuzz run: decoders, manifest and config parsers, and the live API (schemathesis).
fuzz: install
	CARDAMAGE_FUZZ_EXAMPLES=3000 $(BIN)/python -m pytest -q tests/test_fuzz.py tests/test_schemathesis.py

# ruff, and the layers importing only downward (.importlinter, docs: architecture).
lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports

# The documentation site (docs/, mkdocs.yml) into site/: strict, offline; the suite builds it too.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site
