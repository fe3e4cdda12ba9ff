"""Global-negative gather under real DDP (2 CPU processes, gloo).

After DDP averages the gradients, the projector's and the logit scale's
gradients must equal those of one process on the concatenated batch, and
every rank's loss value must equal the single-process loss.
"""
import copy
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from gpt4image_mm.models.loss import ContrastiveAlignLoss

WORLD = 2
N, IN_DIM, DIM = 8, 8, 6
LABELS = [0, 1, 2, 0, 1, 0, 2, 1]
WEIGHTS = [1.0, 0.0, 1.0, 0.5, 1.0, 1.0, 0.0, 1.0]
# name: (loss kwargs, local batch sizes, use labels, use mix, use weights)
CASES = {
    'clip': (dict(mode='clip'), (4, 4), False, False, False),
    'ctr': (dict(mode='ctr'), (4, 4), False, False, False),
    'label': (dict(positives='label'), (4, 4), True, False, False),
    'mix': (dict(mode='clip'), (4, 4), False, True, False),
    'label_mix': (dict(positives='label'), (4, 4), True, True, False),
    'text_weights': (dict(positives='text'), (4, 4), False, False, True),
    'cosine_mix': (dict(mode='cosine'), (4, 4), False, True, True),
    'unequal_clip': (dict(mode='clip'), (5, 3), False, False, False),
    'unequal_label_mix_weights': (dict(positives='label'), (5, 3), True, True,
                                  True),
}


class _Net(nn.Module):
    def __init__(self, **loss_kwargs):
        super().__init__()
        self.proj = nn.Linear(IN_DIM, DIM)
        self.loss = ContrastiveAlignLoss(temperature=0.1, **loss_kwargs)

    def forward(self, x, txt, **kwargs):
        return self.loss(self.proj(x), txt, **kwargs)


def _mixup(n, lam):
    """Local mixup matrix: image i = lam * i + (1 - lam) * flipped partner."""
    return lam * torch.eye(n, dtype=torch.float64) + (1 - lam) * torch.eye(
        n, dtype=torch.float64).flip(0)


def _run_case(name, rank):
    kwargs, sizes, use_labels, use_mix, use_weights = CASES[name]
    g = torch.Generator().manual_seed(len(name))
    x = torch.randn(N, IN_DIM, generator=g, dtype=torch.float64)
    txt = torch.randn(N, DIM, generator=g, dtype=torch.float64)
    labels = torch.tensor(LABELS)
    if kwargs.get('positives') == 'text':
        txt = torch.randn(3, DIM, generator=g, dtype=torch.float64)[labels]
    weights = torch.tensor(WEIGHTS, dtype=torch.float64)
    mixes = [_mixup(n, 0.7 - 0.1 * r) for r, n in enumerate(sizes)]

    def extra(sl, mix):
        return dict(labels=labels[sl] if use_labels else None,
                    mix=mix if use_mix else None,
                    weights=weights[sl] if use_weights else None)

    torch.manual_seed(0)
    learnable = kwargs.get('mode') != 'cosine'  # cosine has no logit scale
    net = _Net(learnable_temperature=learnable, **kwargs).double()
    ref = copy.deepcopy(net)
    ref.loss.gather = False  # one process on the concatenated batch
    ref_value = ref(x, txt, **extra(slice(None), torch.block_diag(*mixes)))
    ref_value.backward()

    start = sum(sizes[:rank])
    local = slice(start, start + sizes[rank])
    ddp = DistributedDataParallel(net)
    value = ddp(x[local], txt[local], **extra(local, mixes[rank]))
    value.backward()
    out = dict(value=value.item(), ref_value=ref_value.item(),
               weight=net.proj.weight.grad, ref_weight=ref.proj.weight.grad)
    if learnable:
        out.update(scale=net.loss.log_logit_scale.grad,
                   ref_scale=ref.loss.log_logit_scale.grad)
    return out


def _worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{init_file}',
                            rank=rank, world_size=WORLD)
    try:
        results = {name: _run_case(name, rank) for name in CASES}
    finally:
        dist.destroy_process_group()
    torch.save(results, f'{out_dir}/rank{rank}.pt')


@pytest.fixture(scope='module')
def ddp_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('ddp')
    # fork: the children inherit the imported modules (spawn re-imports
    # mmpretrain in each child, which dominates the run time).
    ctx = mp.start_processes(_worker, args=(str(tmp / 'init'), str(tmp)),
                             nprocs=WORLD, join=False, start_method='fork')
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.kill()
            pytest.fail('DDP workers did not finish in 120 s')
    return [torch.load(tmp / f'rank{r}.pt') for r in range(WORLD)]


def _rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize('name', list(CASES))
def test_ddp_matches_single_process(ddp_results, name):
    for rank, results in enumerate(ddp_results):
        res = results[name]
        assert res['value'] == pytest.approx(res['ref_value'], rel=1e-6), rank
        assert res['weight'] is not None
        assert _rel_err(res['weight'], res['ref_weight']) < 1e-4, rank
        if 'scale' in res:
            assert res['scale'] is not None and res['ref_scale'].abs() > 0
            assert _rel_err(res['scale'], res['ref_scale']) < 1e-4, rank
