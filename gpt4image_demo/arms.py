"""The demo's configs and arms: the arms themselves are the library's
(:mod:`gpt4image_mm.experiment.arms`); the demo names its two configs."""
from gpt4image_mm.experiment.arms import ARMS, parse_arms  # noqa: F401

BASELINE_CONFIG = 'configs/fashion_mnist/resnet18-w16_fmnist.py'
GPT4IMAGE_CONFIG = 'configs/gpt4image/gpt4image_resnet18-w16_fmnist.py'
DEFAULT_ARMS = ('baseline', 'gpt4image')
