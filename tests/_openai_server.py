"""A local endpoint speaking the OpenAI wire format, with fault injection.

Used by the caption and embed tests and benchmarks/bench_caption.py.
Implements ``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/models``,
``/v1/files`` (+ ``/content``) and ``/v1/batches`` closely enough for the
``openai`` SDK. Faults come from ``policy(body, n)`` (n = 1-based request
count), which returns ``None`` (answer normally) or a dict: ``status`` (+
``retry_after``, ``message``, ``shape``: how the error body looks --
``openai`` ``{"error": {"message"}}``, ``fastapi`` ``{"detail"}`` as
llama-cpp-python's server answers, ``text``: plain text), ``delay`` (seconds
before answering), ``empty``, ``refusal``, ``text``. A hostile server:
``content`` (any JSON value as the message's content), ``body`` (any JSON
value as the whole 200 answer), ``raw`` (bytes sent as the 200 body, with
``ctype``; for embeddings a text with ``content_type``, e.g. a proxy's HTML
page), ``drip`` (seconds between the answer's bytes, sent one at a time;
headers too), ``huge`` (a text of that many characters, whatever
``max_tokens`` asked); for embeddings also ``mangle`` (a function that
rewrites the JSON answer: wrong counts, widths, non-numbers, NaN).

Like real servers it can list its models (``models``; None: no
``/v1/models`` route, 404), answer embeddings one vector per token
(``per_token``, as llama.cpp does without a pooling type), and records the
``Authorization`` header of every request (``auth_seen``) and requests the
client gave up on before the answer (``abandoned``).

Run standalone (own process, no GIL shared with the client):
``python tests/_openai_server.py --latency 0.05`` prints ``PORT <n>``.
"""
from __future__ import annotations

import argparse
import collections
import email.parser
import hashlib
import json
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional


def content_id(body: Dict[str, Any]) -> str:
    """What a request is about: the image (or the prompt, text-only)."""
    msgs = body.get('messages') or []
    last = msgs[-1]['content'] if msgs else ''
    if isinstance(last, list):
        for part in last:
            if part.get('type') == 'image_url':
                return hashlib.sha1(
                    part['image_url']['url'].encode()).hexdigest()[:12]
        last = ' '.join(p.get('text', '') for p in last)
    return hashlib.sha1(str(last).encode()).hexdigest()[:12]


def prompt_text(body: Dict[str, Any]) -> str:
    last = (body.get('messages') or [{}])[-1].get('content', '')
    if isinstance(last, list):
        return ' '.join(p.get('text', '') for p in last
                        if p.get('type') == 'text')
    return str(last)


