"""Score the installed models on a stress set, through the service's own stages.

``python -m stress.score --task wml|cmb --data DIR [--json OUT] [--models DIR] [--version V] [--limit N]``

Per case: pydicom read -> ``svdmark.domain.Series`` -> ``svdmark.route.decide`` (a case that is not routed to
the task is a failure) -> ``svdmark.volume.load`` -> ``ModelRegistry(models).active(task)`` ->
``Runtime().run`` -> ``svdmark.measure.from_output`` -> the packaged rules (``RuleSet.load().evaluate``: the
category the SR states, at the WML flag's cut-point or the burden grade, and whether it says the interval makes that
category uncertain). Models: ``--models``, else ``$SVDMARK_MODELS_DIR``, else
the models shipped in the package (``svdmark/data/models/``); the active version (``ACTIVE`` file, else the highest
installed) unless ``--version`` names one. Inference threads: ``$SVDMARK_INFER_THREADS`` (default 1).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from . import anatomy as A

WML_BINS = [("0", 0.0, 0.0), ("<1", 1e-9, 1.0), ("1-3", 1.0, 3.0), ("3-10", 3.0, 10.0), ("10-25", 10.0, 25.0),
            (">25", 25.0, 1e9)]


def wml_bin(v: float) -> str:
    if v <= 1e-6:
        return "0"
    for name, lo, hi in WML_BINS[1:]:
        if lo <= v < hi:
            return name
    return ">25"


def grade(n: int) -> int:
    return 0 if n == 0 else 1 if n < 10 else 2 if n <= 30 else 3


def thick_bin(t: float, task: str) -> str:
    if task == "wml":
        return "<=1.25mm" if t <= 1.25 else "2-2.5mm" if t <= 2.5 else "3-5mm"
    return "<=1.2mm" if t <= 1.2 else "1.5-2mm" if t <= 2.0 else "2.5-3mm"


def match(pred_xyz, truth_xyz, truth_d):
    """Greedy one-to-one matching by distance within max(5 mm, diameter); returns (tp, fp, fn, pairs)."""
    if len(truth_xyz) == 0:
        return 0, len(pred_xyz), 0, []
    if len(pred_xyz) == 0:
        return 0, 0, len(truth_xyz), []
    P = np.asarray(pred_xyz, float)
    T = np.asarray(truth_xyz, float)
    D = np.linalg.norm(P[:, None] - T[None], axis=-1)
    ok = D <= np.maximum(5.0, np.asarray(truth_d, float))[None, :]
    cand = sorted((D[i, j], i, j) for i, j in zip(*np.nonzero(ok)))
    used_p, used_t, pairs = set(), set(), []
    for _, i, j in cand:
        if i in used_p or j in used_t:
            continue
        used_p.add(i)
        used_t.add(j)
        pairs.append((int(i), int(j)))
    tp = len(used_t)
    return tp, len(P) - len(used_p), len(T) - tp, pairs


def pearson(a, b) -> float | None:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


# --------------------------------------------------------------------------- running the service stages


class Service:
    def __init__(self, task: str, models: Path, version: str | None = None):
        os.environ.setdefault("SVDMARK_INFER_THREADS", "1")
        from svdmark.infer import ModelRegistry, Runtime

        reg = ModelRegistry(models)
        self.model = reg.active(task)
        if version and version != self.model.version:
            self.model = reg.get(self.model.name, version)
        self.runtime = Runtime()
        from svdmark.rules import RuleSet

        self.rules = RuleSet.load()

    def run(self, case: Path, task: str):
        import pydicom

        from svdmark import measure, route, volume
        from svdmark.domain import Series

        files = sorted((case / "dicom").glob("*.dcm"))
        datasets = tuple(pydicom.dcmread(str(f)) for f in files)
        series = Series(str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID), datasets)
        decision = route.decide(series.header)
        if decision.kind.value != task:
            return {"routed": False, "route": f"{decision.kind.value}: {decision.rule_id}: {decision.reason}"}, None
        vol = volume.load(series)
        out = self.runtime.run(self.model, vol)
        findings = measure.from_output(self.model, vol, out)
        return ({"routed": True, "route": decision.rule_id, "volume_warnings": list(vol.warnings),
                 **flag_fields(self.rules.evaluate(findings))}, (vol, out, findings))


def flag_fields(flags) -> dict:
    """What the SR states of a finding's category (its one flag): the category, whether the interval makes it
    uncertain, and (WML) the cut-point it was read at."""
    (flag,) = flags
    out = {"flag_category": flag.category, "flag_uncertain": bool(flag.values.get("category_uncertain", 0.0))}
    if "cut_point_ml" in flag.values:
        out["cut_point_ml"] = float(flag.values["cut_point_ml"])
    return out


def _interval(f):
    iv = getattr(f, "interval", None)
    return None if iv is None else (float(iv.low), float(iv.high))


def _withheld(f) -> bool:
    q = getattr(f, "quality", None)
    return q is not None and not bool(q.measurable)


WML_REGION = {  # label -> coarse region for false-positive analysis
    A.WM: "white matter", A.GM: "cortex", A.SAS: "CSF (sulci/cisterns)", A.VENT: "ventricle wall/CSF",
    A.CHOROID: "ventricle wall/CSF", A.CAUDATE: "deep grey", A.PUTAMEN: "deep grey", A.PALLIDUM: "deep grey",
    A.THALAMUS: "deep grey", A.CBL_GM: "posterior fossa", A.CBL_WM: "posterior fossa", A.STEM: "posterior fossa",
    A.LACUNE: "lacune (mimic)", A.INFARCT: "old infarct (mimic)", A.CALC: "calcification (mimic)",
    A.BONE: "skull/extracranial", A.DIPLOE: "skull/extracranial", A.SOFT: "skull/extracranial", A.AIR: "skull/extracranial",
    A.DURA: "falx/tentorium", A.WML: "WML rim (<50% voxel)",
}


def score_wml_case(case: Path, truth: dict, svc: Service) -> dict:
    row = {k: truth[k] for k in ("seed", "vendor", "slice_thickness", "tilt_deg", "tilt_style", "atrophy", "phenotype",
                                 "kernel", "noise_sd_hu")}
    row["truth_ml"] = truth["wml_ml"]
    row["truth_mask_ml"] = truth["wml_mask_ml"]
    row["truth_world_fine_ml"] = truth["wml_world_fine_ml"]
    row["mimics"] = sorted({m["kind"] for m in truth["mimics"]})
    t0 = time.time()
    try:
        info, res = svc.run(case, "wml")
    except Exception as exc:  # InvalidSeries, ModelError, ...
        row.update(routed=True, error=f"{type(exc).__name__}: {exc}")
        return row
    row.update(info)
    if res is None:
        return row
    vol, out, f = res
    row["seconds"] = round(time.time() - t0, 2)
    row["pred_ml"] = float(f.volume_ml)
    row["interval"] = _interval(f)
    row["withheld"] = _withheld(f)
    z = np.load(case / "truth.npz")
    k_of = {u: k for k, u in enumerate(truth["sop_uids"])}
    order = [k_of[fr.sop_instance_uid] for fr in vol.frames]
    frac = z["fraction"].astype(np.float32)[order]
    labels = z["labels"][order]
    tmask = frac >= 0.5
    pmask = np.asarray(f.mask) > 0
    inter = float((tmask & pmask).sum())
    denom = float(tmask.sum() + pmask.sum())
    row["dice"] = (2 * inter / denom) if denom > 0 else None
    vox_ml = vol.voxel_volume_mm3 / 1000.0
    fp = pmask & (frac <= 0)
    reg = Counter()
    names = truth.get("label_names")  # a set built by other code (devset/) names its own label codes
    for lab, n in zip(*np.unique(labels[fp], return_counts=True)):
        region = names.get(str(int(lab)), str(lab)) if names else \
            WML_REGION.get(int(lab), A.LABEL_NAMES.get(int(lab), str(lab)))
        reg[region] += float(n) * vox_ml
    row["fp_mask_ml_by_region"] = {k: round(v, 3) for k, v in reg.most_common()}
    row["fp_mask_ml"] = round(float(fp.sum() * vox_ml), 3)
    row["tp_mask_ml"] = round(float((pmask & tmask).sum() * vox_ml), 3)
    row["fn_mask_ml"] = round(float((tmask & ~pmask).sum() * vox_ml), 3)
    # where on the slice stack the false positives sit (fraction of the stack height, 0 = lowest slice)
    if fp.any():
        ks = np.nonzero(fp)[0]
        row["fp_slice_quartiles"] = [round(float(q) / max(len(order) - 1, 1), 2) for q in np.percentile(ks, [25, 50, 75])]
    return row


def _world_neighbourhood(truth: dict, world_labels: np.ndarray, xyz_patient, radius_mm: float):
    R = np.asarray(truth["pose"]["R"])
    t = np.asarray(truth["pose"]["t"])
    head = (np.asarray(xyz_patient, float) - t) @ R
    g = truth["world_grid"]
    idx = (head - np.asarray(g["origin"])) / g["h"]
    r = int(math.ceil(radius_mm / g["h"]))
    c = np.round(idx).astype(int)
    lo = np.maximum(c - r, 0)
    hi = np.minimum(c + r + 1, world_labels.shape)
    if np.any(hi <= lo):
        return np.array([], np.uint8)
    return world_labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].ravel()


def classify_fp(truth: dict, world_labels: np.ndarray, xyz) -> str:
    near = set(np.unique(_world_neighbourhood(truth, world_labels, xyz, 2.5)).tolist())
    if A.CALC in near:
        return "calcification (mimic)"
    if A.VEIN in near:
        return "vein"
    far = set(np.unique(_world_neighbourhood(truth, world_labels, xyz, 10.0)).tolist())
    if A.SINUS_AIR in far:
        return "air-tissue interface"
    if near & {A.PALLIDUM, A.PUTAMEN}:
        return "iron-rich deep grey"
    if near & {A.SAS, A.BONE, A.DIPLOE, A.DURA}:
        return "brain surface / sulcus"
    if near & {A.VENT, A.CHOROID}:
        return "ventricle edge"
    if not near & set(A.BRAIN):
        return "outside brain"
    return "parenchyma (other)"


def score_cmb_case(case: Path, truth: dict, svc: Service) -> dict:
    row = {k: truth[k] for k in ("seed", "vendor", "slice_thickness", "slice_spacing", "oblique_deg", "atrophy",
                                 "field_t", "snr", "count", "grade")}
    row["tilt_deg"] = abs(truth["oblique_deg"])
    t0 = time.time()
    try:
        info, res = svc.run(case, "cmb")
    except Exception as exc:
        row.update(routed=True, error=f"{type(exc).__name__}: {exc}")
        return row
    row.update(info)
    if res is None:
        return row
    vol, out, f = res
    row["seconds"] = round(time.time() - t0, 2)
    preds = [tuple(b.center_mm) for b in f.microbleeds]
    tb = truth["microbleeds"]
    T = [b["center_mm"] for b in tb]
    Dm = [b["diameter_mm"] for b in tb]
    tp, fp, fn, pairs = match(preds, T, Dm)
    row.update(pred_count=int(f.count), pred_grade=int(f.grade), tp=tp, fp=fp, fn=fn,
               interval=_interval(f), withheld=_withheld(f),
               n_candidates=int(out.extras.get("n_candidates_found", 0)))
    matched_t = {j for _, j in pairs}
    matched_p = {i for i, _ in pairs}
    # misses by tag / size / location, and merges (a miss within 7 mm of a truth that was matched)
    miss = Counter()
    hit = Counter()
    merged = 0
    for j, b in enumerate(tb):
        keys = [f"loc:{b['location']}", "size:" + ("2-3mm" if b["diameter_mm"] < 3 else "3-5mm" if b["diameter_mm"] < 5 else "5-10mm")]
        keys += [f"tag:{t}" for t in b["tags"]] or ["tag:isolated"]
        for key in keys:
            (hit if j in matched_t else miss)[key] += 1
        if j not in matched_t:
            for jj in matched_t:
                if np.linalg.norm(np.subtract(T[j], T[jj])) < 0.5 * (b["diameter_mm"] + tb[jj]["diameter_mm"]) + 3.0:
                    merged += 1
                    break
    row["hits_by"] = dict(hit)
    row["misses_by"] = dict(miss)
    row["misses_next_to_detected_bleed"] = merged
    wl = np.load(case / "truth.npz")["world_labels"]
    fpk = Counter(classify_fp(truth, wl, preds[i]) for i in range(len(preds)) if i not in matched_p)
    row["fp_by_site"] = dict(fpk)
    return row


# --------------------------------------------------------------------------- summaries


def _counts(rows: list[dict], scored_key: str) -> tuple[dict, list[dict]]:
    """The case counts every summary starts with, and the reported (scored, not withheld) rows."""
    ok = [r for r in rows if scored_key in r]
    withheld = [r for r in ok if r.get("withheld")]
    s: dict = {"n": len(rows), "ignored": sum(not r.get("routed", True) for r in rows),
               "errors": sum(bool(r.get("error")) for r in rows), "scored": len(ok),
               "withheld_frac": (len(withheld) / len(ok)) if ok else None}
    return s, [r for r in ok if not r.get("withheld")]


def summarise_wml(rows: list[dict]) -> dict:
    s, rep = _counts(rows, "pred_ml")
    if rep:
        t = np.array([r["truth_ml"] for r in rep])
        p = np.array([r["pred_ml"] for r in rep])
        s["mae_ml"] = float(np.mean(np.abs(p - t)))
        s["bias_ml"] = float(np.mean(p - t))
        s["pearson_r"] = pearson(t, p)
        big = [r["dice"] for r in rep if r["truth_ml"] >= 1.0 and r.get("dice") is not None]
        s["dice_truth_ge1"] = float(np.mean(big)) if big else None
        small = [abs(r["pred_ml"] - r["truth_ml"]) for r in rep if r["truth_ml"] < 1.0]
        s["mae_truth_lt1"] = float(np.mean(small)) if small else None
        free = [r["pred_ml"] for r in rep if r["truth_ml"] <= 1e-6]
        s["median_pred_lesion_free"] = float(np.median(free)) if free else None
        s["n_lesion_free"] = len(free)
        ivs = [r for r in rep if r.get("interval")]
        s["interval_coverage"] = (float(np.mean([r["interval"][0] <= r["truth_ml"] <= r["interval"][1] for r in ivs]))
                                  if ivs else None)
        # the SR's category at the flag's cut-point: right, or wrong without the SR saying it is uncertain
        cat = [r for r in rep if "cut_point_ml" in r]
        right = [(r["pred_ml"] >= r["cut_point_ml"]) == (r["truth_ml"] >= r["cut_point_ml"]) for r in cat]
        s["category_agreement"] = float(np.mean(right)) if cat else None
        wrong = [not ok and not r["flag_uncertain"] for ok, r in zip(right, cat)]
        s["category_wrong_unflagged"] = float(np.mean(wrong)) if cat else None
    return s


def summarise_cmb(rows: list[dict]) -> dict:
    s, rep = _counts(rows, "pred_count")
    if rep:
        tp = sum(r["tp"] for r in rep)
        tot = sum(r["count"] for r in rep)
        s["sensitivity"] = (tp / tot) if tot else None
        s["fp_per_scan"] = float(np.mean([r["fp"] for r in rep]))
        s["grade_agreement"] = float(np.mean([r["pred_grade"] == r["grade"] for r in rep]))
        s["count_mae"] = float(np.mean([abs(r["pred_count"] - r["count"]) for r in rep]))
        s["count_bias"] = float(np.mean([r["pred_count"] - r["count"] for r in rep]))
        s["n_truth_bleeds"] = tot
        free = [r["pred_count"] for r in rep if r["count"] == 0]
        s["scans_with_fp_among_bleed_free"] = (float(np.mean([c > 0 for c in free])) if free else None)
        ivs = [r for r in rep if r.get("interval")]
        s["interval_coverage"] = (float(np.mean([r["interval"][0] <= r["count"] <= r["interval"][1] for r in ivs]))
                                  if ivs else None)
        flagged = [r for r in rep if "flag_uncertain" in r]
        s["grade_wrong_unflagged"] = (float(np.mean([r["pred_grade"] != r["grade"] and not r["flag_uncertain"]
                                                     for r in flagged])) if flagged else None)
    return s


def groups(task: str, rows: list[dict]) -> dict:
    keys = {
        ("volume bin" if task == "wml" else "burden grade"):
            (lambda r: wml_bin(r["truth_ml"])) if task == "wml" else (lambda r: f"grade {r['grade']}"),
        "slice thickness": lambda r: thick_bin(r["slice_thickness"], task),
        ("tilt" if task == "wml" else "oblique"): lambda r: "0" if r["tilt_deg"] < 0.5 else "tilted",
        "vendor": lambda r: r["vendor"],
        "atrophy": lambda r: "low (<0.5)" if r["atrophy"] < 0.5 else "high (>=0.5)",
    }
    if task == "cmb":
        keys["field"] = lambda r: f"{r['field_t']:g} T"
    else:
        keys["tilt style"] = lambda r: r["tilt_style"]
    summ = summarise_wml if task == "wml" else summarise_cmb
    out = {}
    for name, fn in keys.items():
        buckets = defaultdict(list)
        for r in rows:
            buckets[fn(r)].append(r)
        order = [b[0] for b in WML_BINS] if name == "volume bin" else sorted(buckets)
        out[name] = {b: summ(buckets[b]) for b in order if b in buckets}
    return out


def _f(v, nd=2):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def print_table(task: str, overall: dict, by: dict, extra: dict) -> None:
    if task == "wml":
        cols = [("n", "n"), ("ign", "ignored"), ("err", "errors"), ("MAE", "mae_ml"), ("bias", "bias_ml"), ("r", "pearson_r"),
                ("Dice>=1", "dice_truth_ge1"), ("MAE<1", "mae_truth_lt1"), ("med0", "median_pred_lesion_free"),
                ("withh", "withheld_frac"), ("cover", "interval_coverage"), ("cat=", "category_agreement"),
                ("catX!", "category_wrong_unflagged")]
    else:
        cols = [("n", "n"), ("ign", "ignored"), ("err", "errors"), ("sens", "sensitivity"), ("FP/scan", "fp_per_scan"),
                ("grade=", "grade_agreement"), ("cntMAE", "count_mae"), ("cntBias", "count_bias"), ("truths", "n_truth_bleeds"),
                ("FP@0", "scans_with_fp_among_bleed_free"), ("withh", "withheld_frac"), ("cover", "interval_coverage"),
                ("grdX!", "grade_wrong_unflagged")]
    head = f"{'group':<28}" + "".join(f"{c:>9}" for c, _ in cols)
    print(head)
    print("-" * len(head))

    def line(name, s):
        print(f"{name:<28}" + "".join(f"{_f(s.get(k)):>9}" for _, k in cols))

    line("ALL", overall)
    for gname, buckets in by.items():
        print(f"[{gname}]")
        for b, s in buckets.items():
            line("  " + b, s)
    for k, v in extra.items():
        print(f"{k}: {v}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stress.score", description=__doc__)
    ap.add_argument("--task", choices=["wml", "cmb"], required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--models", type=Path, default=None)
    ap.add_argument("--version", default=None,
                    help="score this installed version of the task's model instead of the active one")
    ap.add_argument("--limit", type=int, default=None)
    a = ap.parse_args(argv)
    from svdmark.infer.registry import default_models_dir

    models = a.models or default_models_dir()
    svc = Service(a.task, models, a.version)
    print(f"model: {svc.model.label} ({svc.model.path})", flush=True)
    cases = sorted(p for p in a.data.glob(f"{a.task}_*") if (p / "truth.json").is_file())[: a.limit]
    if not cases:
        print(f"no {a.task} cases under {a.data}", file=sys.stderr)
        return 2
    rows = []
    for case in cases:
        truth = json.loads((case / "truth.json").read_text())
        row = (score_wml_case if a.task == "wml" else score_cmb_case)(case, truth, svc)
        row["case"] = case.name
        rows.append(row)
        if a.task == "wml":
            msg = f"truth {row['truth_ml']:.2f} pred {row.get('pred_ml', float('nan')):.2f} dice {_f(row.get('dice'))}"
        else:
            msg = f"truth {row['count']} pred {row.get('pred_count', '-')} tp {row.get('tp', '-')} fp {row.get('fp', '-')}"
        status = row.get("error") or ("" if row.get("routed", True) else "NOT ROUTED " + row.get("route", ""))
        print(f"{case.name}: {msg} {status} ({row.get('seconds', '-')} s)", flush=True)
    overall = (summarise_wml if a.task == "wml" else summarise_cmb)(rows)
    by = groups(a.task, rows)
    extra: dict = {}
    if a.task == "wml":
        reg = Counter()
        for r in rows:
            for k, v in r.get("fp_mask_ml_by_region", {}).items():
                reg[k] += v
        extra["false-positive mask mL by region (all cases)"] = {k: round(v, 2) for k, v in reg.most_common()}
        free = [r for r in rows if r.get("truth_ml", 1) <= 1e-6 and "pred_ml" in r]
        reg0 = Counter()
        for r in free:
            for k, v in r.get("fp_mask_ml_by_region", {}).items():
                reg0[k] += v / max(len(free), 1)
        extra["lesion-free heads: mean FP mask mL per case by region"] = {k: round(v, 2) for k, v in reg0.most_common()}
        mim = defaultdict(list)
        for r in rows:
            if "pred_ml" in r:
                for m in r["mimics"] or ["none"]:
                    mim[m].append(r["pred_ml"] - r["truth_ml"])
        extra["mean error (pred-truth) by mimic present"] = {k: round(float(np.mean(v)), 2) for k, v in sorted(mim.items())}
        ph = defaultdict(list)
        for r in rows:
            if "pred_ml" in r:
                ph[r["phenotype"]].append(r["pred_ml"] - r["truth_ml"])
        extra["mean error (pred-truth) by phenotype"] = {k: round(float(np.mean(v)), 2) for k, v in sorted(ph.items())}
    else:
        hit, miss, fps = Counter(), Counter(), Counter()
        merged = 0
        for r in rows:
            hit.update(r.get("hits_by", {}))
            miss.update(r.get("misses_by", {}))
            fps.update(r.get("fp_by_site", {}))
            merged += r.get("misses_next_to_detected_bleed", 0)
        extra["sensitivity by kind"] = {k: f"{hit[k] / (hit[k] + miss[k]):.2f} of {hit[k] + miss[k]}"
                                        for k in sorted(set(hit) | set(miss))}
        extra["false positives by site (all cases)"] = dict(fps.most_common())
        extra["misses touching a detected bleed (merge-like)"] = f"{merged} of {sum(r.get('fn', 0) for r in rows)} misses"
    print_table(a.task, overall, by, extra)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"task": a.task, "models": str(models), "model": f"{svc.model.name} {svc.model.version}",
                                      "overall": overall, "by": by, "analysis": extra, "cases": rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
