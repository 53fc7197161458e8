#!/usr/bin/env python3
"""Reference values for src/stats.rs from scipy and scikit-learn.

Writes tests/fixtures/stats/cases.json: AUROC (sklearn.metrics.roc_auc_score), Welch's t-test
(scipy.stats.ttest_ind(equal_var=False)), Wilson intervals (statsmodels' formula, written out
with scipy's normal quantile), and an L2 logistic regression (sklearn LogisticRegression with
standardised features and C = 1 / (l2 * n), lbfgs, tight tolerance) on seeded random data.
Usage: python tools/make_stats_cases.py  (needs numpy, scipy, scikit-learn)
"""
import json
import os

import numpy as np
import scipy
import sklearn
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

rng = np.random.default_rng(20261202)
cases = {"versions": {"numpy": np.__version__, "scipy": scipy.__version__, "sklearn": sklearn.__version__}}

auroc = []
for n_pos, n_neg, shift, ties in [(5, 7, 0.5, False), (40, 25, 1.0, True), (200, 300, 0.2, True), (3, 3, 0.0, True)]:
    pos = rng.normal(shift, 1.0, n_pos)
    neg = rng.normal(0.0, 1.0, n_neg)
    if ties:
        pos, neg = np.round(pos, 1), np.round(neg, 1)
    y = np.r_[np.ones(n_pos), np.zeros(n_neg)]
    auroc.append({"pos": pos.tolist(), "neg": neg.tolist(), "auroc": float(roc_auc_score(y, np.r_[pos, neg]))})
cases["auroc"] = auroc

welch = []
for na, nb, ma, sa, sb in [(15, 15, 0.0, 1.0, 1.0), (8, 30, 0.7, 2.0, 0.5), (50, 4, -0.3, 1.0, 3.0)]:
    a = rng.normal(ma, sa, na)
    b = rng.normal(0.0, sb, nb)
    r = stats.ttest_ind(a, b, equal_var=False)
    va, vb = a.var(ddof=1) / na, b.var(ddof=1) / nb
    df = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
    welch.append({"a": a.tolist(), "b": b.tolist(), "t": float(r.statistic), "p": float(r.pvalue), "df": float(df)})
cases["welch"] = welch

z = stats.norm.ppf(0.975)
wilson = []
for k, n in [(0, 20), (7, 10), (50, 100), (99, 100), (1, 3)]:
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    wilson.append({"k": k, "n": n, "lo": float(max(0.0, centre - half)), "hi": float(min(1.0, centre + half))})
cases["wilson"] = wilson

n, d, l2 = 120, 6, 0.05
x = rng.normal(0, 1, (n, d)) * np.array([1.0, 5.0, 0.2, 1.0, 30.0, 1.0])
w_true = np.array([1.0, -0.2, 3.0, 0.0, 0.02, 0.5])
x = x.astype(np.float32).astype(np.float64)
y = (x @ w_true + rng.normal(0, 1.0, n)) > 0
mean, scale = x.mean(0), x.std(0)
zx = (x - mean) / scale
clf = LogisticRegression(C=1.0 / (l2 * n), tol=1e-12, max_iter=10000).fit(zx, y)
cases["probe"] = {
    "x": x.astype(np.float32).tolist(), "y": y.tolist(), "l2": l2,
    "weights": clf.coef_[0].tolist(), "bias": float(clf.intercept_[0]),
}

out = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "stats", "cases.json")
with open(out, "w") as f:
    json.dump(cases, f, indent=1)
print("wrote", os.path.normpath(out))
