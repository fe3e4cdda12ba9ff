from gpt4image_mm.engine.hooks.checkpoint_shape_hook import CheckpointShapeHook
from gpt4image_mm.engine.hooks.progress_hook import TrainProgressHook
from gpt4image_mm.engine.hooks.store_identity_hook import StoreIdentityHook

__all__ = ['CheckpointShapeHook', 'StoreIdentityHook', 'TrainProgressHook']
