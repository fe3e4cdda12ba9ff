"""The CPU demo of gpt4image-mm (``make demo``, docs/demo.md).

An application beside the library, not part of the installed package: it
drives the project's tools (``tools/*.py``) on Fashion-MNIST the way a user
would, and reports whether the LLM's knowledge helps against control arms.
"""
from .arms import ARMS, parse_arms
from .pipeline import DemoSettings, run_demo

__all__ = ['ARMS', 'DemoSettings', 'parse_arms', 'run_demo']
