"""The demo's deterministic offline corpus: train pairs, test items and the 3×3 retrieval tasks.

Training data are (rendered scene, caption) pairs. Each *test* item is a held-out scene with two
views: a *query view* (one rendering + one paraphrase) and a *candidate view* (another rendering +
another paraphrase). Every item puts three candidates into one mixed pool — its candidate image,
its candidate caption and the fused pair (that image + that caption) — and asks three queries
built from its query view (image, caption, fused). So all nine query→candidate modality cells
are well defined, the diagonal included: a query of modality A for item k must retrieve item k's
candidate of modality B, ranked among the images, texts *and* fused items of all test items.

Train and test scenes are disjoint: a scene (objects, cells, attributes; not its jitter or
caption) goes to the test side iff a stable hash of it falls below ``holdout_fraction``.
Test scenes are unique. The same config (seed included) gives identical PNG bytes and captions.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import datasets
import numpy as np
from tqdm.auto import tqdm

from gcl_hf.benchmarks.task import MODALITIES, RetrievalTask
from gcl_hf.demo.scenes import Scene, describe_scene, render_scene, sample_scene, scene_bucket

#: Short labels for the modalities in task names: image, text, fused.
MODALITY_LABELS: dict[str, str] = {"image": "image", "text": "text", "image,text": "fused"}

_TRAIN, _TEST = 0, 1
_QUERY_VIEW, _CANDIDATE_VIEW = 0, 1


@dataclass
class DemoCorpusConfig:
    """Sizes and rendering options of the demo corpus (defaults: the full demo)."""

    num_train: int = 20_000
    num_test: int = 500
    image_size: int = 48
    max_objects: int = 3
    repeat_prob: float = 0.3
    holdout_fraction: float = 0.1
    jitter: float = 1.0
    noise_std: float = 0.0
    seed: int = 0

    @classmethod
    def quick(cls, **overrides: object) -> "DemoCorpusConfig":
        """A small preset for smoke runs: 2,000 train pairs, 100 test items."""
        return replace(cls(num_train=2_000, num_test=100), **overrides)

    def __post_init__(self) -> None:
        if self.num_train < 0 or self.num_test < 1:
            raise ValueError(f"need num_train >= 0 and num_test >= 1, got {self.num_train}, {self.num_test}")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")


@dataclass
class DemoCorpus:
    """The built corpus.

    ``train``: columns ``id``, ``image`` (``datasets.Image``), ``text``, ``scene`` (JSON).
    ``test``: ``id``, ``image``/``text`` (candidate view), ``query_image``/``query_text`` (query
    view), ``image_path``/``query_image_path`` (PNG paths relative to ``image_root``), ``scene``.
    """

    config: DemoCorpusConfig
    train: datasets.Dataset
    test: datasets.Dataset
    image_root: str

    def tasks(self, pool: str = "mixed", exclude_own_views: bool = True,
              k: tuple[int, ...] = (1, 5, 10)) -> list[RetrievalTask]:
        """The nine per-cell retrieval tasks (see :func:`build_retrieval_tasks`)."""
        return build_retrieval_tasks(self.test, self.image_root, pool=pool,
                                     exclude_own_views=exclude_own_views, k=k)


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _sample_split(config: DemoCorpusConfig, split: int, n: int, unique: bool) -> list[Scene]:
    """Draw ``n`` scenes on one side of the hash split (test: ``unique`` scenes only)."""
    rng = np.random.default_rng([config.seed, split])
    scenes: list[Scene] = []
    seen: set[str] = set()
    stalled, patience = 0, int(200 / config.holdout_fraction)  # draws without a new scene
    while len(scenes) < n:
        stalled += 1
        if stalled > patience:
            raise RuntimeError(
                f"could only draw {len(scenes)} of {n} distinct {'test' if split == _TEST else 'train'} "
                f"scenes (max_objects={config.max_objects}, holdout_fraction={config.holdout_fraction}); "
                "lower num_test or raise max_objects/holdout_fraction"
            )
        scene = sample_scene(rng, config.max_objects, config.repeat_prob)
        if (scene_bucket(scene, config.seed) < config.holdout_fraction) != (split == _TEST):
            continue
        if unique:
            if scene.key in seen:
                continue
            seen.add(scene.key)
        scenes.append(scene)
        stalled = 0
    return scenes


def _view(config: DemoCorpusConfig, scene: Scene, split: int, index: int, view: int) -> tuple[bytes, str]:
    """One rendering (PNG bytes) and one caption of a scene, from its own generator."""
    rng = np.random.default_rng([config.seed, split, index, view])
    image = render_scene(scene, config.image_size, rng, jitter=config.jitter, noise_std=config.noise_std)
    return _png(image), describe_scene(scene, rng)


def _scene_json(scene: Scene) -> str:
    return json.dumps(scene.to_dict(), separators=(",", ":"))


def build_train_split(config: DemoCorpusConfig, progress: bool = True) -> datasets.Dataset:
    """``config.num_train`` (image, caption) pairs from scenes on the training side of the split."""
    scenes = _sample_split(config, _TRAIN, config.num_train, unique=False)
    rows: dict[str, list] = {"id": [], "image": [], "text": [], "scene": []}
    for i, scene in enumerate(tqdm(scenes, desc="render train", disable=not progress)):
        png, caption = _view(config, scene, _TRAIN, i, 0)
        rows["id"].append(f"train-{i:06d}")
        rows["image"].append({"bytes": png, "path": None})
        rows["text"].append(caption)
        rows["scene"].append(_scene_json(scene))
    features = datasets.Features(
        {"id": datasets.Value("string"), "image": datasets.Image(), "text": datasets.Value("string"),
         "scene": datasets.Value("string")}
    )
    return datasets.Dataset.from_dict(rows, features=features)


def build_test_split(config: DemoCorpusConfig, image_root: str | os.PathLike, progress: bool = True) -> datasets.Dataset:
    """``config.num_test`` held-out unique scenes, each with a query and a candidate view; the
    PNGs are written under ``image_root/test/`` (paths in the dataset are relative to it)."""
    root = Path(image_root)
    (root / "test").mkdir(parents=True, exist_ok=True)
    scenes = _sample_split(config, _TEST, config.num_test, unique=True)
    rows: dict[str, list] = {k: [] for k in (
        "id", "image", "text", "query_image", "query_text", "image_path", "query_image_path", "scene")}
    for i, scene in enumerate(tqdm(scenes, desc="render test", disable=not progress)):
        item = f"test-{i:05d}"
        query_png, query_caption = _view(config, scene, _TEST, i, _QUERY_VIEW)
        cand_png, cand_caption = _view(config, scene, _TEST, i, _CANDIDATE_VIEW)
        for attempt in range(1, 50):  # the two captions must be different paraphrases
            if cand_caption != query_caption:
                break
            cand_caption = describe_scene(scene, np.random.default_rng([config.seed, _TEST, i, _CANDIDATE_VIEW, attempt]))
        cand_path, query_path = f"test/{item}-candidate.png", f"test/{item}-query.png"
        (root / cand_path).write_bytes(cand_png)
        (root / query_path).write_bytes(query_png)
        rows["id"].append(item)
        rows["image"].append({"bytes": cand_png, "path": cand_path})
        rows["text"].append(cand_caption)
        rows["query_image"].append({"bytes": query_png, "path": query_path})
        rows["query_text"].append(query_caption)
        rows["image_path"].append(cand_path)
        rows["query_image_path"].append(query_path)
        rows["scene"].append(_scene_json(scene))
    string = datasets.Value("string")
    features = datasets.Features(
        {"id": string, "image": datasets.Image(), "text": string, "query_image": datasets.Image(),
         "query_text": string, "image_path": string, "query_image_path": string, "scene": string}
    )
    return datasets.Dataset.from_dict(rows, features=features)


def build_demo_corpus(output_dir: str | os.PathLike, config: DemoCorpusConfig | None = None,
                      progress: bool = True) -> DemoCorpus:
    """Render the train split (in memory) and the test split (PNGs under ``output_dir/images``)."""
    config = config or DemoCorpusConfig()
    image_root = Path(output_dir) / "images"
    test = build_test_split(config, image_root, progress=progress)
    train = build_train_split(config, progress=progress)
    (image_root / "config.json").write_text(json.dumps(asdict(config), indent=2))
    return DemoCorpus(config=config, train=train, test=test, image_root=str(image_root))


def _rows(ids: list[str], texts: list[str | None], images: list[str | None], modality: str) -> dict[str, list]:
    return {"id": ids, "text": texts, "image": images, "modality": [modality] * len(ids)}


def _table(parts: list[dict[str, list]]) -> datasets.Dataset:
    merged: dict[str, list] = {"id": [], "text": [], "image": [], "modality": []}
    for part in parts:
        for key in merged:
            merged[key].extend(part[key])
    string = datasets.Value("string")
    features = datasets.Features({"id": string, "text": string, "image": string, "modality": string})
    return datasets.Dataset.from_dict(merged, features=features)


def candidate_id(item: str, modality: str) -> str:
    """The pool id of ``item``'s candidate of ``modality`` (e.g. ``test-00003:fused``)."""
    return f"{item}:{MODALITY_LABELS[modality]}"


