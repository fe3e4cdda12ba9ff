#!/usr/bin/env python
"""Classify or search images by text through a trained alignment neck.

    python tools/query.py CFG CKPT --images DIR --classify cat dog ship
    python tools/query.py CFG CKPT --images DIR --classify-file class.jsonl
    python tools/query.py CFG CKPT --images DIR --search "a red car" \\
        --out hits/

Image features are cached per checkpoint: a second query is instant.
Same as ``gpt4image query``. See docs/query.md.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == '__main__':
    from gpt4image_mm.cli.main import run_subcommand
    sys.exit(run_subcommand('query', sys.argv[1:], prog='query.py'))
