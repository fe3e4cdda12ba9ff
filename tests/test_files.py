"""The one atomic write (gpt4image_mm/utils/files.py) and the writers built on it."""
import os

import pytest

from gpt4image_mm.captioning.merge import merge
from gpt4image_mm.utils.descriptions import DescriptionWriter, iter_records
from gpt4image_mm.utils.files import atomic_path, atomic_write_json, atomic_write_text


def _siblings(path):
    d = os.path.dirname(path)
    return sorted(n for n in os.listdir(d) if n != os.path.basename(path))


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    out = str(tmp_path / 'a.json')
    atomic_write_json(out, {'x': 1})
    atomic_write_text(out, '{"x": 2}')
    assert open(out).read() == '{"x": 2}'
    assert _siblings(out) == []


def test_failed_write_keeps_old_file_and_removes_temp(tmp_path):
    out = str(tmp_path / 'a.txt')
    atomic_write_text(out, 'old')
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        with open(tmp, 'w') as f:
            f.write('half')
        raise RuntimeError('crash mid-write')
    assert open(out).read() == 'old'
    assert _siblings(out) == []


def test_json_default_is_used(tmp_path):
    out = str(tmp_path / 'a.json')
    atomic_write_json(out, {'p': tmp_path}, default=str)
    assert str(tmp_path) in open(out).read()


def test_merge_crash_leaves_no_partial_output(tmp_path):
    """Old merge wrote ``out.merging`` and left it behind on an error."""
    good = str(tmp_path / 'p0.jsonl')
    with DescriptionWriter(good) as w:
        w.write({'key': 'a.png', 'text': 'x'})
    bad = str(tmp_path / 'p1.jsonl')
    with open(bad, 'w') as f:
        f.write('{"key": "b.png", "text": "y"}\nnot json\n'
                '{"key": "c.png", "text": "z"}\n')
    out = str(tmp_path / 'merged.jsonl')
    with pytest.raises(ValueError):
        merge(out, [good, bad])
    assert sorted(os.listdir(tmp_path)) == ['p0.jsonl', 'p1.jsonl']
    merge(out, [good])
    assert [r['key'] for _, r in iter_records(out)] == ['a.png']
