"""Frozen text encoders: the one home of "description -> unit vector".

Both :func:`gpt4image_mm.embedding.embed.embed_descriptions` (offline store)
and :class:`gpt4image_mm.models.TextEmbeddingTeacher` (online) encode through
these classes, so a vector computed on the fly equals the stored one.

Every encoder class registers itself in
:data:`gpt4image_mm.registry.TEXT_ENCODERS` under its ``kind`` and declares
its own ``options`` and which bare specs it ``accepts``;
:func:`build_text_encoder` is a registry look-up. Specs:

* ``<kind>:<rest>`` picks a registered encoder by name (``hf:DIR`` and
  ``clip:DIR`` force the choice below); ``package.module.Class:<rest>``
  imports a plugin's class (docs/extending.md);
* a local directory (never touches the network):
  - a CLIP checkpoint (``model_type`` ``clip`` / ``clip_text_model``, or a
    sentence-transformers ``CLIPModel`` module): the projected pooled text
    output, as the official GPT4Image code uses, truncated to 77 tokens;
  - any other transformers encoder, with mean / cls / max / last-token
    pooling; a sentence-transformers layout (``modules.json``,
    ``1_Pooling/config.json``, ``sentence_bert_config.json``, ``2_Dense``) is
    followed so vectors equal ``SentenceTransformer.encode``'s;
* ``openai:<model>`` (or any name with ``api_base``): an OpenAI-compatible
  embeddings endpoint (OpenAI, vLLM, TEI, ...) through the openai SDK;
* ``open_clip:<arch>[/<pretrained tag or file>]``: an open_clip text tower
  (optional dependency);
* a model-hub id: resolved through the local hub cache (honours
  ``HF_HUB_OFFLINE``), then loaded as a local directory.
"""
from __future__ import annotations

import abc
import hashlib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from gpt4image_mm.registry import TEXT_ENCODERS
from gpt4image_mm.utils.devices import resolve_device, resolve_dtype
from gpt4image_mm.utils.errors import EXIT_FIX_INPUT, EXIT_SERVER, InputError, ToolError
from gpt4image_mm.utils.openai_client import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    PREFLIGHT_RETRIES,
    api_error,
    check_model,
    make_client,
)

POOLING_MODES = ('mean', 'cls', 'max', 'last', 'mean_sqrt_len',
                 'weightedmean')
# sentence-transformers' pooling config keys, in its concatenation order.
_ST_POOLING_KEYS = (('pooling_mode_cls_token', 'cls'),
                    ('pooling_mode_max_tokens', 'max'),
                    ('pooling_mode_mean_tokens', 'mean'),
                    ('pooling_mode_mean_sqrt_len_tokens', 'mean_sqrt_len'),
                    ('pooling_mode_weightedmean_tokens', 'weightedmean'),
                    ('pooling_mode_lasttoken', 'last'))
_ST_MODE_NAMES = {'cls': 'cls', 'max': 'max', 'mean': 'mean',
                  'mean_sqrt_len_tokens': 'mean_sqrt_len',
                  'weightedmean': 'weightedmean', 'lasttoken': 'last'}
_SNAPSHOT = re.compile(r'[/\\]snapshots[/\\]([0-9a-f]{40})(?:[/\\]|$)')


class EncoderError(InputError):
    """An encoder spec or model directory that cannot be used (says why)."""


def dir_fingerprint(path: str) -> str:
    """A cheap content id of a model directory, for the store manifest.

    A hub snapshot is named by its commit; otherwise hash every file's
    name and size, small files whole and big ones (weights) by their first
    and last MiB -- seconds even for multi-GB checkpoints.
    """
    m = _SNAPSHOT.search(os.path.abspath(path) + os.sep)
    if m:
        return m.group(1)
    h = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            fpath = os.path.join(root, name)
            rel = os.path.relpath(fpath, path).replace(os.sep, '/')
            size = os.path.getsize(fpath)
            h.update(f'{rel}\0{size}\0'.encode())
            with open(fpath, 'rb') as f:
                if size <= 4 << 20:
                    h.update(f.read())
                else:
                    h.update(f.read(1 << 20))
                    f.seek(size - (1 << 20))
                    h.update(f.read())
    return 'sha256:' + h.hexdigest()[:32]


