"""Caption backends are a registry: a backend registered from THIS file (no
package change), with an option of its own, captions a real image folder
through the real command line -- in-process ``main([...])``, through
``caption()``, and in a subprocess ``tools/caption.py --custom-imports
<module>`` whose module the test writes from this file's class source."""
import inspect
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, make_image_folder
from PIL import Image

from gpt4image_mm.captioning import Answer, Backend
from gpt4image_mm.captioning.registry import CAPTION_BACKENDS
from gpt4image_mm.cli.caption import _run_parser, backend_class, caption, main
from gpt4image_mm.utils.descriptions import iter_records

RECORD_KEYS = {'key', 'text', 'model', 'prompt_id', 'usage', 'time',
               'backend', 'latency_s'}


class MeanColourBackend(Backend):
    """Names each image's mean colour: deterministic, no model."""

    name = 'mean_colour'
    help = 'toy: the mean RGB colour of each image'
    image_format = 'pil'  # Request.image is a PIL image

    def __init__(self, model, prefix='mean colour', batch_size=2):
        self.model, self.prefix, self.batch_size = model, prefix, batch_size

    @classmethod
    def add_arguments(cls, group):
        group.add_argument('--colour-prefix', default='mean colour',
                           help='first words of every description')

    @classmethod
    def from_options(cls, options, plan):
        return cls(options.model, options.backend_args.colour_prefix)

    async def generate(self, requests):
        return [Answer(f'{self.prefix} {mean_colour(r.image)}', self.model,
                       {'prompt_tokens': 1, 'completion_tokens': 4})
                for r in requests]


@pytest.fixture(autouse=True, scope='module')
def mean_colour_registered():
    """Registered for this file's tests only: other tests (e.g. the help
    text's) see the built-in backends alone, whatever the test order."""
    CAPTION_BACKENDS.register_module('mean_colour', module=MeanColourBackend,
                                     force=True)
    yield
    CAPTION_BACKENDS.module_dict.pop('mean_colour', None)


def mean_colour(image):
    rgb = np.asarray(image.convert('RGB'), dtype=np.float64)
    return ' '.join(str(int(v)) for v in rgb.reshape(-1, 3).mean(0).round())


def expected_texts(root, keys, prefix):
    texts = {}
    for key in keys:
        with Image.open(os.path.join(root, key)) as im:
            texts[key] = f'{prefix} {mean_colour(im)}'
    return texts


def check_descriptions(out, texts):
    """One success per image, the toy's text, the record's keys."""
    recs = [r for _, r in iter_records(out)]
    assert sorted(r['key'] for r in recs) == sorted(texts)
    for r in recs:
        assert set(r) == RECORD_KEYS, r
        assert r['text'] == texts[r['key']]
        assert r['backend'] == 'mean_colour' and r['model'] == 'toy'
        assert r['prompt_id'] == 'generic-v1'
    return len(recs)


