#!/usr/bin/env python
"""Classify or search images by text through a trained alignment neck.

    python tools/query.py CFG CKPT --images DIR --classify cat dog ship
    python tools/query.py CFG CKPT --images DIR --classify-file class.jsonl
    python tools/query.py CFG CKPT --images DIR --search "a red car" \
        --out hits/

Image features are cached per checkpoint: a second query is instant.
See docs/query.md.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == '__main__':
    from gpt4image_mm.cli_errors import run_tool
    from gpt4image_mm.query_cli import main
    sys.exit(run_tool(main, sys.argv[1:]))
