"""Objects on a 3×3 grid: how the demo draws a picture and how it words one object.

A :class:`SceneObject` is a shape of some colour and size in one grid cell; a :class:`Scene` is the set
of objects a picture shows. :func:`render_scene` draws it (PIL, tiny images) with optional jitter —
position, size, colour and background shade — so one scene has many renderings ("views").
:func:`describe_object` words one object ("a small red circle at the top left"), with a random
paraphrase when given an ``rng`` (size and position synonyms, "a"/"one"). Which objects a caption names
and which a picture shows is decided by :mod:`gcl_hf.demo.items`.

Everything is driven by a ``numpy.random.Generator``: the same generator state gives the same pixels
and the same words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

#: Shape names.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "ring")

#: Colour names and their base RGB values (jittered when rendering).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (245, 215, 0),
    "purple": (140, 40, 180),
    "orange": (250, 130, 0),
    "cyan": (0, 200, 220),
    "black": (20, 20, 20),
}

#: Object sizes: radius as a fraction of a grid cell, and the words that describe them (first: canonical).
SIZES: dict[str, tuple[float, tuple[str, ...]]] = {
    "small": (0.24, ("small", "little", "tiny")),
    "large": (0.42, ("large", "big")),
}

#: Phrases for each of the 9 grid cells (row-major, cell 0 = top left); the first is canonical.
POSITION_PHRASES: tuple[tuple[str, ...], ...] = (
    ("at the top left", "in the upper left", "in the top left"),
    ("at the top", "at the top centre", "in the upper middle"),
    ("at the top right", "in the upper right", "in the top right"),
    ("on the left", "at the left", "in the middle left"),
    ("in the centre", "in the middle", "at the centre"),
    ("on the right", "at the right", "in the middle right"),
    ("at the bottom left", "in the lower left", "in the bottom left"),
    ("at the bottom", "at the bottom centre", "in the lower middle"),
    ("at the bottom right", "in the lower right", "in the bottom right"),
)

#: Article words for one object; the first is canonical.
ARTICLES: tuple[str, ...] = ("a", "one")

GRID = 3
BACKGROUND = (205, 205, 205)
WORD_RE = re.compile(r"\w+|[^\w\s]+")


@dataclass(frozen=True, order=True)
class SceneObject:
    """One object: grid ``cell`` (0–8, row-major), ``shape``, ``colour`` and ``size`` names."""

    cell: int
    shape: str
    colour: str
    size: str

    def __post_init__(self) -> None:
        if not (0 <= self.cell < GRID * GRID) or self.shape not in SHAPES or self.colour not in COLOURS \
                or self.size not in SIZES:
            raise ValueError(f"invalid scene object {self}")

    @property
    def kind(self) -> tuple[str, str]:
        """``(shape, colour)``: what a viewer names the object by (no two objects of a picture share it)."""
        return self.shape, self.colour

    @property
    def key(self) -> str:
        return f"{self.cell}:{self.size}:{self.colour}:{self.shape}"

    def to_dict(self) -> dict[str, object]:
        return {"cell": self.cell, "shape": self.shape, "colour": self.colour, "size": self.size}


@dataclass(frozen=True)
class Scene:
    """The objects one picture shows, in distinct grid cells (stored sorted by cell)."""

    objects: tuple[SceneObject, ...]

    def __post_init__(self) -> None:
        cells = [o.cell for o in self.objects]
        if not self.objects or len(set(cells)) != len(cells):
            raise ValueError(f"a scene needs 1+ objects in distinct cells, got cells {cells}")
        object.__setattr__(self, "objects", tuple(sorted(self.objects)))

    @property
    def key(self) -> str:
        """A canonical string identifying the scene (independent of rendering)."""
        return ";".join(o.key for o in self.objects)


def sample_object(rng: np.random.Generator, *, free_cells: list[int] | None = None,
                  taken_kinds: set[tuple[str, str]] | frozenset = frozenset()) -> SceneObject:
    """A random object in one of ``free_cells`` (default: any cell) whose ``(shape, colour)`` is not in
    ``taken_kinds``; uniform over the allowed cells, kinds and sizes."""
    cells = list(range(GRID * GRID)) if free_cells is None else [int(c) for c in free_cells]
    kinds = [(s, c) for s in SHAPES for c in COLOURS if (s, c) not in taken_kinds]
    if not cells or not kinds:
        raise ValueError(f"no room for another object (free cells {cells}, {len(kinds)} free kinds)")
    shape, colour = kinds[int(rng.integers(len(kinds)))]
    size = tuple(SIZES)[int(rng.integers(len(SIZES)))]
    return SceneObject(cells[int(rng.integers(len(cells)))], shape, colour, size)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float,
                fill: tuple[int, int, int]) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fill, width=max(1, round(0.45 * r)))
    elif shape == "square":
        s = 0.85 * r
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + 0.8 * r), (cx - r, cy + 0.8 * r)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    elif shape == "cross":
        w = max(1.0, 0.3 * r)
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
    else:  # guarded by SceneObject.__post_init__
        raise ValueError(f"unknown shape {shape!r}")


def _channel(value: float) -> int:
    return min(255, max(0, round(value)))


def render_scene(scene: Scene, image_size: int = 48, rng: np.random.Generator | None = None, *,
                 jitter: float = 1.0) -> Image.Image:
    """Draw ``scene`` as an RGB image of ``image_size``² pixels.

    Without ``rng`` the rendering is canonical (objects centred in their cells, base colours). With ``rng``
    each call gives another view: object offsets up to ±12 % of a cell, radius ±10 %, colour ±20 per
    channel and background shade ±15 (all scaled by ``jitter``).
    """
    cell = image_size / GRID
    if rng is None:
        background = BACKGROUND
    else:
        shade = rng.integers(-15, 16, size=3) * jitter
        background = tuple(_channel(b + s) for b, s in zip(BACKGROUND, shade.tolist()))
    image = Image.new("RGB", (image_size, image_size), background)
    draw = ImageDraw.Draw(image)
    for o in scene.objects:
        row, col = divmod(o.cell, GRID)
        cx, cy = (col + 0.5) * cell, (row + 0.5) * cell
        r = SIZES[o.size][0] * cell
        fill = COLOURS[o.colour]
        if rng is not None:
            dx, dy = rng.uniform(-0.12, 0.12, size=2) * cell * jitter
            cx, cy = cx + dx, cy + dy
            r *= 1.0 + rng.uniform(-0.1, 0.1) * jitter
            delta = rng.integers(-20, 21, size=3) * jitter
            fill = tuple(_channel(c + d) for c, d in zip(fill, delta.tolist()))
        _draw_shape(draw, o.shape, cx, cy, r, fill)
    return image


def pick(options: tuple[str, ...], rng: np.random.Generator | None) -> str:
    """``options[0]`` without ``rng``, else a random option."""
    return options[0] if rng is None else options[int(rng.integers(len(options)))]


def join_phrases(parts: list[str]) -> str:
    """``"a"``, ``"a and b"``, ``"a, b and c"``."""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def describe_object(o: SceneObject, rng: np.random.Generator | None = None) -> str:
    """``"a small red circle at the top left"`` (canonical), or a random paraphrase with ``rng``."""
    return f"{pick(ARTICLES, rng)} {pick(SIZES[o.size][1], rng)} {o.colour} {o.shape} {pick(POSITION_PHRASES[o.cell], rng)}"


def object_vocabulary() -> list[str]:
    """Every word an object phrase can contain (split like the tokenizer: ``\\w+|[^\\w\\s]+``)."""
    texts = [*SHAPES, *COLOURS, *ARTICLES, ", and"]
    texts += [w for _, words in SIZES.values() for w in words]
    texts += [p for phrases in POSITION_PHRASES for p in phrases]
    return sorted({tok for text in texts for tok in WORD_RE.findall(text)})


def max_object_words() -> int:
    """The most words one object phrase can have."""
    longest = lambda options: max(len(WORD_RE.findall(o)) for o in options)
    return (longest(ARTICLES) + max(longest(words) for _, words in SIZES.values()) + 2
            + max(longest(p) for p in POSITION_PHRASES))
