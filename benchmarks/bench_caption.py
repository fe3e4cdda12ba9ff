"""Captioning throughput: sequential loop vs the concurrent runner.

A local OpenAI-wire server (own process, fixed latency) answers; the client
is the real code path (tools/caption.py's runner + openai SDK, images loaded,
downscaled and base64-encoded). Reports requests/s, the ratio to the ideal
``concurrency x sequential rate``, and peak RSS for growing dataset sizes
(memory must stay flat: the runner never holds more than ``concurrency``
requests).

    python benchmarks/bench_caption.py --latency 0.2 --n 400
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'tests'))
sys.path.insert(0, REPO)


def start_server(latency: float):
    proc = subprocess.Popen([sys.executable, os.path.join(
        REPO, 'tests', '_openai_server.py'), '--latency', str(latency)],
        stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline().split()[1])
    return proc, f'http://127.0.0.1:{port}/v1'


def sequential(url: str, root: str, n: int) -> float:
    """The naive loop: one request after the other."""
    import openai

    from gpt4image_mm.captioning.images import prepare_image
    from gpt4image_mm.captioning.sources import list_images
    client = openai.OpenAI(api_key='x', base_url=url)
    paths = list_images(root)[:n]
    t = time.monotonic()
    for p in paths:
        data_url, _ = prepare_image(p, 512, 85)
        client.chat.completions.create(model='m', max_tokens=300, messages=[
            {'role': 'user', 'content': [
                {'type': 'text', 'text': 'Describe this image in detail.'},
                {'type': 'image_url', 'image_url': {'url': data_url}}]}])
    return len(paths) / (time.monotonic() - t)


def concurrent_run(url: str, root: str, n: int, concurrency: int) -> dict:
    """One caption() run in a fresh process (clean peak RSS)."""
    code = (
        'import json,os,resource,sys,time;'
        f'sys.path.insert(0,{REPO!r});'
        'from gpt4image_mm.cli.caption import caption;'
        't=time.monotonic();'
        f'r=caption(sys.argv[1],images={root!r},model="m",base_url={url!r},'
        f'concurrency={concurrency},limit={n},progress=False,'
        'abort_after_failures=0);'
        'dt=time.monotonic()-t;'
        'print(json.dumps(dict(n=r["succeeded"],rate=r["succeeded"]/dt,'
        'rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024)))')
    with tempfile.TemporaryDirectory() as d:
        out = subprocess.run([sys.executable, '-c', code,
                              os.path.join(d, 'o.jsonl')],
                             env=dict(os.environ, OPENAI_API_KEY='x'),
                             capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument('--latency', type=float, default=0.2)
    ap.add_argument('--n', type=int, default=400, help='requests per run')
    ap.add_argument('--seq-n', type=int, default=20,
                    help='requests of the sequential baseline')
    ap.add_argument('--concurrency', type=int, nargs='+',
                    default=[8, 32, 64])
    ap.add_argument('--sizes', type=int, nargs='+', default=[1000, 4000],
                    help='dataset sizes for the memory check')
    args = ap.parse_args()
    from _openai_server import make_images
    tmp = tempfile.mkdtemp()
    root = os.path.join(tmp, 'imgs')
    big = max(args.sizes + [args.n])
    make_images(root, classes=('a', 'b', 'c', 'd'), per_class=big // 4 + 1,
                size=(320, 240))
    proc, url = start_server(args.latency)
    try:
        seq = sequential(url, root, args.seq_n)
        print(f'latency {args.latency * 1000:.0f} ms, sequential: '
              f'{seq:.2f} req/s')
        print('| concurrency | req/s | x sequential | / ideal |')
        print('|---|---|---|---|')
        for c in args.concurrency:
            r = concurrent_run(url, root, args.n, c)
            print(f'| {c} | {r["rate"]:.1f} | {r["rate"] / seq:.1f} | '
                  f'{r["rate"] / (seq * c):.2f} |', flush=True)
        print('\n| dataset size | peak RSS (MB), concurrency 32 |')
        print('|---|---|')
        for n in args.sizes:
            r = concurrent_run(url, root, n, 32)
            print(f'| {n} | {r["rss_mb"]:.0f} |', flush=True)
    finally:
        proc.terminate()


if __name__ == '__main__':
    main()