class FakeOpenAI:
    """State and behaviour of the fake endpoint (thread-safe)."""

    def __init__(self, latency: float = 0.0, api_key: Optional[str] = None,
                 policy: Optional[Callable[[Dict[str, Any], int],
                                           Optional[dict]]] = None,
                 keep_bodies: bool = True, batch_polls: int = 2,
                 models: Optional[List[str]] = None, dim: int = 16,
                 per_token: bool = False, auth_shape: str = 'openai'):
        self.models = models
        self.dim = dim
        self.per_token = per_token
        self.auth_shape = auth_shape
        self.auth_seen: List[Optional[str]] = []
        self.abandoned = 0
        self.latency = latency
        self.api_key = api_key
        self.policy = policy
        self.keep_bodies = keep_bodies
        self.batch_polls = batch_polls
        self.lock = threading.Lock()
        self.n_requests = 0
        self.answered: collections.Counter = collections.Counter()
        self.statuses: collections.Counter = collections.Counter()
        self.bodies: List[bytes] = []
        self.files: Dict[str, Dict[str, Any]] = {}
        self.batches: Dict[str, Dict[str, Any]] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self._ids = 0

    def new_id(self, prefix: str) -> str:
        with self.lock:
            self._ids += 1
            return f'{prefix}-{self._ids:06d}'

    # -- chat ---------------------------------------------------------
    def chat(self, body: Dict[str, Any], n: int, sleep: bool = True):
        """(status, headers, payload) for one chat request."""
        fault = self.policy(body, n) if self.policy else None
        fault = fault or {}
        delay = fault.get('delay', self.latency)
        if sleep and delay:
            time.sleep(delay)
        if 'status' in fault:
            return error_answer(fault)
        if 'raw' in fault:
            return 200, {'Content-Type': fault.get('ctype',
                                                   'application/json'),
                         **_drip(fault)}, fault['raw']
        if 'body' in fault:
            return 200, _drip(fault), fault['body']
        cid = content_id(body)
        if fault.get('empty'):
            text = ''
        elif fault.get('huge'):
            text = 'x' * int(fault['huge'])
        else:
            text = fault.get('text') or (
                f'Image {cid} shows a detailed scene. Prompt was: '
                f'{prompt_text(body)}')
        with self.lock:
            self.answered[cid] += 1
        msg = {'role': 'assistant', 'content': fault.get('content', text),
               'refusal': fault.get('refusal')}
        return 200, _drip(fault), {
            'id': f'chatcmpl-{cid}-{n}', 'object': 'chat.completion',
            'created': int(time.time()), 'model': body.get('model', 'fake'),
            'choices': [{'index': 0, 'message': msg, 'logprobs': None,
                         'finish_reason': 'stop'}],
            'usage': {'prompt_tokens': 100 + len(prompt_text(body)) // 4,
                      'completion_tokens': max(1, len(text) // 4),
                      'total_tokens': 0}}

    # -- embeddings ---------------------------------------------------
    def embeddings(self, body: Dict[str, Any], n: int):
        """(status, headers, payload): one vector per input (or, with
        ``per_token``, one per whitespace token), answered out of order."""
        fault = (self.policy(body, n) if self.policy else None) or {}
        if fault.get('delay', self.latency):
            time.sleep(fault.get('delay', self.latency))
        if 'status' in fault:
            return error_answer(fault)
        if 'raw' in fault:
            return 200, {'Content-Type': fault.get('content_type',
                                                   'text/html')}, \
                fault['raw'].encode()
        inputs = body['input']
        inputs = [inputs] if isinstance(inputs, str) else inputs
        dim = body.get('dimensions') or self.dim
        data = []
        for i, text in enumerate(inputs):
            vec = raw_vector(text, dim).tolist()
            if self.per_token:
                vec = [raw_vector(f'{text}#{t}', dim).tolist()
                       for t in range(max(1, len(text.split())))]
            data.append({'object': 'embedding', 'index': i, 'embedding': vec})
        answer = {'object': 'list', 'data': data[::-1],
                  'model': body.get('model'),
                  'usage': {'prompt_tokens': 1, 'total_tokens': 1}}
        if 'mangle' in fault:
            answer = fault['mangle'](answer)
        return 200, {}, answer

    def model_list(self):
        if self.models is None:
            return 404, {}, {'detail': 'Not Found'}
        return 200, {}, {'object': 'list', 'data': [
            {'id': m, 'object': 'model', 'created': 0, 'owned_by': 'test'}
            for m in self.models]}

    # -- batch --------------------------------------------------------
    def add_file(self, data: bytes, filename: str, purpose: str) -> dict:
        fid = self.new_id('file')
        obj = {'id': fid, 'object': 'file', 'bytes': len(data),
               'created_at': int(time.time()), 'filename': filename,
               'purpose': purpose, 'status': 'processed'}
        self.files[fid] = {'meta': obj, 'data': data}
        return obj

    def create_batch(self, body: Dict[str, Any]) -> dict:
        if body.get('input_file_id') not in self.files:
            return None
        bid = self.new_id('batch')
        obj = {'id': bid, 'object': 'batch', 'endpoint': body['endpoint'],
               'errors': None, 'input_file_id': body['input_file_id'],
               'completion_window': body.get('completion_window', '24h'),
               'status': 'validating', 'output_file_id': None,
               'error_file_id': None, 'created_at': int(time.time()),
               'request_counts': {'total': 0, 'completed': 0, 'failed': 0},
               'metadata': body.get('metadata'), '_polls': 0}
        self.batches[bid] = obj
        return obj

    def poll_batch(self, bid: str) -> dict:
        b = self.batches[bid]
        b['_polls'] += 1
        if b['status'] == 'validating':
            b['status'] = 'in_progress'
        elif b['status'] == 'in_progress' and b['_polls'] >= self.batch_polls:
            self._run_batch(b)
        return b

    def _run_batch(self, b: dict) -> None:
        lines = self.files[b['input_file_id']]['data'].decode().splitlines()
        out, err = [], []
        for line in lines:
            if not line.strip():
                continue
            req = json.loads(line)
            with self.lock:
                self.n_requests += 1
                n = self.n_requests
            status, _, payload = self.chat(req['body'], n, sleep=False)
            rec = {'id': self.new_id('batch_req'),
                   'custom_id': req['custom_id'],
                   'response': {'status_code': status, 'request_id': 'r',
                                'body': payload}, 'error': None}
            (out if status == 200 else err).append(json.dumps(rec))
        b['request_counts'] = {'total': len(out) + len(err),
                               'completed': len(out), 'failed': len(err)}
        if out:
            b['output_file_id'] = self.add_file(
                ('\n'.join(out) + '\n').encode(), 'out.jsonl',
                'batch_output')['id']
        if err:
            b['error_file_id'] = self.add_file(
                ('\n'.join(err) + '\n').encode(), 'err.jsonl',
                'batch_output')['id']
        b['status'] = 'completed'

    @property
    def duplicates(self) -> int:
        """Answers given more than once for the same image/prompt."""
        return sum(c - 1 for c in self.answered.values() if c > 1)


def raw_vector(text: str, dim: int):
    """A deterministic, unnormalised vector of a text."""
    import numpy as np
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], 'big')
    return np.random.default_rng(seed).standard_normal(dim) * 3.0


