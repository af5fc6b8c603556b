# The README's two commands: `make demo` and `make test`. Both set everything up first.
# Setup is stamped on the files that define it, so a second run installs nothing.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.pixelis-installed
# Tests run on the CPU; keep the BLAS/torch thread pools to the 2 cores we plan for.
export OMP_NUM_THREADS ?= 2

.PHONY: setup demo test bench model table rft rft-table ttrl clean

setup: $(STAMP)

$(STAMP): setup.py setup.cfg package.xml Makefile
	# Offscreen rendering for the simulator: Mesa's EGL (and OSMesa as the fallback).
	ldconfig -p | grep -q libEGL_mesa || { apt-get update -qq && apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip "setuptools<80" wheel
	# torch/torchvision pinned (DESIGN §6): other versions break torchvision's ops here.
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	# sam2 is an sdist: build it against the torch above, without its CUDA extension.
	$(PIP) install -q "hydra-core>=1.3.2" "iopath>=0.1.10" safetensors tqdm pillow
	SAM2_BUILD_CUDA=0 $(PIP) install -q --no-build-isolation --no-deps sam2==1.1.0
	$(PIP) install -q -e ".[torch,onnx,ocr,segment,sim,dds,training,export,dev]"
	# rapidocr pulls plain opencv wheels that shadow opencv-contrib (the trackers vanish):
	# remove them and put the contrib build back last.
	-$(PIP) uninstall -q -y opencv-python opencv-python-headless
	$(PIP) install -q --force-reinstall --no-deps "opencv-contrib-python-headless>=4.10,<5"
	$(PY) -c "import cv2; cv2.TrackerCSRT.create(); import rapidocr, sam2, torch, mujoco, gymnasium, cyclonedds, rosbags, transformers, peft, trl, onnx, onnxruntime"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/pixelis demo --out out/demo

test: setup
	$(PY) -m pytest -q

# The bundled model from scratch on this CPU (wall times in the model cards): the train suite's
# episodes, a tokenizer and random weights, SFT (models/pixelis-small-sft), then CC-RFT on it
# (models/pixelis-small, the default every command serves).
TRAIN_EPISODES ?= 3000
RFT := $(VENV)/bin/pixelis train rft --config training/configs/rft_small.yaml --json
model: setup
	$(VENV)/bin/pixelis sim export --suite train --episodes $(TRAIN_EPISODES) --out data/train --json
	$(VENV)/bin/pixelis model build --arch qwen3_vl --preset small --corpus data/train --out out/model/pixelis-small-init --force --json
	$(VENV)/bin/pixelis train sft --config training/configs/sft_small.yaml --set max_episodes=$(TRAIN_EPISODES) --json
	$(VENV)/bin/pixelis train bundle --run out/sft/small --out models/pixelis-small-sft --json
	$(RFT)
	$(VENV)/bin/pixelis train bundle --run out/rft/small --out models/pixelis-small --json

# The SFT results table (needs `make model` first): the two baselines train here.
table: setup
	$(VENV)/bin/pixelis train sft --config training/configs/sft_small_notools.yaml --set max_episodes=$(TRAIN_EPISODES) --json
	$(VENV)/bin/pixelis train sft --config training/configs/sft_small_ablation.yaml --set max_episodes=$(TRAIN_EPISODES) --json
	$(VENV)/bin/pixelis train table --out out/table --json
	$(VENV)/bin/pixelis train bundle --run out/sft/small --out models/pixelis-small-sft --table out/table/table.md --json

# CC-RFT on the SFT model (about 7 minutes on 2 cores), its three ablations, the table on the SFT
# table's test episodes, and the bundled model's card with it.
rft: setup
	$(RFT)

rft-table: rft
	$(RFT) --set output_dir=out/rft/small-nocuriosity --set curiosity_weight=0
	$(RFT) --set output_dir=out/rft/small-nocoherence --set coherence_weight=0
	$(RFT) --set output_dir=out/rft/small-correctness --set acting_weight=0 --set invalid_penalty=0 \
	  --set curiosity_weight=0 --set coherence_weight=0 --set efficiency_penalty=0 --set tool_bonus=0
	$(VENV)/bin/pixelis train table --config training/table_rft.yaml --out out/table-rft --json
	$(VENV)/bin/pixelis train bundle --run out/rft/small --out models/pixelis-small --table out/table-rft/table.md --json

# Test-time RL on the bundled model: the shifted suite as a label-free stream, and the two
# adversarial streams the consensus gate and the rollbacks must survive (about 20 minutes).
TTRL := $(VENV)/bin/pixelis ttrl run --suite shifted --set threads=2 --json
ttrl: setup
	$(TTRL) --episodes 48 --out out/ttrl/shifted
	$(TTRL) --episodes 24 --stream distractor --out out/ttrl/distractor
	$(TTRL) --episodes 24 --stream wrong-majority --out out/ttrl/wrong-majority

bench: setup
	$(VENV)/bin/pixelis bench tools --json
	$(VENV)/bin/pixelis bench sim --json
	$(VENV)/bin/pixelis bench node --json

clean:
	rm -rf $(VENV) build install log out .pytest_cache .hypothesis
