"""The demo's statistics live in the library (:mod:`gpt4image_mm.experiment.stats`)."""
from gpt4image_mm.experiment.stats import (  # noqa: F401
    Paired,
    comparisons,
    headline,
    last_epochs_spread,
    mean_std,
    pm,
    t95,
    t_quantile,
)
