"""Text queries through a trained alignment neck (``tools/query.py``).

A GPT4Image checkpoint that still holds its ``align_neck`` maps an image into
the text encoder's space; the same frozen encoder that made the training
store maps any text there too. So, without the classifier head:

* zero-shot classification: the image's cosine to each class's text (the
  mean of its descriptions' unit vectors);
* text search over a folder: the images closest to a query.

Image vectors of a folder are cached per checkpoint, keyed by each file's
path, size and mtime: a second query embeds only new or changed images.
Follows mmpretrain's inferencer conventions (``ImageClassificationInferencer``:
``__call__`` returns ``pred_scores``/``pred_label``/``pred_score``/
``pred_class`` dicts; ``ImageRetrievalInferencer``: a gallery of images).
"""
from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.dataset import Compose, default_collate
from mmpretrain.apis.base import BaseInferencer

from gpt4image_mm.engine.safe_loading import safe_torch_load
from gpt4image_mm.utils import image_files
from gpt4image_mm.utils.config import load_config
from gpt4image_mm.utils.errors import ToolError
from gpt4image_mm.utils.files import atomic_write_bytes

logger = logging.getLogger(__name__)
CACHE_VERSION = 1


def list_images(folder: str) -> List[str]:
    """Image files under ``folder`` (the project's one walk: links followed
    without loops, never outside ``folder``), as sorted relative paths."""
    try:
        paths = image_files.list_images(folder)
    except ValueError:
        raise ToolError(f'{folder}: not a directory of images') from None
    if not paths:
        raise ToolError(f'{folder}: no images '
                        f'({", ".join(image_files.IMAGE_EXTENSIONS)})')
    return sorted(os.path.relpath(p, folder).replace(os.sep, '/')
                  for p in paths)


def file_identity(path: str) -> Dict[str, Any]:
    st = os.stat(path)
    return {'path': os.path.realpath(path), 'size': st.st_size,
            'mtime_ns': st.st_mtime_ns}


def store_encoder(cfg: Config) -> Optional[str]:
    """The text encoder named by the manifest of the config's training
    store (``DescriptionDataset(store=...)``), if any."""
    from gpt4image_mm.datasets.store import read_manifest
    ds = (cfg.get('train_dataloader') or {}).get('dataset') or {}
    while isinstance(ds, dict):
        if ds.get('store'):
            return read_manifest(ds['store'])['encoder']
        ds = ds.get('dataset')
    return None


def load_aligned_model(config: Union[str, Config], checkpoint: str,
                       device: str = 'cpu') -> torch.nn.Module:
    """The config's model with the checkpoint's weights, neck included.

    Loaded with ``weights_only=True`` (an untrusted file cannot run code);
    a checkpoint without ``align_neck.*`` (stripped for deployment) or with
    missing weights is refused, naming the file.
    """
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    cfg = config if isinstance(config, Config) else load_config(config)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    model_cfg = copy.deepcopy(cfg.model)
    # mmpretrain configs give the input normalisation at the top level; the
    # Runner (and mmpretrain.apis.get_model) moves it into the model
    model_cfg.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    model = MODELS.build(model_cfg)
    if not hasattr(model, 'align_neck'):
        raise ToolError(f'{checkpoint}: the config builds a '
                        f'{type(model).__name__}, not a TextAlignedClassifier '
                        'with an align_neck; use the GPT4Image training config')
    ckpt = safe_torch_load(checkpoint, map_location='cpu')
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ToolError(f'{checkpoint}: not a checkpoint (no state_dict)')
    if not any(k.startswith('align_neck.') for k in state):
        raise ToolError(f'{checkpoint}: holds no align_neck weights (stripped '
                        'by strip_align.py?); query the unstripped checkpoint')
    missing, _ = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(('teacher.',
                                                       'align_loss.'))]
    if missing:
        raise ToolError(f'{checkpoint}: lacks {len(missing)} weights of the '
                        f'model, e.g. {missing[0]!r}; wrong config?')
    model._config = cfg
    meta = ckpt.get('meta') or {}
    model._dataset_meta = meta.get('dataset_meta') or {}
    return model.to(device).eval()


