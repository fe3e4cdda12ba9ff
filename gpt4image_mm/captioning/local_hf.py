"""Local models in-process through transformers.

* :class:`TransformersVLM`: any vision-language model with an ``AutoProcessor``
  and ``AutoModelForImageTextToText`` (Qwen2-VL, SmolVLM/Idefics3, LLaVA...),
  batched generation with left padding;
* :class:`TransformersLLM`: a text-only ``AutoModelForCausalLM`` for the
  class-level mode, also GGUF files (transformers dequantises them on load;
  needs the ``gguf`` package).

Both run generation in a worker thread so the runner's loop keeps writing
records; one batch is in flight at a time (the GPU is the bottleneck).
"""
from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from gpt4image_mm.captioning.base import (
    Answer,
    Backend,
    CaptionError,
    CaptionOptions,
    FatalError,
    Request,
    check_answer,
)
from gpt4image_mm.captioning.registry import CAPTION_BACKENDS
from gpt4image_mm.captioning.sources import Plan
from gpt4image_mm.utils.devices import resolve_device, resolve_dtype


def local_model_path(model: str) -> str:
    """``--model`` for the transformers backend: a short name of a bundled
    model (``smollm2``) becomes its file; a missing one is a fatal error that
    says where the file should be and how to install it."""
    from gpt4image_mm.utils.assets import resolve_bundled_llm
    try:
        return resolve_bundled_llm(model)
    except FileNotFoundError as e:
        raise FatalError(str(e)) from None


def split_gguf(path: str) -> Tuple[str, Optional[str]]:
    """``dir/model.gguf`` -> ``(dir, 'model.gguf')``; other paths unchanged."""
    if path.endswith('.gguf'):
        if not os.path.isfile(path):
            raise FatalError(
                f'no GGUF file {path} (looked in {os.getcwd()}); give its '
                'path, or --model smollm2 for the bundled SmolLM2-135M')
        return os.path.dirname(os.path.abspath(path)), os.path.basename(path)
    return path, None


def _no_hub(path: str) -> Dict[str, Any]:
    """Local directories never touch the hub; hub ids are up to the user's
    HF_HUB_OFFLINE setting."""
    return {'local_files_only': True} if os.path.isdir(path) else {}


class RowClock:
    """Seconds until each row of a batched ``generate`` finished.

    Passed as a stopping criterion that never stops: it only looks at the
    last token of each row per step, so a short answer's record carries its
    own latency rather than the whole batch's.
    """

    def __init__(self, n: int, stop_ids: Sequence[Optional[int]]):
        self.t0 = time.monotonic()
        self.stop_ids = {int(i) for i in stop_ids if i is not None}
        self.finished: List[Optional[float]] = [None] * n

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch
        t = time.monotonic() - self.t0
        for i, tok in enumerate(input_ids[:, -1].tolist()):
            if self.finished[i] is None and tok in self.stop_ids:
                self.finished[i] = t
        return torch.zeros(input_ids.shape[0], dtype=torch.bool,
                           device=input_ids.device)

    def latencies(self) -> List[float]:
        end = time.monotonic() - self.t0
        return [end if t is None else t for t in self.finished]


def _left_padded(tok: Any) -> Any:
    """Batched generation continues the end of each row: pad on the left,
    with EOS where the tokenizer has no pad token."""
    if tok is not None:
        tok.padding_side = 'left'
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
    return tok


def _stop_ids(tokenizer: Any, net: Any) -> List[Optional[int]]:
    eos = getattr(net.generation_config, 'eos_token_id', None)
    eos = list(eos) if isinstance(eos, (list, tuple)) else [eos]
    return eos + [tokenizer.eos_token_id, tokenizer.pad_token_id]


