"""Training-step overhead of GPT4Image over the plain classifier.

For each case a plain mmpretrain ``ImageClassifier`` and a
``TextAlignedClassifier`` with the same backbone, neck, head and weights
(the aligned model additionally has the alignment neck and loss) run full
MMEngine training steps (``model.train_step``: preprocessing, forward, CE
[+ alignment loss], backward, optimizer step) on the same synthetic batch.
Timing blocks of ``--iters`` steps alternate between the two models
``--repeats`` times after ``--warmup`` steps each; the ratio is of the
medians. ``--device cuda --amp`` runs the GPU variant (``AmpOptimWrapper``,
fp16 autocast, dynamic loss scale).

Goals: ratio <= 1.05 on CPU, <= 1.02 on GPU with AMP.

    python benchmarks/bench_train_step.py                        # CPU
    python benchmarks/bench_train_step.py --device cuda --amp    # GPU
    python benchmarks/bench_train_step.py --cases resnet18_cifar \\
        --repeats 3 --iters 1 --warmup 1                         # smoke
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from typing import Dict, List, Optional, Tuple

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmengine.optim import AmpOptimWrapper, OptimWrapper  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmpretrain.registry import MODELS  # noqa: E402
from mmpretrain.structures import DataSample  # noqa: E402

from gpt4image_mm.utils import register_all_modules  # noqa: E402

register_all_modules()

TEXT_DIM = 1024  # CLIP RN50 text tower, the official default
IMAGENET_PRE = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375])

# name: (plain model config, image size, CPU batch, GPU batch, align neck
# options, temperature) -- the align parts follow configs/_base_/gpt4image.py
CASES: Dict[str, tuple] = {
    'resnet18_cifar': (dict(
        type='ImageClassifier',
        backbone=dict(type='ResNet_CIFAR', depth=18),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=100, in_channels=512,
                  loss=dict(type='CrossEntropyLoss'))),
        32, 32, 256, {}, 0.2),
    'resnet50': (dict(
        type='ImageClassifier',
        backbone=dict(type='ResNet', depth=50),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=1000, in_channels=2048,
                  loss=dict(type='CrossEntropyLoss'))),
        224, 8, 128, {}, 0.2),
    'deit-s': (dict(
        type='ImageClassifier',
        backbone=dict(type='VisionTransformer', arch='deit-small',
                      img_size=224, patch_size=16),
        neck=None,
        head=dict(type='VisionTransformerClsHead', num_classes=1000,
                  in_channels=384, loss=dict(type='CrossEntropyLoss'))),
        224, 8, 128, dict(with_bias=True, norm_cfg=None), 0.05),
}


def build_pair(name: str, device: str):
    """(plain, aligned) models with identical shared weights."""
    cfg, *_, neck_options, tau = CASES[name]
    plain_cfg = dict(copy.deepcopy(cfg), data_preprocessor=dict(
        num_classes=cfg['head']['num_classes'], **IMAGENET_PRE))
    aligned_cfg = dict(
        copy.deepcopy(plain_cfg), type='TextAlignedClassifier',
        align_neck=dict(type='AlignmentNeck', out_channels=TEXT_DIM,
                        **neck_options),
        align_loss=dict(type='ContrastiveAlignLoss', temperature=tau,
                        loss_weight=0.3, mode='clip'))
    torch.manual_seed(0)
    plain = MODELS.build(plain_cfg)
    aligned = MODELS.build(aligned_cfg)
    missing, unexpected = aligned.load_state_dict(plain.state_dict(),
                                                  strict=False)
    assert not unexpected and all(k.startswith('align_') for k in missing)
    return plain.to(device).train(), aligned.to(device).train()


def make_batch(size: int, batch: int, num_classes: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    inputs = [torch.randint(0, 256, (3, size, size), generator=g,
                            dtype=torch.uint8) for _ in range(batch)]
    samples = []
    for i in range(batch):
        s = DataSample().set_gt_label(i % num_classes)
        s.set_field(torch.nn.functional.normalize(
            torch.randn(TEXT_DIM, generator=g), dim=0), 'text_embedding')
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def make_optim(model: torch.nn.Module, amp: bool):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    if amp:
        return AmpOptimWrapper(optimizer=opt, loss_scale='dynamic')
    return OptimWrapper(optimizer=opt)


def _sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def time_steps(model, optim, data, iters: int,
               device: str) -> Tuple[float, float]:
    """Wall and process-CPU seconds per training step over ``iters`` steps.

    CPU time is reported too because on a shared machine other processes
    stretch the wall time of whichever model happens to run; the CPU time
    this process spends is much less disturbed by them.
    """
    if iters <= 0:
        return 0.0, 0.0
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(iters):
        logs = model.train_step(data, optim)
    _sync(device)
    assert all(torch.isfinite(v).all() for v in logs.values()), logs
    return ((time.perf_counter() - t0) / iters,
            (time.process_time() - c0) / iters)


def run_case(name: str, args: argparse.Namespace) -> dict:
    cfg, size, cpu_bs, gpu_bs, *_ = CASES[name]
    batch = args.batch_size or (gpu_bs if args.device.startswith('cuda')
                                else cpu_bs)
    plain, aligned = build_pair(name, args.device)
    data = make_batch(size, batch, cfg['head']['num_classes'])
    models = {'plain': (plain, make_optim(plain, args.amp)),
              'gpt4image': (aligned, make_optim(aligned, args.amp))}
    for model, optim in models.values():
        time_steps(model, optim, data, args.warmup, args.device)
    times: Dict[str, List[float]] = {k: [] for k in models}
    cpu: Dict[str, List[float]] = {k: [] for k in models}
    for r in range(args.repeats):
        order = list(models) if r % 2 == 0 else list(models)[::-1]
        for key in order:
            model, optim = models[key]
            wall_s, cpu_s = time_steps(model, optim, data, args.iters,
                                       args.device)
            times[key].append(wall_s)
            cpu[key].append(cpu_s)
    plain_s = statistics.median(times['plain'])
    ours_s = statistics.median(times['gpt4image'])
    cpu_ratio = statistics.median(cpu['gpt4image']) / max(
        statistics.median(cpu['plain']), 1e-12)
    return dict(case=name, image_size=size, batch=batch,
                plain_ms=1e3 * plain_s, gpt4image_ms=1e3 * ours_s,
                ratio=ours_s / plain_s, cpu_ratio=cpu_ratio, times=times,
                cpu_times=cpu)


def main(argv: Optional[List[str]] = None) -> List[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--cases', nargs='+', default=list(CASES),
                   choices=list(CASES))
    p.add_argument('--device', default='cpu')
    p.add_argument('--amp', action='store_true',
                   help='fp16 autocast + dynamic loss scale (GPU)')
    p.add_argument('--batch-size', type=int, default=None,
                   help='override every case (default: per case and device)')
    p.add_argument('--repeats', type=int, default=7)
    p.add_argument('--iters', type=int, default=2,
                   help='steps per timing block')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--json', help='also write the results here')
    args = p.parse_args(argv)
    init_default_scope('mmpretrain')
    if args.device.startswith('cuda'):
        torch.backends.cudnn.benchmark = True
    goal = 1.02 if args.device.startswith('cuda') else 1.05
    where = (torch.cuda.get_device_name() if args.device.startswith('cuda')
             else f'CPU, {torch.get_num_threads()} threads')
    print(f'{where}; amp={args.amp}; median of {args.repeats} interleaved '
          f'blocks of {args.iters} steps after {args.warmup} warm-up steps\n')
    print('| case | image | batch | plain ms/step | GPT4Image ms/step | ratio '
          f'| CPU-time ratio | goal <= {goal} |')
    print('| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |')
    results = []
    for name in args.cases:
        res = run_case(name, args)
        res.update(device=args.device, amp=args.amp, goal=goal)
        results.append(res)
        ok = 'met' if res['ratio'] <= goal else 'missed'
        print(f'| {name} | {res["image_size"]} | {res["batch"]} | '
              f'{res["plain_ms"]:.1f} | {res["gpt4image_ms"]:.1f} | '
              f'{res["ratio"]:.3f} | {res["cpu_ratio"]:.3f} | {ok} |',
              flush=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == '__main__':
    main()