class TextQueryInferencer(BaseInferencer):
    """Images and texts in one space, through a checkpoint's alignment neck.

    Args:
        model: the GPT4Image training config (path or Config).
        pretrained: the checkpoint (with ``align_neck``).
        device: ``cpu``, ``cuda``, ... (default: cuda if available).
        text_encoder: the encoder that made the training store (default:
            read from that store's manifest).
        classes: class names (default: the checkpoint's dataset meta).

    ``inferencer(images, texts={'cat': ['a cat', ...], ...})`` classifies
    images by text; :meth:`search` ranks a folder by a query.
    """

    postprocess_kwargs = {'texts'}

    def __init__(self, model: Union[str, Config], pretrained: str,
                 device: Optional[str] = None,
                 text_encoder: Optional[str] = None,
                 classes: Optional[Sequence[str]] = None,
                 cache_dir: Optional[str] = None) -> None:
        device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
        net = load_aligned_model(model, pretrained, device)
        super().__init__(model=net, pretrained=False, device=device)
        self.checkpoint = pretrained
        self.classes = list(classes) if classes else \
            self.model._dataset_meta.get('classes')
        spec = text_encoder or store_encoder(self.config)
        if not spec:
            raise ToolError('no text encoder: the config trains from no store '
                            'whose manifest names one; pass --encoder')
        from gpt4image_mm.embedding.encoders import build_text_encoder
        self.text_encoder = build_text_encoder(spec, device=device)
        dim = self.model.align_neck.out_channels
        if self.text_encoder.dim != dim:
            raise ToolError(f'text encoder {spec} makes {self.text_encoder.dim}'
                            f'-d vectors, the neck {dim}-d: use the encoder '
                            'that made the training store')
        self.cache_dir = cache_dir

    def _init_pipeline(self, cfg: Config) -> Callable:
        from mmpretrain.datasets import remove_transform
        from mmpretrain.registry import TRANSFORMS
        steps = remove_transform(cfg.test_dataloader.dataset.pipeline,
                                 'LoadImageFromFile')
        return Compose([TRANSFORMS.build(t) for t in steps])

    def preprocess(self, inputs: List[Any], batch_size: int = 1):
        def load(input_: Any) -> dict:
            img = self.load_image(input_)
            return dict(img=img, img_shape=img.shape[:2],
                        ori_shape=img.shape[:2])
        pipeline = Compose([load, self.pipeline])
        yield from map(default_collate,
                       self._get_chunk_data(map(pipeline, inputs), batch_size))

    def load_image(self, source: Any) -> np.ndarray:
        """An image path (or array, as is) as the model's data expects it:
        ``H x W`` for a one-channel model (Fashion-MNIST), else ``H x W x 3``
        BGR like mmcv's ``imread``; decoded by the project's bomb-safe
        opener, an unreadable file is a :class:`ImageError` naming it."""
        if not isinstance(source, str):
            return source
        from gpt4image_mm.captioning.images import open_rgb
        img = open_rgb(source)
        if self._channels() == 1:
            return np.asarray(img.convert('L'))
        return np.ascontiguousarray(np.asarray(img)[:, :, ::-1])

    def _channels(self) -> int:
        mean = getattr(self.model.data_preprocessor, 'mean', None)
        return int(mean.numel()) if mean is not None else 3

    @torch.no_grad()
    def forward(self, data: dict, **kwargs: Any) -> List[torch.Tensor]:
        """Unit vectors of a batch of images in the text space."""
        data = self.model.data_preprocessor(data, False)
        feats = self.model.extract_feat(data['inputs'])
        vec = self.model.align_neck(self.model.aligned_feature(feats))
        return list(F.normalize(vec.float(), dim=-1).cpu())

    def visualize(self, *args: Any, **kwargs: Any) -> None:
        return None

    def postprocess(self, preds: List[torch.Tensor], visualization: Any,
                    return_datasamples: bool = False,
                    texts: Optional[Dict[str, Sequence[str]]] = None
                    ) -> List[dict]:
        images = torch.stack(preds) if preds else torch.zeros(0)
        if texts is None:
            return [{'embedding': v.numpy()} for v in images]
        return self.classify_embeddings(images, texts)

    def embed_images(self, inputs: Sequence[Any], batch_size: int = 16
                     ) -> torch.Tensor:
        """``N x D`` unit vectors of images (paths or arrays)."""
        out: List[torch.Tensor] = []
        for data in self.preprocess(list(inputs), batch_size):
            out.extend(self.forward(data))
        return torch.stack(out) if out else torch.zeros(
            0, self.text_encoder.dim)

    def embed_class_texts(self, texts: Dict[str, Sequence[str]]
                          ) -> torch.Tensor:
        """One unit vector per class: the mean of its texts' unit vectors
        (several descriptions per class averaged, as a class prototype)."""
        rows = []
        for name, group in texts.items():
            if not group:
                raise ToolError(f'class {name!r} has no text')
            rows.append(self.text_encoder.encode(list(group)).cpu().mean(0))
        return F.normalize(torch.stack(rows), dim=-1)

    def classify_embeddings(self, images: torch.Tensor,
                            texts: Dict[str, Sequence[str]]) -> List[dict]:
        names = list(texts)
        scores = images @ self.embed_class_texts(texts).T
        out = []
        for row in scores:
            label = int(row.argmax())
            out.append({'pred_scores': row.numpy(), 'pred_label': label,
                        'pred_score': float(row[label]),
                        'pred_class': names[label]})
        return out

    @torch.no_grad()
    def split_features(self, split: str = 'test', batch_size: int = 64
                       ) -> Tuple[torch.Tensor, List[int], List[str]]:
        """Unit vectors, labels and class names of a split of the config's
        own dataset (array datasets too: Fashion-MNIST, CIFAR), through its
        test pipeline."""
        from mmengine.runner import Runner
        loader_cfg = copy.deepcopy(self.config.get(f'{split}_dataloader'))
        if not loader_cfg:
            raise ToolError(f'the config has no {split}_dataloader')
        loader_cfg.update(batch_size=batch_size, num_workers=0,
                          persistent_workers=False)
        loader = Runner.build_dataloader(loader_cfg)
        feats: List[torch.Tensor] = []
        labels: List[int] = []
        for data in loader:
            feats.extend(self.forward(data))
            labels.extend(int(s.gt_label[0]) for s in data['data_samples'])
        names = list(loader.dataset.metainfo.get('classes') or [])
        return torch.stack(feats), labels, names

    # ------------------------------------------------------------ folders
    def _cache_file(self, folder: str) -> str:
        from gpt4image_mm.utils.assets import cache_root
        ident = json.dumps([CACHE_VERSION, file_identity(self.checkpoint),
                            self.config.pretty_text,
                            os.path.realpath(folder)], sort_keys=True)
        digest = hashlib.sha256(ident.encode('utf-8')).hexdigest()[:24]
        root = self.cache_dir or os.path.join(cache_root(), 'query')
        return os.path.join(root, f'{digest}.npz')

    def folder_features(self, folder: str, batch_size: int = 16
                        ) -> Tuple[List[str], torch.Tensor, Dict[str, Any]]:
        """Relative paths, unit vectors and ``{'cached', 'embedded',
        'skipped'}`` of a folder's images; unchanged files come from the
        cache, unreadable ones are skipped (named in a warning, never cached,
        so a fixed file is embedded next time)."""
        paths = list_images(folder)
        stats = [os.stat(os.path.join(folder, p)) for p in paths]
        ident = [f'{p}\0{s.st_size}\0{s.st_mtime_ns}'
                 for p, s in zip(paths, stats)]
        cache_file = self._cache_file(folder)
        old = _read_cache(cache_file)
        known = {k: i for i, k in enumerate(old[0])} if old else {}
        feats = torch.zeros(len(paths), self.text_encoder.dim)
        for i, k in enumerate(ident):
            if k in known:
                feats[i] = torch.from_numpy(old[1][known[k]])
        todo = [i for i, k in enumerate(ident) if k not in known]
        images, skipped = self._decode(folder, [paths[i] for i in todo])
        done = [i for i in todo if paths[i] not in skipped]
        if done:
            feats[done] = self.embed_images(images, batch_size)
        keep = [i for i in range(len(paths)) if paths[i] not in skipped]
        if done or len(known) != len(keep):
            _write_cache(cache_file, [ident[i] for i in keep],
                         feats[keep].numpy())
        return [paths[i] for i in keep], feats[keep], {
            'cached': len(keep) - len(done), 'embedded': len(done),
            'skipped': skipped}

    def _decode(self, folder: str, paths: List[str]
                ) -> Tuple[List[np.ndarray], Dict[str, str]]:
        """The readable images of ``folder`` (each decoded once) and
        ``{path: reason}`` of the others, each named in a warning."""
        from gpt4image_mm.captioning.images import ImageError
        arrays, skipped = [], {}
        for rel in paths:
            try:
                arrays.append(self.load_image(os.path.join(folder, rel)))
            except ImageError as e:
                skipped[rel] = str(e).replace(folder.rstrip('/') + '/', '')
                logger.warning('skipped: %s', skipped[rel])
        return arrays, skipped

    def search(self, query: str, folder: str, topk: int = 8,
               batch_size: int = 16) -> List[dict]:
        """The ``topk`` images of ``folder`` closest to ``query``."""
        paths, feats, _ = self.folder_features(folder, batch_size)
        text = self.text_encoder.encode([query]).cpu()[0]
        scores = feats @ text
        order = torch.argsort(scores, descending=True)[:topk]
        return [{'path': paths[i], 'score': float(scores[i])} for i in order]


