"""Does GPT4Image help on *my* data? Paired arms x seeds, exact-t intervals.

    python tools/experiment.py --config PLAIN.py --gpt4image-config MINE.py \
        --arms baseline,gpt4image,classname,random --seeds 3 \
        --work-dir work_dirs/exp [--parallel N] [--print-commands]
    python tools/experiment.py ... --report-only   # after a cluster ran them

See docs/experiment.md.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == '__main__':
    from gpt4image_mm.cli.main import run_subcommand
    sys.exit(run_subcommand('experiment', sys.argv[1:], prog='experiment.py'))
