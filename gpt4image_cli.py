"""The ``gpt4image`` console script, started light.

``import gpt4image_mm`` registers every component into mmpretrain's
registries, which imports torch, mmengine, mmpretrain and transformers:
seconds of start-up and ~900 MB before a command reads its first argument.
``--help``, captioning through an API, ``caption-merge``, ``import-map`` and
``analyze`` without a store need none of them. This module lives outside
the package because a package's ``__init__`` runs before any of its modules:
it imports ``gpt4image_mm`` with registration deferred (the package's
``DEFER_REGISTRATION`` variable, set for that one import only, so no child
process inherits it), and :func:`gpt4image_mm.cli.main` registers before
every command that needs the registries (docs/benchmarks.md has the figure).

    gpt4image --help            # or: python -m gpt4image_cli --help
"""
import os
import sys
from typing import List, Optional

_DEFER = 'GPT4IMAGE_MM_DEFER_REGISTRATION'  # gpt4image_mm.DEFER_REGISTRATION


def _import_cli_light():
    """``gpt4image_mm.cli``, with the package's registration deferred
    (unless something in this process imported the package already)."""
    before = os.environ.get(_DEFER)
    os.environ[_DEFER] = '1'
    try:
        import gpt4image_mm.cli
    finally:
        if before is None:
            del os.environ[_DEFER]
        else:
            os.environ[_DEFER] = before
    return gpt4image_mm.cli


def main(argv: Optional[List[str]] = None) -> int:
    """``gpt4image [COMMAND] ...``: :func:`gpt4image_mm.cli.main`."""
    return _import_cli_light().main(argv)


if __name__ == '__main__':
    sys.exit(main())
