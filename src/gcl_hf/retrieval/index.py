"""`GCLIndex`: a corpus encoded once, saved to a directory, and queried by text, image or both.

A directory written by :meth:`GCLIndex.save` (and by ``gcl-hf encode``, which writes the same files beside
its cache shards) holds

- ``meta.json`` + ``shard_*.npy``: the ``[N, D]`` float32 embeddings in the embedding cache's layout
  (:func:`~gcl_hf.retrieval.embedding_cache.load_cached` memory-maps them);
- ``documents/``: a ``datasets`` dataset (``save_to_disk``, memory-mapped Arrow) whose row ``i`` holds the ``id``
  of embedding ``i`` (and its ``text``, ``modality`` and image path, for display);
- ``gcl_index.json``: the model reference (path or Hub id + revision), the fingerprints of the model's weights
  and of the processor, the processor kwargs the corpus was encoded with, and an integrity digest binding these
  fields to the documents' ids and the shards' checksums (see :mod:`gcl_hf.retrieval.index_store`).

A save never touches a folder that is not gcl-hf's (it is refused, naming it) and is atomic as a whole; a load
checks every field, the ids of ``documents/`` against the shards' sidecars, and the integrity digest.

A query is encoded by the same engine as the corpus (:mod:`gcl_hf.modeling.engine`, with the corpus' processor
kwargs and text settings) so its numbers agree with the corpus', and searched exactly
(:func:`~gcl_hf.retrieval.search.exact_topk`) or, when asked for and installed, with a faiss flat index.
Loading with another model or processor than the corpus was encoded with is refused: the scores would be
meaningless.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch

from gcl_hf.atomic import atomic_replace_dir, atomic_write_text
from gcl_hf.retrieval.documents import as_documents, documents_from_folder, documents_from_records
from gcl_hf.retrieval.embedding_cache import (CorpusEmbeddings, load_cached, model_fingerprint, processor_fingerprint,
                                              shard_sidecars, write_embeddings)
from gcl_hf.modeling.engine import encode_items, infer_modality
from gcl_hf.retrieval.index_store import (DOCUMENTS_DIR, FORMAT, INDEX_FILE, IndexFormatError, check_fields,
                                          integrity_digest, link_cache_files, normalised_ids, ownership_problem,
                                          stage_directory)
from gcl_hf.retrieval.distributed_encoding import encode_with
from gcl_hf.retrieval.options import EncodeOptions
from gcl_hf.retrieval.search import build_faiss_index, exact_topk, faiss_topk, parse_search_backend

__all__ = ["GCLIndex", "IndexFormatError", "IndexInfo", "IndexMismatchError", "SearchResults", "documents_from_folder",
           "documents_from_records", "model_fingerprint",
           "processor_fingerprint"]

#: 2: gcl_index.json carries an integrity digest (fields + ids + shard checksums)
VERSION = 2
logger = logging.getLogger(__name__)
_DOC_COLUMNS = ("id", "text", "image", "modality")

class IndexMismatchError(ValueError):
    """The model or processor offered to an index is not the one its corpus was encoded with."""


@dataclass
class IndexInfo:
    """What an index was built with (``gcl_index.json``)."""

    model_fingerprint: str
    processor_fingerprint: str
    num_rows: int
    dim: int
    model: str | None = None
    revision: str | None = None
    processor: str | None = None
    processor_kwargs: dict[str, Any] = field(default_factory=dict)
    image_root: str | None = None
    format: str = FORMAT
    version: int = VERSION
    integrity: str | None = None

    @classmethod
    def read(cls, path: Path) -> IndexInfo:
        """Parse and check ``gcl_index.json`` (each field's presence and type; errors name the file)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path.parent}: no {INDEX_FILE}: not a gcl-hf index (build one with "
                                    "GCLIndex.build(...).save(dir) or gcl-hf encode)") from None
        except (OSError, ValueError) as exc:
            raise IndexFormatError(f"{path}: unreadable ({type(exc).__name__}: {exc}); rebuild the index") from None
        if isinstance(data, dict) and (data.get("format") != FORMAT or not isinstance(data.get("version"), int)
                                       or data["version"] > VERSION):
            raise IndexFormatError(f"{path}: format {data.get('format')!r} version {data.get('version')!r} is not "
                                   f"a {FORMAT} this gcl-hf reads (version <= {VERSION})")
        return cls(**check_fields(path, data))


