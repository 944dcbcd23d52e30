"""separability() refuses embeddings it cannot score, in one line: NaN/inf were a
scikit-learn traceback; identical rows wrote NaN explained variance (invalid JSON)."""
import numpy as np
import pytest

from engines.errors import DfscanError
from scanner.research.separability import separability

Y = np.array([0, 0, 1, 1])


@pytest.mark.parametrize("X, why", [
    (np.ones((4, 3)), "identical"),
    (np.zeros((4, 0)), "identical"),
    (np.array([[0.0, 1], [1, 0], [np.nan, 2], [3, 3]]), "NaN or inf"),
    (np.array([[0.0, 1], [1, 0], [np.inf, 2], [3, 3]]), "NaN or inf"),
])
def test_degenerate_embeddings_refused(X, why):
    with pytest.raises(DfscanError, match=why):
        separability(X, Y)


def test_label_flip_and_order_do_not_change_accuracy():
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (20, 4)), rng.normal(2, 1, (8, 4))]
    y = np.r_[np.zeros(20, int), np.ones(8, int)]
    a, b = separability(X, y), separability(X, 1 - y)
    p = rng.permutation(len(y))
    c = separability(X[p], y[p])
    assert 0.5 <= a["accuracy"] <= 1.0
    assert a["accuracy"] == pytest.approx(b["accuracy"]) == pytest.approx(c["accuracy"])
    assert (a["tpr"], a["tnr"]) == pytest.approx((b["tnr"], b["tpr"]))