def _read_json(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise EncoderError(f'{path}: unreadable ({e})') from None


class TextEncoder(abc.ABC):
    """Base class: ``encode(texts)`` -> float32, L2-normalised ``B x dim``.

    Attributes: ``name`` and ``revision`` (recorded in store manifests),
    ``dim``, ``max_length`` (tokens, None when unknown), ``truncated`` (texts
    cut to ``max_length`` so far; None when the backend cannot tell).
    """

    kind = 'base'
    # keyword options of build_text_encoder this class takes (others are
    # not passed to it) and, for specs without a registered prefix, the
    # order in which classes are asked whether they accept them
    options: Tuple[str, ...] = ()
    priority = 0
    name: str = ''
    revision: Optional[str] = None
    dim: int = 0
    max_length: Optional[int] = None
    truncated: Optional[int] = 0

    @classmethod
    def accepts(cls, spec: str, options: Dict[str, Any]) -> bool:
        """Whether a spec without a registered prefix is this encoder's."""
        return False

    @classmethod
    def from_spec(cls, spec: str, **options: Any) -> TextEncoder:
        """Build from the spec (its prefix removed) and declared options."""
        return cls(spec, **options)

    def settings(self) -> Dict[str, Any]:
        """What besides the weights changes the vectors (manifest identity)."""
        return dict(kind=self.kind, max_length=self.max_length)

    def modules(self) -> List[torch.nn.Module]:
        """The torch modules holding weights (for device moves; frozen)."""
        return []

    @property
    def device(self) -> torch.device:
        for mod in self.modules():
            for p in mod.parameters():
                return p.device
        return torch.device('cpu')

    def prepare(self, texts: Sequence[str]) -> Any:
        """Tokenise (CPU work, may run in a helper thread)."""
        return list(texts)

    def lengths(self, texts: Sequence[str]) -> np.ndarray:
        """Cost of each text, for length-sorted batching (default: chars)."""
        return np.fromiter((len(t) for t in texts), np.int64, len(texts))

    @abc.abstractmethod
    def run(self, prepared: Any) -> torch.Tensor:
        """Encode prepared input: unit vectors, float32, on :attr:`device`."""
        ...

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit vectors of ``texts`` (float32, on :attr:`device`), no grad."""
        if isinstance(texts, str):
            raise TypeError('encode() takes a list of texts, not one string')
        if not len(texts):
            return torch.zeros(0, self.dim, device=self.device)
        with torch.no_grad():
            return self.run(self.prepare(texts))

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(name={self.name!r}, dim={self.dim}, '
                f'max_length={self.max_length})')


# --------------------------------------------------------------- transformers
def _count_truncated(batch: Any, tokenizer: Any, texts: Sequence[str],
                     max_length: int) -> int:
    encodings = getattr(batch, 'encodings', None)
    if encodings:  # fast tokenizers keep what truncation cut off
        return sum(1 for e in encodings if e.overflowing)
    lengths = tokenizer(list(texts), truncation=False)['input_ids']
    return sum(1 for ids in lengths if len(ids) > max_length)


class _TokenizingEncoder(TextEncoder):
    """Shared tokenisation of the transformers-based encoders."""

    tokenizer: Any
    lowercase = False

    def prepare(self, texts: Sequence[str]) -> Any:
        texts = [t.lower() for t in texts] if self.lowercase else list(texts)
        batch = self.tokenizer(texts, padding=True, truncation=True,
                               max_length=self.max_length,
                               return_tensors='pt')
        n_cut = _count_truncated(batch, self.tokenizer, texts,
                                 self.max_length)
        return dict(batch), n_cut

    def lengths(self, texts: Sequence[str], chunk: int = 8192) -> np.ndarray:
        """Token counts after truncation: sorting batches by them instead of
        by characters (as sentence-transformers does) leaves far less
        padding, which is compute the model would spend for nothing."""
        out = np.empty(len(texts), np.int64)
        for a in range(0, len(texts), chunk):
            part = list(texts[a:a + chunk])
            if self.lowercase:
                part = [t.lower() for t in part]
            ids = self.tokenizer(part, truncation=True,
                                 max_length=self.max_length)['input_ids']
            out[a:a + len(part)] = [len(x) for x in ids]
        return out

    def _to_device(self, batch: Dict[str, torch.Tensor]
                   ) -> Dict[str, torch.Tensor]:
        dev = self.device
        return {k: v.to(dev, non_blocking=True) for k, v in batch.items()}


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool token states ``B x T x H`` with ``mask`` ``B x T`` (1 = token).

    Mirrors sentence-transformers' definitions (fp32 accumulation) so its
    models reproduce its vectors; left or right padding both work.
    """
    hidden = hidden.float()
    maskf = mask.unsqueeze(-1).to(hidden.dtype)
    if mode in ('mean', 'mean_sqrt_len'):
        denom = maskf.sum(1).clamp(min=1e-9)
        if mode == 'mean_sqrt_len':
            denom = denom.sqrt()
        return (hidden * maskf).sum(1) / denom
    if mode == 'cls':  # first real token (left padding safe)
        idx = mask.to(torch.int).argmax(1)
        return hidden[torch.arange(len(hidden), device=hidden.device), idx]
    if mode == 'last':  # last real token (right or left padding)
        seq = mask.shape[1]
        idx = seq - 1 - mask.flip(1).to(torch.int).argmax(1)
        return hidden[torch.arange(len(hidden), device=hidden.device), idx]
    if mode == 'max':
        return hidden.masked_fill(maskf == 0, float('-inf')).max(1).values
    if mode == 'weightedmean':
        pad = mask.to(torch.int).argmax(1).view(-1, 1, 1)
        weights = torch.arange(1, hidden.shape[1] + 1, device=hidden.device,
                               dtype=hidden.dtype).view(1, -1, 1) - pad
        w = maskf * weights
        return (hidden * w).sum(1) / w.sum(1).clamp(min=1e-9)
    raise EncoderError(f'unknown pooling {mode!r}; one of {POOLING_MODES}')


class _Dense(torch.nn.Module):
    """sentence-transformers' Dense module (linear + activation)."""

    _ACTS = {'Identity': torch.nn.Identity, 'Tanh': torch.nn.Tanh,
             'ReLU': torch.nn.ReLU, 'GELU': torch.nn.GELU}

    def __init__(self, path: str):
        super().__init__()
        cfg = _read_json(os.path.join(path, 'config.json'))
        act = str(cfg.get('activation_function', 'Identity')).rsplit('.')[-1]
        if act not in self._ACTS:
            raise EncoderError(f'{path}: unsupported Dense activation {act!r}')
        self.linear = torch.nn.Linear(cfg['in_features'], cfg['out_features'],
                                      bias=cfg.get('bias', True))
        self.act = self._ACTS[act]()
        st_file = os.path.join(path, 'model.safetensors')
        if os.path.isfile(st_file):
            from safetensors.torch import load_file
            state = load_file(st_file)
        else:
            state = torch.load(os.path.join(path, 'pytorch_model.bin'),
                               map_location='cpu', weights_only=True)
        self.load_state_dict(
            {k: v for k, v in state.items() if k.startswith('linear.')})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.linear(x.to(self.linear.weight.dtype))).float()


