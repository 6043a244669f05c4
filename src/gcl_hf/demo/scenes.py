"""Rendered scenes and their captions: the demo's offline image–caption source.

A :class:`Scene` is 1–3 objects on a 3×3 grid, each with a shape, a colour and a size.
:func:`render_scene` draws it (PIL, tiny images) with optional jitter — position, size, colour
and background shade, plus pixel noise — so one scene has many renderings ("views").
:func:`describe_scene` writes a caption that names every attribute; with an ``rng`` it picks a
random paraphrase (prefix, object order, synonyms for sizes and positions), so one scene also
has many captions. Objects sharing shape, colour and size are described together with a count
("two small red circles at the top left and on the right").

Everything is driven by a ``numpy.random.Generator``: the same generator state gives the same
scene, the same pixels and the same caption.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

#: Shape names (singular, plural).
SHAPES: dict[str, str] = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "diamond": "diamonds",
    "cross": "crosses",
    "ring": "rings",
}

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

#: Object sizes: radius as a fraction of a grid cell, and the words that describe them.
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

#: Caption openings; the first (none) is canonical.
PREFIXES: tuple[str, ...] = ("", "a picture of", "an image of", "a drawing of", "a scene with")

#: Count words for a group of identical objects; the first is canonical.
COUNT_WORDS: dict[int, tuple[str, ...]] = {
    1: ("a", "one"), 2: ("two",), 3: ("three",), 4: ("four",), 5: ("five",),
    6: ("six",), 7: ("seven",), 8: ("eight",), 9: ("nine",),
}

GRID = 3
BACKGROUND = (205, 205, 205)
_WORD_RE = re.compile(r"\w+|[^\w\s]+")


@dataclass(frozen=True, order=True)
class SceneObject:
    """One object: grid ``cell`` (0–8, row-major), ``shape``, ``colour`` and ``size`` names."""

    cell: int
    shape: str
    colour: str
    size: str


@dataclass(frozen=True)
class Scene:
    """A set of objects in distinct grid cells (stored sorted by cell)."""

    objects: tuple[SceneObject, ...]

    def __post_init__(self) -> None:
        cells = [o.cell for o in self.objects]
        if not self.objects or len(set(cells)) != len(cells):
            raise ValueError(f"a scene needs 1+ objects in distinct cells, got cells {cells}")
        for o in self.objects:
            if not (0 <= o.cell < GRID * GRID) or o.shape not in SHAPES or o.colour not in COLOURS or o.size not in SIZES:
                raise ValueError(f"invalid scene object {o}")
        object.__setattr__(self, "objects", tuple(sorted(self.objects)))

    @property
    def key(self) -> str:
        """A canonical string identifying the scene (independent of rendering and caption)."""
        return ";".join(f"{o.cell}:{o.size}:{o.colour}:{o.shape}" for o in self.objects)

    def to_dict(self) -> list[dict[str, object]]:
        return [{"cell": o.cell, "shape": o.shape, "colour": o.colour, "size": o.size} for o in self.objects]


def scene_bucket(scene: Scene, seed: int = 0) -> float:
    """A stable pseudo-random number in [0, 1) from the scene key (used to split train/test)."""
    digest = hashlib.blake2b(f"{seed}|{scene.key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def sample_scene(rng: np.random.Generator, max_objects: int = 3, repeat_prob: float = 0.3) -> Scene:
    """Draw a random scene: ``P(n objects) ∝ n`` for n in 1..max_objects; each new object copies an
    earlier one's shape, colour and size with probability ``repeat_prob`` (so counts occur)."""
    if not 1 <= max_objects <= GRID * GRID:
        raise ValueError(f"max_objects must be in 1..{GRID * GRID}, got {max_objects}")
    total = max_objects * (max_objects + 1) // 2  # P(n) = n / total
    draw, n = int(rng.integers(total)), 1
    while draw >= n:
        draw, n = draw - n, n + 1
    cells = rng.choice(GRID * GRID, size=n, replace=False)
    shapes, colours, sizes = list(SHAPES), list(COLOURS), list(SIZES)
    objects: list[SceneObject] = []
    for cell in cells:
        if objects and rng.random() < repeat_prob:
            src = objects[int(rng.integers(len(objects)))]
            objects.append(SceneObject(int(cell), src.shape, src.colour, src.size))
        else:
            objects.append(
                SceneObject(
                    int(cell),
                    shapes[int(rng.integers(len(shapes)))],
                    colours[int(rng.integers(len(colours)))],
                    sizes[int(rng.integers(len(sizes)))],
                )
            )
    return Scene(tuple(objects))


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill: tuple[int, int, int]) -> None:
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
    else:  # guarded by Scene.__post_init__
        raise ValueError(f"unknown shape {shape!r}")


