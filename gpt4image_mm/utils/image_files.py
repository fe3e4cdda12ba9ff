"""Image files on disk: the one extension list and the folder walks.

Two walks, one list: :func:`list_images` (``caption.py --images``) lists a
tree in sorted path order and survives link loops; :func:`image_folder_keys`
reproduces torchvision ``ImageFolder``'s order exactly, because the official
GPT4Image embeddings are rows in that order. Both take the files
:data:`IMAGE_EXTENSIONS` names; :func:`list_images` also skips what the
training dataset (mmengine's ``CustomDataset``) never loads -- names
starting with a dot, FIFOs, sockets, devices -- which ImageFolder lists.
"""
from __future__ import annotations

import logging
import os
import stat
from typing import List

from gpt4image_mm.utils.errors import InputError

logger = logging.getLogger(__name__)

# torchvision.datasets.folder.IMG_EXTENSIONS (torchvision 0.29.1, the pinned one;
# tests/test_image_files.py checks it), what ImageFolder and so the official
# GPT4Image pipeline load. No ``.gif``: ImageFolder skips it, so a captioned
# GIF would have no training sample (and would shift the official embedding
# rows if imported).
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif',
                    '.tiff', '.webp')


def is_image_file(name: str) -> bool:
    """Whether ``name`` has one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def list_images(root: str) -> List[str]:
    """Every image file below ``root`` that mmengine's ``CustomDataset``
    would load, sorted (a stable order).

    Links are followed, but a directory is walked once (a link loop such as
    ``cls/up -> ..`` would list every image again and again) and nothing
    outside ``root`` is listed (a link out of the tree is skipped). Only
    regular files are taken (reading a FIFO or a device blocks for ever)
    and no name starting with a dot (``CustomDataset`` never loads one, so
    its description would be paid for and never used); each skipped file
    is named once in a warning (the commands show it on stderr).
    """
    if not os.path.isdir(root):
        raise InputError(f'--images {root!r} is not a directory')
    real_root = os.path.realpath(root)
    seen = {real_root}
    out = []
    for d, subdirs, files in os.walk(root, followlinks=True):
        subdirs[:] = sorted(s for s in subdirs
                            if _first_visit(os.path.join(d, s), real_root,
                                            seen))
        for f in sorted(files):
            path = os.path.join(d, f)
            if (is_image_file(f)
                    and _inside(os.path.realpath(path), real_root)
                    and _usable(path, f)):
                out.append(path)
    return out


def image_keys(root: str) -> List[str]:
    """The keys of the images :func:`list_images` finds (``caption
    --images ROOT``'s keys): paths relative to ``root``, ``/``-separated."""
    from gpt4image_mm.utils.keys import file_key
    return [file_key(p, root) for p in list_images(root)]


def _usable(path: str, name: str) -> bool:
    """Whether the dataset would load this image file; says why not."""
    if name.startswith('.'):
        why = 'its name starts with a dot (mmengine never lists it)'
    else:
        try:
            mode = os.stat(path).st_mode
        except OSError as e:
            why = f'cannot stat it ({e.strerror})'
        else:
            if stat.S_ISREG(mode):
                return True
            why = 'not a regular file (a FIFO, socket or device)'
    shown = path.encode('utf-8', 'surrogateescape').decode(
        'utf-8', 'backslashreplace')
    logger.warning('skipped %s: %s', shown, why)
    return False


def _inside(real: str, real_root: str) -> bool:
    return real == real_root or real.startswith(real_root.rstrip(os.sep)
                                                + os.sep)


def _first_visit(path: str, real_root: str, seen: set) -> bool:
    """Whether to descend into ``path``: inside the root, not yet walked."""
    real = os.path.realpath(path)
    if real in seen or not _inside(real, real_root):
        return False
    seen.add(real)
    return True


def image_folder_keys(root: str) -> List[str]:
    """Keys of an ImageFolder tree, exactly as torchvision enumerates it,
    except that a link back into the walk (``cls/loop -> .``,
    ``cls/up -> ..``) is not followed: ImageFolder would list one image
    under ever longer names until the path is too long (41 aliases of one
    file), where ``caption --images`` lists it once. Links to folders
    elsewhere (an ImageNet train tree of symlinks) are followed as before.
    """
    keys = []
    real_root = os.path.realpath(root)
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    for cls in classes:
        cdir = os.path.join(root, cls)
        for dirpath, _, fnames in sorted(_walk_without_loops(cdir,
                                                             real_root)):
            for fname in sorted(fnames):
                if is_image_file(fname):
                    rel = os.path.relpath(os.path.join(dirpath, fname), root)
                    keys.append(rel.replace(os.sep, '/'))
    return keys


def _walk_without_loops(top: str, real_root: str) -> List[tuple]:
    """``list(os.walk(top, followlinks=True))`` minus every directory whose
    real path is the root or one of its own ancestors on the walk (a link
    loop)."""
    ancestors = {top: frozenset((real_root, os.path.realpath(top)))}
    out = []
    for dirpath, subdirs, files in os.walk(top, followlinks=True):
        above = ancestors.pop(dirpath, frozenset())
        keep = []
        for s in subdirs:
            path = os.path.join(dirpath, s)
            real = os.path.realpath(path)
            if real in above:
                logger.warning('skipped %s: a link back to %s (a loop)',
                               path, real)
                continue
            ancestors[path] = above | {real}
            keep.append(s)
        subdirs[:] = keep
        out.append((dirpath, subdirs, files))
    return out
