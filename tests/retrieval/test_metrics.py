"""The shipped `evaluate` metric modules: hand-computed values, offline loading, errors."""

import socket

import evaluate
import pytest

import gcl_hf.metrics as metrics

PRED = [["a", "b", "c", "d"], ["e", "f", "g", "h"], ["i", "j", "k", "l"], ["m", "n", "o", "p"]]
# q0: relevant at rank 2 (and rank 4: counted once); q1: rank 1; q2: none; q3: rank 4
REFS = [["b", "d"], ["e"], ["zz"], ["p", "yy"]]


def test_recall_at_k_hand_computed():
    m = metrics.load("recall_at_k")
    out = m.compute(predictions=PRED, references=REFS, k=[1, 2, 3, 4, 10])
    assert out == {"recall@1": 0.25, "recall@2": 0.5, "recall@3": 0.5, "recall@4": 0.75, "recall@10": 0.75}
    assert m.compute(predictions=PRED, references=REFS, k=2) == {"recall@2": 0.5}
    assert m.compute(predictions=PRED, references=REFS) == {"recall@5": 0.75}  # UniIR's default cut-off


def test_recall_counts_a_query_once_not_per_relevant_item():
    m = metrics.load("recall_at_k")
    out = m.compute(predictions=[["a", "b"], ["c", "d"]], references=[["a", "b"], ["x"]], k=2)
    assert out == {"recall@2": 0.5}


def test_precision_at_1_hand_computed():
    m = metrics.load("precision_at_1")
    assert m.compute(predictions=PRED, references=REFS) == {"precision@1": 0.25}
    out = m.compute(predictions=[["a", "b"], ["b", "a"], []], references=[["a"], ["a"], ["a"]])
    assert out["precision@1"] == pytest.approx(1 / 3)


def test_modules_are_real_evaluate_metrics_loadable_by_path():
    for name in metrics.METRICS:
        m = evaluate.load(metrics.module_path(name))
        assert isinstance(m, evaluate.Metric)
        assert set(m.features) == {"predictions", "references"}
        assert m.name == name
        assert "UniIR" in m.description or "MMEB" in m.description


def test_loading_needs_no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted while loading a local metric")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    m = metrics.load("recall_at_k", keep_in_memory=True)
    assert m.compute(predictions=[["a"]], references=[["a"]], k=1) == {"recall@1": 1.0}
    assert metrics.load("precision_at_1").compute(predictions=[["a"]], references=[["b"]]) == {"precision@1": 0.0}


def test_errors():
    with pytest.raises(ValueError, match="unknown metric 'ndcg'"):
        metrics.load("ndcg")
    r = metrics.load("recall_at_k")
    with pytest.raises(ValueError, match=r"query 1 has no relevant candidate \(references\[1\] is empty\)"):
        r.compute(predictions=[["a"], ["b"]], references=[["a"], []], k=1)
    with pytest.raises(ValueError, match="k must be a positive int"):
        r.compute(predictions=[["a"]], references=[["a"]], k=0)
    with pytest.raises(ValueError, match="query 0 has no positive"):
        metrics.load("precision_at_1").compute(predictions=[["a"]], references=[[]])