@dataclass
class SearchResults:
    """Top-k of one query, best first: corpus ``ids``, ``scores`` (inner products of normalised embeddings,
    i.e. cosine similarities) and ``rows`` (positions in the index)."""

    ids: list[str]
    scores: list[float]
    rows: list[int]

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[tuple[str, float]]:
        return iter(zip(self.ids, self.scores))


def _reference(model: Any) -> str | None:
    name = getattr(model, "name_or_path", None) or None
    if name and Path(name).is_dir():
        return str(Path(name).resolve())
    return name


class GCLIndex:
    """Embeddings of a corpus with their ids, and the model that made them, ready to be searched.

    Build one with :meth:`build`, write it with :meth:`save`, read it back with :meth:`load` (which refuses a
    model or processor other than the corpus was encoded with), query it with :meth:`search`.
    """

    def __init__(self, embeddings: CorpusEmbeddings | torch.Tensor | np.ndarray, documents: datasets.Dataset,
                 info: IndexInfo, *, model: Any = None, processor: Any = None, backend: str = "exact"):
        backend = parse_search_backend(backend)
        if isinstance(embeddings, torch.Tensor):
            embeddings = embeddings.detach().to("cpu", torch.float32).numpy()
        rows = embeddings.num_rows if isinstance(embeddings, CorpusEmbeddings) else len(embeddings)
        if rows != len(documents):
            raise ValueError(f"{rows} embeddings for {len(documents)} documents")
        self.embeddings = embeddings
        self.documents = documents
        self.info = info
        self.model = model
        self.processor = processor
        self.backend = backend
        self._faiss: Any = None
        self._ids: list[str] | None = None

    # ------------------------------------------------------------------------------------------ building
    @classmethod
    def build(cls, model: Any, processor: Any, data: Any, *, image_root: str | os.PathLike | None = None,
              batch_size: int = 64, num_workers: int = 0, device: torch.device | str | None = None,
              processor_kwargs: dict[str, Any] | None = None, cache_dir: str | os.PathLike | None = None,
              shard_size: int = 65536, model_ref: str | None = None, revision: str | None = None,
              processor_ref: str | None = None, backend: str = "exact", show_progress: bool = True) -> GCLIndex:
        """Encode ``data`` with ``model`` / ``processor`` into an index.

        ``data``: a ``datasets.Dataset`` with ``id`` and ``text`` and/or ``image`` columns (``modality``
        inferred when absent), a list of records ``{"id", "text", "image"}``, or a folder of documents (see
        :func:`documents_from_folder`). ``image_root``: where relative image paths resolve (a folder's own
        path by default). With ``cache_dir`` the embeddings go through the resumable on-disk cache.
        ``model_ref`` / ``revision`` / ``processor_ref`` record where the model comes from, so
        :meth:`load` can reload it (default: the model's ``name_or_path``).
        """
        documents, folder_root = as_documents(data)
        root = str(image_root) if image_root is not None else folder_root
        fingerprints = model_fingerprint(model), processor_fingerprint(processor)
        options = EncodeOptions(image_root=root, batch_size=batch_size, num_workers=num_workers, device=device,
                                processor_kwargs=processor_kwargs, show_progress=show_progress, cache_dir=cache_dir,
                                shard_size=shard_size)
        embeddings = encode_with(model, processor, documents, options, desc="encoding corpus")
        return cls.from_embeddings(embeddings, documents, model, processor, image_root=root, model_ref=model_ref,
                                   revision=revision, processor_ref=processor_ref, processor_kwargs=processor_kwargs,
                                   backend=backend, fingerprints=fingerprints)

    @classmethod
    def from_embeddings(cls, embeddings: CorpusEmbeddings | torch.Tensor | np.ndarray, documents: datasets.Dataset,
                        model: Any, processor: Any, *, image_root: str | None = None, model_ref: str | None = None,
                        revision: str | None = None, processor_ref: str | None = None,
                        processor_kwargs: dict[str, Any] | None = None, backend: str = "exact",
                        fingerprints: tuple[str, str] | None = None) -> GCLIndex:
        """An index of embeddings already computed by ``model`` / ``processor`` (row ``i`` = ``documents[i]``),
        e.g. a cache written by ``gcl-hf encode`` or :func:`~gcl_hf.retrieval.embedding_cache.encode_corpus`.
        ``fingerprints``: the model's and processor's, when already computed."""
        dim = embeddings.dim if isinstance(embeddings, CorpusEmbeddings) else int(embeddings.shape[1])
        model_fp, processor_fp = fingerprints or (model_fingerprint(model), processor_fingerprint(processor))
        info = IndexInfo(model_fingerprint=model_fp, processor_fingerprint=processor_fp, num_rows=len(documents),
                         dim=dim, model=model_ref or _reference(model), revision=revision, processor=processor_ref,
                         processor_kwargs=dict(processor_kwargs or {}), image_root=image_root)
        return cls(embeddings, documents, info, model=model, processor=processor, backend=backend)

    # ------------------------------------------------------------------------------------------ saving
    def save(self, directory: str | os.PathLike) -> Path:
        """Write the index to ``directory``, atomically as a whole (written beside it, then swapped in).

        ``directory`` must be new, empty, an index, or the embedding cache the vectors live in (as after
        ``gcl-hf encode``, whose shards are kept); any other folder is the user's and is refused, untouched."""
        directory = Path(directory)
        source = self.embeddings.directory if isinstance(self.embeddings, CorpusEmbeddings) else None
        problem = ownership_problem(directory, source)
        if problem:
            raise FileExistsError(problem)
        if len(self.documents) == 0:
            raise ValueError("an index needs at least one document")
        stage = stage_directory(directory)
        try:
            if source is not None and directory.exists() and source.resolve() == directory.resolve():
                link_cache_files(source, stage)
            else:
                self._write_embeddings(stage)
            columns = [c for c in _DOC_COLUMNS if c in self.documents.column_names]
            docs = self.documents.select_columns(columns)
            if "image" in columns and docs.features["image"] != datasets.Value("string"):
                docs = docs.remove_columns("image")  # bytes / decoded images: the embeddings are what matters
            docs.flatten_indices().save_to_disk(str(stage / DOCUMENTS_DIR))
            ids, digests = shard_sidecars(stage)
            if normalised_ids(ids) != normalised_ids(docs["id"]):
                raise ValueError(f"{source}: the cached embeddings hold other ids than the documents")
            fields = {**asdict(self.info), "version": VERSION}
            fields["integrity"] = integrity_digest(fields, ids, digests)
            self.info = IndexInfo(**fields)
            text = json.dumps(fields, indent=2)
            atomic_write_text(stage / INDEX_FILE, text)
            atomic_replace_dir(stage, directory)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        return directory  # memory-mapped shards stay valid: the swapped-in files are links to the same bytes

    def _write_embeddings(self, directory: Path) -> None:
        if isinstance(self.embeddings, CorpusEmbeddings):
            if not self.embeddings.complete:
                raise ValueError(f"{self.embeddings.directory}: incomplete cache (missing {self.embeddings.missing})")
            shards = self.embeddings.shards
            shard_size = int(json.loads((self.embeddings.directory / "meta.json").read_text())["shard_size"])
        else:
            shards, shard_size = [np.asarray(self.embeddings, dtype=np.float32)], max(1, len(self.embeddings))
        write_embeddings(directory, shards, list(self.documents["id"]), shard_size)

    @classmethod
    def load(cls, directory: str | os.PathLike, model: Any = None, processor: Any = None, *, backend: str = "exact",
             device: torch.device | str | None = None) -> GCLIndex:
        """Read an index; ``model`` / ``processor`` default to the ones recorded in it (loaded with
        :func:`gcl_hf.hub.load` / :func:`~gcl_hf.modeling.loading.find_processor`: the recorded processor, else
        the recorded model's; the model's own when the index records neither; else a
        :class:`~gcl_hf.modeling.loading.ProcessorNotFoundError` naming what was tried). A model or processor
        whose fingerprint differs from the one the corpus was encoded with raises :class:`IndexMismatchError`."""
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"index directory not found: {directory}")
        for attempt in range(3):  # a save swapping a whole new index in while we read: read that one
            inode = directory.stat().st_ino
            try:
                info, embeddings, documents = _read_parts(directory)
                break
            except (IndexFormatError, OSError):
                if attempt == 2 or directory.stat().st_ino == inode:
                    raise
        model = model if model is not None else _load_model(info, directory)
        if device is not None:
            model.to(device)
        if processor is None:
            from gcl_hf.modeling.loading import ProcessorNotFoundError, find_processor

            try:  # the recorded processor, else the recorded model's own (at its revision)
                processor = find_processor(model, processor=info.processor or info.model, name_or_path=info.model,
                                           revision=info.revision)
            except ProcessorNotFoundError as exc:
                tried = "; ".join(exc.tried) or "nothing: neither the index nor the model names one"
                raise ProcessorNotFoundError(f"{directory}: cannot load the processor the corpus was encoded with "
                                             f"(tried {tried}); pass the processor it was built with",
                                             exc.tried) from exc
        _check(info, model, processor, directory)
        return cls(embeddings, documents, info, model=model, processor=processor, backend=backend)

    # ------------------------------------------------------------------------------------------ searching
    def __len__(self) -> int:
        return len(self.documents)

    @property
    def ids(self) -> list[str]:
        if self._ids is None:
            self._ids = [str(i) for i in self.documents["id"]]
        return self._ids

    def document(self, row: int) -> dict[str, Any]:
        """Row ``row`` of the documents (``id``, ``text``, ``modality``, image path when stored)."""
        return dict(self.documents[int(row)])

    def encode_query(self, text: str | None = None, image: Any = None) -> torch.Tensor:
        """``[1, D]`` embedding of a text, an image (path, bytes or PIL image) or both (a fused query), encoded
        exactly as corpus rows are."""
        if self.model is None or self.processor is None:
            raise ValueError("this index has no model/processor attached; use GCLIndex.load(dir) or build()")
        if text is not None and (not isinstance(text, str) or not text.strip()):
            raise ValueError(f"query text must be a non-empty string, got {text!r}")
        if image is None and text is None:
            raise ValueError("a query needs text=..., image=... or both")
        if image is not None and isinstance(image, (str, os.PathLike)):
            image = str(Path(image).expanduser().resolve())
        items = [(infer_modality(image, text), image, text)]
        return encode_items(self.model, self.processor, items, batch_size=1,
                            processor_kwargs=self.info.processor_kwargs, where=lambda _: "query").float().cpu()

    def search(self, text: str | None = None, image: Any = None, k: int = 10) -> SearchResults:
        """The ``k`` documents closest to a text query, an image query or a fused (image, text) query."""
        return self.search_embeddings(self.encode_query(text=text, image=image), k)[0]

    def search_embeddings(self, query_embeds: torch.Tensor | np.ndarray, k: int = 10) -> list[SearchResults]:
        """Top-``k`` for each row of ``[Q, D]`` query embeddings (normalised, from the same model)."""
        queries = torch.as_tensor(np.asarray(query_embeds, dtype=np.float32))
        if queries.ndim != 2 or queries.shape[1] != self.info.dim:
            raise ValueError(f"query embeddings must be [Q, {self.info.dim}], got {tuple(queries.shape)}")
        finite = torch.isfinite(queries).all(dim=1)
        if not finite.all():
            raise ValueError(f"query {int((~finite).nonzero()[0])}: the embedding is not finite (NaN/inf), so no "
                             "document can be ranked; check the query input and the model weights")
        shards = self.embeddings.shards if isinstance(self.embeddings, CorpusEmbeddings) else [self.embeddings]
        if self.backend == "faiss":
            if self._faiss is None:
                self._faiss = build_faiss_index(shards)
            scores, rows = faiss_topk(self._faiss, queries, k)
        else:
            scores, rows = exact_topk(queries, shards, k)
        ids = self.ids
        return [SearchResults([ids[j] for j in r if j >= 0], [s for j, s in zip(r, sc) if j >= 0],
                              [j for j in r if j >= 0]) for r, sc in zip(rows.tolist(), scores.tolist())]