def last_json(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


def test_registered_backend_shows_in_the_parser():
    assert backend_class('mean_colour') is MeanColourBackend
    text = _run_parser([]).format_help()
    assert 'mean_colour' in text.split('--backend {', 1)[1].split('}')[0]
    assert '--colour-prefix' in text and 'toy: the mean RGB' in text


def test_toy_backend_through_main_and_caption(tmp_path, capsys):
    root = tmp_path / 'imgs'
    keys = make_image_folder(root, per_class=3)
    out = str(tmp_path / 'd.jsonl')
    argv = ['--images', str(root), '--out', out, '--backend', 'mean_colour',
            '--model', 'toy', '--colour-prefix', 'average', '--no-progress']
    assert main(argv) == 0
    summary = last_json(capsys.readouterr().out)
    assert summary['ok'] and summary['succeeded'] == len(keys)
    assert check_descriptions(
        out, expected_texts(root, keys, 'average')) == len(keys)
    # resume: a rerun asks for nothing and writes nothing
    assert main(argv) == 0
    again = last_json(capsys.readouterr().out)
    assert again['attempted'] == 0 and again['already_done'] == len(keys)
    assert check_descriptions(
        out, expected_texts(root, keys, 'average')) == len(keys)
    # the Python API takes the backend's own option as a keyword
    out2 = str(tmp_path / 'd2.jsonl')
    res = caption(out2, images=str(root), backend='mean_colour',
                  model='toy', colour_prefix='avg', progress=False)
    assert res['ok'] and res['succeeded'] == len(keys)
    check_descriptions(out2, expected_texts(root, keys, 'avg'))


def write_plugin(tmp_path):
    """This file's backend as a module of its own (no test imports)."""
    code = ('import numpy as np\n\n'
            'from gpt4image_mm.captioning import Answer, Backend\n'
            'from gpt4image_mm.captioning.registry import CAPTION_BACKENDS\n\n\n'
            + inspect.getsource(MeanColourBackend) + '\n\n'
            + inspect.getsource(mean_colour) + '\n\n'
            "CAPTION_BACKENDS.register_module('mean_colour', "
            'module=MeanColourBackend)\n')
    plugin = tmp_path / 'plugin'
    plugin.mkdir()
    (plugin / 'colour_backends.py').write_text(code)
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(plugin), str(ROOT), os.environ.get('PYTHONPATH', '')]))


def run_tool(args, env):
    return subprocess.run([sys.executable, str(ROOT / 'tools' / 'caption.py'),
                           *args], env=env, capture_output=True, text=True,
                          timeout=600)


def test_custom_imports_registers_a_backend_in_tools_caption(tmp_path):
    env = write_plugin(tmp_path)
    root = tmp_path / 'imgs'
    keys = make_image_folder(root, per_class=2)
    out = str(tmp_path / 'd.jsonl')
    args = ['--images', str(root), '--out', out, '--backend', 'mean_colour',
            '--model', 'toy', '--colour-prefix', 'avg', '--no-progress']
    unknown = run_tool(args, env)  # not imported: argparse refuses it
    assert unknown.returncode == 2 and "invalid choice: 'mean_colour'" in \
        unknown.stderr
    missing = run_tool(['--custom-imports', 'no_such_module', *args], env)
    err = missing.stderr.strip().splitlines()
    assert missing.returncode == 2 and len(err) == 1, missing.stderr
    assert '--custom-imports no_such_module: cannot import it' in err[0]
    texts = expected_texts(root, keys, 'avg')
    for attempt in range(2):  # the second run resumes: nothing to do
        proc = run_tool([*args, '--custom-imports', 'colour_backends'], env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        summary = last_json(proc.stdout)
        assert summary['attempted'] == (0 if attempt else len(keys))
        assert check_descriptions(out, texts) == len(keys)


def test_cli_protocol_subcommands_shard_and_merge(tmp_path, capsys):
    """configure_parser / configure_merge_parser as subcommands of one
    entry point (the shared CLI protocol): two shards, then their merge."""
    import argparse

    from gpt4image_mm.cli.caption import (
        configure_merge_parser,
        configure_parser,
    )
    root = tmp_path / 'imgs'
    keys = make_image_folder(root, per_class=3)
    top = argparse.ArgumentParser(prog='gpt4image')
    sub = top.add_subparsers(dest='command', required=True)
    configure_parser(sub.add_parser('caption'), argv=[])
    configure_merge_parser(sub.add_parser('caption-merge'))
    parts = [str(tmp_path / f'part{i}.jsonl') for i in range(2)]
    for i, part in enumerate(parts):
        args = top.parse_args(['caption', '--images', str(root), '--out',
                               part, '--backend', 'mean_colour', '--model',
                               'toy', '--shard', f'{i}/2', '--no-progress'])
        assert args.handler(args) == 0
    sizes = [len(list(iter_records(p))) for p in parts]
    assert sum(sizes) == len(keys) and all(sizes)
    merged = str(tmp_path / 'all.jsonl')
    args = top.parse_args(['caption-merge', merged, *parts])
    assert args.handler(args) == 0
    check_descriptions(merged, expected_texts(root, keys, 'mean colour'))
    capsys.readouterr()
