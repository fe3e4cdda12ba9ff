"""Step caching and tool runs of an experiment (and the demo's steps).

Every step writes a marker holding the digest of its inputs; a rerun with the
same inputs skips the step, so adding a seed or an arm costs only its runs.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import os.path as osp
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence

from gpt4image_mm.utils.files import atomic_write_json

logger = logging.getLogger(__name__)


def command(name: str) -> List[str]:
    """``gpt4image NAME`` as this interpreter runs it, through the installed
    package (no checkout needed, e.g. on a cluster node with only the
    wheel): runs are the user's own commands."""
    return [sys.executable, '-m', 'gpt4image_mm.cli', name]


def banner(step: str, text: str) -> None:
    """A step's heading in the experiment's narration (an INFO record of
    ``gpt4image_mm.experiment``, which the commands show on stdout)."""
    logger.info('\n==> [%s] %s', step, text)


def digest(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str).encode('utf-8')
    return hashlib.sha256(blob).hexdigest()[:16]


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()[:16]


def config_digest(config: str) -> str:
    """Digest of a config *with its bases*: editing either retrains."""
    from gpt4image_mm.utils.config import load_config
    return digest(load_config(config).pretty_text)


class Marker:
    """A step's "done" file: holds the digest of its inputs and its result.

    A step is skipped only when the marker exists and the digest matches;
    markers are written last (atomically), so a killed step reruns.
    """

    def __init__(self, path: str, inputs: Dict[str, Any]):
        self.path = path
        self.inputs = inputs
        self.key = digest(inputs)

    def _read(self) -> Dict[str, Any]:
        try:
            with open(self.path, encoding='utf-8') as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def load(self) -> Optional[Dict[str, Any]]:
        data = self._read()
        return data.get('result') if data.get('key') == self.key else None

    def stale(self) -> bool:
        """Whether the step last ran (or started) with other inputs."""
        data = self._read()
        return bool(data) and data.get('key') != self.key

    def begin(self) -> None:
        """Record the inputs before a resumable step starts, so a rerun
        with the same inputs resumes and one with others starts afresh."""
        self.save(None)

    def save(self, result: Optional[Dict[str, Any]]) -> None:
        os.makedirs(osp.dirname(self.path), exist_ok=True)
        atomic_write_json(self.path, dict(key=self.key, inputs=self.inputs,
                                          result=result),
                          indent=2, default=str)


def run_tool(cmd: Sequence[str], log: Optional[str] = None,
             env: Optional[Dict[str, str]] = None,
             cwd: Optional[str] = None) -> None:
    """Run a command as a user would (from ``cwd``, default the current
    directory);
    output to the terminal or to ``log``. A failure names the command and
    the log."""
    full_env = dict(os.environ, PYTHONWARNINGS='ignore', **(env or {}))
    cwd = cwd or os.getcwd()
    if log is None:
        rc = subprocess.run(list(cmd), cwd=cwd, env=full_env).returncode
    else:
        with open(log, 'w', encoding='utf-8') as f:
            rc = subprocess.run(list(cmd), cwd=cwd, env=full_env, stdout=f,
                                stderr=subprocess.STDOUT).returncode
    if rc != 0:
        where = f'; see {log}' if log else ''
        raise RuntimeError(f'command failed with exit status {rc}{where}:\n'
                           f'  {" ".join(cmd)}')


def thread_env(threads: int) -> Dict[str, str]:
    """One process per core, ``threads`` threads each (docs/demo.md)."""
    return {'OMP_NUM_THREADS': str(threads), 'MKL_NUM_THREADS': str(threads)}
