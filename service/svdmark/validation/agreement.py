"""Agreement statistics of a model against a site's reference, and nothing else (no I/O).

Which statistics, and where they come from:

* **Bland–Altman** (Bland & Altman, Lancet 1986;327:307-10): difference = model − reference;
  bias = mean difference, its 95 % CI from the t distribution, 95 % limits of agreement
  bias ± 1.96 SD (SD with n − 1).
* **ICC(2,1)**, two-way random effects, absolute agreement, single measurement — Shrout & Fleiss,
  Psychol Bull 1979;86:420-8 (their "ICC(2,1)"), = McGraw & Wong, Psychol Methods 1996;1:30-46
  "ICC(A,1)". Absolute agreement, because a site needs the model's millilitres to *be* the
  reference's, not merely to rank cases alike (ICC(3,1), consistency, forgives a constant bias).
  The 95 % CI is McGraw & Wong's (their Table 7, with Satterthwaite's degrees of freedom).
* **Linear-weighted Cohen's kappa** for the burden grade (Cohen, Psychol Bull 1968;70:213-20),
  weights |i − j| / (K − 1) over the fixed categories 0-3.
* **Pearson r** and its p value: ``scipy.stats.pearsonr``.

ICC and weighted kappa are the short textbook formulas above (numpy, scipy's F distribution for the
ICC interval) rather than a library: the libraries that offer them (pingouin, statsmodels,
scikit-learn) would add large runtime dependencies to a hospital service for about thirty lines, and
these formulas are checked in the tests against Shrout & Fleiss's published example and against
scikit-learn's ``cohen_kappa_score(weights="linear")``.

Microbleed detection: optimal one-to-one matching (``scipy.optimize.linear_sum_assignment``): the most
(model, reference) pairs closer than max(5 mm, the reference bleed's diameter), and of those the least
total distance; each bleed used at most once. (Closest pairs first would lose a pair in a cluster.)
Sensitivity = matched reference bleeds / reference bleeds; false positives per scan = unmatched model
bleeds / scans.

The weighted kappa is computed in exact fractions of the counts: a kappa of exactly 4/5 is 0.8, not
0.7999999999999999 below a criterion of 0.8.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterable, Sequence

import numpy as np

# WML volume bins (by reference volume, mL): label, low (inclusive), high (exclusive); 25.0 mL is in "≥25"
VOLUME_BINS: tuple[tuple[str, float, float], ...] = (
    ("0", 0.0, 0.0), ("<1", 0.0, 1.0), ("1-3", 1.0, 3.0), ("3-10", 3.0, 10.0), ("10-25", 10.0, 25.0),
    ("≥25", 25.0, math.inf),
)
GRADES = (0, 1, 2, 3)  # burden grade categories (svdmark.domain.BurdenGrade)
MATCH_MIN_MM = 5.0


# --------------------------------------------------------------------------- continuous agreement
def bland_altman(model: Sequence[float], reference: Sequence[float]) -> dict:
    """Bias (model − reference), its 95 % CI, SD of the differences and the 95 % limits of agreement (the last
    three None for a single case: one difference has no spread)."""
    from scipy import stats

    m, r = np.asarray(model, float), np.asarray(reference, float)
    d = m - r
    n = len(d)
    if n == 0:
        return {"n": 0, "bias": None, "bias_ci95": None, "sd": None, "loa_low": None, "loa_high": None}
    bias = float(d.mean())
    if n == 1:
        return {"n": 1, "bias": bias, "bias_ci95": None, "sd": None, "loa_low": None, "loa_high": None}
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return {"n": n, "bias": bias, "bias_ci95": [bias - half, bias + half], "sd": sd, "loa_low": bias - 1.96 * sd,
            "loa_high": bias + 1.96 * sd}


def icc_a1(ratings: np.ndarray) -> dict:
    """ICC(2,1) = ICC(A,1): two-way random, absolute agreement, single rater (see module docstring).

    ``ratings``: shape (n subjects, k raters). Returns the ICC, its 95 % CI and the ANOVA mean squares.
    """
    from scipy import stats

    x = np.asarray(ratings, float)
    n, k = x.shape
    out = {"type": "ICC(2,1) two-way random effects, absolute agreement, single measurement "
                   "(Shrout & Fleiss 1979; McGraw & Wong 1996 ICC(A,1))",
           "value": None, "ci95": None, "n": int(n)}
    if n < 2 or k < 2:
        return out
    grand = x.mean()
    ss_rows = k * float(((x.mean(axis=1) - grand) ** 2).sum())
    ss_cols = n * float(((x.mean(axis=0) - grand) ** 2).sum())
    ss_err = float(((x - grand) ** 2).sum()) - ss_rows - ss_cols
    df_err = (n - 1) * (k - 1)
    msr, msc, mse = ss_rows / (n - 1), ss_cols / (k - 1), ss_err / df_err
    out.update(ms_subjects=msr, ms_raters=msc, ms_error=mse)
    denom = msr + (k - 1) * mse + k * (msc - mse) / n
    if denom <= 0:
        return out  # no variance at all: ICC undefined
    icc = (msr - mse) / denom
    out["value"] = float(icc)
    if n > 2 and mse > 0 and icc < 1:
        # McGraw & Wong 1996, Table 7 (case 2A), Satterthwaite degrees of freedom
        a = k * icc / (n * (1 - icc))
        b = 1 + k * icc * (n - 1) / (n * (1 - icc))
        v = (a * msc + b * mse) ** 2 / ((a * msc) ** 2 / (k - 1) + (b * mse) ** 2 / df_err)
        fu = float(stats.f.ppf(0.975, n - 1, v))
        fl = float(stats.f.ppf(0.975, v, n - 1))
        low = n * (msr - fu * mse) / (fu * (k * msc + (k * n - k - n) * mse) + n * msr)
        high = n * (fl * msr - mse) / (k * msc + (k * n - k - n) * mse + n * fl * msr)
        out["ci95"] = [float(low), float(high)]
    return out


def pearson(model: Sequence[float], reference: Sequence[float]) -> dict:
    from scipy import stats

    m, r = np.asarray(model, float), np.asarray(reference, float)
    if len(m) < 3 or np.ptp(m) == 0 or np.ptp(r) == 0:
        return {"r": None, "p": None}
    res = stats.pearsonr(m, r)
    return {"r": float(res.statistic), "p": float(res.pvalue)}


def mae_by_bin(model: Sequence[float], reference: Sequence[float]) -> list[dict]:
    """Mean absolute error per reference-volume bin (0, <1, 1-3, 3-10, 10-25, ≥25 mL)."""
    m, r = np.asarray(model, float), np.asarray(reference, float)
    rows = []
    for label, lo, hi in VOLUME_BINS:
        sel = (r == 0) if label == "0" else ((r > lo) if lo == 0 else (r >= lo)) & (r < hi)
        e = np.abs(m[sel] - r[sel])
        rows.append({"bin": label, "n": int(sel.sum()), "mae": float(e.mean()) if len(e) else None,
                     "bias": float((m[sel] - r[sel]).mean()) if len(e) else None})
    return rows


def volume_bin(ml: float) -> str:
    for label, lo, hi in VOLUME_BINS:
        if (label == "0" and ml == 0) or (label != "0" and (ml > lo if lo == 0 else ml >= lo) and ml < hi):
            return label
    return "?"


def continuous(model: Sequence[float], reference: Sequence[float]) -> dict:
    """Everything the report shows for one continuous quantity (WML mL or CMB count)."""
    m, r = np.asarray(model, float), np.asarray(reference, float)
    ba = bland_altman(m, r)
    return {"n": int(len(m)), "mean_model": float(m.mean()) if len(m) else None,
            "mean_reference": float(r.mean()) if len(r) else None,
            "mae": float(np.abs(m - r).mean()) if len(m) else None, "bland_altman": ba,
            "icc": icc_a1(np.column_stack([m, r])) if len(m) else icc_a1(np.zeros((0, 2))),
            "pearson": pearson(m, r)}


# --------------------------------------------------------------------------- categories
def weighted_kappa(a: Sequence[int], b: Sequence[int], categories: Sequence[int] = GRADES) -> float | None:
    """Linear-weighted Cohen's kappa (Cohen 1968); None when undefined (no disagreement is possible,
    e.g. every case in the same grade for both raters)."""
    cats = list(categories)
    k = len(cats)
    if len(a) == 0 or k < 2:
        return None
    obs = confusion(a, b, cats)
    n = sum(map(sum, obs))
    rows = [sum(r) for r in obs]
    cols = [sum(obs[i][j] for i in range(k)) for j in range(k)]
    # with weights |i - j| / (K - 1): kappa = 1 - n * sum(w * observed) / sum(w * rows x cols), in whole numbers
    observed = sum(abs(i - j) * obs[i][j] for i in range(k) for j in range(k))
    expected = sum(abs(i - j) * rows[i] * cols[j] for i in range(k) for j in range(k))
    if expected == 0:
        return None
    return float(1 - Fraction(n * observed, expected))


def confusion(a: Sequence[int], b: Sequence[int], categories: Sequence[int] = GRADES) -> list[list[int]]:
    """Rows: reference grade; columns: model grade."""
    cats = list(categories)
    idx = {c: i for i, c in enumerate(cats)}
    m = [[0] * len(cats) for _ in cats]
    for ref, mod in zip(a, b):
        m[idx[int(ref)]][idx[int(mod)]] += 1
    return m


# --------------------------------------------------------------------------- detection
@dataclass(frozen=True)
class Match:
    true_positives: int
    false_positives: int
    false_negatives: int
    pairs: tuple[tuple[int, int, float], ...] = field(default=())  # (model index, reference index, mm)


def match_points(model: Sequence[Sequence[float]], reference: Sequence[Sequence[float]],
                 reference_diameters: Sequence[float | None] | None = None, min_mm: float = MATCH_MIN_MM) -> Match:
    """Optimal one-to-one matching within max(``min_mm``, reference diameter): the most pairs, then the least
    total distance (module doc)."""
    from scipy.optimize import linear_sum_assignment

    p = np.asarray(model, float).reshape(-1, 3)
    r = np.asarray(reference, float).reshape(-1, 3)
    if len(p) == 0 or len(r) == 0:
        return Match(0, len(p), len(r))
    diam = np.array([float(d or 0.0) for d in (reference_diameters or [None] * len(r))])
    tol = np.maximum(min_mm, diam)
    dist = np.linalg.norm(p[:, None, :] - r[None, :, :], axis=2)
    within = dist <= tol[None, :]
    # a pair out of reach costs more than every pair in reach together: the assignment takes the most pairs first
    out_of_reach = float(dist[within].sum()) + 1.0 if within.any() else 1.0
    rows, cols = linear_sum_assignment(np.where(within, dist, out_of_reach))
    pairs = sorted((int(i), int(j), float(dist[i, j])) for i, j in zip(rows, cols) if within[i, j])
    tp = len(pairs)
    return Match(tp, len(p) - tp, len(r) - tp, tuple(pairs))


def detection(matches: Iterable[Match]) -> dict:
    ms = list(matches)
    tp = sum(m.true_positives for m in ms)
    fp = sum(m.false_positives for m in ms)
    fn = sum(m.false_negatives for m in ms)
    n = len(ms)
    return {"scans": n, "reference_bleeds": tp + fn, "model_bleeds": tp + fp, "true_positives": tp,
            "false_positives": fp, "false_negatives": fn,
            "sensitivity": (tp / (tp + fn)) if tp + fn else None,
            "precision": (tp / (tp + fp)) if tp + fp else None,
            "false_positives_per_scan": (fp / n) if n else None,
            "matching": f"optimal one-to-one (most pairs, then least distance), within max({MATCH_MIN_MM:g} mm, "
                        "reference bleed diameter)"}


# --------------------------------------------------------------------------- masks, intervals
def dice(a: np.ndarray, b: np.ndarray) -> float | None:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    s = int(a.sum()) + int(b.sum())
    if s == 0:
        return None  # both empty: Dice undefined (reported as such, not as 1)
    return 2.0 * int((a & b).sum()) / s


def coverage(intervals: Sequence[tuple[float, float] | None], reference: Sequence[float]) -> dict:
    """How often the reference lies inside the model's uncertainty interval (cases with an interval)."""
    hits = [lo <= r <= hi for iv, r in zip(intervals, reference) if iv is not None for lo, hi in [iv]]
    return {"n_with_interval": len(hits), "covered": int(sum(hits)),
            "coverage": (sum(hits) / len(hits)) if hits else None}


