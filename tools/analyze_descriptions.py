#!/usr/bin/env python
"""Measure a descriptions JSONL (and its store) before training.

    python tools/analyze_descriptions.py D.jsonl --store S --config CFG \\
        --out report/
    python tools/analyze_descriptions.py A.jsonl --per-class --store SA \\
        --compare B.jsonl --compare-store SB --out report/

Writes report.md (printed too), metrics.json and PNG figures into --out.
Same as ``gpt4image analyze``. See docs/analysis.md.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == '__main__':
    from gpt4image_mm.cli.main import run_subcommand
    sys.exit(run_subcommand('analyze', sys.argv[1:], prog='analyze_descriptions.py'))
