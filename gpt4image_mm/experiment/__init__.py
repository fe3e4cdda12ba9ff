"""Controlled comparisons: does the text help on *this* dataset and config?

``tools/experiment.py`` (docs/experiment.md) trains a registry of arms x
seeds through ``tools/train.py``/``tools/test.py`` and reports paired exact
Student-t intervals; ``make demo`` is its first user.
"""
from .arms import ARMS, Arm, ArmContext, parse_arms, register_arm
from .plan import ExperimentSettings

__all__ = ['ARMS', 'Arm', 'ArmContext', 'ExperimentSettings', 'parse_arms',
           'register_arm']
