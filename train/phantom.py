"""Deterministic synthetic chest X-ray phantoms: the project's embedded default data (SYNTHETIC, NOT FOR CLINICAL USE).

Geometric PA-view anatomy (soft tissue, lungs, heart, mediastinum, trachea, spine, ribs, clavicles, diaphragm
domes, vessels; patient's right on the image left; bright = dense) in normalised coordinates (x right, y down,
[0, 1]). Classes: ``normal`` (clean lungs); ``pneumonia`` (lobar or patchy mid/lower-zone consolidation, sometimes
with air bronchograms); ``tuberculosis`` (upper-zone nodules, haze, cavities, fibrotic streaks toward the hilum).
Lesion sizes are relative to the lungs so the classes survive downsizing to 32-64 px.

    python -m train.phantom --out data/phantom --per-class 100 --seed 0
"""
from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np

CLASSES: tuple[str, ...] = ("normal", "pneumonia", "tuberculosis")
SOURCES: tuple[str, ...] = ("synthetic_a", "synthetic_b")
Anatomy = dict[str, float]
Lesion = dict[str, Any]
_HILUM = (0.10, 0.45)  # (distance from midline, y) of each hilum


# ----------------------------------------------------------------------------- drawing helpers
def _fix(pts: Any, s: int) -> list[np.ndarray]:
    """Normalised (x, y) points, one (n, 2) or several (k, n, 2) -> int32 pixels with 4 fractional bits."""
    arr = np.round(np.asarray(pts, np.float64) * (s * 16)).astype(np.int32)
    return list(arr) if arr.ndim == 3 else [arr.reshape(-1, 2)]


def _poly(img: np.ndarray, pts: Any, value: float = 1.0) -> None:
    cv2.fillPoly(img, _fix(pts, img.shape[0]), value, cv2.LINE_8, 4)


def _line(img: np.ndarray, pts: Any, value: float, thick: float) -> None:
    s = img.shape[0]
    cv2.polylines(img, _fix(pts, s), False, value, max(1, round(thick * s)), cv2.LINE_8, 4)


def _ellipse(img: np.ndarray, c: Sequence[float], ax: Sequence[float], angle: float, value: float,
             thick: float = -1) -> None:
    s, t = img.shape[0], -1 if thick < 0 else max(1, round(thick * img.shape[0]))
    cv2.ellipse(img, tuple(int(v) for v in _fix(c, s)[0][0]), tuple(int(v) for v in _fix(ax, s)[0][0]),
                angle, 0, 360, value, t, cv2.LINE_8, 4)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with sigma given as a fraction of the image size (wide ones on a downsampled copy)."""
    px = sigma * img.shape[0]
    if px < 6:
        return cv2.GaussianBlur(img, (0, 0), px) if px > 0.3 else img
    f = int(px // 3)
    h, w = img.shape
    small = cv2.resize(img, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
    return cv2.resize(cv2.GaussianBlur(small, (0, 0), px / f), (w, h), interpolation=cv2.INTER_LINEAR)


def _xy(a: Anatomy, side: int, u: float, y: float) -> tuple[float, float]:
    """Distance from the midline (u) on one side (-1 image left, +1 image right) -> (x, y)."""
    return a["cx"] + side * u, y


# ----------------------------------------------------------------------------- anatomy
def _sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Per-patient anatomy: lung size/shape, heart size, diaphragm, ribs (all normalised)."""
    return dict(
        cx=0.5 + rng.normal(0, 0.012), top=rng.uniform(0.11, 0.16), base=rng.uniform(0.72, 0.80),
        lat=rng.uniform(0.30, 0.36), asym=rng.uniform(0.94, 1.02), dome=rng.uniform(0.05, 0.09),
        right_up=rng.uniform(0.01, 0.035), heart_w=rng.uniform(0.13, 0.17), heart_h=rng.uniform(0.13, 0.16),
        heart_dx=rng.uniform(0.04, 0.075), heart_tilt=rng.uniform(15, 35), rib_slope=rng.uniform(0.06, 0.10),
        body=rng.uniform(0.06, 0.10), seed=float(rng.integers(2**31)),
    )


