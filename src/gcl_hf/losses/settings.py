"""The loss settings: their vocabulary, how they are parsed, and how an unset `negatives` is resolved.

This module is the one owner of the loss settings. `gcl_loss`, `GCLConfig` and `GCLTrainingArguments` all read
pairs, pair weights, negatives and objective through :meth:`LossSettings.parse`, so a value means the same
thing (and fails with the same message) wherever a user gives it.

The default of `negatives` follows the paper: with no option the loss is GCL's Eq. 2 (``"all"``), and
``pairs=CLIP_PAIRS`` alone is CLIP's loss (``"modality"``). The rule, for any subset of pairs:
**an unset `negatives` is ``"all"`` when some pair involves the fused modality and the objective is softmax,
else ``"modality"``** (image↔text pairs alone are CLIP's loss; the sigmoid objective has only the per-pair form).
An explicit `negatives` always wins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Union

__all__ = [
    "ALL_PAIRS",
    "CLIP_PAIRS",
    "Modality",
    "LossSettings",
    "MODALITY_NAMES",
    "NEGATIVES",
    "OBJECTIVES",
    "Pair",
    "pair_name",
    "parse_pair_weights",
    "parse_pairs",
    "resolve_negatives",
]

Pair = tuple[str, str]
PairsLike = Union[str, Sequence[Union[str, Sequence[str]]]]
WeightsLike = Union[str, Sequence[float], Mapping[str, float], None]

#: The three embedding modalities of an image–caption pair: the one modality vocabulary inside the library (the
#: benchmark readers translate their own, e.g. M-BEIR's "image,text", at the boundary).
Modality = Literal["image", "text", "fused"]
MODALITY_NAMES: tuple[str, str, str] = ("image", "text", "fused")
#: GCL's six directed (anchor, target) pairs.
ALL_PAIRS: tuple[Pair, ...] = (
    ("image", "text"),
    ("text", "image"),
    ("image", "fused"),
    ("fused", "image"),
    ("text", "fused"),
    ("fused", "text"),
)
#: CLIP's two directed pairs: with modality negatives, exactly CLIP's loss.
CLIP_PAIRS: tuple[Pair, ...] = (("image", "text"), ("text", "image"))
#: ``"all"``: one softmax over every batch embedding of the modalities in the pairs (the paper's Eq. 2);
#: ``"modality"``: a separate InfoNCE per pair over the target modality's embeddings (the per-pair ablation).
NEGATIVES: tuple[str, ...] = ("all", "modality")
#: ``"softmax"`` (InfoNCE, CLIP-like backbones) or ``"sigmoid"`` (SigLIP's pairwise loss).
OBJECTIVES: tuple[str, ...] = ("softmax", "sigmoid")

_ALIASES = {"image": "image", "img": "image", "i": "image",
            "text": "text", "txt": "text", "t": "text",
            "fused": "fused", "f": "fused", "it": "fused", "image,text": "fused"}
_PRESETS = {"all": ALL_PAIRS, "gcl": ALL_PAIRS, "clip": CLIP_PAIRS}
_SEPARATORS = ("->", ":", "-")


def pair_name(pair: Pair) -> str:
    """`("image", "text")` → `"image->text"` (the key of per-pair losses in logs and weight mappings)."""
    return f"{pair[0]}->{pair[1]}"


def _modality(name: object, where: str) -> str:
    key = name.strip().lower() if isinstance(name, str) else None
    if key not in _ALIASES:
        raise ValueError(f"unknown modality {name!r} in {where}; expected one of {MODALITY_NAMES}")
    return _ALIASES[key]


def _parse_pair_string(item: str, where: str) -> Pair:
    for sep in _SEPARATORS:
        if sep in item:
            parts = item.split(sep)
            if len(parts) != 2:
                break
            return _modality(parts[0], where), _modality(parts[1], where)
    raise ValueError(
        f"cannot read pair {item!r} in {where}; write it as 'anchor->target' (or 'anchor-target'), e.g. 'image->text'"
    )


def parse_pairs(spec: PairsLike) -> tuple[Pair, ...]:
    """Normalise a pair specification into a tuple of (anchor, target) modality names.

    Accepts `"all"` (or `"gcl"`) → `ALL_PAIRS`, `"clip"` → `CLIP_PAIRS`, a comma-separated string such as
    `"image-text,text->image"` (aliases `i`/`img`, `t`/`txt`, `f`), or a sequence whose items are
    `("image", "text")` tuples or `"image->text"` strings. Raises `ValueError` for unknown names, a pair with the
    same modality twice, a duplicate pair, or an empty list.
    """
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text in _PRESETS:
            return _PRESETS[text]
        items: list = [s for s in (p.strip() for p in text.split(",")) if s]
        if not items:
            raise ValueError(f"empty pair specification {spec!r}")
    elif isinstance(spec, Sequence):
        items = list(spec)
        if len(items) == 2 and all(isinstance(x, str) and x.strip().lower() in _ALIASES for x in items):
            items = [tuple(items)]  # a single bare pair such as ("image", "text")
    else:
        raise ValueError(f"pairs must be a string or a sequence of pairs, got {type(spec).__name__}")
    if not items:
        raise ValueError("pairs is empty: give at least one (anchor, target) pair")
    out: list[Pair] = []
    for idx, item in enumerate(items):
        where = f"pairs[{idx}]"
        if isinstance(item, str):
            pair = _parse_pair_string(item, where)
        elif isinstance(item, Sequence) and len(item) == 2:
            pair = (_modality(item[0], where), _modality(item[1], where))
        else:
            raise ValueError(f"{where} = {item!r} is not a pair; expected ('image', 'text') or 'image->text'")
        if pair[0] == pair[1]:
            raise ValueError(f"{where} = {item!r} contrasts {pair[0]!r} with itself; a pair needs two modalities")
        if pair in out:
            raise ValueError(f"{where} = {item!r} repeats pair {pair_name(pair)}; use pair_weights to weight it")
        out.append(pair)
    return tuple(out)


def _weight(value: object, label: str) -> float:
    try:
        weight = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"pair_weights: {label} = {value!r} is not a number") from None
    if not weight >= 0.0 or weight == float("inf"):  # also catches NaN
        raise ValueError(f"pair_weights: {label} must be finite and >= 0, got {value!r}")
    return weight


def parse_pair_weights(spec: WeightsLike, pairs: Sequence[Pair]) -> tuple[float, ...] | None:
    """One weight per pair of ``pairs``, or ``None`` (all 1).

    ``spec`` is a sequence of numbers (in pair order), a mapping ``"image->text" → weight`` (pairs it omits weigh
    1), or the command-line string forms ``"1,1,2,2,1,1"`` / ``"image->fused=2,fused->image=2"``.
    """
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return None
    names = [pair_name(p) for p in pairs]
    if isinstance(spec, str):
        items = [s.strip() for s in spec.split(",") if s.strip()]
        if all("=" in item for item in items):
            mapping: dict[str, object] = {}
            for item in items:
                key, _, value = item.rpartition("=")
                mapping[pair_name(parse_pairs(key)[0])] = value
            spec = mapping
        elif any("=" in item for item in items):
            raise ValueError(f"pair_weights={spec!r}: use either all positional weights or all 'pair=weight' items")
        else:
            spec = items
    if isinstance(spec, Mapping):
        unknown = [k for k in spec if k not in names]
        if unknown:
            raise ValueError(f"pair_weights names pairs not in pairs: {unknown}; pairs are {names}")
        weights = tuple(_weight(spec.get(n, 1.0), n) for n in names)
    else:
        values = list(spec)
        if len(values) != len(names):
            raise ValueError(f"pair_weights has {len(values)} weights for {len(names)} pairs ({', '.join(names)})")
        weights = tuple(_weight(v, n) for v, n in zip(values, names))
    if sum(weights) <= 0.0:
        raise ValueError(f"pair_weights sum to zero ({list(weights)}); at least one pair needs a positive weight")
    return weights


def resolve_negatives(pairs: Sequence[Pair], objective: str, negatives: str | None) -> str:
    """The negatives actually used: an explicit value, else the rule of the module docstring."""
    if negatives is not None:
        return negatives
    uses_fused = any("fused" in pair for pair in pairs)
    return "all" if uses_fused and objective == "softmax" else "modality"


@dataclass(frozen=True)
class LossSettings:
    """Validated loss settings: what `gcl_loss` computes. Build with :meth:`parse`."""

    pairs: tuple[Pair, ...] = ALL_PAIRS
    pair_weights: tuple[float, ...] | None = None
    negatives: str = "all"
    objective: str = "softmax"

    @classmethod
    def parse(
        cls,
        pairs: PairsLike = ALL_PAIRS,
        pair_weights: WeightsLike = None,
        negatives: str | None = None,
        objective: str = "softmax",
    ) -> "LossSettings":
        """Check every setting (a `ValueError` naming the field) and resolve an unset ``negatives``."""
        parsed = parse_pairs(pairs)
        if objective not in OBJECTIVES:
            raise ValueError(f"objective={objective!r}: expected one of {OBJECTIVES}")
        if negatives is not None and negatives not in NEGATIVES:
            raise ValueError(f"negatives={negatives!r}: expected one of {NEGATIVES} (or None for the default)")
        resolved = resolve_negatives(parsed, objective, negatives)
        if objective == "sigmoid" and resolved == "all":
            raise ValueError('objective="sigmoid" supports negatives="modality" only (negatives="all" is softmax-only)')
        return cls(parsed, parse_pair_weights(pair_weights, parsed), resolved, objective)

    @property
    def weights(self) -> tuple[float, ...]:
        """One weight per pair (1 when unset)."""
        return self.pair_weights if self.pair_weights is not None else (1.0,) * len(self.pairs)

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities some pair uses, in `MODALITY_NAMES` order."""
        return tuple(m for m in MODALITY_NAMES if any(m in p for p in self.pairs))
