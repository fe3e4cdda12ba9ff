"""Controlled comparisons: does the text help on *this* dataset and config?

``tools/experiment.py`` (docs/experiment.md) trains a registry of arms x
seeds through ``tools/train.py``/``tools/test.py`` and reports paired 95%
intervals over seeds and test images; ``make demo`` is its first user.
"""
from gpt4image_mm.experiment.arms import ARMS, Arm, ArmContext, parse_arms, register_arm
from gpt4image_mm.experiment.plan import ExperimentSettings

__all__ = ['ARMS', 'Arm', 'ArmContext', 'ExperimentSettings', 'parse_arms',
           'register_arm']
