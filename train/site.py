"""Site-style augmentation: what another clinic's X-ray unit, settings and workflow change in a film.

On the public data the class is confounded with the hospital, and a model learns the hospital: its exposure,
contrast, collimation, burnt-in markers, sharpness, noise and compression. Randomising those during training
(domain randomisation) takes that cue away, so the model has to use the lungs. Each change is applied with
probability ``p`` and a random strength, to the cropped and resized film *before* equalisation (CLAHE), as a
real site change would reach the device's preprocessing.

The families overlap those of the study's simulated site shift (``benchmarks.study.evaluate.SHIFTS``) by design,
with their own random ranges and drawings; the shift table therefore measures robustness to these families,
not to a real new hospital.
"""
from __future__ import annotations

import numpy as np

from edge_runtime.preprocess import PreprocessConfig, finish, opencv

LETTERS = ("L", "R", "AP", "PA", "PORTABLE", "SUPINE", "ERECT")




def exposure(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gamma (over/under-exposure) and a linear contrast/offset change."""
    g = float(np.exp(rng.uniform(np.log(0.65), np.log(1.55))))
    k, off = rng.uniform(0.65, 1.15), rng.uniform(-25, 25)
    y = 255 * (x.astype(np.float32) / 255) ** g
    return np.clip((y - 128) * k + 128 + off, 0, 255)


def collimation(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A black (or white) frame of random width on random sides, the film shrunk or cut to fit."""
    h, w = x.shape
    out = x.copy()
    value = 0 if rng.random() < 0.8 else 255
    for side in range(4):
        if rng.random() < 0.6:
            f = int(rng.uniform(0.02, 0.10) * (h if side < 2 else w))
            if side == 0:
                out[:f] = value
            elif side == 1:
                out[h - f:] = value
            elif side == 2:
                out[:, :f] = value
            else:
                out[:, w - f:] = value
    return out


def markers(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Burnt-in side letters and labels, bright or dark, near the edges, plus a solid label box sometimes."""
    cv2 = opencv()
    out = np.ascontiguousarray(x.astype(np.uint8))
    h, w = out.shape
    s = h / 256
    for _ in range(int(rng.integers(1, 4))):
        text = LETTERS[int(rng.integers(len(LETTERS)))]
        edge_x = rng.uniform(0.02, 0.25) if rng.random() < 0.5 else rng.uniform(0.65, 0.85)
        edge_y = rng.uniform(0.08, 0.25) if rng.random() < 0.5 else rng.uniform(0.80, 0.97)
        scale = rng.uniform(0.35, 1.2) * s
        cv2.putText(out, text, (int(w * edge_x), int(h * edge_y)), int(rng.choice([0, 1, 2, 3, 4])), scale,
                    int(rng.choice([255, 230, 20])), max(1, int(rng.uniform(1, 3) * s)))
    if rng.random() < 0.3:
        x0, y0 = int(rng.uniform(0, 0.6) * w), int(rng.choice([rng.uniform(0, 0.08), rng.uniform(0.86, 0.92)]) * h)
        cv2.rectangle(out, (x0, y0), (x0 + int(rng.uniform(0.15, 0.4) * w), y0 + int(0.07 * h)),
                      int(rng.uniform(180, 255)), -1)
    return out


def sharpness_noise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur or sharpening (detector, processing), then Gaussian noise (dose), at model resolution."""
    cv2 = opencv()
    y = x.astype(np.float32)
    r = rng.random()
    if r < 0.4:
        y = cv2.GaussianBlur(y, (0, 0), rng.uniform(0.4, 1.3))
    elif r < 0.6:
        y = cv2.addWeighted(y, 1.6, cv2.GaussianBlur(y, (0, 0), 1.0), -0.6, 0)
    y = y + rng.normal(0, rng.uniform(0.5, 5.0), y.shape)
    return np.clip(y, 0, 255)


def recompress(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """JPEG storage at a random quality (a PACS export, a phone photo of a film)."""
    cv2 = opencv()
    ok, buf = cv2.imencode(".jpg", x.astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 95))])
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE) if ok else x


STEPS = (exposure, collimation, markers, sharpness_noise, recompress)


def augment(x: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """One film (uint8, cropped and resized, not yet equalised) as another site might have made it."""
    y = x
    for step in STEPS:
        if rng.random() < p:
            y = step(y, rng)
    return np.clip(np.round(y), 0, 255).astype(np.uint8)


def batch_function(cfg: PreprocessConfig, seed: int, p: float = 0.5):
    """(N, H, W, 1) float batch of un-equalised films -> the same batch site-augmented and finished
    (equalised, masked) as ``edge_runtime.preprocess.prepare`` would; for ``tf.numpy_function``."""
    rng = np.random.default_rng(seed)

    def fn(batch: np.ndarray) -> np.ndarray:
        out = np.empty_like(batch, dtype=np.float32)
        for i, im in enumerate(batch[..., 0].astype(np.uint8)):
            out[i, ..., 0] = finish(augment(im, rng, p), cfg)
        return out
    return fn
