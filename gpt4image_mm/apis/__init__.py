"""Inference with a trained model (as mmpretrain's ``apis``): text queries
through the alignment neck."""
from gpt4image_mm.apis.query import TextQueryInferencer, load_aligned_model

__all__ = ['TextQueryInferencer', 'load_aligned_model']
