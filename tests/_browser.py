"""A real headless browser for the HTML pages: Debian's ``chromium``
driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
JSON messages, NUL-terminated, commands on fd 3, answers on fd 4).

Stdlib only: what the page tests need is a handful of commands (open a
page, read its console and network events, evaluate an expression, take
a screenshot), not a browser-automation library.
"""
from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from typing import Any, Dict, List, Optional

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')


class BrowserError(RuntimeError):
    pass


class Browser:
    """One headless chromium process; ``open(url)`` gives a :class:`Tab`."""

    def __init__(self, width: int = 1100, height: int = 800):
        if CHROMIUM is None:
            raise BrowserError('chromium is not installed')
        self.profile = tempfile.mkdtemp(prefix='gpt4image-chromium-')
        self.width, self.height = width, height
        to_browser_r, self._out = os.pipe()
        self._in, from_browser_w = os.pipe()

        def child_fds() -> None:  # the browser's fd 3 reads, fd 4 writes
            a, b = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        args = [CHROMIUM, '--headless', '--remote-debugging-pipe',
                '--disable-gpu', '--no-first-run', '--no-default-browser-check',
                '--disable-extensions', '--disable-background-networking',
                '--disable-component-update', '--disable-sync',
                f'--user-data-dir={self.profile}',
                f'--window-size={width},{height}']
        if os.geteuid() == 0:  # chromium's sandbox refuses to run as root
            args.append('--no-sandbox')
        self.proc = subprocess.Popen(
            args + ['about:blank'], preexec_fn=child_fds, pass_fds=(3, 4),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buf = b''
        self._id = 0
        self.events: List[Dict[str, Any]] = []

    def close(self) -> None:
        try:
            self.call('Browser.close', timeout=10)
        except BrowserError:
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._in)
        os.close(self._out)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _read(self, deadline: float) -> Dict[str, Any]:
        while b'\0' not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise BrowserError('no answer from chromium in time')
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise BrowserError('chromium closed its pipe')
            self._buf += chunk
        msg, self._buf = self._buf.split(b'\0', 1)
        return json.loads(msg)

    def call(self, method: str, params: Optional[Dict[str, Any]] = None,
             session: Optional[str] = None, timeout: float = 60) -> Any:
        """Send one command; events that arrive meanwhile are kept."""
        self._id += 1
        msg: Dict[str, Any] = {'id': self._id, 'method': method,
                               'params': params or {}}
        if session:
            msg['sessionId'] = session
        os.write(self._out, json.dumps(msg).encode() + b'\0')
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read(deadline)
            if answer.get('id') == self._id:
                if 'error' in answer:
                    raise BrowserError(f'{method}: {answer["error"]}')
                return answer.get('result', {})
            self.events.append(answer)

    def wait_event(self, name: str, session: Optional[str],
                   timeout: float = 60) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for ev in self.events[seen:]:
                if ev.get('method') == name and ev.get('sessionId') == session:
                    return ev
            seen = len(self.events)
            self.events.append(self._read(deadline))

    def open(self, url: str, timeout: float = 60) -> Tab:
        """A new tab with console, log and network recording on, at ``url``
        once its load event has fired."""
        target = self.call('Target.createTarget',
                           {'url': 'about:blank'})['targetId']
        session = self.call('Target.attachToTarget', {
            'targetId': target, 'flatten': True})['sessionId']
        tab = Tab(self, session, target)
        for domain in ('Runtime', 'Log', 'Network', 'Page'):
            self.call(f'{domain}.enable', session=session)
        self.call('Emulation.setDeviceMetricsOverride', {
            'width': self.width, 'height': self.height,
            'deviceScaleFactor': 1, 'mobile': False}, session)
        start = time.perf_counter()
        self.call('Page.navigate', {'url': url}, session)
        self.wait_event('Page.loadEventFired', session, timeout)
        # one frame painted after the load: the page is on screen
        tab.eval('new Promise(r => requestAnimationFrame(() => '
                 'requestAnimationFrame(() => r(1))))')
        tab.load_seconds = time.perf_counter() - start
        return tab


class Tab:
    """One attached page: its events, evaluation and screenshots."""

    def __init__(self, browser: Browser, session: str, target: str):
        self.browser, self.session, self.target = browser, session, target
        self.load_seconds = float('nan')

    def close(self) -> None:
        self.browser.call('Target.closeTarget', {'targetId': self.target})

    def _events(self, name: str) -> List[Dict[str, Any]]:
        return [e['params'] for e in self.browser.events
                if e.get('sessionId') == self.session
                and e.get('method') == name]

    def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited)."""
        out = self.browser.call('Runtime.evaluate', {
            'expression': expression, 'returnByValue': True,
            'awaitPromise': True}, self.session)
        if 'exceptionDetails' in out:
            raise BrowserError(f'{expression}: {out["exceptionDetails"]}')
        return out['result'].get('value')

    def errors(self) -> List[str]:
        """Console errors, uncaught exceptions and browser log errors
        (a Content-Security-Policy refusal is one)."""
        out = [' '.join(str(a.get('value', a.get('description', '')))
                        for a in p.get('args', []))
               for p in self._events('Runtime.consoleAPICalled')
               if p.get('type') in ('error', 'assert')]
        out += [p['exceptionDetails'].get('text', '')
                for p in self._events('Runtime.exceptionThrown')]
        out += [p['entry'].get('text', '')
                for p in self._events('Log.entryAdded')
                if p['entry'].get('level') == 'error']
        return out

    def requests(self) -> List[str]:
        """Every URL the page asked for."""
        return [p['request']['url']
                for p in self._events('Network.requestWillBeSent')]

    def load_all_images(self, timeout_ms: int = 10000) -> List[int]:
        """Scroll every image into view (lazy ones load then), wait for
        each to load or fail; their ``naturalWidth`` (0: not loaded)."""
        return self.eval('''(async () => {
          const imgs = [...document.images];
          for (const img of imgs) {
            img.scrollIntoView();
            if (!img.complete) {
              await new Promise(done => {
                img.addEventListener('load', done, {once: true});
                img.addEventListener('error', done, {once: true});
                setTimeout(done, TIMEOUT);
              });
            }
          }
          window.scrollTo(0, 0);
          return imgs.map(i => i.naturalWidth);
        })()'''.replace('TIMEOUT', str(int(timeout_ms))))

    def screenshot(self, path: str, full_page: bool = False) -> None:
        params: Dict[str, Any] = {'format': 'png'}
        if full_page:
            params['captureBeyondViewport'] = True
        data = self.browser.call('Page.captureScreenshot', params,
                                 self.session)['data']
        with open(path, 'wb') as f:
            f.write(base64.b64decode(data))