def _read_cache(path: str) -> Optional[Tuple[List[str], np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return [str(k) for k in z['ident']], z['feats'].astype(np.float32)
    except (OSError, ValueError, KeyError):
        return None  # absent or unreadable: recompute, then rewrite


def _write_cache(path: str, ident: List[str], feats: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, ident=np.array(ident), feats=feats.astype(np.float32))
    atomic_write_bytes(path, buf.getvalue())


def contact_sheet(folder: str, hits: List[dict], out: str,
                  thumb: int = 128, cols: int = 4) -> str:
    """A PNG grid of the hits, each captioned with rank and score."""
    from PIL import Image, ImageDraw
    rows = -(-len(hits) // cols)
    caption = 16  # pixels of text under each thumbnail
    sheet = Image.new('RGB', (cols * thumb, rows * (thumb + caption)),
                      'white')
    draw = ImageDraw.Draw(sheet)
    for n, hit in enumerate(hits):
        with Image.open(os.path.join(folder, hit['path'])) as img:
            img = img.convert('RGB')
            img.thumbnail((thumb, thumb))
        x, y = (n % cols) * thumb, (n // cols) * (thumb + caption)
        sheet.paste(img, (x + (thumb - img.width) // 2,
                          y + (thumb - img.height) // 2))
        draw.text((x + 2, y + thumb + 2), f'{n + 1}. {hit["score"]:.3f}',
                  fill='black')
    buf = io.BytesIO()
    sheet.save(buf, format='PNG')
    atomic_write_bytes(out, buf.getvalue())
    return out
