"""``python -m gpt4image_mm.cli``: the ``gpt4image`` command."""
import sys

from gpt4image_mm.cli.main import main

sys.exit(main())
