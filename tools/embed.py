"""Embed descriptions with a frozen text encoder into an embedding store.

    python tools/embed.py DESC.jsonl --encoder MODEL_DIR --out STORE
    python tools/embed.py DESC.jsonl --encoder openai:text-embedding-3-small \\
        --dimensions 512 --out STORE
    python tools/embed.py DESC.jsonl --encoder DIR --out part0 --shard 0/4
    python tools/embed.py merge part0 part1 part2 part3 --out STORE
    python tools/embed.py import-gpt4image release.pt --config CFG --out D.jsonl
    python tools/embed.py import-gpt4image-embeddings EMB.pth \\
        --images data/imagenet/train --out STORE
    python tools/embed.py import-map descriptions.csv --out D.jsonl

Same as ``gpt4image embed`` / ``embed-merge`` / ``import-*``. A killed run
resumes where it stopped (rerun the same command). See docs/embedding.md.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# for Python callers (errors propagate): main(argv)
from gpt4image_mm.cli.embed import main  # noqa: E402,F401

if __name__ == '__main__':
    from gpt4image_mm.cli.main import run_subcommand
    sys.exit(run_subcommand('embed', sys.argv[1:], prog='embed.py'))
