#!/usr/bin/env python
"""Describe every training image with a multimodal LLM (GPT4Image stage 1).

    python tools/caption.py --config CFG --split train --out d.jsonl \
        --backend openai --model gpt-4o-mini --concurrency 32
    python tools/caption.py --images DIR --out d.jsonl --backend openai \
        --base-url http://localhost:8000/v1 --model Qwen/Qwen2-VL-7B-Instruct
    python tools/caption.py --config CFG --per-class 5 --out c.jsonl ...
    python tools/caption.py merge all.jsonl part0.jsonl part1.jsonl
    PYTHONPATH=. python tools/caption.py --custom-imports my_backends \
        --backend mean_colour --images DIR --out d.jsonl --model toy

Rerun the same command to resume. See docs/captioning.md; adding a
backend: docs/extending.md.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == '__main__':
    from gpt4image_mm.cli.main import run_subcommand
    sys.exit(run_subcommand('caption', sys.argv[1:], prog='caption.py'))