def _lung_geom(a: Anatomy, side: int) -> tuple[float, float, float, float, float]:
    """(medial, apex, lateral distance from midline, apex y, costophrenic y) of one lung."""
    med = 0.045 if side < 0 else 0.055
    lat = a["lat"] * (a["asym"] if side > 0 else 1.0)
    base = a["base"] - (a["right_up"] if side < 0 else 0.0)
    return med, med + 0.4 * (lat - med), lat, a["top"], base


def _lung_poly(a: Anatomy, side: int) -> np.ndarray:
    """Lung outline: rounded apex, convex lateral border, sharp costophrenic angle, domed base."""
    med, apex, lat, top, base = _lung_geom(a, side)
    t = np.linspace(0, 1, 24)
    outer = np.stack([apex + (lat - apex) * np.sin(t * np.pi / 2) ** 0.7, top + (base - top) * t], 1)
    base_med = base - 0.025
    dome = np.stack([lat + (med - lat) * t, base + (base_med - base) * t - a["dome"] * np.sin(np.pi * t) ** 0.8], 1)
    inner = np.stack([med + (apex - med) * t ** 4, base_med + (top - base_med) * t], 1)
    u_y = np.concatenate([outer, dome[1:], inner[1:]])
    return np.stack([a["cx"] + side * u_y[:, 0], u_y[:, 1]], 1)


def _lung_point(a: Anatomy, side: int, v: float, w: float) -> tuple[float, float]:
    """A point in a lung: v = 0 apex .. 1 base, w = 0 medial .. 1 lateral."""
    med, apex, lat, top, base = _lung_geom(a, side)
    u_lat = apex + (lat - apex) * math.sin(v * math.pi / 2) ** 0.7
    return _xy(a, side, med + w * (u_lat - med), top + v * (base - top))


def _bones(a: Anatomy, s: int) -> tuple[np.ndarray, np.ndarray]:
    """(spine, clavicles and humeral heads), (posterior and anterior ribs)."""
    img, ribs = np.zeros((s, s), np.float32), np.zeros((s, s), np.float32)
    cx, top = a["cx"], a["top"]
    img[:, int((cx - 0.035) * s):int((cx + 0.035) * s)] += 0.05
    ys = np.arange(-0.02, 1.0, 0.052)
    box = np.array([[-0.04, 0], [0.04, 0], [0.04, 0.042], [-0.04, 0.042]])
    _poly(img, box + np.stack([cx + 0 * ys, ys], 1)[:, None], 0.08)  # vertebral bodies
    d, i = np.linspace(0, 1, 20)[None, :], np.arange(10)[:, None]
    y0 = top - 0.045 + (a["base"] - top) * (0.095 * i + 0.004 * i * i)
    post_y = y0 - 0.03 * np.sin(np.pi * d) + (a["rib_slope"] + 0.008 * i) * d ** 1.6
    ant_y = post_y[:7, -1:] + 0.015 + 0.12 * d ** 0.8
    clav_u, clav_y = 0.04 + 0.25 * d[0], top + 0.035 - 0.06 * d[0] + 0.012 * np.sin(2 * np.pi * d[0])
    for side in (-1, 1):
        lat = _lung_geom(a, side)[2] + 0.035
        post_x = cx + side * (0.035 + d * (lat - 0.035)) + 0 * i
        _line(ribs, np.stack([post_x, post_y], -1), 0.06, 0.019)
        _line(ribs, np.stack([cx + side * (lat - 0.02 - d * (lat - 0.16)) + 0 * ant_y, ant_y], -1), 0.035, 0.013)
        _line(img, np.stack([cx + side * clav_u, clav_y], 1), 0.17, 0.026)
        _ellipse(img, _xy(a, side, lat + 0.09, top + 0.02), (0.065, 0.07), 0, 0.12)
    return _blur(img, 0.0035), _blur(ribs, 0.003)