def _read_parts(directory: Path) -> tuple[IndexInfo, CorpusEmbeddings, datasets.Dataset]:
    """``gcl_index.json``, the verified shards and the documents of an index, checked against each other."""
    info = IndexInfo.read(directory / INDEX_FILE)
    embeddings = load_cached(directory)
    if not embeddings.complete or embeddings.num_rows != info.num_rows:
        why = "; ".join(f"{k}: {v}" for k, v in embeddings.problems.items()) or "deleted or never written"
        raise IndexFormatError(
            f"{directory}: {embeddings.num_rows} of {info.num_rows} embeddings present (missing shards: "
            f"{', '.join(embeddings.missing) or 'none'}; {why}); run the gcl-hf encode that built it again, "
            "or rebuild and save the index")
    if embeddings.dim != info.dim:
        raise IndexFormatError(f"{directory}: the shards hold {embeddings.dim}-d embeddings, {INDEX_FILE} says "
                               f"{info.dim}; rebuild the index")
    if not (directory / DOCUMENTS_DIR).is_dir():
        raise FileNotFoundError(f"{directory}: no {DOCUMENTS_DIR}/ (the ids of the embeddings)")
    documents = datasets.load_from_disk(str(directory / DOCUMENTS_DIR))
    _verify(directory, info, documents)
    return info, embeddings, documents