def query_id(item: str, modality: str) -> str:
    """The id of ``item``'s query of ``modality`` (e.g. ``test-00003:query-image``)."""
    return f"{item}:query-{MODALITY_LABELS[modality]}"


def build_retrieval_tasks(test: datasets.Dataset, image_root: str | os.PathLike, *, pool: str = "mixed",
                          exclude_own_views: bool = True, k: tuple[int, ...] = (1, 5, 10)) -> list[RetrievalTask]:
    """One :class:`RetrievalTask` per (query modality, candidate modality), in row-major order
    over ``MODALITIES`` = (image, text, image,text); names like ``scenes:text->fused``.

    ``pool="mixed"``: every task shares one corpus of 3 × len(test) candidates (each item's image,
    caption and fused pair); ``exclude_own_views`` removes the query item's candidates of the
    *other* modalities from its ranking (its own caption is not a wrong answer to "find its
    image", it describes the same scene) — the distractors are all other items' candidates of all
    modalities, so a modality gap still costs recall. ``pool="local"``: the corpus holds only the
    target modality (M-BEIR's local pools). Relevant: exactly the item's target-modality candidate.
    """
    if pool not in ("mixed", "local"):
        raise ValueError(f"pool must be 'mixed' or 'local', got {pool!r}")
    items = test["id"][:]  # plain lists (datasets >= 4 returns lazy columns)
    cand_paths, cand_texts = test["image_path"][:], test["text"][:]
    query_paths, query_texts = test["query_image_path"][:], test["query_text"][:]
    n = len(items)

    def candidates(modality: str) -> dict[str, list]:
        ids = [candidate_id(item, modality) for item in items]
        texts = cand_texts if "text" in modality else [None] * n
        images = cand_paths if "image" in modality else [None] * n
        return _rows(ids, texts, images, modality)

    def queries(modality: str) -> datasets.Dataset:
        ids = [query_id(item, modality) for item in items]
        texts = query_texts if "text" in modality else [None] * n
        images = query_paths if "image" in modality else [None] * n
        return _table([_rows(ids, texts, images, modality)])

    per_modality = {m: candidates(m) for m in MODALITIES}
    mixed = _table([per_modality[m] for m in MODALITIES]) if pool == "mixed" else None
    tasks = []
    for query_modality in MODALITIES:
        query_table = queries(query_modality)
        for cand_modality in MODALITIES:
            corpus = mixed if mixed is not None else _table([per_modality[cand_modality]])
            qrels = {query_id(item, query_modality): {candidate_id(item, cand_modality)} for item in items}
            exclude = None
            if pool == "mixed" and exclude_own_views:
                exclude = {
                    query_id(item, query_modality): {candidate_id(item, m) for m in MODALITIES if m != cand_modality}
                    for item in items
                }
            name = f"scenes:{MODALITY_LABELS[query_modality]}->{MODALITY_LABELS[cand_modality]}"
            tasks.append(RetrievalTask(
                name=name, queries=query_table, corpus=corpus, qrels=qrels, metric="recall", k=tuple(k),
                image_root=str(image_root), exclude=exclude,
                meta={"query_modality": query_modality, "candidate_modality": cand_modality, "pool": pool,
                      "exclude_own_views": bool(exclude_own_views and pool == "mixed"), "headline_k": 1},
            ))
    return tasks