def _vessels(a: Anatomy, s: int) -> np.ndarray:
    """Hilar shadows and branching pulmonary vessels fanning out from each hilum."""
    img = np.zeros((s, s), np.float32)
    rng = np.random.default_rng(int(a["seed"]))
    for side in (-1, 1):
        hx, hy = _xy(a, side, *_HILUM)
        _ellipse(img, (hx, hy), (0.035, 0.05), 0, 0.6)
        ang = rng.uniform(-1.2, 1.3, (10, 1)) + np.cumsum(rng.normal(0, 0.25, (10, 3)), 1)
        step = rng.uniform(0.05, 0.09, (10, 3, 1)) * np.stack([side * np.cos(ang), np.sin(ang)], -1)
        pts = np.array([hx, hy]) + np.concatenate([np.zeros((10, 1, 2)), np.cumsum(step, 1)], 1)
        for g in range(3):
            _line(img, pts[:, g:g + 2], 0.5, 0.008 * 0.65 ** g)
    return _blur(img, 0.004)


def _anatomy_density(a: Anatomy, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Density map of the normal chest (roughly 0 air .. 1 bone) and the soft aerated-lung mask."""
    cx, top, b = a["cx"], a["top"], a["body"]
    yy = (np.arange(s, dtype=np.float32)[:, None] + 0.5) / s
    body = np.zeros((s, s), np.float32)
    half = np.array([0.085, 0.09, 0.16, 0.27, 0.34, a["lat"] + 0.8 * b, a["lat"] + b, a["lat"] + b])
    ys = np.array([-0.1, top - 0.07, top - 0.05, top - 0.02, top + 0.02, top + 0.12, top + 0.3, 1.2])
    _poly(body, np.concatenate([np.stack([cx - half, ys], 1), np.stack([cx + half, ys], 1)[::-1]]))
    body = _blur(body, 0.02)
    lungs, heart, medi, chest, trachea = (np.zeros((s, s), np.float32) for _ in range(5))
    outline = np.stack([_lung_poly(a, -1), _lung_poly(a, 1)])
    _poly(lungs, outline)
    _ellipse(heart, (cx + a["heart_dx"], a["base"] - 0.55 * a["heart_h"] - 0.01), (a["heart_w"], a["heart_h"]),
             a["heart_tilt"], 1.0)
    _ellipse(heart, (cx - 0.03, a["base"] - 0.08), (0.06, 0.075), 0, 1.0)
    cv2.fillConvexPoly(chest, cv2.convexHull(_fix(outline.reshape(-1, 2), s)[0]), 1.0, cv2.LINE_8, 4)
    heart *= chest  # no heart shadow below the diaphragm
    _poly(medi, np.array([[cx - 0.06, 0], [cx + 0.06, 0], [cx + 0.07, a["base"]], [cx - 0.07, a["base"]]]))
    _ellipse(medi, (cx + 0.055, top + 0.17), (0.035, 0.03), 0, 1.0)
    heart, medi = _blur(heart, 0.008), _blur(medi, 0.01)
    air = _blur(lungs, 0.006) * (1 - heart)
    depth = 0.55 + 0.45 * _blur(lungs, 0.04)
    base_haze = 1 - 0.25 * np.clip((yy - 0.5) / 0.3, 0, 1)
    _line(trachea, np.array([[cx, -0.05], [cx, top + 0.22]]), 1.0, 0.032)
    for side in (-1, 1):
        _line(trachea, np.array([[cx, top + 0.22], _xy(a, side, 0.07, top + 0.28)]), 0.8, 0.02)
    dens = (0.04 + 0.56 * body + 0.08 * body * np.clip(yy - a["base"], 0, 1) / 0.2
            - 0.38 * air * depth * base_haze + 0.10 * medi + 0.06 * heart - 0.12 * _blur(trachea, 0.005))
    bones, ribs = _bones(a, s)
    dens += 0.09 * _vessels(a, s) * air + (bones + ribs * (0.35 + 0.65 * _blur(lungs, 0.03))) * body
    return dens, air


# ----------------------------------------------------------------------------- lesions
def _sample_lesions(label: str, a: Anatomy, rng: np.random.Generator) -> list[Lesion]:
    """Lesion specs (normalised, severity-scaled) for one class, in one or both lungs; none for ``normal``."""
    if label not in CLASSES:
        raise ValueError(f"unknown label {label!r}; expected one of {CLASSES}")
    if label == "normal":
        return []
    sev = 0.7 + 0.6 * rng.beta(5, 2.5)  # mostly moderate-to-obvious
    first = int(rng.choice([-1, 1]))
    sides = [first, -first] if rng.random() < (0.3 if label == "pneumonia" else 0.5) else [first]
    make = _pneumonia_specs if label == "pneumonia" else _tuberculosis_specs
    return [les for k, side in enumerate(sides) for les in make(a, side, sev, k == 0, rng)]


def _pneumonia_specs(a: Anatomy, side: int, sev: float, first: bool, rng: np.random.Generator) -> list[Lesion]:
    """One large lobar or 2-4 smaller patchy consolidations, mostly in the mid/lower zone of one lung."""
    seed, patchy = int(rng.integers(2**31)), rng.random() < 0.45
    scale = (0.85 if patchy else 1.0) * (0.8 + 0.3 * sev)
    out = []
    for i in range(int(rng.integers(2, 5)) if patchy else 1):
        v = rng.uniform(0.35, 0.5) if rng.random() < 0.12 else rng.uniform(0.48, 0.82)
        w = rng.uniform(0.3, 0.75) if side < 0 else rng.uniform(0.45, 0.8)  # lateral of the heart on the left
        out.append(dict(kind="consolidation", c=_lung_point(a, side, v, w), seed=seed + i,
                        r=(rng.uniform(0.14, 0.19) * scale, rng.uniform(0.12, 0.17) * scale),
                        amp=rng.uniform(0.42, 0.52) * sev, bronchi=bool(rng.random() < 0.4)))
    return out


def _tuberculosis_specs(a: Anatomy, side: int, sev: float, first: bool, rng: np.random.Generator) -> list[Lesion]:
    """Upper-zone disease in one lung; the first affected lung usually has a cavity."""
    return [dict(kind="tb", c=_lung_point(a, side, rng.uniform(0.1, 0.3), rng.uniform(0.35, 0.7)),
                 seed=int(rng.integers(2**31)), r=(rng.uniform(0.12, 0.16), rng.uniform(0.09, 0.13)), amp=sev,
                 n_nod=int(rng.integers(10, 22)), cavity=bool(rng.random() < (0.75 if first else 0.3)),
                 cav_r=rng.uniform(0.03, 0.045) * (0.85 + 0.25 * sev), n_streak=int(rng.integers(2, 6)),
                 hilum=_xy(a, side, _HILUM[0], _HILUM[1] - 0.02))]


def _consolidation(img: np.ndarray, les: Lesion) -> None:
    """Confluent soft opacity from overlapping ellipses, mottled, optional air bronchograms."""
    rng, (x, y), (rx, ry) = np.random.default_rng(les["seed"]), les["c"], les["r"]
    blob = np.zeros_like(img)
    for _ in range(7):
        c = (x + rng.normal(0, 0.35) * rx, y + rng.normal(0, 0.35) * ry)
        _ellipse(blob, c, (rx * rng.uniform(0.4, 0.8), ry * rng.uniform(0.4, 0.8)), rng.uniform(0, 180), 1.0)
    blob = _blur(blob, 0.3 * min(rx, ry))
    blob /= max(float(blob.max()), 1e-6)
    mottle = _blur(rng.random(img.shape, dtype=np.float32), 0.012)
    blob *= 0.8 + 0.1 * (mottle - mottle.mean()) / (mottle.std() + 1e-6)
    if les["bronchi"]:
        tree = np.zeros_like(img)
        ang = rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(2, 4))):
            p = np.array([x - 0.6 * rx * math.cos(ang), y - 0.6 * ry * math.sin(ang)])
            mid = p + 0.5 * np.array([rx * math.cos(ang), ry * math.sin(ang)]) + rng.normal(0, 0.1 * rx, 2)
            for b in (-0.5, 0.5):
                q = mid + 0.5 * np.array([rx * math.cos(ang + b), ry * math.sin(ang + b)])
                _line(tree, np.stack([p, mid, q]), 1.0, 0.005)
            ang += rng.normal(0, 0.5)
        blob -= 0.45 * _blur(tree, 0.003) * blob
    img += les["amp"] * blob


def _tuberculosis(img: np.ndarray, les: Lesion) -> None:
    """Upper-zone haze, clustered nodules, cavity (bright wall, dark lumen), streaks to the hilum."""
    rng, (x, y), (rx, ry), sev = np.random.default_rng(les["seed"]), les["c"], les["r"], les["amp"]
    haze, nod, cav = (np.zeros_like(img) for _ in range(3))
    _ellipse(haze, (x, y), (rx, ry), rng.uniform(-20, 20), 1.0)
    for _ in range(les["n_nod"]):
        c = (x + rng.uniform(-1, 1) * rx, y + rng.uniform(-1, 1) * ry)
        r = rng.uniform(0.012, 0.022)
        _ellipse(nod, c, (r, r), 0, rng.uniform(0.7, 1.0))
    for _ in range(les["n_streak"]):
        p = np.array([x + rng.normal(0, 0.4) * rx, y + rng.normal(0, 0.4) * ry])
        q = p + rng.uniform(0.5, 0.85) * (np.array(les["hilum"]) - p) + rng.normal(0, 0.015, 2)
        _line(nod, np.stack([p, (p + q) / 2 + rng.normal(0, 0.01, 2), q]), 0.6, 0.0055)
    img += sev * (0.4 * _blur(haze, 0.35 * ry) + 0.38 * _blur(nod, 0.004))
    if les["cavity"]:
        r = les["cav_r"]
        c = (x + rng.normal(0, 0.3) * rx, y + rng.normal(0, 0.3) * ry)
        for _ in range(2):
            _ellipse(cav, (c[0] + rng.normal(0, 0.1 * r), c[1] + rng.normal(0, 0.1 * r)),
                     (r, r * rng.uniform(0.75, 1.0)), rng.uniform(0, 180), 0.6, thick=rng.uniform(0.25, 0.45) * r)
        lumen = np.zeros_like(img)
        _ellipse(lumen, c, (0.75 * r, 0.7 * r), 0, 1.0)
        img += sev * (0.45 * _blur(cav, 0.0045) - 0.2 * _blur(lumen, 0.005))


def _follow_up(a: Anatomy, lesions: list[Lesion], rng: np.random.Generator) -> tuple[Anatomy, list[Lesion]]:
    """Same patient a little later: tiny anatomical jitter, lesions a bit better or worse."""
    a = dict(a, cx=a["cx"] + rng.normal(0, 0.004), top=a["top"] + rng.normal(0, 0.005),
             base=a["base"] + rng.normal(0, 0.01), dome=a["dome"] * rng.uniform(0.9, 1.1))
    f = rng.uniform(0.75, 1.1)
    return a, [dict(les, amp=les["amp"] * f, c=(les["c"][0] + rng.normal(0, 0.006), les["c"][1] + rng.normal(0, 0.006)))
               for les in lesions]


# ----------------------------------------------------------------------------- acquisition
def _sample_acquisition(rng: np.random.Generator, site: str | None = None) -> dict[str, float]:
    """Positioning, exposure, blur and noise; ``synthetic_b`` is darker/noisier with a collimation border."""
    acq = dict(rot=rng.uniform(-4, 4), scale=rng.uniform(0.94, 1.04), dx=rng.uniform(-0.03, 0.03),
               dy=rng.uniform(-0.03, 0.03), gamma=math.exp(rng.normal(0, 0.15)), contrast=rng.uniform(0.85, 1.15),
               bright=rng.uniform(-0.05, 0.05), blur=rng.uniform(0.001, 0.004), noise=rng.uniform(0.008, 0.03),
               marker=float(rng.random() < 0.5), border=0.0)
    if site == "synthetic_b":
        acq.update(gamma=acq["gamma"] * 1.15, contrast=acq["contrast"] * 1.1, noise=acq["noise"] + 0.015,
                   border=rng.uniform(0.025, 0.06))
    return acq


def _render(a: Anatomy, lesions: list[Lesion], size: int, acq: dict[str, float],
            rng: np.random.Generator) -> np.ndarray:
    """Anatomy + lesions -> positioned, exposed, blurred, noisy float32 image in [0, 1]."""
    dens, air = _anatomy_density(a, size)
    lesion = np.zeros_like(dens)
    for les in lesions:
        (_consolidation if les["kind"] == "consolidation" else _tuberculosis)(lesion, les)
    dens += 0.6 * (1 - np.exp(-lesion / 0.6)) * np.clip(air * 1.3, 0, 1)  # opacities saturate near water density
    m = cv2.getRotationMatrix2D((size / 2, size / 2), acq["rot"], acq["scale"])
    m[:, 2] += (acq["dx"] * size, acq["dy"] * size)
    img = cv2.warpAffine(dens, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if acq["marker"]:
        mark = np.zeros((size, size), np.uint8)
        cv2.putText(mark, "R", (int(0.06 * size), int(0.12 * size)), cv2.FONT_HERSHEY_SIMPLEX, size / 400, 255,
                    max(1, size // 120))
        img = np.maximum(img, mark.astype(np.float32) / 255)
    img = np.clip(acq["contrast"] * (img - 0.45) + 0.45 + acq["bright"], 0, 1) ** acq["gamma"]
    img = _blur(img.astype(np.float32), acq["blur"])
    img += rng.standard_normal(img.shape, dtype=np.float32) * acq["noise"] * np.sqrt(img + 0.05)
    if acq["border"]:
        b = max(1, int(acq["border"] * size))
        img[:b], img[-b:], img[:, :b], img[:, -b:] = 0.02, 0.02, 0.02, 0.02
    return np.clip(img, 0, 1).astype(np.float32)


def render_phantom(label: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Render one ``size`` x ``size`` float32 radiograph in [0, 1] (bright = dense) of class ``label``.

    Anatomy, lesions, positioning, exposure, blur and noise are all drawn from ``rng``, so the same
    generator state gives the same image.
    """
    a = _sample_anatomy(rng)
    lesions = _sample_lesions(label, a, rng)
    return _render(a, lesions, int(size), _sample_acquisition(rng), rng)


# ----------------------------------------------------------------------------- dataset files
_EXT = {"png8": ".png", "png16": ".png", "jpeg": ".jpg", "dicom": ".dcm"}


def _format_plan(n: int, rng: np.random.Generator) -> list[str]:
    """~3% DICOM (at least one when n >= 20), ~15% 16-bit PNG, ~15% JPEG, the rest 8-bit PNG; shuffled."""
    plan = (["dicom"] * max(int(n >= 20), round(0.03 * n)) + ["png16", "jpeg"] * round(0.15 * n) + ["png8"] * n)[:n]
    return [plan[i] for i in rng.permutation(n)]


def _image_shape(rng: np.random.Generator, lo: int, hi: int) -> tuple[int, int]:
    """(height, width) in [lo, hi]; about 40% are not square (aspect 0.9-1.1)."""
    w = int(rng.integers(lo, hi + 1))
    return (int(np.clip(round(w * rng.uniform(0.9, 1.1)), lo, hi)) if rng.random() < 0.4 else w), w


def _n_images(rng: np.random.Generator, lo: int, hi: int) -> int:
    """Images for one patient in [lo, hi], each extra follow-up about 3x less likely."""
    p = 0.3 ** np.arange(hi - lo + 1)
    return lo + int(rng.choice(hi - lo + 1, p=p / p.sum()))


def _write_dicom(path: Path, img: np.ndarray, patient_id: str, uid_seed: str, mono1: bool) -> None:
    """Secondary Capture DICOM, 12 of 16 bits stored, rescale + window; MONOCHROME1 stores inverted values."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    stored = np.round(img * 4095).astype(np.uint16)
    stored = 4095 - stored if mono1 else stored
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID = SecondaryCaptureImageStorage, ExplicitVRLittleEndian
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[uid_seed, "instance"])  # deterministic UIDs
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    slope, intercept, (lo, hi) = 2.0, -1000.0, np.percentile(stored, [1, 99])
    for key, value in dict(
            SOPClassUID=SecondaryCaptureImageStorage, SOPInstanceUID=meta.MediaStorageSOPInstanceUID,
            StudyInstanceUID=generate_uid(entropy_srcs=[uid_seed, "study"]),
            SeriesInstanceUID=generate_uid(entropy_srcs=[uid_seed, "series"]), PatientID=patient_id,
            PatientName="SYNTHETIC^PHANTOM", Modality="DX", ConversionType="SYN", BodyPartExamined="CHEST",
            ViewPosition="PA", ImageComments="SYNTHETIC PHANTOM - NOT FOR CLINICAL USE", SamplesPerPixel=1,
            PhotometricInterpretation="MONOCHROME1" if mono1 else "MONOCHROME2", Rows=stored.shape[0],
            Columns=stored.shape[1], BitsAllocated=16, BitsStored=12, HighBit=11, PixelRepresentation=0,
            RescaleSlope=slope, RescaleIntercept=intercept, WindowCenter=round(intercept + slope * (lo + hi) / 2),
            WindowWidth=round(max(slope * (hi - lo), 1)), PixelData=stored.tobytes()).items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)


def _write_image(path: Path, img: np.ndarray, fmt: str) -> None:
    """8-bit PNG, 16-bit PNG (12-bit values scaled to the full uint16 range) or JPEG quality 90."""
    if fmt == "png16":
        arr = (np.round(img * 4095).astype(np.uint32) * 65535 // 4095).astype(np.uint16)
    else:
        arr = np.round(img * 255).astype(np.uint8)
    params = [cv2.IMWRITE_JPEG_QUALITY, 90] if fmt == "jpeg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    ok, buf = cv2.imencode(path.suffix, arr, params)
    if not ok:
        raise OSError(f"could not encode {path}")
    path.write_bytes(buf.tobytes())


def _patient_images(label: str, rng: np.random.Generator, n: int, site: str,
                    sizes: tuple[int, int]) -> Iterator[np.ndarray]:
    """``n`` images of one patient: a first visit, then follow-ups with small changes."""
    a = _sample_anatomy(rng)
    lesions = _sample_lesions(label, a, rng)
    for k in range(n):
        if k:
            a, lesions = _follow_up(a, lesions, rng)
        h, w = _image_shape(rng, *sizes)
        img = _render(a, lesions, max(h, w), _sample_acquisition(rng, site), rng)
        yield img if h == w else cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def _write_readme(out: Path, rows: list[dict[str, str]], argv: str) -> str:
    """Write README.txt (SYNTHETIC warning, counts, how to regenerate); return the counts."""
    def count(key: str) -> str:
        vals = [Path(r["file"]).suffix if key == "type" else r[key] for r in rows]
        return ", ".join(f"{v}: {vals.count(v)}" for v in sorted(set(vals)))

    counts = (f"images: {len(rows)}\nclasses: {count('class')}\nsources: {count('source')}\npatients: "
              f"{len({r['patient_id'] for r in rows})}\nfile types: {count('type')} (.png is 8- or 16-bit)\n")
    out.joinpath("README.txt").write_text(
        "SYNTHETIC DATA - NOT FOR CLINICAL USE.\n\nGeometric chest X-ray phantoms drawn by train/phantom.py; no real "
        "patient data.\nThey let the pipeline and tests run on a fresh machine; a model trained on them says nothing "
        f"about real radiographs.\n\nGenerated with: python -m train.phantom --out <dir> {argv}\n{counts}\nLayout: "
        "<class>/<patient_id>_<k>.<ext>; manifest.csv has file,class,source,patient_id.\n", encoding="utf-8")
    return counts


def generate_dataset(out_dir: str | Path, per_class: int = 100, seed: int = 0, classes: Sequence[str] = CLASSES,
                     min_size: int = 160, max_size: int = 320,
                     images_per_patient: tuple[int, int] = (1, 2)) -> Path:
    """Write ``out_dir/<class>/<file>``, ``manifest.csv`` and ``README.txt``; return ``out_dir`` as a Path.

    Each patient has ``images_per_patient`` images (extra ones are follow-ups of the same class) from one
    site, ``synthetic_a`` or ``synthetic_b``, alternating so both appear in every class with >= 2 patients
    (the first patient of a class always has one image). Same arguments give byte-identical files.
    """
    lo_n, hi_n = images_per_patient
    if not (1 <= lo_n <= hi_n and 16 <= min_size <= max_size and per_class >= 1 and seed >= 0):
        raise ValueError(f"bad arguments: per_class={per_class} seed={seed} sizes={min_size}-{max_size} "
                         f"images_per_patient={images_per_patient}")
    if set(classes) - set(CLASSES):
        raise ValueError(f"unknown classes {sorted(set(classes) - set(CLASSES))}; known: {CLASSES}")
    out, rows, n_dicom = Path(out_dir), [], 0
    for ci, label in enumerate(classes):
        (out / label).mkdir(parents=True, exist_ok=True)
        plan, done, p = _format_plan(per_class, np.random.default_rng([seed, ci, 1])), 0, 0
        site0 = int(np.random.default_rng([seed, ci, 2]).integers(2))
        while done < per_class:
            rng = np.random.default_rng([seed, ci, 3, p])
            pid, site = f"S{seed}-{label[:3].upper()}-{p:04d}", SOURCES[(site0 + p) % 2]
            n = min(_n_images(rng, lo_n, hi_n) if p else lo_n, per_class - done)
            for k, img in enumerate(_patient_images(label, rng, n, site, (min_size, max_size))):
                fmt = plan[done]
                rel = f"{label}/{pid}_{k}{_EXT[fmt]}"
                if fmt == "dicom":  # every third DICOM, starting with the first, is MONOCHROME1
                    _write_dicom(out / rel, img, pid, f"cxr-phantom/{seed}/{rel}", mono1=n_dicom % 3 == 0)
                    n_dicom += 1
                else:
                    _write_image(out / rel, img, fmt)
                rows.append({"file": rel, "class": label, "source": site, "patient_id": pid})
                done += 1
            p += 1
    with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "class", "source", "patient_id"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    _write_readme(out, rows, f"--per-class {per_class} --seed {seed} --min-size {min_size} --max-size {max_size}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: write a synthetic dataset and print what was written."""
    ap = argparse.ArgumentParser(prog="python -m train.phantom", description=(
        "Write a deterministic SYNTHETIC chest X-ray phantom dataset (NOT FOR CLINICAL USE): <out>/<class>/<file> "
        "for normal, pneumonia and tuberculosis, plus manifest.csv (file,class,source,patient_id) and README.txt."))
    ap.add_argument("--out", required=True, type=Path, help="output folder (created if missing; files overwritten)")
    ap.add_argument("--per-class", type=int, default=100, help="images per class (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="random seed; same seed, same files (default: %(default)s)")
    ap.add_argument("--min-size", type=int, default=160, help="smallest image side in px (default: %(default)s)")
    ap.add_argument("--max-size", type=int, default=320, help="largest image side in px (default: %(default)s)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    out = generate_dataset(args.out, args.per_class, args.seed, min_size=args.min_size, max_size=args.max_size)
    print(out.joinpath("README.txt").read_text(encoding="utf-8").split("\n\n")[2].rstrip())
    print(f"wrote {out}/<class>/, manifest.csv and README.txt in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