def _is_decoder_only(config: Any) -> bool:
    archs = getattr(config, 'architectures', None) or []
    return any(a.endswith('ForCausalLM') for a in archs) or bool(
        getattr(config, 'is_decoder', False))


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    try:
        hf_logging.disable_progress_bar()
    except AttributeError:  # pragma: no cover - older transformers
        pass


@TEXT_ENCODERS.register_module('hf')
class HFEncoder(_TokenizingEncoder):
    """A transformers encoder with token pooling (sentence-transformers-exact
    when the directory has its layout). The fallback for bare specs: any
    model directory or hub id no other encoder claims."""

    kind = 'hf'
    options = ('device', 'dtype', 'pooling', 'max_length')
    priority = -100

    @classmethod
    def accepts(cls, spec: str, options: Dict[str, Any]) -> bool:
        return True

    @classmethod
    def from_spec(cls, spec: str, **options: Any) -> HFEncoder:
        path, revision = _local_model_dir(spec)
        st = read_st_layout(path)
        if not os.path.isfile(os.path.join(st['transformer'] if st else path,
                                           'config.json')):
            raise EncoderError(f'{path}: no config.json; not a transformers '
                               'model directory')
        return cls(path, name=spec if revision else path, revision=revision,
                   **options)

    def __init__(self, path: str, device: str = 'cpu', dtype: str = 'auto',
                 pooling: Optional[str] = None,
                 max_length: Optional[int] = None,
                 name: Optional[str] = None, revision: Optional[str] = None):
        from transformers import AutoConfig, AutoModel, AutoTokenizer
        _quiet_transformers()
        path = os.path.abspath(path)
        st = read_st_layout(path)
        model_dir = st['transformer'] if st else path
        self.name = name or path
        self.revision = revision or dir_fingerprint(path)
        config = AutoConfig.from_pretrained(model_dir)
        torch_dtype = resolve_dtype(dtype, device)
        model = AutoModel.from_pretrained(model_dir, dtype=torch_dtype)
        if getattr(config, 'is_encoder_decoder', False):
            model = model.get_encoder()  # e.g. sentence-T5
        self.model = model.to(device).eval().requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        decoder = _is_decoder_only(config)
        if self.tokenizer.pad_token is None:  # decoder LLMs ship none
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.lowercase = bool(st and st['do_lower_case'])
        if pooling:
            modes = tuple(pooling.split('+'))
        elif st and st['pooling']:
            modes = st['pooling']
        else:
            modes = ('last',) if decoder else ('mean',)
        for m in modes:
            if m not in POOLING_MODES:
                raise EncoderError(f'unknown pooling {m!r}; one of '
                                   f'{POOLING_MODES}')
        self.pooling = modes
        limit = getattr(config, 'max_position_embeddings', None) or 10**9
        tok_max = getattr(self.tokenizer, 'model_max_length', None) or 10**9
        if max_length is None:
            max_length = (st and st['max_seq_length']) or min(tok_max, limit)
        self.max_length = int(min(max_length, limit))
        if self.max_length >= 10**9:
            raise EncoderError(f'{path}: no maximum sequence length known; '
                               'pass max_length')
        self.dense = torch.nn.ModuleList(
            _Dense(p) for p in (st['dense'] if st else []))
        self.dense.to(device).eval().requires_grad_(False)
        hidden = config.hidden_size if hasattr(config, 'hidden_size') else \
            config.get_text_config().hidden_size
        self.dim = (self.dense[-1].linear.out_features if len(self.dense)
                    else hidden * len(modes))
        self.prompt = st['prompt'] if st else ''

    def settings(self) -> Dict[str, Any]:
        return dict(kind=self.kind, pooling='+'.join(self.pooling),
                    max_length=self.max_length, prompt=self.prompt or None,
                    dense=len(self.dense))

    def modules(self) -> List[torch.nn.Module]:
        return [self.model, self.dense]

    def prepare(self, texts: Sequence[str]) -> Any:
        if self.prompt:
            texts = [self.prompt + t for t in texts]
        return super().prepare(texts)

    def lengths(self, texts: Sequence[str], chunk: int = 8192) -> np.ndarray:
        if self.prompt:
            texts = [self.prompt + t for t in texts]
        return super().lengths(texts, chunk)

    def run(self, prepared: Any) -> torch.Tensor:
        batch, n_cut = prepared
        batch = self._to_device(batch)
        out = self.model(**batch)
        hidden = out.last_hidden_state if hasattr(
            out, 'last_hidden_state') else out[0]
        mask = batch['attention_mask']
        vec = torch.cat([pool(hidden, mask, m) for m in self.pooling], -1)
        for layer in self.dense:
            vec = layer(vec)
        self.truncated += n_cut
        return F.normalize(vec.float(), dim=-1)