def _drip(fault: Dict[str, Any]) -> Dict[str, Any]:
    return {'_drip': fault['drip']} if fault.get('drip') else {}


def error_answer(fault: Dict[str, Any]):
    """(status, headers, body) of an injected error, in the body shape
    ``fault['shape']`` names (see the module doc)."""
    headers = {}
    if 'retry_after' in fault:
        headers['Retry-After'] = str(fault['retry_after'])
    if 'retry_after_ms' in fault:
        headers['retry-after-ms'] = str(fault['retry_after_ms'])
    msg = fault.get('message', 'injected')
    shape = fault.get('shape', 'openai')
    if shape == 'fastapi':
        return fault['status'], headers, {'detail': msg}
    if shape == 'text':
        return fault['status'], headers, msg  # sent as text/plain
    return fault['status'], headers, {'error': {
        'message': msg, 'type': 'injected', 'code': fault['status']}}


def _public(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if not k.startswith('_')}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    fake: FakeOpenAI

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, payload: Any, headers: Optional[dict] = None,
              raw: Optional[bytes] = None) -> None:
        ctype = 'application/json'
        headers = dict(headers or {})
        drip = headers.pop('_drip', 0)
        if isinstance(payload, bytes):  # verbatim, of the type headers name
            raw = payload
            ctype = headers.pop('Content-Type', 'application/octet-stream')
        elif isinstance(payload, str):
            raw, ctype = payload.encode(), 'text/plain'
        elif raw is not None:
            ctype = 'application/octet-stream'
        data = raw if raw is not None else json.dumps(payload).encode()
        if _peer_closed(self.connection):
            self.fake.abandoned += 1  # the client timed out and hung up
            self.close_connection = True
            return
        if drip:
            return self._drip(status, ctype, data, headers, drip)
        self.send_response(status)
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _drip(self, status: int, ctype: str, data: bytes, headers: dict,
              every: float) -> None:
        """The whole answer, status line included, one byte per ``every``
        seconds: each read is quick, the request never ends."""
        head = (f'HTTP/1.1 {status} OK\r\nContent-Type: {ctype}\r\n'
                f'Content-Length: {len(data)}\r\n'
                + ''.join(f'{k}: {v}\r\n' for k, v in headers.items())
                + '\r\n').encode()
        self.close_connection = True
        try:
            for i in range(len(head + data)):
                self.wfile.write((head + data)[i:i + 1])
                self.wfile.flush()
                time.sleep(every)
        except OSError:  # the client gave up: as a real server sees it
            self.fake.abandoned += 1

    def _authorised(self) -> bool:
        fake = self.fake
        got = self.headers.get('Authorization')
        with fake.lock:
            fake.auth_seen.append(got)
        if fake.api_key is None:
            return True
        if got == f'Bearer {fake.api_key}':
            return True
        if fake.auth_shape == 'fastapi':  # llama-cpp-python's server
            self._send(401, {'detail': 'Invalid API key'})
            return False
        # Like the real API, name the offending key (here: in full) -- the
        # client must keep it out of its outputs.
        given = (got or '').removeprefix('Bearer ')
        self._send(401, {'error': {
            'message': f'Incorrect API key provided: {given}.',
            'type': 'invalid_request_error', 'code': 'invalid_api_key'}})
        return False

    def _body(self) -> bytes:
        n = int(self.headers.get('Content-Length') or 0)
        return self.rfile.read(n) if n else b''

    def do_POST(self) -> None:  # noqa: N802
        fake = self.fake
        raw = self._body()
        if not self._authorised():
            return
        path = self.path.split('?')[0]
        if path.endswith('/chat/completions'):
            body = json.loads(raw)
            with fake.lock:
                fake.n_requests += 1
                n = fake.n_requests
                fake.in_flight += 1
                fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                if fake.keep_bodies:
                    fake.bodies.append(raw)
            try:
                status, headers, payload = fake.chat(body, n)
            finally:
                with fake.lock:
                    fake.in_flight -= 1
                    fake.statuses[status] += 1
            self._send(status, payload, headers)
        elif path.endswith('/embeddings'):
            body = json.loads(raw)
            with fake.lock:
                fake.n_requests += 1
                n = fake.n_requests
                if fake.keep_bodies:
                    fake.bodies.append(raw)
            status, headers, payload = fake.embeddings(body, n)
            with fake.lock:
                fake.statuses[status] += 1
            self._send(status, payload, headers)
        elif path.endswith('/files'):
            fake.bodies.append(raw)
            ctype = self.headers.get('Content-Type', '')
            msg = email.parser.BytesParser().parsebytes(
                b'Content-Type: ' + ctype.encode() + b'\r\n\r\n' + raw)
            fields, data, filename = {}, b'', 'upload'
            for part in msg.get_payload():
                name = part.get_param('name', header='content-disposition')
                if name == 'file':
                    data = part.get_payload(decode=True)
                    filename = part.get_filename() or filename
                else:
                    fields[name] = part.get_payload(decode=True).decode()
            self._send(200, fake.add_file(data, filename,
                                          fields.get('purpose', '')))
        elif path.endswith('/batches'):
            obj = fake.create_batch(json.loads(raw))
            if obj is None:
                self._send(400, {'error': {'message': 'no such file'}})
            else:
                self._send(200, _public(obj))
        else:
            self._send(404, {'error': {'message': f'no route {path}'}})

    def do_GET(self) -> None:  # noqa: N802
        fake = self.fake
        if not self._authorised():
            return
        path = self.path.split('?')[0]
        m = re.search(r'/files/([^/]+)(/content)?$', path)
        b = re.search(r'/batches/([^/]+)$', path)
        if m and m.group(1) in fake.files:
            f = fake.files[m.group(1)]
            if m.group(2):
                self._send(200, None, raw=f['data'])
            else:
                self._send(200, f['meta'])
        elif b and b.group(1) in fake.batches:
            self._send(200, _public(fake.poll_batch(b.group(1))))
        elif path.endswith('/batches'):
            data = [_public(x) for x in reversed(list(
                fake.batches.values()))]
            self._send(200, {'object': 'list', 'data': data,
                             'first_id': data[0]['id'] if data else None,
                             'last_id': data[-1]['id'] if data else None,
                             'has_more': False})
        elif path.endswith('/models'):
            status, _, payload = fake.model_list()
            self._send(status, payload)
        elif path.endswith('/stats'):
            self._send(200, {'requests': fake.n_requests,
                             'duplicates': fake.duplicates,
                             'answered': len(fake.answered),
                             'max_in_flight': fake.max_in_flight})
        else:
            self._send(404, {'error': {'message': f'no route {path}'}})


