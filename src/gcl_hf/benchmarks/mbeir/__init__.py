"""M-BEIR (UniIR, Wei et al. 2023) as :class:`RetrievalTask` s: one per dataset x task file.

Semantics follow TIGER-AI-Lab/UniIR:

- ``src/data/mbeir_data_generator.py``: file names (``query/{split}/mbeir_{dataset}_task{id}_{split}.jsonl``,
  ``qrels/{split}/mbeir_{dataset}_task{id}_{split}_qrels.txt`` with lines ``qid 0 did 1 task_id``,
  ``cand_pool/local/mbeir_{dataset}_task{id}_cand_pool.jsonl`` -- only MSCOCO's pools carry the split,
  ``mbeir_mscoco_task0_test_cand_pool.jsonl`` -- and ``cand_pool/global/mbeir_union_{split}_cand_pool.jsonl``).
- ``src/data/preprocessing/utils.py``: task ids (``MBEIR_TASK``), dataset ids, ``format_string`` (the
  text normalisation applied to every query and candidate text), ``hash_qid``/``hash_did`` (ids are
  ``"dataset_id:number"``).
- ``src/data/mbeir_dataset.py``: query fields (``qid``, ``query_txt``, ``query_img_path``,
  ``query_modality``), candidate fields (``did``, ``txt``, ``img_path``, ``modality``); an image is
  embedded whenever its path is set and a text whenever it is non-empty (so the embedded modality
  follows what is present); instructions are keyed by (dataset id from the qid, query modality,
  positive-candidate modality) from ``instructions/query_instructions.tsv`` (columns query_modality,
  cand_modality, dataset name, dataset_id, prompt_1..; header skipped) and the query text becomes
  ``format_string(f"{format_string(prompt)} {query_txt}")``. UniIR draws the prompt with
  ``random.choice`` (seeded run-wide); here the draw is seeded per qid so it is reproducible.
- ``src/common/mbeir_retriever.py``: ``load_qrel`` keeps lines with relevance > 0;
  ``compute_recall_at_k`` scores a query 1 when *any* relevant candidate is in its top k, else 0,
  averaged over the queries; the union (global) pool is searched whole -- no filtering of
  candidates by modality or dataset, the instructions steer the modality.
- ``src/models/uniir_clip/clip_scorefusion/configs_scripts/large/eval/inbatch/retrieval.yaml``:
  Recall@1/5/10 for every task except FashionIQ and Fashion200K, which report Recall@10/20/50
  (headline: 10 for those, 5 for the rest).
"""

from gcl_hf.benchmarks.mbeir.annotations import load_instructions, load_qrels
from gcl_hf.benchmarks.mbeir.files import (MBEIR_DATASET_IDS, MBEIR_REPO, MBEIR_TASK_MODALITIES, MBEIR_TASK_ORDER,
                                           MBEIRTaskFiles, discover_mbeir_tasks, format_string, mbeir_recall_k)
from gcl_hf.benchmarks.mbeir.loader import load_mbeir

__all__ = [
    "MBEIR_DATASET_IDS",
    "MBEIR_REPO",
    "MBEIR_TASK_MODALITIES",
    "MBEIR_TASK_ORDER",
    "MBEIRTaskFiles",
    "discover_mbeir_tasks",
    "format_string",
    "load_instructions",
    "load_mbeir",
    "load_qrels",
    "mbeir_recall_k",
]
