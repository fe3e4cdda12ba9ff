"""``--shard i/N``: the one meaning for every tool (caption, embed, later).

Shard ``i`` of ``N`` holds the keys whose SHA-1 (first 8 bytes, big-endian)
is ``i`` mod ``N``. Why a key hash and not a slice: the split depends only on
the key, so it is the same on every machine, whatever order or subset of the
data a machine lists, and a key never moves between shards when the input
grows. The merge tools join parts by key, so the shards' order does not
matter. docs/distributed.md documents this once.
"""
from __future__ import annotations

import hashlib
from typing import List, Optional, Sequence, Tuple, Union

from gpt4image_mm.utils.errors import InputError

# written into shard stores' manifests: parts made under another rule
# (before 12/2026 embed.py used contiguous slices) must not be merged
SHARD_RULE = 'sha1-key-mod-n'

ShardSpec = Union[None, str, Tuple[int, int]]


def parse_shard(spec: ShardSpec) -> Tuple[int, int]:
    """``'i/N'`` or ``(i, N)`` -> ``(i, N)`` with ``0 <= i < N``; none given
    is ``(0, 1)``, the whole data."""
    if not spec:
        return 0, 1
    if isinstance(spec, str):
        try:
            i, n = (int(x) for x in spec.split('/'))
        except ValueError:
            raise InputError(
                f'--shard {spec!r}: expected i/N, e.g. 0/4') from None
    else:
        i, n = (int(x) for x in spec)
    if n < 1 or not 0 <= i < n:
        raise InputError(f'--shard {i}/{n}: need 0 <= i < N')
    return i, n


def shard_of(key: str, num_shards: int) -> int:
    """Stable shard of a key: the same on every machine, run and order."""
    digest = hashlib.sha1(key.encode('utf-8')).digest()
    return int.from_bytes(digest[:8], 'big') % num_shards


def in_shard(key: str, shard: Optional[Tuple[int, int]]) -> bool:
    """Whether ``key`` belongs to ``shard`` (None or N == 1: every key)."""
    if shard is None or shard[1] == 1:
        return True
    return shard_of(key, shard[1]) == shard[0]


def shard_indices(keys: Sequence[str], shard: Optional[Tuple[int, int]]
                  ) -> List[int]:
    """Positions of the keys of ``shard``, in their order."""
    return [j for j, key in enumerate(keys) if in_shard(key, shard)]