def read_st_layout(path: str) -> Optional[Dict[str, Any]]:
    """The parts of a sentence-transformers directory that shape vectors.

    Returns None when ``path`` has no ``modules.json``. Unsupported module
    types raise, naming them, rather than silently giving other vectors.
    """
    mfile = os.path.join(path, 'modules.json')
    if not os.path.isfile(mfile):
        return None
    out: Dict[str, Any] = dict(transformer=None, pooling=(), dense=[],
                               max_seq_length=None, do_lower_case=False,
                               clip=None, prompt='')
    for mod in sorted(_read_json(mfile), key=lambda m: m.get('idx', 0)):
        kind = str(mod.get('type', '')).rsplit('.', 1)[-1]
        mpath = os.path.join(path, mod.get('path', ''))
        if kind == 'Transformer':
            out['transformer'] = mpath
            for cname in ('sentence_bert_config.json',
                          'sentence_xlnet_config.json'):
                cfile = os.path.join(mpath, cname)
                if os.path.isfile(cfile):
                    cfg = _read_json(cfile)
                    out['max_seq_length'] = cfg.get('max_seq_length')
                    out['do_lower_case'] = bool(cfg.get('do_lower_case'))
        elif kind == 'Pooling':
            cfg = _read_json(os.path.join(mpath, 'config.json'))
            if 'pooling_mode' in cfg:  # sentence-transformers >= 6 format
                pm = cfg['pooling_mode']
                modes = (pm,) if isinstance(pm, str) else tuple(pm)
                out['pooling'] = tuple(_ST_MODE_NAMES[m] for m in modes)
            else:
                out['pooling'] = tuple(m for k, m in _ST_POOLING_KEYS
                                       if cfg.get(k)) or ('mean',)
            if cfg.get('include_prompt') is False:
                out['exclude_prompt'] = True
        elif kind == 'Dense':
            out['dense'].append(mpath)
        elif kind == 'CLIPModel':
            out['clip'] = mpath
        elif kind not in ('Normalize',):
            raise EncoderError(
                f'{mfile}: sentence-transformers module {mod.get("type")!r} '
                'is not supported (Transformer, Pooling, Dense, Normalize, '
                'CLIPModel are)')
    cst = os.path.join(path, 'config_sentence_transformers.json')
    if os.path.isfile(cst):
        cfg = _read_json(cst)
        pname = cfg.get('default_prompt_name')
        if pname:
            out['prompt'] = (cfg.get('prompts') or {}).get(pname, '')
    if out['prompt'] and out.get('exclude_prompt'):
        raise EncoderError(f'{path}: pooling that excludes the prompt is not '
                           'supported; encode with sentence-transformers')
    if out['transformer'] is None and out['clip'] is None:
        raise EncoderError(f'{mfile}: no Transformer module')
    return out


