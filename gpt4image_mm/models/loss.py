"""Image-text alignment loss of GPT4Image (arXiv 2306.00693).

The projected image feature of sample i is pulled towards the (frozen, offline)
text embedding of its description.  One module covers the official variants:

* ``'clip'``: symmetric InfoNCE, ``(i2t + t2i) / 2``, logits ``img @ txt.T / tau``;
* ``'ctr'``: image->text InfoNCE only;
* ``'cosine'``: ``2 - 2 cos(img_i, txt_i)``, no negatives (``'byol'`` upstream).

Each mode is a function ``mode(loss, batch) -> Tensor`` registered in
``gpt4image_mm.registry.ALIGN_LOSS_MODES`` and built from the loss's helpers
(``gather_batch``: the global batch; ``targets``: soft positives; ``logits``), as
open_clip's loss.py separates them; a user adds a mode from their own file.

Targets are soft in general: a row-stochastic matrix ``T`` over the texts of the
global batch, built from the positives (the own text, every sample of the same
class, or every sample with the same text) and an optional Mixup/CutMix matrix.
Samples of weight 0 (no description) take no part at all: neither as query,
positive nor negative.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from mmengine.dist import get_dist_info
from mmpretrain.registry import MODELS

from gpt4image_mm.registry import ALIGN_LOSS_MODES
from gpt4image_mm.utils.errors import InputError

_EPS = 1e-12


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the gradient is multiplied by ``factor`` backward."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


class _ClampMax(torch.autograd.Function):
    """``min(x, bound)`` whose gradient is only cut where it would push ``x``
    further above the bound, so a clamped scale can still come back down."""

    @staticmethod
    def forward(ctx, x, bound):
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp(max=bound)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad.masked_fill((x > ctx.bound) & (grad < 0), 0), None


def _gather_rows(x: torch.Tensor, sizes: List[int]) -> List[torch.Tensor]:
    """All-gather ``(B_r, ...)`` tensors of unequal ``B_r`` (pad, gather, trim).

    No autograd: the caller puts its own differentiable slice back in place."""
    padded = x.new_zeros((max(sizes), *x.shape[1:]))
    padded[:x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return [p[:n] for p, n in zip(parts, sizes)]


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    # Finite everywhere, so all-zero weights give 0 with the graph kept.
    return (weights * values).sum() / weights.sum().clamp_min(_EPS)


@dataclass
class AlignBatch:
    """What a loss mode works on: unit image and text vectors, weights.

    Local (this rank's samples) as ``forward`` hands it to the mode, or the
    global batch after :meth:`ContrastiveAlignLoss.gather_batch`, where only this
    rank's image rows carry a gradient. ``mixes[r]`` is rank r's
    ``(B_r, B_r)`` Mixup/CutMix matrix (``None``: unmixed), ``sizes[r]`` its
    batch size."""

    img: torch.Tensor
    txt: torch.Tensor
    weights: torch.Tensor
    labels: Optional[torch.Tensor]
    mixes: Optional[List[torch.Tensor]]
    sizes: List[int]
    world: int = 1
    rank: int = 0


def _mode_function(mode: str):
    """The registered mode (a dotted ``module.function`` path is imported,
    as mmengine's registries do), or a ValueError naming the known ones."""
    try:
        fn = ALIGN_LOSS_MODES.get(mode) if isinstance(mode, str) else None
    except Exception:  # noqa: BLE001 - mmengine wraps a failed import
        fn = None
    if not callable(fn):
        raise InputError(f'mode must be one of the registered alignment loss '
                         f'modes {sorted(ALIGN_LOSS_MODES.module_dict)}, got '
                         f'{mode!r}')
    return fn


@MODELS.register_module()
class ContrastiveAlignLoss(nn.Module):
    """Contrastive alignment of projected image features with text embeddings.

    Args:
        temperature (float): tau; the initial value when learnable.
            Defaults to 0.2 (the official ResNet value; DeiT uses 0.05).
        loss_weight (float): Multiplies the returned loss. Defaults to 1.0.
        mode (str): A name in ``ALIGN_LOSS_MODES``: ``'clip'``, ``'ctr'``,
            ``'cosine'`` or one a user registered (docs/extending.md).
            Defaults to ``'clip'``.
        learnable_temperature (bool): Learn ``log(1/tau)`` (parameter
            ``log_logit_scale``); ``1/tau`` is clamped to
            ``max_logit_scale``. Defaults to False (fixed, as officially).
        max_logit_scale (float): Upper bound of a learnable ``1/tau``.
            Defaults to 100.0 (CLIP's clamp).
        positives (str): Which texts are positives of image i:
            ``'instance'`` (its own), ``'label'`` (all of its class, needs
            ``labels``) or ``'text'`` (all with an identical text
            embedding). Ignored by ``'cosine'``, whose target is the (mixed)
            own text. Defaults to ``'instance'``.
        gather (bool): Under torch.distributed, use the whole global batch
            as negatives (every rank computes the full global loss).
            Defaults to True.

    Distributed gradients: every rank computes the same global loss, but the
    gradient only flows through its own image features (the gathered ones are
    detached), so rank r holds ``dL/dtheta`` restricted to its samples. The
    sum over ranks is the true gradient; DDP *averages*, i.e. gives 1/W of it
    (the official code's behaviour). The local image features therefore get
    their gradient -- not their value -- multiplied by W: the loss value stays
    the true global loss, the averaged parameter gradients equal those of one
    process on the concatenated batch, and a learnable logit scale, whose
    gradient is already complete and identical on every rank, is untouched.
    This assumes DDP gradient averaging (MMEngine's default wrapper).
    """

    POSITIVES = ('instance', 'label', 'text')

    def __init__(self,
                 temperature: float = 0.2,
                 loss_weight: float = 1.0,
                 mode: str = 'clip',
                 learnable_temperature: bool = False,
                 max_logit_scale: float = 100.0,
                 positives: str = 'instance',
                 gather: bool = True):
        super().__init__()
        self.mode_fn = _mode_function(mode)
        if positives not in self.POSITIVES:
            raise InputError(
                f'positives must be one of {self.POSITIVES}, got {positives!r}')
        if temperature <= 0 or max_logit_scale <= 0:
            raise InputError('temperature and max_logit_scale must be > 0')
        self.mode = mode
        self.positives = positives
        self.loss_weight = loss_weight
        self.gather = gather
        self.learnable_temperature = learnable_temperature
        self.max_logit_scale = float(max_logit_scale)
        if learnable_temperature:
            init = min(math.log(1 / temperature), math.log(max_logit_scale))
            self.log_logit_scale = nn.Parameter(torch.tensor(init))
            bound = self.max_logit_scale
        else:
            self._fixed_scale = 1.0 / temperature
            bound = self._fixed_scale
        # |logits| <= bound: a finite "minus infinity" that underflows exp().
        self.masked = -(bound + 1e4)
        self._eye_cache = (None, None)

    def _scale(self):
        if not self.learnable_temperature:
            return self._fixed_scale
        bound = math.log(self.max_logit_scale)
        return _ClampMax.apply(self.log_logit_scale, bound).exp()

    def logit_scale(self) -> float:
        """Current ``1/tau`` as a float (for logging)."""
        return float(self._scale())

    def _eye(self, n, device):
        key, eye = self._eye_cache
        if key != (n, device):
            eye = torch.eye(n, dtype=torch.bool, device=device)
            self._eye_cache = ((n, device), eye)
        return eye

    def forward(self,
                image_embeds: torch.Tensor,
                text_embeds: torch.Tensor,
                labels: Optional[torch.Tensor] = None,
                mix: Optional[torch.Tensor] = None,
                weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The alignment loss of a batch (this rank's samples).

        Args:
            image_embeds (Tensor): (B, D) projected image features.
            text_embeds (Tensor): (B, D) text targets (detached here).
            labels (Tensor, optional): (B,) class indices, for
                ``positives='label'``.
            mix (Tensor, optional): (B, B) row-stochastic; image i is the mix
                ``sum_j mix[i, j] * sample j`` (local indices).
            weights (Tensor, optional): (B,) alignment weights in [0, 1] of the
                samples' texts; 0 drops a sample. With ``mix`` the weight of
                image i is ``mix[i] @ weights``.

        Returns:
            Tensor: scalar loss of the mode, multiplied by ``loss_weight``.
        """
        batch = self.local_batch(image_embeds, text_embeds, labels, mix,
                                 weights)
        return self.loss_weight * self.mode_fn(self, batch)

    def local_batch(self, image_embeds, text_embeds, labels, mix,
                    weights) -> AlignBatch:
        """Normalised, detached where it must be, checked; image gradients
        scaled by the world size (see the class docstring)."""
        dtype = torch.promote_types(image_embeds.dtype, torch.float32)
        img = F.normalize(image_embeds.to(dtype), dim=-1)
        txt = F.normalize(text_embeds.detach().to(dtype), dim=-1)
        n_local = img.shape[0]
        w = (img.new_ones(n_local) if weights is None else
             weights.detach().to(dtype).reshape(n_local))
        if mix is not None:
            if mix.shape != (n_local, n_local):
                raise ValueError(f'mix must be ({n_local}, {n_local}), got '
                                 f'{tuple(mix.shape)}')
            mix = mix.detach().to(dtype)
        if labels is not None:
            labels = labels.reshape(-1)
        rank, world = get_dist_info() if self.gather else (0, 1)
        if world > 1:
            img = _ScaleGrad.apply(img, float(world))
        return AlignBatch(img, txt, w, labels, None if mix is None else [mix],
                          [n_local], world, rank)

    def gather_batch(self, batch: AlignBatch) -> AlignBatch:
        """The global batch: every rank's rows, this rank's image rows
        keeping their gradient (one padded all-gather)."""
        if batch.world == 1:
            return batch
        n_local = batch.img.shape[0]
        size = torch.tensor([n_local], device=batch.img.device)
        all_sizes = [torch.zeros_like(size) for _ in range(batch.world)]
        dist.all_gather(all_sizes, size)
        sizes = [int(s) for s in all_sizes]
        dim = batch.img.shape[1]
        packed = [batch.img.detach(), batch.txt, batch.weights[:, None]]
        if batch.mixes is not None:
            packed.append(F.pad(batch.mixes[0], (0, max(sizes) - n_local)))
        parts = _gather_rows(torch.cat(packed, 1), sizes)
        img = torch.cat([batch.img if r == batch.rank else p[:, :dim]
                         for r, p in enumerate(parts)])
        mixes = None if batch.mixes is None else [
            p[:, 2 * dim + 1:2 * dim + 1 + n] for p, n in zip(parts, sizes)]
        labels = batch.labels
        if labels is not None and self.positives == 'label':
            labels = torch.cat(_gather_rows(labels, sizes))
        return AlignBatch(img, torch.cat([p[:, dim:2 * dim] for p in parts]),
                          torch.cat([p[:, 2 * dim] for p in parts]), labels,
                          mixes, sizes, batch.world, batch.rank)

    def logits(self, batch: AlignBatch) -> torch.Tensor:
        """``(N, N)`` image->text logits, ``img @ txt.T / tau``."""
        return self._scale() * batch.img @ batch.txt.T

    def targets(self, batch: AlignBatch
                ) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
        """Row-stochastic image->text targets (None: identity) and row weights.

        ``P[j, k]`` spreads sample j's unit mass uniformly over its valid
        positives k; a mixed image i gets ``sum_j mix[i, j] P[j]``, rows are
        renormalised and rows without any valid positive get weight 0."""
        w, mixes, sizes = batch.weights, batch.mixes, batch.sizes
        if self.positives == 'instance' and mixes is None:
            return None, w
        pos = self._positives(batch)
        if mixes is not None:
            starts = [sum(sizes[:r]) for r in range(len(sizes))]
            pos = torch.cat([m @ pos[s:s + n]
                             for m, s, n in zip(mixes, starts, sizes)])
            w = torch.cat([m @ w[s:s + n]
                           for m, s, n in zip(mixes, starts, sizes)])
        mass = pos.sum(1, keepdim=True)
        keep = (mass > 0) & (w[:, None] > 0)
        pos = torch.where(keep, pos / mass.clamp_min(_EPS), 0)
        return pos, torch.where(keep[:, 0], w, 0)

    def _positives(self, batch: AlignBatch) -> torch.Tensor:
        """Sample j's unit mass spread uniformly over its valid positives."""
        w = batch.weights
        if self.positives == 'instance':
            same = self._eye(len(w), w.device)
        elif self.positives == 'label':
            if batch.labels is None:
                raise InputError("positives='label' needs labels")
            same = batch.labels[:, None] == batch.labels[None, :]
        else:  # identical (normalised) text embeddings
            same = batch.txt @ batch.txt.T > 1 - 1e-6
        pos = (same & (w > 0)[None, :]).to(w.dtype)
        return pos / pos.sum(1, keepdim=True).clamp_min(1)


def image_to_text(loss: ContrastiveAlignLoss, logits: torch.Tensor,
                  targets: Optional[torch.Tensor], batch: AlignBatch,
                  row_w: torch.Tensor) -> torch.Tensor:
    """InfoNCE over texts: queries images of weight > 0, keys valid texts."""
    keys = (batch.weights > 0)[None, :]
    lse = torch.where(keys, logits, loss.masked).logsumexp(1)
    pos = logits.diagonal() if targets is None else (targets * logits).sum(1)
    return _weighted_mean(lse - pos, row_w)


def text_to_image(loss: ContrastiveAlignLoss, logits: torch.Tensor,
                  targets: Optional[torch.Tensor], batch: AlignBatch,
                  row_w: torch.Tensor) -> torch.Tensor:
    """InfoNCE over images: targets^T, row-normalised; keys images of
    weight > 0."""
    lse = torch.where((row_w > 0)[:, None], logits, loss.masked).logsumexp(0)
    if targets is None:
        pos, col_w = logits.diagonal(), batch.weights
    else:
        col = targets.sum(0)
        pos = (targets * logits).sum(0) / col.clamp_min(_EPS)
        col_w = torch.where(col > 0, batch.weights, 0)
    return _weighted_mean(lse - pos, col_w)


@ALIGN_LOSS_MODES.register_module('ctr')
def ctr_mode(loss: ContrastiveAlignLoss, batch: AlignBatch) -> torch.Tensor:
    """One-directional InfoNCE, image -> text (official ``'ctr'``)."""
    batch = loss.gather_batch(batch)
    targets, row_w = loss.targets(batch)
    return image_to_text(loss, loss.logits(batch), targets, batch, row_w)


@ALIGN_LOSS_MODES.register_module('clip')
def clip_mode(loss: ContrastiveAlignLoss, batch: AlignBatch) -> torch.Tensor:
    """Symmetric InfoNCE, ``(i2t + t2i) / 2`` (official ``'clip'``)."""
    batch = loss.gather_batch(batch)
    targets, row_w = loss.targets(batch)
    logits = loss.logits(batch)
    return (image_to_text(loss, logits, targets, batch, row_w) +
            text_to_image(loss, logits, targets, batch, row_w)) / 2


@ALIGN_LOSS_MODES.register_module('cosine')
def cosine_mode(loss: ContrastiveAlignLoss,
                batch: AlignBatch) -> torch.Tensor:
    """``2 - 2 cos(img_i, txt_i)``, no negatives (official ``'byol'``): the
    global weighted mean, the others' value and this rank's gradient."""
    img, txt, w = batch.img, batch.txt, batch.weights
    if batch.mixes is not None:
        mix = batch.mixes[0]
        txt = F.normalize(mix @ (txt * (w > 0)[:, None].to(txt)), dim=-1)
        w = mix @ w
    num = (w * (2 - 2 * (img * txt).sum(1))).sum()
    den = w.sum()
    if batch.world > 1:
        total = torch.stack([num.detach(), den])
        dist.all_reduce(total)
        num, den = num + (total[0] - num.detach()), total[1]
    return num / den.clamp_min(_EPS)


@torch.no_grad()
def retrieval_accuracy(image_embeds: torch.Tensor,
                       text_embeds: torch.Tensor,
                       labels: Optional[torch.Tensor] = None,
                       positives: str = 'instance') -> torch.Tensor:
    """In-batch image->text top-1 accuracy (local batch), for logging.

    A hit is a nearest text among the image's positives, as the loss defines
    them: its own text (``'instance'``), any text of its class (``'label'``:
    class-level descriptions repeat per class, so "its own" text is one of
    several identical-meaning ones and own-text top-1 is noise), or any text
    identical to its own (``'text'``).
    """
    sims = F.normalize(image_embeds.float(), dim=-1) @ F.normalize(
        text_embeds.float(), dim=-1).T
    nearest = sims.argmax(1)
    own = torch.arange(sims.shape[0], device=sims.device)
    if positives == 'label' and labels is not None:
        labels = labels.to(sims.device).view(-1)
        hit = labels[nearest] == labels
    elif positives == 'text':
        txt = F.normalize(text_embeds.float(), dim=-1)
        # identical, as ContrastiveAlignLoss._positives compares texts
        hit = (txt[nearest] * txt).sum(1) > 1 - 1e-6
    else:
        hit = nearest == own
    return hit.float().mean()
