# ImageNet (or your own image folders) -> sharded TFRecords (Apache Beam) -> tf.estimator trainer.
# `make demo` runs everything end to end on the built-in sample; `make test` runs the tests.

PYTHON_BOOT ?= $(shell command -v python3.11 || command -v python3)
VENV        := .venv
PY          := $(VENV)/bin/python
# GPU=1: TensorFlow's CUDA build (requirements-gpu.lock); the venv is rebuilt when the lock changes.
LOCK        := $(if $(GPU),requirements-gpu.lock,requirements.lock)
STAMP       := $(VENV)/.installed-$(basename $(LOCK))

SAMPLE_DIR  ?= data/sample
DATA_DIR    ?= $(SAMPLE_DIR)
LAYOUT      ?= tars
# The sample holds four layouts side by side; any other DATA_DIR is read as it is.
INPUT_DIR   := $(if $(filter $(SAMPLE_DIR),$(DATA_DIR)),$(DATA_DIR)/$(LAYOUT),$(DATA_DIR))
OUT_DIR     ?= data/records
RECORDS_DIR ?= $(OUT_DIR)
MODEL_DIR   ?= data/model
EXPORT_DIR  ?= data/export
IMAGES      ?=
ARGS        ?=

# Dataflow (make dataflow PROJECT=... BUCKET=... DATA_DIR=gs://... [IMAGE=...])
PROJECT     ?=
REGION      ?= us-central1
BUCKET      ?=
IMAGE       ?=

.PHONY: help setup lock lint test test-fast sample records train finetune predict export demo bench inspect verify \
	dataflow dataflow-image clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 15

setup: $(STAMP) ## create .venv and install the pinned stack (once; GPU=1 for TensorFlow's CUDA build)

$(STAMP): $(LOCK)
	@test -n "$(PYTHON_BOOT)" || { echo "Python 3.11 not found: install it, or pass PYTHON_BOOT=/path/to/python3.11"; exit 1; }
	@$(PYTHON_BOOT) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || \
		{ echo "$(PYTHON_BOOT) is not Python 3.11 (TensorFlow 2.15 needs <= 3.11): pass PYTHON_BOOT=/path/to/python3.11"; exit 1; }
	@echo "setting up $(VENV) from $(LOCK) (a few minutes, once; pip's output in $(VENV)/install.log)"
	@rm -rf $(VENV) && $(PYTHON_BOOT) -m venv $(VENV)
	@$(PY) -m pip install --no-deps -r $(LOCK) > $(VENV)/install.log 2>&1 || \
		{ tail -20 $(VENV)/install.log; echo "pip failed: see $(VENV)/install.log"; exit 1; }
	@touch $@

lock: ## regenerate requirements{,-gpu,-records}.lock from pyproject.toml (tools/lock.py)
	$(PYTHON_BOOT) tools/lock.py

lint: $(STAMP) ## ruff: lint and formatting (configuration in pyproject.toml)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: $(STAMP) ## run every test (the slow end-to-end ones too)
	$(PY) -m pytest -q

test-fast: $(STAMP) ## run the tests, skipping the slow end-to-end ones
	$(PY) -m pytest -q -m "not slow"

sample: $(SAMPLE_DIR)/truth.json ## generate the built-in sample (four layouts) under SAMPLE_DIR

$(SAMPLE_DIR)/truth.json: | $(STAMP)
	@$(PY) -m pipeline.sample --output_dir=$(SAMPLE_DIR)

# Rebuilding the sample's records replaces them; its image folders have no validation split.
SAMPLE_RECORDS_FLAGS := $(if $(filter $(SAMPLE_DIR),$(DATA_DIR)),--overwrite $(if $(filter imagefolder,$(LAYOUT)),--validation_fraction=0.2),)

records: $(STAMP) ## build TFRecords from DATA_DIR (default: the sample, LAYOUT=tars|folders|kaggle|imagefolder) into OUT_DIR
	$(if $(filter $(SAMPLE_DIR),$(DATA_DIR)),@$(MAKE) --no-print-directory sample)
	$(PY) -m pipeline --input_dir=$(INPUT_DIR) --output_dir=$(OUT_DIR) $(SAMPLE_RECORDS_FLAGS) $(ARGS)

