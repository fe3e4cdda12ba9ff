"""The library reports through ``logging`` and prints nothing on its own;
the commands decide what reaches the terminal (the same lines as before)."""
import logging
import os
import subprocess
import sys
import textwrap

from _openai_server import make_images

from gpt4image_mm.cli.experiment import narration_on_stdout
from gpt4image_mm.utils.errors import run_tool, terminal_logging
from gpt4image_mm.utils.image_files import list_images
from gpt4image_mm.utils.openai_client import check_served_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOT = 'its name starts with a dot (mmengine never lists it)'
FIFO = 'not a regular file (a FIFO, socket or device)'


def _folder(tmp_path):
    """An image folder with a dot file and a FIFO among its images."""
    root = str(tmp_path / 'imgs')
    keys = make_images(root, classes=('cat', 'dog'), per_class=1)
    with open(os.path.join(root, 'cat', '0.jpg'), 'rb') as f:
        data = f.read()
    with open(os.path.join(root, 'dog', '.hidden.jpg'), 'wb') as f:
        f.write(data)
    os.mkfifo(os.path.join(root, 'cat', 'pipe.png'))
    return root, keys


def _expected(root, url):
    return [f'skipped {root}/cat/pipe.png: {FIFO}',
            f'skipped {root}/dog/.hidden.jpg: {DOT}',
            f"warning: {url} lists no models; cannot check --model 'm'"]


def test_warnings_are_records_of_the_module_loggers(tmp_path, serve, caplog,
                                                    capfd):
    root, keys = _folder(tmp_path)
    _, url = serve()  # no /v1/models route
    with caplog.at_level(logging.WARNING, logger='gpt4image_mm'):
        listed = list_images(root)
        check_served_model(url, None, 'm')
    assert sorted(os.path.relpath(p, root) for p in listed) == keys
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ('gpt4image_mm.utils.image_files', logging.WARNING, line)
        for line in _expected(root, url)[:2]] + [
        ('gpt4image_mm.utils.openai_client', logging.WARNING,
         _expected(root, url)[2])]
    assert capfd.readouterr() == ('', '')


def test_python_callers_see_nothing_until_they_configure_logging(tmp_path,
                                                                 serve):
    """Without a handler Python's last resort prints every warning on
    stderr; the package's NullHandler keeps it quiet, and
    ``logging.basicConfig()`` shows the records."""
    root, _ = _folder(tmp_path)
    _, url = serve()
    script = textwrap.dedent(f'''
        import logging, sys
        from gpt4image_mm.utils.image_files import list_images
        from gpt4image_mm.utils.openai_client import check_served_model
        def calls():
            list_images({root!r})
            check_served_model({url!r}, None, 'm')
        calls()
        print('CONFIGURED', file=sys.stderr, flush=True)
        logging.basicConfig()
        calls()
    ''')
    # the package's __init__ loads no torch
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, '-c', script], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    before, after = proc.stderr.split('CONFIGURED\n')
    assert (proc.stdout, before) == ('', '')
    loggers = ['utils.image_files'] * 2 + ['utils.openai_client']
    assert after.splitlines() == [
        f'WARNING:gpt4image_mm.{name}:{line}'
        for name, line in zip(loggers, _expected(root, url))]


def test_the_command_shows_the_same_lines_on_stderr(tmp_path, serve):
    root, keys = _folder(tmp_path)
    fake, url = serve()
    out = str(tmp_path / 'd.jsonl')
    proc = subprocess.run(
        [sys.executable, '-m', 'gpt4image_mm.cli', 'caption', '--images', root,
         '--out', out, '--model', 'm', '--base-url', url, '--no-progress'],
        env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT,
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    for line in _expected(root, url):
        assert lines.count(line) == 1, proc.stderr
    assert fake.n_requests == len(keys)


def test_terminal_logging_routes_and_restores(capsys, monkeypatch):
    """A command shows the records for its duration only: library lines on
    stderr (keys scrubbed), the experiment's narration on stdout."""
    secret = 'sk-test-SECRET-0123456789abcdef'
    monkeypatch.setenv('OPENAI_API_KEY', secret)
    lib = logging.getLogger('gpt4image_mm.apis.query')
    narration = logging.getLogger('gpt4image_mm.experiment.cache')

    def command(argv):
        with narration_on_stdout():
            lib.warning('skipped: %s', argv[0])
            narration.info('\n==> [plan] %s', argv[1])
        lib.info(f'a key {secret} never shows')
        return 0

    assert run_tool(command, ['cat/broken.png', '2 arms']) == 0
    captured = capsys.readouterr()
    assert captured.err == 'skipped: cat/broken.png\na key *** never shows\n'
    assert captured.out == '\n==> [plan] 2 arms\n'
    lib.warning('after the command')
    narration.warning('after the command')
    assert capsys.readouterr() == ('', '')
    package = logging.getLogger('gpt4image_mm')
    assert [type(h) for h in package.handlers] == [logging.NullHandler]
    assert package.level == logging.NOTSET and narration.parent.propagate
    with terminal_logging(), terminal_logging():  # nested: shown once
        lib.warning('once')
    assert capsys.readouterr().err == 'once\n'