def _channel(value: float) -> int:
    return min(255, max(0, int(round(value))))


def render_scene(
    scene: Scene,
    image_size: int = 48,
    rng: np.random.Generator | None = None,
    *,
    jitter: float = 1.0,
    noise_std: float = 0.0,
) -> Image.Image:
    """Draw ``scene`` as an RGB image of ``image_size``² pixels.

    Without ``rng`` the rendering is canonical (objects centred in their cells, base colours, no
    noise). With ``rng`` each call gives another view: object offsets up to ±12 % of a cell, radius
    ±10 %, colour ±20 per channel, background shade ±15 (all scaled by ``jitter``) and, if ``noise_std`` > 0,
    Gaussian pixel noise (off by default: it triples rendering + PNG time).
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
    if rng is not None and noise_std > 0:
        pixels = np.asarray(image, dtype=np.float32)
        pixels = pixels + noise_std * rng.standard_normal(size=pixels.shape, dtype=np.float32)
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
    return image


def _groups(scene: Scene) -> list[tuple[tuple[str, str, str], list[int]]]:
    """Objects grouped by (size, colour, shape), in order of first cell: [(attrs, cells)]."""
    groups: dict[tuple[str, str, str], list[int]] = {}
    for o in scene.objects:
        groups.setdefault((o.size, o.colour, o.shape), []).append(o.cell)
    return list(groups.items())


def _pick(options: tuple[str, ...], rng: np.random.Generator | None) -> str:
    return options[0] if rng is None else options[int(rng.integers(len(options)))]


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def describe_scene(scene: Scene, rng: np.random.Generator | None = None) -> str:
    """A lower-case caption naming every object's count, size, colour, shape and position.

    Without ``rng`` the caption is canonical; with it, a random paraphrase (prefix, order of
    objects and positions, size and position synonyms, "a"/"one").
    """
    groups = _groups(scene)
    if rng is not None:
        groups = [groups[i] for i in rng.permutation(len(groups))]
    phrases = []
    for (size, colour, shape), cells in groups:
        if rng is not None:
            cells = [cells[i] for i in rng.permutation(len(cells))]
        count = _pick(COUNT_WORDS[len(cells)], rng)
        noun = shape if len(cells) == 1 else SHAPES[shape]
        where = _join([_pick(POSITION_PHRASES[c], rng) for c in cells])
        phrases.append(f"{count} {_pick(SIZES[size][1], rng)} {colour} {noun} {where}")
    body = _join(phrases)
    prefix = _pick(PREFIXES, rng)
    return f"{prefix} {body}" if prefix else body


def caption_vocabulary() -> list[str]:
    """Every word (and punctuation token) a caption can contain, sorted; split like the
    tokenizer's ``Whitespace`` pre-tokenizer (``\\w+|[^\\w\\s]+``)."""
    texts = [*SHAPES, *SHAPES.values(), *COLOURS, *PREFIXES, ", and"]
    texts += [w for _, words in SIZES.values() for w in words]
    texts += [p for phrases in POSITION_PHRASES for p in phrases]
    texts += [w for words in COUNT_WORDS.values() for w in words]
    return sorted({tok for text in texts for tok in _WORD_RE.findall(text)})


def max_caption_words(max_objects: int = 3) -> int:
    """An upper bound on the number of pre-tokenized words in a caption of ≤ ``max_objects``."""
    longest = lambda options: max(len(_WORD_RE.findall(o)) for o in options)  # noqa: E731
    per_object = (
        1  # count word
        + max(longest(words) for _, words in SIZES.values())
        + 1  # colour
        + 1  # shape
        + max(longest(p) for p in POSITION_PHRASES)
        + 1  # separator (", " or "and") between objects or positions
    )
    return longest(PREFIXES) + max_objects * per_object