train: $(STAMP) ## train and evaluate on RECORDS_DIR (default: the sample's records) into MODEL_DIR
	$(if $(filter data/records,$(RECORDS_DIR)),@test -f $(RECORDS_DIR)/manifest.json || $(MAKE) --no-print-directory records)
	$(PY) -m estimator.train --records_dir=$(RECORDS_DIR) --model_dir=$(MODEL_DIR) $(ARGS)

predict: $(STAMP) ## top-5 names for IMAGES="a.jpg b.png" with the model in MODEL_DIR (ARGS=--json)
	@test -n "$(IMAGES)" || { echo 'usage: make predict MODEL_DIR=... IMAGES="a.jpg b.png"'; exit 1; }
	$(PY) -m estimator.predict --model_dir=$(MODEL_DIR) $(ARGS) $(IMAGES)

export: $(STAMP) ## write a SavedModel (JPEG/PNG bytes in, top-5 names out) of MODEL_DIR to EXPORT_DIR
	$(PY) -m estimator.export --model_dir=$(MODEL_DIR) --export_dir=$(EXPORT_DIR) $(ARGS)

inspect: $(STAMP) ## summarise a records build (ARGS="--sheet=sheet.png --plots=plots/")
	$(PY) -m records inspect $(RECORDS_DIR) $(ARGS)

verify: $(STAMP) ## read back every record of a build and check it against the manifest
	$(PY) -m records verify $(RECORDS_DIR) $(ARGS)

bench: $(STAMP) ## speed figures beside their baselines, measured in one run -> bench/results.json
	$(PY) -m bench $(ARGS)

# The demo: the sample's classes learnt in about a minute on 2 cores, with the trainer's defaults.
DEMO_DIR        := data/demo
DEMO_TRAIN_ARGS := --image_size=64 --batch_size=32 --train_steps=300 --log_every_n_steps=50 --save_graph_def=false
# Four valid validation images of the sample, listed when the recipe runs (after the sample exists).
DEMO_IMAGES      = $(PY) -c 'import json; t = json.load(open("$(SAMPLE_DIR)/truth.json")); \
	print(" ".join(["$(SAMPLE_DIR)/folders/val/" + i["name"] for i in t["images"] if i["split"] == "validation" and i["valid"]][:4]))'

demo: $(STAMP) ## the whole chain on the sample: records, train, export, predict
	@$(MAKE) --no-print-directory records
	@rm -rf $(DEMO_DIR)
	@echo "== training (python -m estimator.train $(DEMO_TRAIN_ARGS))"
	@$(PY) -m estimator.train --records_dir=$(OUT_DIR) --model_dir=$(DEMO_DIR)/model $(DEMO_TRAIN_ARGS)
	@echo "== exporting a SavedModel"
	@$(PY) -m estimator.export --model_dir=$(DEMO_DIR)/model --export_dir=$(DEMO_DIR)/export
	@echo "== predicting four validation images"
	@$(PY) -m estimator.predict --model_dir=$(DEMO_DIR)/model $$($(DEMO_IMAGES))
	@$(PY) -c 'import json; print("\nDemo done. Validation top-1 {top1:.1%}, top-5 {top5:.1%} over {num_examples} images " \
		"after {global_step} steps (chance: 10%).".format(**json.load(open("$(DEMO_DIR)/model/metrics.json"))))'
	@echo "  sample:  $(SAMPLE_DIR)  (tars/, folders/, kaggle/, imagefolder/)"
	@echo "  records: $(OUT_DIR)  (shards, synsets.tsv, manifest.json, rejected.tsv, build.log)"
	@echo "  model:   $(DEMO_DIR)/model  (checkpoints, metrics.json, model_stats.csv, TensorBoard events)"
	@echo "  export:  $(DEMO_DIR)/export  (SavedModel: image bytes in, top-5 names out)"

