"""The one scrubber and the one CLI error path (gpt4image_mm.utils.security,
gpt4image_mm.utils.errors)."""
import pytest

from gpt4image_mm.utils.errors import (
    EXIT_FIX_INPUT,
    EXIT_NOT_DONE,
    InputError,
    ToolError,
    run_tool,
)
from gpt4image_mm.utils.security import Scrubber, api_key_for, register_secret, scrub

KEY = 'sk-proj-abcdefABCDEF0123456789'


def test_scrubber_removes_every_kind_of_key(monkeypatch):
    monkeypatch.setenv('OPENAI_API_KEY', 'plain-openai-key-no-prefix')
    monkeypatch.setenv('MY_KEY', 'zz-local-server-key-42')
    api_key_for('http://127.0.0.1:1/v1', 'MY_KEY')  # registers the key
    text = ('key plain-openai-key-no-prefix, local zz-local-server-key-42, '
            f'shaped {KEY}, header Authorization: Bearer tok.en-123')
    out = scrub(text)
    for secret in ('plain-openai-key-no-prefix', 'zz-local-server-key-42',
                   KEY, 'tok.en-123'):
        assert secret not in out
    assert 'Bearer ***' in out and 'sk-***' in out
    assert Scrubber(['own-secret-xyz'])('an own-secret-xyz here') == \
        'an *** here'


def test_run_tool_one_line_for_known_errors(capsys):
    def fails(argv):
        raise ToolError(f'server said: bad key {KEY}\n  second line', 3)
    assert run_tool(fails, []) == 3
    err = capsys.readouterr().err
    assert err == 'error: server said: bad key sk-*** second line\n'

    def bad_input(argv):  # raised where the record is checked
        raise InputError('d.jsonl:3: not a JSON record')
    assert run_tool(bad_input, []) == EXIT_FIX_INPUT
    assert capsys.readouterr().err == \
        'error: d.jsonl:3: not a JSON record\n'

    def bug(argv):  # a ValueError nobody raised on purpose: a traceback
        raise ValueError('operands could not be broadcast together')
    assert run_tool(bug, []) == EXIT_NOT_DONE
    assert 'Traceback' in capsys.readouterr().err


def test_run_tool_scrubs_unexpected_tracebacks(capsys):
    register_secret('registered-secret-value')

    def bug(argv):
        raise RuntimeError('oops with registered-secret-value and ' + KEY)
    assert run_tool(bug, []) == EXIT_NOT_DONE
    err = capsys.readouterr().err
    assert 'Traceback' in err and 'RuntimeError: oops' in err
    assert 'registered-secret-value' not in err and KEY not in err


def test_missing_key_names_the_variable(monkeypatch):
    from gpt4image_mm.utils.security import CredentialError
    monkeypatch.delenv('NOPE_KEY', raising=False)
    with pytest.raises(CredentialError, match='NOPE_KEY is not set'):
        api_key_for('https://my-vllm.example/v1', 'NOPE_KEY')