# ----------------------------------------------------------------------- CLIP
@TEXT_ENCODERS.register_module('clip')
class CLIPEncoder(_TokenizingEncoder):
    """A CLIP text tower: the projected pooled output (``text_embeds``), as
    the official GPT4Image code uses; 77-token truncation. Claims bare specs
    naming a CLIP checkpoint directory (or hub id)."""

    kind = 'clip'
    options = ('device', 'dtype', 'max_length', 'pooling')
    priority = 10

    @classmethod
    def accepts(cls, spec: str, options: Dict[str, Any]) -> bool:
        try:
            path, _ = _local_model_dir(spec)
        except EncoderError:
            return False  # the fallback says why
        return _clip_text_dir(path) is not None

    @classmethod
    def from_spec(cls, spec: str, pooling: Optional[str] = None,
                  **options: Any) -> CLIPEncoder:
        path, revision = _local_model_dir(spec)
        text_dir = _clip_text_dir(path)
        if text_dir is None:
            raise EncoderError(f'{path}: not a CLIP checkpoint')
        if pooling:
            raise EncoderError('CLIP text towers pool by their own rule; '
                               'pooling cannot be set')
        return cls(text_dir, name=spec if revision else path,
                   revision=revision or dir_fingerprint(path), **options)

    def __init__(self, path: str, device: str = 'cpu', dtype: str = 'auto',
                 max_length: Optional[int] = None, name: Optional[str] = None,
                 revision: Optional[str] = None):
        from transformers import (
            AutoConfig,
            AutoTokenizer,
            CLIPTextModel,
            CLIPTextModelWithProjection,
        )
        _quiet_transformers()
        path = os.path.abspath(path)
        self.name = name or path
        self.revision = revision or dir_fingerprint(path)
        config = AutoConfig.from_pretrained(path)
        torch_dtype = resolve_dtype(dtype, device)
        archs = getattr(config, 'architectures', None) or []
        if config.model_type == 'clip':
            # A full CLIP checkpoint: the text config alone lacks the
            # projection size, so loading it plainly re-initialises (or
            # mis-sizes) text_projection.
            text_cfg = config.text_config
            text_cfg.projection_dim = config.projection_dim
            model = CLIPTextModelWithProjection.from_pretrained(
                path, config=text_cfg, dtype=torch_dtype)
            self.projected = True
        elif archs and all(a == 'CLIPTextModel' for a in archs):
            # saved without a projection: the pooled output is all there is
            model = CLIPTextModel.from_pretrained(path, dtype=torch_dtype)
            self.projected = False
        else:
            model = CLIPTextModelWithProjection.from_pretrained(
                path, dtype=torch_dtype)
            self.projected = True
        self.model = model.to(device).eval().requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        cfg = self.model.config
        limit = cfg.max_position_embeddings
        self.max_length = int(min(max_length or 77, limit))
        self.dim = cfg.projection_dim if self.projected else cfg.hidden_size

    def settings(self) -> Dict[str, Any]:
        return dict(kind=self.kind, max_length=self.max_length,
                    projected=self.projected)

    def modules(self) -> List[torch.nn.Module]:
        return [self.model]

    def run(self, prepared: Any) -> torch.Tensor:
        batch, n_cut = prepared
        batch = self._to_device(batch)
        batch.pop('token_type_ids', None)
        out = self.model(**batch)
        vec = out.text_embeds if self.projected else out.pooler_output
        self.truncated += n_cut
        return F.normalize(vec.float(), dim=-1)