# Fine-tuning (README: "Fine-tune on your own classes"): BASE_MODEL_DIR's network and weights, all but its
# classifier, trained on RECORDS_DIR's classes into MODEL_DIR; then IMAGES named with those classes. With no
# variables: the demo's model fine-tuned on the sample's image folders, predicting one image per folder.
BASE_MODEL_DIR  ?= $(DEMO_DIR)/model
FINETUNE_STEPS  ?= 300
FINETUNE_SAMPLE := data/records-imagefolder
finetune: RECORDS_DIR = $(FINETUNE_SAMPLE)
finetune: MODEL_DIR = data/finetune
# The base model's network (from its train_config.json): the fine-tune builds the same one.
BASE_MODEL       = $(PY) -c 'import json; print(json.load(open("$(BASE_MODEL_DIR)/train_config.json"))["model"])'
SAMPLE_FINETUNE  = $(if $(filter $(FINETUNE_SAMPLE),$(RECORDS_DIR)),1,)

finetune: $(STAMP) ## fine-tune BASE_MODEL_DIR on RECORDS_DIR's classes into MODEL_DIR, then name IMAGES="a.jpg b.jpg"
	@test -f $(BASE_MODEL_DIR)/train_config.json || { echo "no trained model in BASE_MODEL_DIR=$(BASE_MODEL_DIR): run make demo, or pass BASE_MODEL_DIR=..."; exit 1; }
	$(if $(SAMPLE_FINETUNE),@test -f $(RECORDS_DIR)/manifest.json || $(MAKE) --no-print-directory records LAYOUT=imagefolder OUT_DIR=$(RECORDS_DIR))
	$(if $(SAMPLE_FINETUNE),@rm -rf $(MODEL_DIR))
	$(PY) -m estimator.train --records_dir=$(RECORDS_DIR) --model_dir=$(MODEL_DIR) --model=$$($(BASE_MODEL)) \
		--fine_tune_ckpt=$(BASE_MODEL_DIR) --fine_tune_exclude=logits --train_steps=$(FINETUNE_STEPS) \
		$(if $(SAMPLE_FINETUNE),--image_size=64 --batch_size=32) $(ARGS)
	$(if $(IMAGES),$(PY) -m estimator.predict --model_dir=$(MODEL_DIR) $(IMAGES),$(if $(SAMPLE_FINETUNE),\
		$(PY) -m estimator.predict --model_dir=$(MODEL_DIR) $(SAMPLE_DIR)/imagefolder/train/*/IMG_0001.jpg,\
		@echo "to name your images: make predict MODEL_DIR=$(MODEL_DIR) IMAGES=\"a.jpg b.jpg\""))

# Dataflow: workers run a container holding the records job's locked packages and code (Dockerfile);
# without IMAGE they install the project from setup.py at start-up instead.
DATAFLOW_WORKER_ARGS = $(if $(IMAGE),--sdk_container_image=$(IMAGE) --sdk_location=container,--setup_file=$(CURDIR)/setup.py)

dataflow-image: ## build and push the Dataflow worker container: IMAGE=REGION-docker.pkg.dev/PROJECT/REPO/records:TAG
	@test -n "$(IMAGE)" || { echo "usage: make dataflow-image IMAGE=us-central1-docker.pkg.dev/my-project/my-repo/records:1"; exit 1; }
	docker build -t $(IMAGE) .
	docker push $(IMAGE)

dataflow: $(STAMP) ## run the records job on Dataflow: PROJECT=... BUCKET=... DATA_DIR=gs://... [IMAGE=...]
	@test -n "$(PROJECT)" -a -n "$(BUCKET)" || { echo "usage: make dataflow PROJECT=my-project BUCKET=my-bucket DATA_DIR=gs://.../imagenet [IMAGE=...] [REGION=us-central1]"; exit 1; }
	$(PY) -m pipeline --input_dir=$(DATA_DIR) --output_dir=gs://$(BUCKET)/imagenet/records \
		--runner=DataflowRunner --project=$(PROJECT) --region=$(REGION) \
		--temp_location=gs://$(BUCKET)/tmp --staging_location=gs://$(BUCKET)/staging \
		$(DATAFLOW_WORKER_ARGS) --experiments=use_runner_v2 $(ARGS)

clean: ## remove generated data (keeps .venv)
	rm -rf data bench/out bench/results.json .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
