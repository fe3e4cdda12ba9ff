"""The plugin's place in MMEngine's registry tree (scope ``gpt4image_mm``).

Components register into mmpretrain's own registries (``MODELS``,
``DATASETS``, ``HOOKS``, ...), so configs under ``default_scope='mmpretrain'``
find them once the plugin is imported (``custom_imports`` in
``_base_/gpt4image.py``). Each registry below is a child of mmpretrain's with
``scope='gpt4image_mm'`` and a ``location`` that imports the plugin: MMEngine
imports this module by itself whenever it builds something of scope
``gpt4image_mm`` (a ``_scope_='gpt4image_mm'`` dict, a
``'gpt4image_mm.TextAlignedClassifier'`` type, or any base inherited as
``gpt4image_mm::...``, whose dicts MMEngine tags with that scope), so such a
config works in MMEngine's own Runner with no import at all, and lookups fall
back to mmpretrain's registries for everything else.

Importing this module also teaches MMEngine the ``gpt4image_mm::`` config
prefix (:data:`CONFIG_SCOPE`).

Two registries are the plugin's own extension points (docs/extending.md):

* ``TEXT_ENCODERS``: frozen text encoders, looked up by
  :func:`gpt4image_mm.embedding.encoders.build_text_encoder` from an encoder
  spec (``gpt4image embed --encoder`` and ``TextEmbeddingTeacher``);
* ``ALIGN_LOSS_MODES``: the modes of ``ContrastiveAlignLoss`` (``'clip'``,
  ``'ctr'``, ``'cosine'``): functions ``mode(loss, batch) -> Tensor``.

The third, :data:`gpt4image_mm.captioning.registry.CAPTION_BACKENDS`, lives
with the captioning stage because API captioning starts without MMEngine.
"""
from mmengine.config.utils import MODULE2PACKAGE
from mmengine.registry import Registry
from mmpretrain import registry as mmpretrain_registry

# Importing it registers every component and enforces safe checkpoint
# loading; what `custom_imports` names in our base config.
PLUGIN_MODULES = ['gpt4image_mm.engine']

#: MMEngine resolves ``pkg::path`` configs through ``MODULE2PACKAGE`` and
#: finds the files in ``<package>/.mim/configs`` (as mmpretrain's wheel ships
#: them). It is given a module of the package, not the distribution's name:
#: pkg_resources places an editable install's distribution in
#: site-packages, where MMEngine would then look for the package's folder,
#: while a module is found by ``importlib`` wherever the package really is.
CONFIG_SCOPE = 'gpt4image_mm'
MODULE2PACKAGE.setdefault(CONFIG_SCOPE, 'gpt4image_mm.registry')


def _scope_node(parent: Registry) -> Registry:
    return Registry(parent.name, parent=parent, scope=CONFIG_SCOPE,
                    locations=PLUGIN_MODULES)


RUNNERS = _scope_node(mmpretrain_registry.RUNNERS)
RUNNER_CONSTRUCTORS = _scope_node(mmpretrain_registry.RUNNER_CONSTRUCTORS)
LOOPS = _scope_node(mmpretrain_registry.LOOPS)
HOOKS = _scope_node(mmpretrain_registry.HOOKS)
LOG_PROCESSORS = _scope_node(mmpretrain_registry.LOG_PROCESSORS)
OPTIMIZERS = _scope_node(mmpretrain_registry.OPTIMIZERS)
OPTIM_WRAPPERS = _scope_node(mmpretrain_registry.OPTIM_WRAPPERS)
OPTIM_WRAPPER_CONSTRUCTORS = _scope_node(
    mmpretrain_registry.OPTIM_WRAPPER_CONSTRUCTORS)
PARAM_SCHEDULERS = _scope_node(mmpretrain_registry.PARAM_SCHEDULERS)
DATASETS = _scope_node(mmpretrain_registry.DATASETS)
DATA_SAMPLERS = _scope_node(mmpretrain_registry.DATA_SAMPLERS)
TRANSFORMS = _scope_node(mmpretrain_registry.TRANSFORMS)
MODELS = _scope_node(mmpretrain_registry.MODELS)
MODEL_WRAPPERS = _scope_node(mmpretrain_registry.MODEL_WRAPPERS)
WEIGHT_INITIALIZERS = _scope_node(mmpretrain_registry.WEIGHT_INITIALIZERS)
BATCH_AUGMENTS = _scope_node(mmpretrain_registry.BATCH_AUGMENTS)
TASK_UTILS = _scope_node(mmpretrain_registry.TASK_UTILS)
METRICS = _scope_node(mmpretrain_registry.METRICS)
EVALUATORS = _scope_node(mmpretrain_registry.EVALUATORS)
VISUALIZERS = _scope_node(mmpretrain_registry.VISUALIZERS)
VISBACKENDS = _scope_node(mmpretrain_registry.VISBACKENDS)

TEXT_ENCODERS = Registry('text encoder', scope=CONFIG_SCOPE,
                         locations=['gpt4image_mm.embedding.encoders'])
ALIGN_LOSS_MODES = Registry('alignment loss mode', scope=CONFIG_SCOPE,
                            locations=['gpt4image_mm.models.loss'])
