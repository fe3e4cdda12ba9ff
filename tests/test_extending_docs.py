"""docs/extending.md's worked examples run as written: its plugin files are
cut out of the page, then used the way the page says (tools/embed.py with a
dotted encoder spec; a config's custom_imports and mode name;
tools/caption.py --custom-imports)."""
import os
import re
import subprocess
import sys

from conftest import ROOT

PAGE = ROOT / 'docs' / 'extending.md'
# a ```python block whose first line names the file it is
PLUGIN = re.compile(r'^```python\n# (\w+\.py)\n(.*?)^```', re.M | re.S)


def write_plugins(tmp_path):
    files = dict(PLUGIN.findall(PAGE.read_text(encoding='utf-8')))
    assert set(files) == {'my_encoders.py', 'my_losses.py',
                          'my_backends.py'}, set(files)
    for name, code in files.items():
        (tmp_path / name).write_text(code)
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(tmp_path), str(ROOT), os.environ.get('PYTHONPATH', '')]))


def run(args, env, cwd):
    proc = subprocess.run([sys.executable, *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def test_encoder_example_through_tools_embed(tmp_path):
    env = write_plugins(tmp_path)
    (tmp_path / 'descriptions.jsonl').write_text(
        '{"key": "a.png", "text": "A red cat."}\n'
        '{"key": "b.png", "text": "A blue ship."}\n')
    run([str(ROOT / 'tools' / 'embed.py'), 'descriptions.jsonl',
         '--encoder', 'my_encoders.CharHashEncoder:salt', '--out', 'store',
         '--device', 'cpu', '--no-progress'], env, tmp_path)
    from gpt4image_mm.datasets.store import EmbeddingStore, read_manifest
    store = str(tmp_path / 'store')
    assert read_manifest(store)['encoder'] == 'char_hash:salt'
    assert EmbeddingStore(store).embeddings.shape == (2, 16)


def test_loss_mode_example_in_a_config(tmp_path):
    env = write_plugins(tmp_path)
    (tmp_path / 'my_config.py').write_text(
        "custom_imports = dict(imports=['gpt4image_mm.engine', 'my_losses'],\n"
        '                      allow_failed_imports=False)\n'
        "model = dict(type='ContrastiveAlignLoss', mode='sigmoid')\n")
    out = run(['-c', (
        'import torch\n'
        'import torch.nn.functional as F\n'
        'from mmengine.config import Config\n'
        'from mmpretrain.registry import MODELS\n'
        'loss = MODELS.build(Config.fromfile("my_config.py").model)\n'
        'torch.manual_seed(0)\n'
        'img = torch.randn(6, 8, requires_grad=True)\n'
        'txt = torch.randn(6, 8)\n'
        'value = loss(img, txt)\n'
        'value.backward()\n'
        '# by hand: tau 0.2 (the default), +1 on the diagonal, -1 off it\n'
        'cos = F.normalize(img.detach(), dim=1) @ F.normalize(txt, dim=1).T\n'
        'signs = 2 * torch.eye(6) - 1\n'
        'hand = -F.logsigmoid(signs * cos / 0.2).sum() / 6\n'
        'print(float(value), float(hand), float(img.grad.abs().sum()))')],
        env, tmp_path)
    value, hand, grad = map(float, out.split())
    assert abs(value - hand) < 1e-5 * hand and grad > 0


def test_caption_backend_example_through_tools_caption(tmp_path):
    from conftest import make_image_folder
    from PIL import Image

    from gpt4image_mm.utils.descriptions import read_descriptions
    env = write_plugins(tmp_path)
    keys = make_image_folder(tmp_path / 'imgs', per_class=2)
    args = [str(ROOT / 'tools' / 'caption.py'), '--custom-imports',
            'my_backends', '--images', 'imgs', '--out', 'descriptions.jsonl',
            '--backend', 'mean_colour', '--model', 'toy', '--colour-prefix',
            'average', '--no-progress']
    run(args, env, tmp_path)
    recs = read_descriptions(str(tmp_path / 'descriptions.jsonl'))
    assert sorted(recs) == keys
    for key, rec in recs.items():
        with Image.open(tmp_path / 'imgs' / key) as im:
            rgb = [round(sum(c) / len(c)) for c in zip(*im.getdata())]
        assert rec['text'] == 'average ' + ' '.join(map(str, rgb))
        assert rec['backend'] == 'mean_colour'
