"""Image-text alignment loss of GPT4Image (arXiv 2306.00693).

The projected image feature of sample i is pulled towards the (frozen, offline)
text embedding of its description.  One module covers the official variants:

* ``'clip'``: symmetric InfoNCE, ``(i2t + t2i) / 2``, logits ``img @ txt.T / tau``;
* ``'ctr'``: image->text InfoNCE only;
* ``'cosine'``: ``2 - 2 cos(img_i, txt_i)``, no negatives (``'byol'`` upstream).

Targets are soft in general: a row-stochastic matrix ``T`` over the texts of the
global batch, built from the positives (the own text, every sample of the same
class, or every sample with the same text) and an optional Mixup/CutMix matrix.
Samples of weight 0 (no description) take no part at all: neither as query,
positive nor negative.
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.registry import MODELS

_EPS = 1e-12


def _world_and_rank() -> Tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


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


@MODELS.register_module()
class ContrastiveAlignLoss(nn.Module):
    """Contrastive alignment of projected image features with text embeddings.

    Args:
        temperature (float): tau; the initial value when learnable.
        loss_weight (float): multiplies the returned loss.
        mode (str): ``'clip'``, ``'ctr'`` or ``'cosine'``.
        learnable_temperature (bool): learn ``log(1/tau)`` (parameter
            ``log_logit_scale``); ``1/tau`` is clamped to ``max_logit_scale``.
        max_logit_scale (float): upper bound of a learnable ``1/tau``.
        positives (str): which texts are positives of image i: ``'instance'``
            (its own), ``'label'`` (all of its class, needs ``labels``) or
            ``'text'`` (all with an identical text embedding). Ignored by
            ``'cosine'``, whose target is the (mixed) own text.
        gather (bool): under torch.distributed, use the whole global batch as
            negatives (every rank computes the full global loss).

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

    MODES = ('clip', 'ctr', 'cosine')
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
        if mode not in self.MODES:
            raise ValueError(f'mode must be one of {self.MODES}, got {mode!r}')
        if positives not in self.POSITIVES:
            raise ValueError(
                f'positives must be one of {self.POSITIVES}, got {positives!r}')
        if temperature <= 0 or max_logit_scale <= 0:
            raise ValueError('temperature and max_logit_scale must be > 0')
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
        self._masked = -(bound + 1e4)
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
        """
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
            Tensor: scalar loss, multiplied by ``loss_weight``.
        """
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
        need_labels = self.mode != 'cosine' and self.positives == 'label'
        if need_labels:
            if labels is None:
                raise ValueError("positives='label' needs labels")
            labels = labels.reshape(-1)

        world, rank = _world_and_rank() if self.gather else (1, 0)
        if world > 1:
            img = _ScaleGrad.apply(img, float(world))  # see class docstring
        if self.mode == 'cosine':
            return self.loss_weight * self._cosine(img, txt, w, mix, world)

        sizes, mixes = [n_local], None if mix is None else [mix]
        if world > 1:
            size = torch.tensor([n_local], device=img.device)
            all_sizes = [torch.zeros_like(size) for _ in range(world)]
            dist.all_gather(all_sizes, size)
            sizes = [int(s) for s in all_sizes]
            dim = img.shape[1]
            packed = [img.detach(), txt, w[:, None]]
            if mix is not None:
                packed.append(F.pad(mix, (0, max(sizes) - n_local)))
            parts = _gather_rows(torch.cat(packed, 1), sizes)
            img = torch.cat([img if r == rank else p[:, :dim]
                             for r, p in enumerate(parts)])
            txt = torch.cat([p[:, dim:2 * dim] for p in parts])
            w = torch.cat([p[:, 2 * dim] for p in parts])
            if mix is not None:
                mixes = [p[:, 2 * dim + 1:2 * dim + 1 + n]
                         for p, n in zip(parts, sizes)]
            if need_labels:
                labels = torch.cat(_gather_rows(labels, sizes))

        targets, row_w = self._targets(txt, w, labels, mixes, sizes)
        logits = self._scale() * img @ txt.T
        # image -> text: queries are images of weight > 0, keys valid texts.
        lse = torch.where((w > 0)[None, :], logits, self._masked).logsumexp(1)
        if targets is None:
            pos = logits.diagonal()
        else:
            pos = (targets * logits).sum(1)
        loss = _weighted_mean(lse - pos, row_w)
        if self.mode == 'clip':
            # text -> image: targets^T, row-normalised; keys images of weight > 0.
            lse = torch.where((row_w > 0)[:, None], logits,
                              self._masked).logsumexp(0)
            if targets is None:
                pos, col_w = logits.diagonal(), w
            else:
                col = targets.sum(0)
                pos = (targets * logits).sum(0) / col.clamp_min(_EPS)
                col_w = torch.where(col > 0, w, 0)
            loss = (loss + _weighted_mean(lse - pos, col_w)) / 2
        return self.loss_weight * loss

    def _targets(self, txt, w, labels, mixes, sizes):
        """Row-stochastic image->text targets (None: identity) and row weights.

        ``P[j, k]`` spreads sample j's unit mass uniformly over its valid
        positives k; a mixed image i gets ``sum_j mix[i, j] P[j]``, rows are
        renormalised and rows without any valid positive get weight 0."""
        if self.positives == 'instance' and mixes is None:
            return None, w
        valid = w > 0
        if self.positives == 'instance':
            same = self._eye(len(w), w.device)
        elif self.positives == 'label':
            same = labels[:, None] == labels[None, :]
        else:  # identical (normalised) text embeddings
            same = txt @ txt.T > 1 - 1e-6
        pos = (same & valid[None, :]).to(w.dtype)
        pos = pos / pos.sum(1, keepdim=True).clamp_min(1)
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

    def _cosine(self, img, txt, w, mix, world):
        if mix is not None:
            txt = F.normalize(mix @ (txt * (w > 0)[:, None].to(txt)), dim=-1)
            w = mix @ w
        num = (w * (2 - 2 * (img * txt).sum(1))).sum()
        den = w.sum()
        if world > 1:  # global mean; value of the others, gradient of ours
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
        hit = (txt[nearest] * txt).sum(1) > 1 - 1e-6  # as in _targets
    else:
        hit = nearest == own
    return hit.float().mean()
