"""The demo's deterministic offline corpus: complementary image–caption pairs and held-out 2×2 test groups.

Training data are ordinary (picture, caption) pairs of random :class:`~gcl_hf.demo.items.DemoItem`\\ s: each
picture shows objects its caption does not name, and each caption names an object its picture does not
show. The *test* side consists of :func:`~gcl_hf.demo.items.sample_group` groups of four items (one set of
linked objects; two image-only × two text-only variants), so a fused item is the only view that tells the
four apart. Every test item has two views: a *query view* (one rendering + one paraphrase) and a
*candidate view* (another rendering + another paraphrase); :mod:`gcl_hf.demo.tasks` turns them into the
nine query→candidate retrieval tasks.

Train and test are disjoint: an item goes to the test side iff a stable hash of its linked objects falls
below ``holdout_fraction`` (so no set of linked objects of a test item is ever trained on, hence no test
caption content), and every test group has its own linked objects. The same config (seed included) gives identical PNG bytes and captions.
"""

from __future__ import annotations

import functools
import io
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from gcl_hf.demo.items import (
    DemoItem,
    ItemLayout,
    caption,
    is_held_out,
    sample_group,
    sample_item,
)
from gcl_hf.demo.scenes import render_scene

if TYPE_CHECKING:  # pragma: no cover
    import datasets

__all__ = [
    "GROUP_SIZE",
    "DemoCorpus",
    "DemoCorpusConfig",
    "TrainPairs",
    "build_demo_corpus",
    "build_test_split",
    "build_train_split",
    "render_train_pairs",
]

#: Items per test group (two image-only × two text-only variants).
GROUP_SIZE = 4
_TRAIN, _TEST = 0, 1
_QUERY_VIEW, _CANDIDATE_VIEW = 0, 1


@dataclass
class DemoCorpusConfig:
    """Sizes, item layout and rendering options of the demo corpus (defaults: the full demo)."""

    num_train: int = 20_000
    num_test: int = 480
    image_size: int = 48
    linked_objects: int = 2
    image_only_objects: int = 1
    text_only_objects: int = 1
    holdout_fraction: float = 0.1
    jitter: float = 1.0
    seed: int = 0

    @classmethod
    def quick(cls, **overrides: object) -> DemoCorpusConfig:
        """A small preset for smoke runs: 2,000 train pairs, 96 test items."""
        return replace(cls(num_train=2_000, num_test=96), **overrides)

    def __post_init__(self) -> None:
        if self.num_train < 0 or self.num_test < GROUP_SIZE or self.num_test % GROUP_SIZE:
            raise ValueError(f"need num_train >= 0 and num_test a positive multiple of {GROUP_SIZE} "
                             f"(2x2 test groups), got num_train={self.num_train}, num_test={self.num_test}")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        _ = self.layout  # validates the object counts

    @property
    def layout(self) -> ItemLayout:
        return ItemLayout(self.linked_objects, self.image_only_objects, self.text_only_objects)


@dataclass
class DemoCorpus:
    """The built corpus.

    ``train_pairs``: the rendered train pairs (:class:`TrainPairs`); ``train`` is the same as a
    ``datasets.Dataset`` (columns ``id``, ``image``, ``text``, ``item``; built on first access).
    ``test``: ``id``, ``group``, ``image``/``text`` (candidate view), ``query_image``/``query_text`` (query
    view), ``image_path``/``query_image_path`` (PNG paths relative to ``image_root``), ``item`` and the
    content keys ``image_key``, ``text_key``, ``fused_key`` (equal keys: indistinguishable content).
    """

    config: DemoCorpusConfig
    train_pairs: TrainPairs
    test: datasets.Dataset
    image_root: str

    @functools.cached_property
    def train(self) -> datasets.Dataset:
        return self.train_pairs.to_dataset()

    def tasks(self, pool: str = "mixed", exclude_counterparts: bool = True, k: tuple[int, ...] = (1, 5, 10)):
        """The nine per-cell retrieval tasks (see :func:`gcl_hf.demo.tasks.build_retrieval_tasks`)."""
        from gcl_hf.demo.tasks import build_retrieval_tasks

        return build_retrieval_tasks(self.test, self.image_root, pool=pool,
                                     exclude_counterparts=exclude_counterparts, k=k)


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _stalled_error(config: DemoCorpusConfig, side: str, got: int, wanted: int) -> RuntimeError:
    return RuntimeError(f"could only draw {got} of {wanted} {side} (holdout_fraction={config.holdout_fraction}, "
                        f"layout {config.layout}); lower num_test or raise holdout_fraction")


def sample_train_items(config: DemoCorpusConfig) -> list[DemoItem]:
    """``config.num_train`` random items on the training side of the split."""
    rng = np.random.default_rng([config.seed, _TRAIN])
    items: list[DemoItem] = []
    patience = int(200 / (1.0 - config.holdout_fraction))
    stalled = 0
    while len(items) < config.num_train:
        item = sample_item(rng, config.layout)
        if is_held_out(item, config.holdout_fraction, config.seed):
            stalled += 1
            if stalled > patience:  # pragma: no cover - needs holdout_fraction ~ 1
                raise _stalled_error(config, "train items", len(items), config.num_train)
            continue
        items.append(item)
        stalled = 0
    return items


