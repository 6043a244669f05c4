"""Demo items: a picture and a caption that each carry something the other lacks.

An item has three groups of objects on the 3×3 grid:

- ``linked``: drawn in the picture *and* named in the caption (what makes image↔text retrieval a task);
- ``image_only``: drawn, never named (as real captions leave out much of what a photo shows);
- ``text_only``: named after a marker ("…, and beside the picture a green cross at the bottom"), never
  drawn (as a web page's text tells what its photo does not show).

So the picture shows ``linked + image_only``, the caption tells ``linked + text_only``, and only the fused
item (picture + caption) carries all three. :func:`sample_group` draws the 2×2 test groups: one set of
linked objects, two image-only variants × two text-only variants; each picture is then shared by two
items and each caption content by two items, and only the fused content is unique — a fused query's
target cannot be told from its image alone nor from its text alone. Train items are drawn one at a time
(:func:`sample_item`): ordinary image–caption pairs, no triplets.

No two objects of an item share ``(shape, colour)``, so every name in a caption is unambiguous.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from gcl_hf.demo.scenes import (
    GRID,
    WORD_RE,
    Scene,
    SceneObject,
    describe_object,
    join_phrases,
    max_object_words,
    object_vocabulary,
    pick,
    sample_object,
)

__all__ = [
    "MARKERS",
    "PREFIXES",
    "DemoItem",
    "ItemLayout",
    "caption",
    "caption_vocabulary",
    "is_held_out",
    "max_caption_words",
    "sample_group",
    "sample_item",
]

#: Caption openings; the first (none) is canonical.
PREFIXES: tuple[str, ...] = ("", "a picture of", "an image of", "a drawing of")
#: What introduces the text-only objects; the first is canonical.
MARKERS: tuple[str, ...] = ("and beside the picture", "and next to the picture", "and outside the picture",
                            "and out of frame")


@dataclass(frozen=True)
class ItemLayout:
    """How many objects of each group an item has."""

    linked: int = 2
    image_only: int = 1
    text_only: int = 1

    def __post_init__(self) -> None:
        if self.linked < 1 or self.image_only < 0 or self.text_only < 0:
            raise ValueError(f"ItemLayout needs linked >= 1, image_only >= 0, text_only >= 0, got {self}")
        if self.linked + self.image_only > GRID * GRID or self.text_only > GRID * GRID:
            raise ValueError(f"ItemLayout {self}: a picture holds at most {GRID * GRID} objects")


def _keys(objects: tuple[SceneObject, ...]) -> str:
    return ";".join(sorted(o.key for o in objects))


@dataclass(frozen=True)
class DemoItem:
    """One item: ``linked`` (drawn and named), ``image_only`` (drawn) and ``text_only`` (named) objects."""

    linked: tuple[SceneObject, ...]
    image_only: tuple[SceneObject, ...] = ()
    text_only: tuple[SceneObject, ...] = ()

    def __post_init__(self) -> None:
        if not self.linked:
            raise ValueError("a DemoItem needs at least one linked object")
        everything = self.linked + self.image_only + self.text_only
        kinds = [o.kind for o in everything]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"DemoItem objects must differ in (shape, colour), got {kinds}")
        for name, objects in (("picture", self.linked + self.image_only), ("text_only", self.text_only)):
            cells = [o.cell for o in objects]
            if len(set(cells)) != len(cells):
                raise ValueError(f"DemoItem {name} objects must be in distinct cells, got {cells}")

    @property
    def picture(self) -> Scene:
        """What the image shows: the linked and the image-only objects."""
        return Scene(self.linked + self.image_only)

    @property
    def link_key(self) -> str:
        """The linked objects: decides the train/test side of an item (:func:`is_held_out`)."""
        return _keys(self.linked)

    @property
    def image_key(self) -> str:
        """The content an image of this item shows (equal keys: indistinguishable pictures)."""
        return self.picture.key

    @property
    def text_key(self) -> str:
        """The content a caption of this item tells (equal keys: the same statement, maybe reworded)."""
        return f"{_keys(self.linked)}|{_keys(self.text_only)}"

    @property
    def fused_key(self) -> str:
        return f"{self.image_key}||{self.text_key}"

    def content_key(self, modality: str) -> str:
        """``image_key``, ``text_key`` or ``fused_key`` for ``"image"``, ``"text"``, ``"image,text"``."""
        keys = {"image": self.image_key, "text": self.text_key, "image,text": self.fused_key}
        if modality not in keys:
            raise ValueError(f"unknown modality {modality!r}; expected one of {list(keys)}")
        return keys[modality]

    def to_json(self) -> str:
        return json.dumps({"linked": [o.to_dict() for o in self.linked],
                           "image_only": [o.to_dict() for o in self.image_only],
                           "text_only": [o.to_dict() for o in self.text_only]}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> DemoItem:
        data = json.loads(text)
        return cls(**{k: tuple(SceneObject(**o) for o in data[k]) for k in ("linked", "image_only", "text_only")})


def is_held_out(item: DemoItem, fraction: float, seed: int = 0) -> bool:
    """Whether ``item`` is on the test side: a stable hash of its *linked* objects falls below ``fraction``
    (so the linked objects of a test item, hence its caption content, never occur in a training item)."""
    digest = hashlib.blake2b(f"{seed}|{item.link_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


def _objects(rng: np.random.Generator, n: int, cells: list[int], kinds: set) -> tuple[SceneObject, ...]:
    """``n`` objects in distinct cells among ``cells``, kinds not in ``kinds`` (``kinds`` is updated)."""
    out = []
    cells = list(cells)
    for _ in range(n):
        o = sample_object(rng, free_cells=cells, taken_kinds=kinds)
        cells.remove(o.cell)
        kinds.add(o.kind)
        out.append(o)
    return tuple(out)


def _all_cells() -> list[int]:
    return list(range(GRID * GRID))


def sample_item(rng: np.random.Generator, layout: ItemLayout = ItemLayout()) -> DemoItem:
    """A random item: objects uniform over free cells, (shape, colour) kinds and sizes."""
    kinds: set = set()
    linked = _objects(rng, layout.linked, _all_cells(), kinds)
    free = [c for c in _all_cells() if c not in {o.cell for o in linked}]
    image_only = _objects(rng, layout.image_only, free, kinds)
    text_only = _objects(rng, layout.text_only, _all_cells(), kinds)
    return DemoItem(linked, image_only, text_only)


def sample_group(rng: np.random.Generator, layout: ItemLayout = ItemLayout()) -> tuple[DemoItem, ...]:
    """Four items sharing their linked objects: image-only variants A, A' × text-only variants B, B', in
    the order (A, B), (A, B'), (A', B), (A', B'). A' differs from A and B' from B in every object's
    (shape, colour); no kind occurs twice in the group. Needs ``image_only >= 1`` and ``text_only >= 1``."""
    if layout.image_only < 1 or layout.text_only < 1:
        raise ValueError(f"test groups need image_only >= 1 and text_only >= 1, got {layout}")
    base = sample_item(rng, layout)
    kinds = {o.kind for o in base.linked + base.image_only + base.text_only}
    free = [c for c in _all_cells() if c not in {o.cell for o in base.linked}]
    image_alt = _objects(rng, layout.image_only, free, kinds)
    text_alt = _objects(rng, layout.text_only, _all_cells(), kinds)
    return tuple(DemoItem(base.linked, a, b) for a in (base.image_only, image_alt)
                 for b in (base.text_only, text_alt))


def caption(item: DemoItem, rng: np.random.Generator | None = None) -> str:
    """A lower-case caption naming the linked objects, then (after a marker) the text-only ones.

    Without ``rng`` it is canonical (objects by cell, first synonyms); with it, a random paraphrase (prefix,
    order of the linked and of the text-only objects, size/position synonyms, "a"/"one", marker wording).
    """
    linked, text_only = list(item.linked), list(item.text_only)
    if rng is not None:
        linked = [linked[i] for i in rng.permutation(len(linked))]
        text_only = [text_only[i] for i in rng.permutation(len(text_only))]
    body = join_phrases([describe_object(o, rng) for o in linked])
    if text_only:
        body += f", {pick(MARKERS, rng)} {join_phrases([describe_object(o, rng) for o in text_only])}"
    prefix = pick(PREFIXES, rng)
    return f"{prefix} {body}" if prefix else body


def caption_vocabulary() -> list[str]:
    """Every word (and punctuation token) a caption can contain, sorted; split like the tokenizer's
    ``Whitespace`` pre-tokenizer (``\\w+|[^\\w\\s]+``)."""
    words = set(object_vocabulary())
    for text in PREFIXES + MARKERS:
        words.update(WORD_RE.findall(text))
    return sorted(words)


def max_caption_words(layout: ItemLayout = ItemLayout()) -> int:
    """An upper bound on the number of pre-tokenized words in a caption of ``layout``."""
    longest = lambda options: max(len(WORD_RE.findall(o)) for o in options)
    named = layout.linked + layout.text_only
    separators = named  # "," or "and" between objects, and the "," before the marker
    return longest(PREFIXES) + named * max_object_words() + separators + longest(MARKERS)