# --------------------------------------------------------------------- OpenAI
@TEXT_ENCODERS.register_module('openai')
class OpenAIEncoder(TextEncoder):
    """An OpenAI-compatible embeddings endpoint (OpenAI, vLLM, TEI, ...).

    Requests go out ``request_size`` texts at a time, ``concurrency`` in
    flight; the client comes from the one factory
    (:func:`gpt4image_mm.utils.openai_client.make_client`: key policy, retries).
    At start it checks that the server lists the model and sends one probe
    (few retries: a server that fails it is not waited on), so a broken or
    non-pooling server stops the run before anything is written.
    """

    kind = 'openai'
    options = ('api_base', 'api_key_env', 'dimensions', 'request_size',
               'concurrency', 'max_retries', 'timeout')
    priority = 100

    @classmethod
    def accepts(cls, spec: str, options: Dict[str, Any]) -> bool:
        """Any model name, once an endpoint (``api_base``) is given."""
        return bool(options.get('api_base'))

    def __init__(self, model: str, api_base: Optional[str] = None,
                 api_key_env: Optional[str] = None,
                 dimensions: Optional[int] = None, request_size: int = 256,
                 concurrency: int = 4,
                 max_retries: int = DEFAULT_MAX_RETRIES,
                 timeout: float = DEFAULT_TIMEOUT):
        self.endpoint = make_client(api_base, api_key_env, timeout=timeout,
                                    max_retries=max_retries,
                                    asynchronous=False)
        self.client = self.endpoint.client
        self.model_name = model
        self.name = f'openai:{model}'
        self.dimensions = dimensions
        self.request_size = max(1, int(request_size))
        self.concurrency = max(1, int(concurrency))
        self.truncated = None  # the API rejects, it does not truncate
        self.max_length = None
        self._dim: Optional[int] = None  # known once the probe is answered
        check_model(self.endpoint, model)
        probe = self._request(['dimension probe'], PREFLIGHT_RETRIES,
                              'first embedding request')
        self._dim = int(probe.shape[1])
        if dimensions and self._dim != dimensions:
            raise ToolError(f'{self.endpoint.url}: asked for {dimensions}-d '
                            f'vectors, got {self._dim}-d -- this model or '
                            'server ignores --dimensions; drop it')

    @property
    def dim(self) -> int:  # type: ignore[override]
        return self._dim

    def settings(self) -> Dict[str, Any]:
        return dict(kind=self.kind, dimensions=self.dimensions)

    def _request(self, texts: List[str], retries: Optional[int] = None,
                 what: str = 'embedding request') -> np.ndarray:
        import openai
        kwargs: Dict[str, Any] = dict(model=self.model_name, input=texts,
                                      encoding_format='float')
        if self.dimensions:
            kwargs['dimensions'] = int(self.dimensions)
        client = self.client if retries is None else \
            self.client.with_options(max_retries=retries)
        try:
            resp = client.embeddings.create(**kwargs)
        except openai.APIError as e:
            raise api_error(e, self.endpoint, self.model_name,
                            what) from None
        except json.JSONDecodeError as e:  # said JSON, was not
            raise self._bad(what, f'a body that is not JSON ({e.msg})') \
                from None
        return self._vectors(resp, len(texts), what)

    def _bad(self, what: str, problem: str,
             fix: Optional[str] = None) -> ToolError:
        """The one line of an answer of the wrong type, size or values.

        Before any answer was right the server is not set up for this
        (exit 2); a server that answered well before misbehaves now (exit
        3): the rows finished so far are kept, a rerun resumes.
        """
        if fix is None:
            fix = ('is --api-base an OpenAI-compatible embeddings endpoint '
                   '(its URL ending in /v1)?') if self._dim is None else \
                'the server misbehaves: check its log; rerun the same ' \
                'command to resume'
        code = EXIT_FIX_INPUT if self._dim is None else EXIT_SERVER
        return ToolError(self.endpoint.scrub(
            f'{self.endpoint.url} answered the {what} with {problem} -- '
            f'{fix}'), code)

    def _vectors(self, resp: Any, n: int, what: str) -> np.ndarray:
        """The answer to ``n`` texts as ``n x dim`` float32, in input
        order, or the one line that says what is wrong with it."""
        if isinstance(resp, (str, bytes)):  # the SDK hands back non-JSON
            head = ' '.join(str(resp)[:80].split())
            raise self._bad(what, f'a body that is not JSON ({head!r})')
        data = _field(resp, 'data')
        if not isinstance(data, list):
            raise self._bad(what, 'JSON without a "data" list of embeddings')
        if len(data) != n:
            raise self._bad(what, f'{len(data)} embeddings for {n} texts')
        index = [_field(d, 'index') for d in data]
        if sorted(i for i in index if _is_int(i)) != list(range(n)):
            raise self._bad(what, f'embedding indices {index[:8]}, not 0..'
                            f'{n - 1} once each')
        ordered = [_field(d, 'embedding') for _, d in sorted(
            zip(index, data), key=lambda t: t[0])]
        return self._matrix(ordered, what)

    def _matrix(self, vectors: List[Any], what: str) -> np.ndarray:
        """The vectors as ``n x dim``, or a one-line error that says what
        the server did wrong (vectors per token: it does not pool)."""
        for v in vectors:
            if isinstance(v, list) and v and isinstance(v[0], list):
                raise self._bad(
                    what, f'{len(v)} vectors for one text (one per token)',
                    'the server does not pool: start it with a pooling type'
                    ' (llama.cpp: --pooling mean)')
            if not isinstance(v, list) or not v or not all(map(_is_number,
                                                               v)):
                raise self._bad(what, 'an embedding that is not a list of '
                                'numbers')
        sizes = sorted({len(v) for v in vectors})
        if len(sizes) > 1:
            raise self._bad(what, f'vectors of different sizes {sizes}')
        if self._dim is not None and sizes[0] != self._dim:
            raise self._bad(what, f'{sizes[0]}-d vectors, not the '
                            f'{self._dim}-d of its first answer (did the '
                            'server change models?)')
        with np.errstate(over='ignore'):  # 1e300 -> inf, refused below
            arr = np.asarray(vectors, dtype=np.float32)
        bad = np.flatnonzero(~np.isfinite(arr).all(1) | ~arr.any(1))
        if len(bad):
            raise self._bad(what, f'a NaN/inf or all-zero vector (text '
                            f'{int(bad[0])} of the request)')
        return arr

    def run(self, prepared: Any) -> torch.Tensor:
        texts = list(prepared)
        chunks = [texts[i:i + self.request_size]
                  for i in range(0, len(texts), self.request_size)]
        names = ['embedding request' if len(chunks) == 1 else
                 f'embedding request {i + 1} of {len(chunks)} (texts '
                 f'{i * self.request_size}-{i * self.request_size + len(c) - 1}'
                 ' of the batch)' for i, c in enumerate(chunks)]
        if len(chunks) == 1 or self.concurrency == 1:
            parts = [self._request(c, what=w) for c, w in zip(chunks, names)]
        else:
            with ThreadPoolExecutor(min(self.concurrency, len(chunks))) as ex:
                parts = list(ex.map(
                    lambda cw: self._request(cw[0], what=cw[1]),
                    zip(chunks, names)))
        return F.normalize(torch.from_numpy(np.concatenate(parts)), dim=-1)


