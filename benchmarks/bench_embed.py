"""tools/embed.py's pipeline vs ``SentenceTransformer.encode``, side by side.

Same model (all-MiniLM-L6-v2, the offline package), same texts (synthetic
descriptions of varied length), same batch size, same device, interleaved
repeats in one process. Our timing is the whole pipeline: read the JSONL,
encode, write and commit the store; sentence-transformers' is ``encode``
alone. Reports the median throughput of each, the ratio (ours / theirs,
>= 1.0 means at least as fast) and how far the vectors differ.

    python benchmarks/bench_embed.py --n 2000 --batch-size 64 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time

os.environ.setdefault('HF_HUB_OFFLINE', '1')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SUBJECTS = ['a small brown dog', 'two children', 'an old red pickup truck',
            'a tabby cat', 'a flock of seagulls', 'a wooden rowing boat',
            'a bowl of ramen', 'a golden retriever puppy', 'a steam train',
            'a woman in a yellow raincoat', 'a snow-covered cabin',
            'a monarch butterfly', 'a vintage 1970s camera', 'a street vendor']
ACTIONS = ['is sitting on', 'runs across', 'is parked next to',
           'rests beside', 'flies over', 'floats near', 'is displayed on',
           'stands in front of', 'crosses', 'leans against']
PLACES = ['a grassy hill', 'a busy city street', 'a calm lake at dusk',
          'a wooden kitchen table', 'an empty parking lot', 'the beach',
          'a stone bridge', 'a dense pine forest', 'a market stall']
DETAILS = ['The lighting is soft and warm.', 'The background is blurred.',
           'Several people walk by in the distance.',
           'The colours are vivid, with strong reds and blues.',
           'Shadows suggest late afternoon sun.',
           'Raindrops are visible on the surface.',
           'The image is slightly overexposed in the upper left corner.',
           'A logo reading "Kozak & Sons, est. 1921" is partly visible.',
           'Texture details such as fur, rust and peeling paint stand out.',
           'The composition follows the rule of thirds.']


def synthetic_descriptions(n: int, seed: int = 0) -> list:
    """Captioner-like texts of 1 to 12 sentences (about 10 to 150 words)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        sent = [f'The image shows {rng.choice(SUBJECTS)} that '
                f'{rng.choice(ACTIONS)} {rng.choice(PLACES)}.']
        sent += rng.sample(DETAILS, rng.randint(0, len(DETAILS)))
        if rng.random() < 0.3:
            sent.append(f'In total {rng.randint(2, 40)} objects are visible.')
        out.append(' '.join(sent))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--n', type=int, default=2000)
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--device', default='cpu')
    p.add_argument('--model', default=None, help='default: bundled MiniLM')
    args = p.parse_args()

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from gpt4image_mm.datasets.store import EmbeddingStore
    from gpt4image_mm.embedding.embed import embed_descriptions
    from gpt4image_mm.embedding.encoders import build_text_encoder
    from gpt4image_mm.utils.assets import minilm_dir

    model = args.model or minilm_dir()
    texts = synthetic_descriptions(args.n)
    keys = [f'img/{i:07d}.jpg' for i in range(args.n)]
    work = tempfile.mkdtemp(prefix='bench_embed_')
    desc = os.path.join(work, 'desc.jsonl')
    with open(desc, 'w', encoding='utf-8') as f:
        for k, t in zip(keys, texts):
            f.write(json.dumps(dict(key=k, text=t)) + '\n')

    ours = build_text_encoder(model, device=args.device, dtype='float32')
    st = SentenceTransformer(model, device=args.device)
    warm = texts[:args.batch_size]
    with torch.inference_mode():
        ours.encode(warm)
    st.encode(warm, batch_size=args.batch_size)

    # wall time, and CPU time of the process (all threads): on a shared
    # machine the second is far less disturbed by other jobs
    t_ours, t_st, c_ours, c_st, st_vecs, out = [], [], [], [], None, None
    for r in range(args.repeats):
        out = os.path.join(work, f'store{r}')
        t0, c0 = time.perf_counter(), time.process_time()
        embed_descriptions(desc, ours, out, batch_size=args.batch_size,
                           store_dtype='float32', progress=False)
        t_ours.append(time.perf_counter() - t0)
        c_ours.append(time.process_time() - c0)
        t0, c0 = time.perf_counter(), time.process_time()
        st_vecs = st.encode(texts, batch_size=args.batch_size,
                            normalize_embeddings=True)
        t_st.append(time.perf_counter() - t0)
        c_st.append(time.process_time() - c0)

    store = EmbeddingStore(out)
    row = {k: i for i, k in enumerate(store.keys())}
    mine = np.asarray(store.embeddings)[[row[k] for k in keys]]
    cos = (mine * st_vecs).sum(1)
    fp16 = mine.astype(np.float16).astype(np.float32)
    cos16 = (fp16 * st_vecs).sum(1) / np.linalg.norm(fp16, axis=1)
    m_ours, m_st = statistics.median(t_ours), statistics.median(t_st)
    print(f'model={os.path.basename(model)} n={args.n} '
          f'batch={args.batch_size} device={args.device} '
          f'threads={torch.get_num_threads()} repeats={args.repeats}')
    print(f'ours (tools/embed.py pipeline): {args.n / m_ours:8.1f} texts/s '
          f'(median {m_ours:.2f} s; runs {[round(x, 2) for x in t_ours]})')
    print(f'SentenceTransformer.encode:     {args.n / m_st:8.1f} texts/s '
          f'(median {m_st:.2f} s; runs {[round(x, 2) for x in t_st]})')
    print(f'ratio ours/st throughput: {m_st / m_ours:.3f} (wall)  '
          f'{statistics.median(c_st) / statistics.median(c_ours):.3f} '
          f'(CPU time: ours {statistics.median(c_ours):.1f} s, st '
          f'{statistics.median(c_st):.1f} s)')
    tok = ours.tokenizer(texts, truncation=True,
                         max_length=ours.max_length)['input_ids']
    print(f'tokens/text: mean {np.mean([len(t) for t in tok]):.0f}, '
          f'max {max(len(t) for t in tok)}')
    print(f'max |cos-1| fp32: {np.abs(cos - 1).max():.2e}   '
          f'fp16 store: {np.abs(cos16 - 1).max():.2e}')


if __name__ == '__main__':
    main()
