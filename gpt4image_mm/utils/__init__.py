"""Torch-free helpers and file formats shared by every stage and command:
sample keys, descriptions JSONL, class names, atomic files, sharding, key
scrubbing, image-file walks, the OpenAI client, devices, bundled assets and
the error type of the tools. Nothing here imports torch, MMEngine or
mmpretrain at module level, so the light commands can use all of it."""
from gpt4image_mm.utils.setup_env import register_all_modules

__all__ = ['register_all_modules']
