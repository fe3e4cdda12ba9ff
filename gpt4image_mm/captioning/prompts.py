"""Prompt templates and their ids: the one home of what we ask the LLM.

Every record written by the captioner names the prompt id it was made with, so
descriptions from different prompts are never mixed up silently. Change a
template's wording -> give it a new id. A class-conditioned prompt's id also
names the class text it said (:meth:`Prompt.id_for`: ``class-v1/name-<sha1
of the name, 8 hex>``), so answers given under other class names are told
apart and a rerun with corrected names asks those keys again
(:func:`names_changed`).

Templates are ``str.format`` strings; ``{class_name}`` makes a template
class-conditioned (the paper's later finding: naming the class gives better
descriptions and a stronger alignment signal).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence

from gpt4image_mm.utils.errors import InputError

# The paper's prompt (GPT4Image, MiniGPT-4): the generic, class-agnostic one.
GENERIC = 'Describe this image in detail.'
CLASS_CONDITIONED = ('This is a photo of a {class_name}. Describe this image '
                     'in detail, focusing on the {class_name}.')
# Class-level (text-only) prompts: no image is sent. Each k-th description of
# a class uses a different facet so that K descriptions differ even with
# greedy decoding.
CLASS_TEXT_FACETS = (
    'Describe in detail what a photo of a {class_name} typically looks like.',
    'Describe the shape, colours and textures of a {class_name} as seen in a '
    'photo.',
    'Describe a photo of a {class_name} in its usual surroundings.',
    'Describe the distinctive visual features that tell a {class_name} apart '
    'from similar things in a photo.',
    'Describe a close-up photo of a {class_name}.',
    'Describe a photo of a {class_name} taken from an unusual angle or in '
    'unusual lighting.',
)
TEXT_SYSTEM = ('You write short, concrete visual descriptions of objects for '
               'an image dataset. Answer with the description only.')


NAME_TAG = '/name-'  # between a template's id and its class name's digest


def names_changed(recorded: str, expected: str) -> bool:
    """Whether an answer recorded with prompt id ``recorded`` was asked with
    the same template as ``expected`` but for another class name: a rerun
    asks it again. Ids of other templates, and ids written before names
    were part of them (``class-v1``), are left alone."""
    if recorded == expected or NAME_TAG not in recorded \
            or NAME_TAG not in expected:
        return False
    return (recorded.split(NAME_TAG, 1)[0]
            == expected.split(NAME_TAG, 1)[0])


@dataclass(frozen=True)
class Prompt:
    """A template and the id recorded with every answer it produced."""

    id: str
    template: str

    @property
    def needs_class(self) -> bool:
        return '{class_name}' in self.template

    def id_for(self, class_name: Optional[str] = None) -> str:
        """The id recorded with an answer to this prompt for
        ``class_name``: the template's id, and for a class-conditioned
        template a digest of the name it said."""
        if not self.needs_class or not class_name:
            return self.id
        digest = hashlib.sha1(class_name.encode('utf-8')).hexdigest()[:8]
        return f'{self.id}{NAME_TAG}{digest}'

    def render(self, class_name: Optional[str] = None) -> str:
        if self.needs_class:
            if not class_name:
                raise InputError(f'prompt {self.id!r} needs a class name, '
                                 'but the sample has none')
            return self.template.format(class_name=class_name)
        return self.template


BUILTIN = {
    'generic': Prompt('generic-v1', GENERIC),
    'class': Prompt('class-v1', CLASS_CONDITIONED),
}


def _file_prompts(path: str) -> List[Prompt]:
    """One template per non-empty line (``#`` starts a comment line).

    The id is ``<file stem>-<sha of the template>``, so editing a line gives
    its answers a new id.
    """
    with open(path, encoding='utf-8') as f:
        lines = [ln.rstrip('\n') for ln in f]
    templates = [ln.strip() for ln in lines
                 if ln.strip() and not ln.lstrip().startswith('#')]
    if not templates:
        raise InputError(f'{path}: no prompt template in the file')
    stem = os.path.splitext(os.path.basename(path))[0]
    out = []
    for t in templates:
        try:
            t.format(class_name='x')
        except (KeyError, IndexError, ValueError) as e:
            raise InputError(f'{path}: bad template {t!r}: only '
                             f'{{class_name}} may be substituted ({e})') from None
        digest = hashlib.sha1(t.encode('utf-8')).hexdigest()[:8]
        out.append(Prompt(f'{stem}-{digest}', t))
    return out


def image_prompts(spec: str = 'generic') -> List[Prompt]:
    """Prompts for image captioning: ``generic``, ``class`` or a file path.

    Several prompts (a file with several lines) are used in turn for the
    k-th description of an image (``--per-image K``).
    """
    if spec in BUILTIN:
        return [BUILTIN[spec]]
    if os.path.isfile(spec):
        return _file_prompts(spec)
    raise InputError(f'--prompt {spec!r}: use generic, class or a template '
                     'file (one template per line)')


def class_text_prompts(spec: Optional[str] = None) -> List[Prompt]:
    """Text-only prompts of class-level mode; all of them need a class name."""
    if spec in (None, 'class', 'generic'):
        return [Prompt(f'class-text-v1-{i}', t)
                for i, t in enumerate(CLASS_TEXT_FACETS)]
    prompts = _file_prompts(spec) if os.path.isfile(spec) else None
    if not prompts:
        raise InputError(f'--prompt {spec!r}: not a template file')
    for p in prompts:
        if not p.needs_class:
            raise InputError(f'class-level prompt {p.template!r} must contain '
                             '{class_name}')
    return prompts


def pick(prompts: Sequence[Prompt], k: int) -> Prompt:
    """The prompt of the k-th description (prompts used in turn)."""
    return prompts[k % len(prompts)]