def _field(obj: Any, name: str) -> Any:
    """A field of an SDK model or a plain dict (the SDK builds answers
    without validating them: any shape can arrive)."""
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


# ------------------------------------------------------------------ open_clip
@TEXT_ENCODERS.register_module('open_clip')
class OpenCLIPEncoder(TextEncoder):
    """An open_clip text tower (``open_clip:RN50/openai`` is the official
    GPT4Image default, 1024-d). open_clip is an optional dependency."""

    kind = 'open_clip'
    options = ('device', 'dtype')

    @classmethod
    def from_spec(cls, spec: str, **options: Any) -> OpenCLIPEncoder:
        arch, _, pretrained = spec.partition('/')
        return cls(arch, pretrained or None, **options)

    def __init__(self, arch: str, pretrained: Optional[str] = None,
                 device: str = 'cpu', dtype: str = 'auto'):
        try:
            import open_clip
        except ImportError:
            raise EncoderError(
                f'open_clip:{arch} needs open_clip: pip install '
                'open_clip_torch (the [openclip] extra)') from None
        self.name = f'open_clip:{arch}' + (f'/{pretrained}' if pretrained
                                           else '')
        if pretrained and os.path.isfile(pretrained):
            self.revision = dir_fingerprint(os.path.dirname(
                os.path.abspath(pretrained)))
        else:
            self.revision = pretrained or None
        model = open_clip.create_model(arch, pretrained=pretrained or None,
                                       device='cpu')
        if hasattr(model, 'visual'):
            model.visual = None  # the text tower is all we need
        torch_dtype = resolve_dtype(dtype, device)
        self.model = model.to(device=device,
                              dtype=torch_dtype).eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.max_length = int(getattr(self.tokenizer, 'context_length', 77))
        self.dim = int(self.run(self.prepare(['dimension probe'])).shape[1])
        self.truncated = 0

    def modules(self) -> List[torch.nn.Module]:
        return [self.model]

    def prepare(self, texts: Sequence[str]) -> Tuple[torch.Tensor, int]:
        n_cut = 0
        encode = getattr(self.tokenizer, 'encode', None)
        if callable(encode):  # open_clip's BPE: +2 for start/end tokens
            n_cut = sum(1 for t in texts
                        if len(encode(t)) + 2 > self.max_length)
        return self.tokenizer(list(texts)), n_cut

    def run(self, prepared: Any) -> torch.Tensor:
        tokens, n_cut = prepared
        vec = self.model.encode_text(tokens.to(self.device))
        self.truncated += n_cut
        return F.normalize(vec.float(), dim=-1)