def sample_test_groups(config: DemoCorpusConfig) -> list[tuple[DemoItem, ...]]:
    """``config.num_test / 4`` groups (:func:`~gcl_hf.demo.items.sample_group`) on the test side of the split,
    each with its own linked objects."""
    rng = np.random.default_rng([config.seed, _TEST])
    wanted = config.num_test // GROUP_SIZE
    groups: list[tuple[DemoItem, ...]] = []
    seen: set[str] = set()
    stalled, patience = 0, int(200 / config.holdout_fraction)
    while len(groups) < wanted:
        stalled += 1
        if stalled > patience:
            raise _stalled_error(config, "distinct test groups", len(groups), wanted)
        group = sample_group(rng, config.layout)
        link = group[0].link_key
        if link in seen or not is_held_out(group[0], config.holdout_fraction, config.seed):
            continue
        seen.add(link)
        groups.append(group)
        stalled = 0
    return groups


def _view(config: DemoCorpusConfig, item: DemoItem, split: int, index: int, view: int) -> tuple[bytes, str]:
    """One rendering (PNG bytes) and one caption of an item, from its own generator."""
    rng = np.random.default_rng([config.seed, split, index, view])
    image = render_scene(item.picture, config.image_size, rng, jitter=config.jitter)
    return _png(image), caption(item, rng)


@dataclass
class TrainPairs:
    """The rendered train pairs: ``images`` ``[N, H, W, 3]`` uint8, one ``texts`` caption and one ``items``
    JSON per pair (kept as arrays: training needs no PNG round trip)."""

    images: np.ndarray
    texts: list[str]
    items: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def to_dataset(self) -> datasets.Dataset:
        """As a ``datasets.Dataset``: ``id``, ``image`` (PNG, ``datasets.Image``), ``text``, ``item``."""
        from PIL import Image

        rows = {"id": [f"train-{i:06d}" for i in range(len(self))],
                "image": [{"bytes": _png(Image.fromarray(a)), "path": None} for a in self.images],
                "text": list(self.texts), "item": list(self.items)}
        import datasets

        string = datasets.Value("string")
        features = datasets.Features({"id": string, "image": datasets.Image(), "text": string, "item": string})
        return datasets.Dataset.from_dict(rows, features=features)


def render_train_pairs(config: DemoCorpusConfig, progress: bool = True) -> TrainPairs:
    """``config.num_train`` (picture, caption) pairs of items on the training side of the split."""
    items = sample_train_items(config)
    size = config.image_size
    images = np.empty((len(items), size, size, 3), dtype=np.uint8)
    texts = []
    from tqdm.auto import tqdm

    for i, item in enumerate(tqdm(items, desc="render train", disable=not progress)):
        rng = np.random.default_rng([config.seed, _TRAIN, i, 0])
        images[i] = np.asarray(render_scene(item.picture, size, rng, jitter=config.jitter))
        texts.append(caption(item, rng))
    return TrainPairs(images, texts, [item.to_json() for item in items])


def build_train_split(config: DemoCorpusConfig, progress: bool = True) -> datasets.Dataset:
    """:func:`render_train_pairs` as a ``datasets.Dataset`` (``id``, ``image``, ``text``, ``item``)."""
    return render_train_pairs(config, progress).to_dataset()


def build_test_split(config: DemoCorpusConfig, image_root: str | os.PathLike, progress: bool = True) -> datasets.Dataset:
    """``config.num_test`` held-out items in 2×2 groups, each with a query and a candidate view; the PNGs are
    written under ``image_root/test/`` (paths in the dataset are relative to it)."""
    root = Path(image_root)
    (root / "test").mkdir(parents=True, exist_ok=True)
    columns = ("id", "group", "image", "text", "query_image", "query_text", "image_path", "query_image_path",
               "item", "image_key", "text_key", "fused_key")
    rows: dict[str, list] = {k: [] for k in columns}
    items = [(g, item) for g, group in enumerate(sample_test_groups(config)) for item in group]
    from tqdm.auto import tqdm

    for i, (g, item) in enumerate(tqdm(items, desc="render test", disable=not progress)):
        name = f"test-{i:05d}"
        query_png, query_text = _view(config, item, _TEST, i, _QUERY_VIEW)
        cand_png, cand_text = _view(config, item, _TEST, i, _CANDIDATE_VIEW)
        for attempt in range(1, 50):  # the two captions must be different paraphrases
            if cand_text != query_text:
                break
            cand_text = caption(item, np.random.default_rng([config.seed, _TEST, i, _CANDIDATE_VIEW, attempt]))
        cand_path, query_path = f"test/{name}-candidate.png", f"test/{name}-query.png"
        (root / cand_path).write_bytes(cand_png)
        (root / query_path).write_bytes(query_png)
        values = (name, g, {"bytes": cand_png, "path": cand_path}, cand_text,
                  {"bytes": query_png, "path": query_path}, query_text, cand_path, query_path,
                  item.to_json(), item.image_key, item.text_key, item.fused_key)
        for key, value in zip(columns, values):
            rows[key].append(value)
    import datasets

    string = datasets.Value("string")
    features = datasets.Features({k: string for k in columns})
    features.update({"group": datasets.Value("int32"), "image": datasets.Image(), "query_image": datasets.Image()})
    return datasets.Dataset.from_dict(rows, features=features)


def build_demo_corpus(output_dir: str | os.PathLike, config: DemoCorpusConfig | None = None,
                      progress: bool = True) -> DemoCorpus:
    """Render the train pairs (in memory) and the test split (PNGs under ``output_dir/images``)."""
    config = config or DemoCorpusConfig()
    image_root = Path(output_dir) / "images"
    test = build_test_split(config, image_root, progress=progress)
    train = render_train_pairs(config, progress=progress)
    (image_root / "config.json").write_text(json.dumps(asdict(config), indent=2))
    return DemoCorpus(config=config, train_pairs=train, test=test, image_root=str(image_root))