def _peer_closed(sock: socket.socket) -> bool:
    """Whether the client has hung up (EOF waiting on the socket)."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b''
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512


def start_server(fake: FakeOpenAI, port: int = 0):
    """Serve ``fake`` on 127.0.0.1 in a daemon thread: ``(server, base_url)``;
    stop with ``server.shutdown()``."""
    handler = type('Handler', (_Handler,), {'fake': fake})
    server = _Server(('127.0.0.1', port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f'http://127.0.0.1:{server.server_address[1]}/v1'


def main() -> None:  # pragma: no cover
    ap = argparse.ArgumentParser()
    ap.add_argument('--latency', type=float, default=0.05)
    ap.add_argument('--port', type=int, default=0)
    ap.add_argument('--models', nargs='*', default=None,
                    help='ids /v1/models lists (default: no such route)')
    args = ap.parse_args()
    server, url = start_server(FakeOpenAI(args.latency, keep_bodies=False,
                                          models=args.models))
    print('PORT', server.server_address[1], flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.shutdown()


if __name__ == '__main__':
    sys.exit(main())


def make_images(root: str, classes=('cat', 'dog'), per_class: int = 5,
                size=(48, 40)) -> list:
    """Small distinct PNG/JPEG images in ``root/<class>/``; their keys."""
    import os

    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    keys = []
    for c in classes:
        os.makedirs(os.path.join(root, c), exist_ok=True)
        for i in range(per_class):
            ext = 'png' if i % 2 else 'jpg'
            arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(arr).save(os.path.join(root, c, f'{i}.{ext}'))
            keys.append(f'{c}/{i}.{ext}')
    return sorted(keys)