def _load_model(info: IndexInfo, directory: Path) -> Any:
    if not info.model:
        raise ValueError(f"{directory}: the index records no model reference; pass the model it was built with")
    from gcl_hf import hub

    return hub.load(info.model, revision=info.revision)


def _verify(directory: Path, info: IndexInfo, documents: datasets.Dataset) -> None:
    """The documents' ids are the shards' (row by row) and ``gcl_index.json`` is the one saved with them."""
    ids, digests = shard_sidecars(directory)
    held = normalised_ids(documents.select_columns(["id"]).with_format(None)["id"]) if "id" in \
        documents.column_names else []
    ids = normalised_ids(ids)
    if held != ids:
        row = next((i for i, (a, b) in enumerate(zip(held, ids)) if a != b), min(len(held), len(ids)))
        shown = (f"row {row}: {DOCUMENTS_DIR}/ has id {held[row]!r}, the shards {ids[row]!r}" if row < min(
            len(held), len(ids)) else f"{DOCUMENTS_DIR}/ has {len(held)} ids, the shards {len(ids)}")
        raise IndexFormatError(f"{directory}: the documents do not match the embeddings ({shown}); rebuild the "
                               "index (never edit its files)")
    if info.integrity is None:
        logger.warning("%s: written by an older gcl-hf (no integrity digest in %s); save it again to add one",
                       directory, INDEX_FILE)
    elif integrity_digest(asdict(info), ids, digests) != info.integrity:
        raise IndexFormatError(f"{directory / INDEX_FILE}: does not match the embeddings and documents beside it "
                               "(a field was edited, or it was written by another save); rebuild the index")


def _check(info: IndexInfo, model: Any, processor: Any, directory: Path) -> None:
    if model_fingerprint(model) != info.model_fingerprint:
        raise IndexMismatchError(
            f"{directory}: the corpus was encoded with another model ({info.model or 'unnamed'}, weights fingerprint "
            f"{info.model_fingerprint[:12]}); this model's is {model_fingerprint(model)[:12]}: re-encode the corpus")
    if processor_fingerprint(processor) != info.processor_fingerprint:
        raise IndexMismatchError(
            f"{directory}: the corpus was encoded with another processor (fingerprint {info.processor_fingerprint[:12]}"
            f", this one's is {processor_fingerprint(processor)[:12]}); pass the processor it was built with")