# -------------------------------------------------------------------- factory
def _local_model_dir(spec: str) -> Tuple[str, Optional[str]]:
    path = os.path.expanduser(spec)
    if os.path.isdir(path):
        return os.path.abspath(path), None
    if os.path.exists(path) or spec.startswith(('.', '/', '~')):
        raise EncoderError(f'{spec}: not a model directory')
    try:  # a hub id: the local cache (or, when online, a download)
        from huggingface_hub import snapshot_download
        local = snapshot_download(spec)
    except Exception as e:  # noqa: BLE001 - many hub error types
        raise EncoderError(
            f'{spec!r} is neither a local directory nor a model in the hub '
            f'cache ({type(e).__name__}: {e}); pass a local directory to '
            'work offline, or prefix a registered encoder kind '
            f'{sorted(TEXT_ENCODERS.module_dict)} as <kind>:...') from None
    return local, dir_fingerprint(local)


def _clip_text_dir(path: str) -> Optional[str]:
    """The directory of the CLIP text tower in ``path``, None if not CLIP."""
    st = read_st_layout(path)
    if st and st['clip']:
        return st['clip']
    model_dir = st['transformer'] if st else path
    cfg_file = os.path.join(model_dir, 'config.json')
    if not os.path.isfile(cfg_file):
        return None
    model_type = _read_json(cfg_file).get('model_type')
    return model_dir if model_type in ('clip', 'clip_text_model') else None


# a dotted Python path, module.Class
_DOTTED = re.compile(r'[A-Za-z_]\w*(\.[A-Za-z_]\w*)+')


def _prefixed_class(spec: str, options: Dict[str, Any]
                    ) -> Tuple[Optional[type], str]:
    """``kind:rest`` of a registered kind, or ``module.Class:rest`` of a
    plugin's encoder class (imported here); else ``(None, spec)``. With
    ``api_base`` a name that imports nothing is a served model's name."""
    prefix, sep, rest = spec.partition(':')
    if not sep:
        return None, spec
    if prefix in TEXT_ENCODERS.module_dict:
        return TEXT_ENCODERS.get(prefix), rest
    if _DOTTED.fullmatch(prefix):
        try:
            cls = TEXT_ENCODERS.get(prefix)  # mmengine imports a dotted path
        except Exception:  # noqa: BLE001 - mmengine wraps import errors
            cls = None
        if isinstance(cls, type) and issubclass(cls, TextEncoder):
            return cls, rest
        if options.get('api_base'):
            return None, spec
        raise EncoderError(f'{spec}: {prefix} is not an importable '
                           'TextEncoder class')
    return None, spec


def encoder_class(spec: str, options: Dict[str, Any]) -> Tuple[type, str]:
    """The registered class that builds ``spec``, and the spec it gets."""
    cls, rest = _prefixed_class(spec, options)
    if cls is not None:
        return cls, rest
    classes = sorted(set(TEXT_ENCODERS.module_dict.values()),
                     key=lambda c: (-c.priority, c.kind))
    for cls in classes:
        if cls.accepts(spec, options):
            return cls, spec
    raise EncoderError(f'{spec!r}: no registered text encoder accepts it '
                       f'(registered: {sorted(TEXT_ENCODERS.module_dict)})')


def build_text_encoder(encoder: str, **options: Any) -> TextEncoder:
    """Build the encoder named by ``encoder`` (see the module docstring).

    ``options`` (device, dtype, pooling, max_length, api_base, dimensions,
    ...) go to the chosen class as far as it declares them; a name no
    registered encoder declares is an error, not silently dropped.
    ``device`` ``auto``/None is resolved here (:mod:`gpt4image_mm.utils.devices`),
    so every encoder gets a concrete device."""
    if not isinstance(encoder, str) or not encoder:
        raise EncoderError(f'encoder must be a name or directory, got '
                           f'{encoder!r}')
    cls, spec = encoder_class(encoder, options)
    known = set(cls.options).union(
        *(c.options for c in TEXT_ENCODERS.module_dict.values()))
    unknown = sorted(set(options) - known)
    if unknown:
        raise EncoderError(f'unknown text encoder option(s) {unknown}; '
                           f'known: {sorted(known)}')
    if 'device' in options:
        options['device'] = resolve_device(options['device'])
    return cls.from_spec(spec, **{k: v for k, v in options.items()
                                  if k in cls.options})