# --------------------------------------------------------------------------- all figures of a validation
def figures(task: str, cases: Sequence) -> dict:
    """Every figure of the report from the per-case records (``validation.cases.Case``).

    Withheld (quality gate: not measurable) and failed cases are counted and listed, never part of
    the agreement figures.
    """
    inc = [c for c in cases if c.status == "measured"]
    counts = {"cases": len(cases), "included": len(inc),
              "withheld": sum(c.status == "withheld" for c in cases),
              "failed": sum(c.status == "failed" for c in cases)}
    m = [c.model_value for c in inc]
    r = [c.reference_value for c in inc]
    out: dict = {"task": task, "counts": counts, "quantity": "WML volume (mL)" if task == "wml" else
                 "microbleed count", "primary": continuous(m, r)}
    dices = [c.dice for c in inc if c.dice is not None]
    out["dice"] = {"n": len(dices), "mean": float(np.mean(dices)) if dices else None,
                   "median": float(np.median(dices)) if dices else None,
                   "note": "cases with a mask reference where model or reference mask is non-empty"}
    out["intervals"] = coverage([c.interval for c in inc], r)
    if task == "wml":
        out["mae_by_bin"] = mae_by_bin(m, r)
    else:
        located = [c for c in inc if c.true_positives is not None]
        out["detection"] = detection(Match(c.true_positives, c.false_positives, c.false_negatives) for c in located)
        rg = [c.reference_grade for c in inc]
        mg = [c.model_grade for c in inc]
        out["grades"] = {"n": len(inc), "kappa_linear": weighted_kappa(rg, mg),
                         "exact_agreement": (sum(a == b for a, b in zip(rg, mg)) / len(rg)) if rg else None,
                         "confusion": confusion(rg, mg), "categories": list(GRADES),
                         "confusion_layout": "rows: reference grade 0-3, columns: model grade 0-3",
                         "grades": "0 none, 1: 1-9, 2: 10-30, 3: >30 microbleeds"}
    return out