@CAPTION_BACKENDS.register_module('transformers')
class TransformersBackend(Backend):
    """A local model in this process: :class:`TransformersVLM` per image,
    :class:`TransformersLLM` for class-level (text-only) plans."""

    name = 'transformers'
    help = 'a local model in this process (a VLM, or a text LLM for --per-class)'
    concurrency = 1

    @classmethod
    def add_arguments(cls, group: Any) -> None:
        group.add_argument('--device', default='auto',
                           help='cpu, cuda, cuda:1, auto')
        group.add_argument('--dtype', default='auto',
                           help='auto, float32, float16, bfloat16')
        group.add_argument('--batch-size', type=int, default=8,
                           help='images per generate call')
        group.add_argument('--seed', type=int, default=0,
                           help='sampling seed')
        group.add_argument('--repetition-penalty', type=float, default=None,
                           help='e.g. 1.2 stops small models looping')

    @classmethod
    def resolve_model(cls, model: str) -> str:
        return local_model_path(model)

    @classmethod
    def from_options(cls, options: CaptionOptions,
                     plan: Plan) -> TransformersBackend:
        """Loads the model; a VLM gets no system prompt."""
        a = options.backend_args
        sub = TransformersLLM if plan.text_only else TransformersVLM
        return sub(options.model, device=a.device, dtype=a.dtype,
                   batch_size=a.batch_size, max_tokens=options.max_tokens,
                   temperature=options.temperature, seed=a.seed,
                   system=options.system if plan.text_only else None,
                   repetition_penalty=a.repetition_penalty)

    loads_model = True  # its load time is reported on its own line

    def __init__(self, model: str, *, device: str = 'auto',
                 dtype: str = 'auto', batch_size: int = 8,
                 max_tokens: int = 300, temperature: Optional[float] = None,
                 seed: int = 0, system: Optional[str] = None,
                 repetition_penalty: Optional[float] = None):
        # a local path names the model by its last part: records carry no
        # paths of this machine
        self.model = (os.path.basename(os.path.normpath(model))
                      if os.path.exists(model) else model)
        self.device = resolve_device(device)
        self.torch_dtype = resolve_dtype(dtype, self.device)
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.seed = seed
        self.system = system
        # small LLMs loop under greedy decoding ("classic, classic, ...")
        self.repetition_penalty = repetition_penalty
        import torch
        torch.manual_seed(seed)  # --temperature sampling is reproducible

    def _gen_kwargs(self, pad_id: Optional[int],
                    clock: RowClock) -> Dict[str, Any]:
        from transformers import StoppingCriteriaList
        kw: Dict[str, Any] = {'max_new_tokens': self.max_tokens,
                              'pad_token_id': pad_id,
                              'stopping_criteria':
                              StoppingCriteriaList([clock])}
        if self.temperature:
            kw.update(do_sample=True, temperature=self.temperature)
        else:
            kw.update(do_sample=False)
        if self.repetition_penalty:
            kw['repetition_penalty'] = self.repetition_penalty
        return kw

    def _messages(self, content: Any) -> List[Dict[str, Any]]:
        msgs = []
        if self.system:
            msgs.append({'role': 'system', 'content': self.system})
        msgs.append({'role': 'user', 'content': content})
        return msgs

    async def generate(self, requests: Sequence[Request]) -> List[Any]:
        try:
            return await asyncio.to_thread(self._generate, list(requests))
        except FatalError:
            raise
        except Exception as e:  # one bad batch must not end a long run
            if 'out of memory' in str(e).lower():
                raise FatalError(f'{e}; lower --batch-size') from None
            return [CaptionError(f'generation failed: {type(e).__name__}: '
                                 f'{e}') for _ in requests]

    def _finish(self, out_ids: Any, inputs: Dict[str, Any], tokenizer: Any,
                clock: RowClock) -> List[Any]:
        prompt_len = inputs['input_ids'].shape[1]
        new = out_ids[:, prompt_len:]
        texts = tokenizer.batch_decode(new, skip_special_tokens=True)
        pad = tokenizer.pad_token_id
        results: List[Any] = []
        latencies = clock.latencies()
        for i, text in enumerate(texts):
            n_out = int((new[i] != pad).sum()) if pad is not None else \
                int(new.shape[1])
            usage = {'prompt_tokens': int(inputs['attention_mask'][i].sum()),
                     'completion_tokens': n_out}
            try:
                results.append(Answer(check_answer(text), self.model, usage,
                                      truncated=n_out >= self.max_tokens,
                                      latency_s=latencies[i]))
            except CaptionError as e:
                results.append(e)
        return results


class TransformersVLM(TransformersBackend):
    """A vision-language model: one image + prompt per request, batched."""

    name = 'transformers'
    image_format = 'pil'

    def __init__(self, model: str, **kwargs: Any):
        super().__init__(model, **kwargs)
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.processor = AutoProcessor.from_pretrained(model, **_no_hub(model))
        self.tokenizer = _left_padded(getattr(self.processor, 'tokenizer',
                                              None))
        self.net = AutoModelForImageTextToText.from_pretrained(
            model, dtype=self.torch_dtype, **_no_hub(model)).to(self.device)
        self.net.eval()

    def _generate(self, requests: List[Request]) -> List[Any]:
        import torch
        clock = RowClock(len(requests), _stop_ids(self.tokenizer, self.net))
        texts = [self.processor.apply_chat_template(
            self._messages([{'type': 'image'},
                            {'type': 'text', 'text': r.prompt}]),
            add_generation_prompt=True, tokenize=False) for r in requests]
        inputs = self.processor(text=texts, images=[[r.image] for r in
                                                    requests],
                                return_tensors='pt', padding=True)
        inputs = inputs.to(self.device)
        if 'pixel_values' in inputs:
            inputs['pixel_values'] = inputs['pixel_values'].to(
                self.torch_dtype)
        with torch.inference_mode():
            out = self.net.generate(**inputs, **self._gen_kwargs(
                self.tokenizer.pad_token_id, clock))
        return self._finish(out, inputs, self.tokenizer, clock)


class TransformersLLM(TransformersBackend):
    """A text-only causal LM for class-level descriptions (also GGUF)."""

    name = 'transformers'
    image_format = 'none'

    def __init__(self, model: str, **kwargs: Any):
        super().__init__(model, **kwargs)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path, gguf = split_gguf(model)
        extra = dict(_no_hub(path))
        if gguf:
            extra['gguf_file'] = gguf
        self.tokenizer = _left_padded(AutoTokenizer.from_pretrained(
            path, **extra))
        # GGUF files are dequantised by transformers' own loader (it needs
        # the `gguf` and `accelerate` packages: the [gguf] extra).
        self.net = AutoModelForCausalLM.from_pretrained(
            path, dtype=self.torch_dtype, **extra)
        self.net.to(self.device).eval()

    def _prompt(self, text: str) -> str:
        if getattr(self.tokenizer, 'chat_template', None):
            return self.tokenizer.apply_chat_template(
                self._messages(text), add_generation_prompt=True,
                tokenize=False)
        return text + '\n'

    def _generate(self, requests: List[Request]) -> List[Any]:
        import torch
        clock = RowClock(len(requests), _stop_ids(self.tokenizer, self.net))
        texts = [self._prompt(r.prompt) for r in requests]
        inputs = self.tokenizer(texts, return_tensors='pt', padding=True,
                                add_special_tokens=False).to(self.device)
        with torch.inference_mode():
            out = self.net.generate(**inputs, **self._gen_kwargs(
                self.tokenizer.pad_token_id, clock))
        return self._finish(out, inputs, self.tokenizer, clock)


_LocalBase = TransformersBackend  # the shared init's former name (tests)
