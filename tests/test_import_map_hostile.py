"""import-map against hostile sources: names whose folders contradict the
dataset, one huge JSON value, endless and non-regular files, deep nesting,
over-long fields, bad bytes, link loops. Each case runs the real command
(``python -m gpt4image_mm.cli import-map``) and expects a right answer or
one line naming the file, never a wrong match, a hang or a traceback."""
import json
import os
import resource
import subprocess
import sys

import pytest
from conftest import ROOT

from gpt4image_mm.utils.descriptions import read_descriptions

# The command with the JSON decoder's work counted: every call to
# JSONDecoder.raw_decode adds the characters it was handed from its start
# index, written at exit to $DECODE_COUNT.
COUNTING = '''
import atexit, json, os, runpy, sys
work = [0]
raw_decode = json.JSONDecoder.raw_decode
def counted(self, s, idx=0):
    work[0] += len(s) - idx
    return raw_decode(self, s, idx)
json.JSONDecoder.raw_decode = counted
atexit.register(lambda: open(os.environ['DECODE_COUNT'], 'w').write(
    str(work[0])))
sys.argv = ['gpt4image'] + sys.argv[1:]
runpy.run_module('gpt4image_mm.cli', run_name='__main__')
'''


def limit_memory():
    """No test here may eat the machine: 1.5 GiB of address space."""
    resource.setrlimit(resource.RLIMIT_AS, (3 << 29, 3 << 29))


def import_map(*args, timeout=60, env=None):
    return subprocess.run(
        [sys.executable, '-m', 'gpt4image_mm.cli', 'import-map',
         *map(str, args)], capture_output=True, text=True, timeout=timeout,
        cwd=ROOT, preexec_fn=limit_memory, env=dict(os.environ, **(env or {})))


