"""Word forms of class names: "bands" and "banding" name the class ``banded``.

Texture and attribute classes (``banded``, ``woven``, ``striped``) are
everyday words; a caption that says "horizontal bands" names ``banded``
as surely as one that says "banded". Exact matching missed those and
flagged right captions as naming only another class.

:func:`stem` is a light suffix stripper for English inflections (plural
``s``/``es``/``ies``, ``ed``, ``ing``, a final ``e`` or adjectival ``y``,
a doubled final consonant) plus the irregular participles that describe
how things look (``woven`` -> weave, ``torn`` -> tear). Derivations
(``-ness``, ``-ation``) are left alone on purpose: they change meaning
more often than they help. Both sides of a match go through the same
function, so only consistency matters, not linguistic stems.

:func:`forms_pattern` is the inverse as a regular expression: every word
whose stem may be the given one. It keeps matching in ``re`` (C speed over
millions of captions); a hit is then confirmed by stemming the matched
words, so the pattern may over-match but the stem decides.
"""
from __future__ import annotations

import re

# Irregular participles and past forms of verbs that describe surfaces,
# materials and states (the rest inflect regularly).
IRREGULAR = {
    'woven': 'weave', 'wove': 'weave', 'spun': 'spin', 'torn': 'tear',
    'worn': 'wear', 'broken': 'break', 'frozen': 'freeze',
    'sewn': 'sew', 'shorn': 'shear', 'knit': 'knit', 'bent': 'bend',
    'burnt': 'burn', 'burned': 'burn', 'cut': 'cut', 'dug': 'dig',
    'drawn': 'draw', 'grown': 'grow', 'hung': 'hang', 'laid': 'lay',
    'lit': 'light', 'molten': 'melt', 'rotten': 'rot', 'shaken': 'shake',
    'sunk': 'sink', 'sunken': 'sink', 'split': 'split', 'spread': 'spread',
    'stuck': 'stick', 'struck': 'strike', 'swollen': 'swell',
    'wound': 'wind', 'woken': 'wake', 'hidden': 'hide', 'ridden': 'ride',
    'written': 'write', 'bitten': 'bite', 'blown': 'blow',
    'thrown': 'throw', 'fallen': 'fall', 'chosen': 'choose',
    'carven': 'carve', 'hewn': 'hew', 'mown': 'mow', 'sawn': 'saw',
    'strewn': 'strew', 'stricken': 'strike', 'trodden': 'tread',
}
_VOWEL = re.compile('[aeiouy]')
_DOUBLE_KEEP = set('aeiou')  # a doubled vowel ("ee", "oo") stays


def _strip_inflection(word: str) -> str:
    """Remove a plural ending, then a verb ending (``ed``, ``ing``): the
    same stem for "speed", "speeds" and "speeding"."""
    if word.endswith('ies') and len(word) > 4:
        word = word[:-3] + 'y'
    elif word.endswith('es') and word[:-2].endswith(('s', 'x', 'z', 'ch',
                                                     'sh')):
        word = word[:-2]
    elif word.endswith('s') and not word.endswith(('ss', 'us', 'is')) \
            and len(word) > 3:
        word = word[:-1]
    if word.endswith('ied') and len(word) > 4:
        return word[:-3] + 'y'
    for suffix in ('ing', 'ed'):
        base = word[:-len(suffix)]
        if suffix == 'ed' and base.endswith('e'):
            continue  # speed, agreed: the e belongs to the word
        if word.endswith(suffix) and len(base) >= 3 and _VOWEL.search(base):
            return base
    return word


def stem(word: str) -> str:
    """The stem of one lower- or mixed-case word (see module doc)."""
    word = word.lower()
    word = IRREGULAR.get(word, word)
    if not word.isalpha() or len(word) < 4:
        return word
    word = _strip_inflection(word)
    if word[-1] in 'ey' and len(word) >= 5 and word[-2] not in 'aeiou':
        word = word[:-1]  # weave/weav, scaly/scale -> scal, bumpy -> bump
    elif word[-1] == 'e' and len(word) >= 4:
        word = word[:-1]
    if len(word) >= 4 and word[-1] == word[-2] and \
            word[-1] not in _DOUBLE_KEEP:
        word = word[:-1]  # dotted -> dott -> dot, frills -> frill -> fril
    return word


_INFLECTED = r'(?:ie|e|y)?(?:s|es|d|ds|ed|eds|ing|ings)?'
_BY_STEM: dict = {}
for _form, _base in IRREGULAR.items():
    _BY_STEM.setdefault(stem(_base), []).append(_form)


def forms_pattern(word: str) -> str:
    """A regular expression (no groups) for the forms of ``word``: its
    stem, an optional doubled last letter, optional ``e``/``y``/``ie``
    and an inflection, or an irregular form with that stem. Words that
    are not purely letters (``t-shirt``'s parts are, ``4x4`` is not) match
    as written."""
    word = word.lower()
    if not word.isalpha():
        return re.escape(word)
    s = stem(word)
    alts = [re.escape(s) + re.escape(s[-1]) + '?' + _INFLECTED]
    alts += [re.escape(f) for f in _BY_STEM.get(s, ())]
    if not word.startswith(s):  # an irregular name itself (woven, torn)
        alts.append(re.escape(word))
    return '(?:' + '|'.join(alts) + ')'