def one_error_line(proc, *words):
    """Exit 2 and one ``error:`` line holding every word."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), lines[-5:]
    for word in words:
        assert str(word) in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def folder(tmp_path):
    from PIL import Image
    root = tmp_path / 'data'
    for rel in ('cat/cat0.png', 'cat/only.png', 'dog/dog0.png'):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new('RGB', (4, 4)).save(root / rel)
    return root


def test_contradicting_folders_are_never_matched_by_file_name(tmp_path,
                                                              folder):
    src = tmp_path / 'captions.json'
    src.write_text(json.dumps({'dog/cat0.png': 'A dog called cat0.',
                               '../../dog/only.png': 'A dog.',
                               'C:\\photos\\dog\\dog0.png': 'A real dog.'}))
    out = tmp_path / 'd.jsonl'
    proc = import_map(src, '--images', folder, '--out', out)
    assert proc.returncode == 0, proc.stderr
    assert set(read_descriptions(str(out))) == {'dog/dog0.png'}
    assert 'unmatched 2' in proc.stdout
    assert 'under other folders' in proc.stdout
    # only contradicting names: nothing to import
    src.write_text(json.dumps({'dog/cat0.png': 'A dog called cat0.'}))
    one_error_line(import_map(src, '--images', folder, '--out', out,
                              '--force'), src, 'none of its 1 names')


def decode_work(tmp_path, folder, mib):
    """The decoder's work importing one JSON value of ``mib`` MiB: the list
    of 8 KiB captions of one image."""
    src = tmp_path / f'big{mib}.json'
    caption = json.dumps('A cat. ' * 1170)  # 8 KiB
    with open(src, 'w') as f:
        f.write('{\n  "cat/only.png": [' + ', '.join([caption] * (mib * 128))
                + ']\n}\n')
    count = tmp_path / f'count{mib}'
    proc = subprocess.run(
        [sys.executable, '-c', COUNTING, 'import-map', str(src), '--images',
         str(folder), '--out', str(tmp_path / f'd{mib}.jsonl')],
        capture_output=True, text=True,
        timeout=120, cwd=ROOT, env=dict(os.environ, DECODE_COUNT=str(count)),
        preexec_fn=limit_memory)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(count.read_text())


def test_one_large_value_decodes_in_linear_work(tmp_path, folder):
    """The decoder's work per character of the value does not grow with
    the value: 8 MiB costs no more per character than 1 MiB (growing the
    buffer by a fixed chunk and decoding again from the value's start made
    it 3.0 characters of work per character at 1 MiB and 5.6 at 8 MiB)."""
    small, large = (decode_work(tmp_path, folder, mib) for mib in (1, 8))
    per_char_small, per_char_large = small / (1 << 20), large / (8 << 20)
    assert per_char_large <= 1.1 * per_char_small, (small, large)
    assert per_char_large < 4  # a few passes over the value at most


def test_endless_and_non_regular_sources_are_refused(tmp_path, folder):
    zero = tmp_path / 'zeros.jsonl'
    zero.symlink_to('/dev/zero')
    one_error_line(import_map(zero, '--images', folder, '--out',
                              tmp_path / 'a.jsonl'), zero,
                   'character device')
    sparse = tmp_path / 'zeros.csv'  # 4 GiB of NUL bytes, no disk blocks
    with open(sparse, 'wb') as f:
        f.truncate(4 << 30)
    one_error_line(import_map(sparse, '--images', folder, '--out',
                              tmp_path / 'b.jsonl'), sparse, 'binary data')
    for fmt in ('csv', 'jsonl', 'json'):
        one_error_line(import_map(sparse, '--images', folder, '--out',
                                  tmp_path / 'b.jsonl', '--format', fmt),
                       sparse)
    fifo = tmp_path / 'captions.json'
    os.mkfifo(fifo)
    one_error_line(import_map(fifo, '--images', folder, '--out',
                              tmp_path / 'c.jsonl', timeout=30),
                   fifo, 'FIFO')
    assert not any((tmp_path / f'{x}.jsonl').exists() for x in 'abc')


def caption_dry_run(tmp_path, folder, key_file):
    return subprocess.run(
        [sys.executable, '-m', 'gpt4image_mm.cli', 'caption', '--images',
         str(folder), '--out', str(tmp_path / 'd.jsonl'), '--model', 'm',
         '--base-url', 'http://127.0.0.1:9/v1', '--redo-keys', str(key_file),
         '--dry-run'], capture_output=True, text=True, timeout=30, cwd=ROOT,
        env=dict(os.environ, OPENAI_API_KEY=''))


def test_caption_redo_keys_fifo_is_refused_not_waited_on(tmp_path, folder):
    fifo = tmp_path / 'flagged_keys.txt'
    os.mkfifo(fifo)
    one_error_line(caption_dry_run(tmp_path, folder, fifo), fifo, 'FIFO')
    latin = tmp_path / 'latin1_keys.txt'
    latin.write_bytes('cat/caf\xe9.png\n'.encode('latin-1'))
    one_error_line(caption_dry_run(tmp_path, folder, latin), latin,
                   'not UTF-8')


def test_deep_nesting_long_fields_and_bad_bytes_are_one_line(tmp_path,
                                                             folder):
    deep = tmp_path / 'deep.json'
    deep.write_text('{"cat/only.png": ' + '[' * 200_000 + ']' * 200_000
                    + '}')
    one_error_line(import_map(deep, '--images', folder, '--out',
                              tmp_path / 'a.jsonl'), deep, 'nested too deep')
    deep_lines = tmp_path / 'deep.jsonl'
    deep_lines.write_text(json.dumps({'image': 'cat/only.png',
                                      'caption': 'x'}) + '\n'
                          + '[' * 200_000 + ']' * 200_000 + '\n')
    one_error_line(import_map(deep_lines, '--images', folder, '--out',
                              tmp_path / 'a.jsonl'), deep_lines, 'line 2',
                   'nested too deep')
    wide = tmp_path / 'wide.csv'
    caption = 'A cat. ' * 30_000  # 210 KB, over csv's 128 KiB default
    wide.write_text(f'image,caption\ncat/only.png,"{caption}"\n')
    one_error_line(import_map(wide, '--images', folder, '--out',
                              tmp_path / 'w.jsonl'), wide, 'line 2',
                   'over the 100000')
    one_error_line(import_map(wide, '--images', folder, '--out',
                              tmp_path / 'w.jsonl', '--max-record-mb',
                              '0.1'), wide, 'line 2')
    assert not (tmp_path / 'w.jsonl').exists()
    latin = tmp_path / 'latin1.json'
    latin.write_bytes('{"cat/only.png": "Un caf\xe9."}'.encode('latin-1'))
    one_error_line(import_map(latin, '--images', folder, '--out',
                              tmp_path / 'l.jsonl'), latin, 'not UTF-8')


def test_link_loops_give_one_key(tmp_path, folder):
    """``cat/loop -> .`` makes os.walk list cat0.png under 41 names; the
    walk takes one, as caption --images does."""
    os.symlink('.', folder / 'cat' / 'loop')
    os.symlink('..', folder / 'dog' / 'up')
    from gpt4image_mm.utils.image_files import image_folder_keys
    assert image_folder_keys(str(folder)) == [
        'cat/cat0.png', 'cat/only.png', 'dog/dog0.png']
    src = tmp_path / 'captions.csv'
    src.write_text('image,caption\ncat0.png,A cat.\nonly.png,A lone cat.\n')
    out = tmp_path / 'd.jsonl'
    proc = import_map(src, '--images', folder, '--out', out)
    assert proc.returncode == 0, proc.stderr
    assert set(read_descriptions(str(out))) == {'cat/cat0.png',
                                                'cat/only.png'}
    assert '2 of 3 dataset samples now have a description' in proc.stdout


def test_a_file_that_grows_while_read_is_refused(tmp_path):
    from gpt4image_mm.utils.files import NotRegularFile, open_regular
    path = tmp_path / 'growing.jsonl'
    path.write_text('{"image": "a.png", "caption": "x"}\n')
    with open_regular(str(path)) as f:
        with open(path, 'a') as w:
            w.write('{"image": "b.png", "caption": "y"}\n' * 1000)
        with pytest.raises(NotRegularFile, match='grew while being read'):
            f.read()
