#!/usr/bin/env python3
"""Reference output of the real OpenCV and dlib for the FaceAnalysis ports.

Sources/FaceAnalysis re-implements OpenCV's Haar cascade detector (`detectMultiScale`) and dlib's
68-point `shape_predictor`. This script runs the libraries themselves on frames of the test media
in ../shared/media and writes what they found to

    Tests/FaceAnalysisTests/Fixtures/library_reference.json

which Tests/FaceAnalysisTests/LibraryAgreementTests.swift compares with our ports. No media is
written to the repository: the fixture names each frame by file and frame index, with a checksum
of its pixels, and the Swift test decodes the same frame with our own decoder.

Pinned versions (OpenCV 5 dropped CascadeClassifier; dlib-bin is dlib's prebuilt wheel):

    opencv-python-headless==4.12.0.88   dlib-bin==20.0.1.post1   numpy==2.2.6
    ffmpeg 5.1 (Debian bookworm's; the same libswscale our FFmpeg module links)

Models: the cascade and landmark model our code loads by default, Debian's opencv-data
(/usr/share/opencv4/haarcascades/haarcascade_frontalface_default.xml) and libdlib-data
(/usr/share/dlib/shape_predictor_68_face_landmarks.dat).

Run from the repository root, in a throwaway virtual environment (not the repo's .venv):

    python3 -m venv /tmp/facefix-venv && /tmp/facefix-venv/bin/pip install \
        opencv-python-headless==4.12.0.88 dlib-bin==20.0.1.post1 numpy==2.2.6 \
      && /tmp/facefix-venv/bin/python tools/face-fixtures/make_fixtures.py

What is computed per frame (mirroring Sources/FaceAnalysis exactly where it says it does):

- pixels: the frame decoded and converted to rgb24 by ffmpeg as our `Scaler` converts it
  (swscale flags bicubic + accurate_rnd + full_chroma_int, swscale's default BT.601 matrix even
  for BT.709-tagged streams); `rgb_fnv` is FNV-1a 64 of those bytes, so the Swift test can tell
  a decoding difference from a detector difference.
- detector: grey = cv2.cvtColor(RGB2GRAY) (what `GrayImage(luma:)` does for rgb24), shrunk with
  cv2.resize(INTER_AREA) to at most 320 px on the longer side (`Parameters.analysisSide`, same
  output size rule as `GrayImage.downscaled`), then cv2.CascadeClassifier.detectMultiScale2 with
  scaleFactor 1.1, minNeighbors 3, minSize = ceil(max(24, 0.15 x shorter side)) — our defaults.
  Boxes are in analysis-image pixels, with OpenCV's neighbour counts.
- raw: the cascade alone, isolated from resampling and grouping: a crop of the analysis image
  around the face (1.8 x the box), shrunk with INTER_AREA so that the face is about 1.1 x 24 px,
  stored as base64 grey pixels (about 2 KB), and the window origins that OpenCV accepts on it
  with minSize = maxSize = 24 (one pyramid level, no resampling) and minNeighbors 0 (no
  grouping). The Swift test runs our cascade on the same pixels.
- grey_samples: random (r, g, b) triples and cvtColor(RGB2GRAY)'s value for each, so the grey
  conversion is checked even without the media.
- landmarks: dlib.shape_predictor on the rgb24 frame for given integer boxes (x, y, w, h; dlib
  rectangle left=x, top=y, right=x+w-1, bottom=y+h-1), the same boxes fed to our predictor:
  OpenCV's box mapped to frame pixels, and dlib's own HOG detector's box where it finds one.
  dlib rounds landmarks to integer pixels.
"""
import base64
import hashlib
import json
import math
import os
import subprocess
import sys

import cv2
import dlib
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MEDIA = os.path.join(os.path.dirname(REPO), "shared", "media")
OUT = os.path.join(REPO, "Tests", "FaceAnalysisTests", "Fixtures", "library_reference.json")
CASCADE = "/usr/share/opencv4/haarcascades/haarcascade_frontalface_default.xml"
LANDMARKS = "/usr/share/dlib/shape_predictor_68_face_landmarks.dat"
SWS_FLAGS = "bicubic+accurate_rnd+full_chroma_int"

# FaceDetector.Parameters defaults.
SCALE_FACTOR, MIN_NEIGHBORS, ANALYSIS_SIDE, MIN_FACE_FRACTION = 1.1, 3, 320, 0.15

# (file under ../shared/media, frame index): several speakers, sizes 224 to 896, square and not,
# H.264, MPEG-4 part 2, MPEG-1, a full-range (yuvj420p) clip and a still PNG.
FRAMES = [
    ("speaker-a.mp4", 0), ("speaker-a.mp4", 70), ("speaker-a.mp4", 130),
    ("speaker-b.mp4", 10), ("speaker-b.mp4", 90),
    ("speaker-c.mp4", 5), ("speaker-c.mp4", 100),
    ("face-source.png", 0),
    ("train/aniportrait_pose_ref_video.mp4", 50),
    ("train/dfrf_cnn2_25fps.mp4", 500),
    ("train/edtalk_uncrop_Obama.mp4", 200),
    ("train/edtalk_pose_source2.mp4", 300),
    ("train/grid_lipnet_GRID_bbaf2n.mpg", 30),
    ("train/grid_lipnet_GRID_swiz3n.mpg", 40),
    ("train/liveportrait_d20.mp4", 80),
    ("train/pcavs_Audio_Source_00015.mp4", 50),
    ("train/sadtalker_RD_Radio2_000.mp4", 100),
    ("train/vexpress_AOC_gt.mp4", 60),
]


def fnv1a64(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:  # small frames; speed is no concern
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def fnv(a: np.ndarray) -> str:
    """FNV-1a 64 of an image's bytes, rows packed (what the Swift test computes)."""
    return fnv1a64(np.ascontiguousarray(a).tobytes())


def round_half_up(v: float) -> int:
    """Swift's `.rounded()` (half away from zero) for non-negative v."""
    return int(math.floor(v + 0.5))


def decode_rgb(path: str, index: int):
    """Frame `index` (decode order count, as our VideoDecoder numbers frames) as rgb24."""
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                            "stream=width,height", "-of", "csv=p=0", path],
                           check=True, capture_output=True, text=True).stdout.split(",")
    w, h = int(probe[0]), int(probe[1])
    vf = f"select=eq(n\\,{index}),scale=in_color_matrix=bt601:flags={SWS_FLAGS},format=rgb24"
    cmd = ["ffmpeg", "-v", "error", "-threads", "1", "-i", path, "-map", "0:v:0", "-vf", vf,
           "-fps_mode", "passthrough", "-frames:v", "1", "-pix_fmt", "rgb24", "-f", "rawvideo", "-"]
    raw = subprocess.run(cmd, check=True, capture_output=True).stdout
    if len(raw) != w * h * 3:
        sys.exit(f"{path}#{index}: got {len(raw)} bytes for {w}x{h}")
    return np.frombuffer(raw, np.uint8).reshape(h, w, 3).copy()


def grey_samples(n=400):
    """Random rgb triples (fixed seed) and cvtColor(RGB2GRAY)'s grey for each, flat r,g,b,grey."""
    rgb = np.random.default_rng(15).integers(0, 256, (1, n, 3), dtype=np.uint8)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return [int(v) for i in range(n) for v in (*rgb[0, i], grey[0, i])]


def analysis_size(w: int, h: int):
    longest = max(w, h)
    if longest <= ANALYSIS_SIDE:
        return w, h
    f = longest / ANALYSIS_SIDE
    return max(1, round_half_up(w / f)), max(1, round_half_up(h / f))


def main():
    if not os.path.isdir(MEDIA):
        sys.exit(f"no test media at {MEDIA}")
    cv2.setNumThreads(1)
    cascade = cv2.CascadeClassifier(CASCADE)
    if cascade.empty():
        sys.exit(f"cannot load {CASCADE}")
    predictor = dlib.shape_predictor(LANDMARKS)
    hog = dlib.get_frontal_face_detector()
    with open(LANDMARKS, "rb") as f:
        model_sha = hashlib.sha256(f.read()).hexdigest()

    frames = []
    for name, index in FRAMES:
        rgb = decode_rgb(os.path.join(MEDIA, name), index)
        h, w = rgb.shape[:2]
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        ow, oh = analysis_size(w, h)
        small = grey if (ow, oh) == (w, h) else cv2.resize(grey, (ow, oh), interpolation=cv2.INTER_AREA)
        factor = ((w / ow) + (h / oh)) / 2
        min_side = max(24.0, MIN_FACE_FRACTION * min(ow, oh))
        m = math.ceil(min_side)
        rects, neighbours = cascade.detectMultiScale2(small, scaleFactor=SCALE_FACTOR, minNeighbors=MIN_NEIGHBORS,
                                                      flags=0, minSize=(m, m))
        dets = sorted(([int(v) for v in r] + [int(n)] for r, n in zip(rects, neighbours)),
                      key=lambda d: (-d[4], -d[2] * d[3]))
        entry = {
            "file": name, "frame": index, "width": w, "height": h, "rgb_fnv": fnv(rgb),
            "grey_fnv": fnv(grey),
            "analysis": {"width": ow, "height": oh, "fnv": fnv(small), "min_size": m,
                         "faces": [d[:4] for d in dets], "neighbors": [d[4] for d in dets]},
        }
        if dets:
            x, y, bw, bh = dets[0][:4]
            # The cascade alone: one level of a crop around the face, the face about 1.1 x 24 px.
            cx, cy, half = x + bw / 2, y + bh / 2, 0.9 * max(bw, bh)
            x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
            x1, y1 = min(ow, int(math.ceil(cx + half))), min(oh, int(math.ceil(cy + half)))
            crop = small[y0:y1, x0:x1]
            s = 24 * 1.1 / bw
            rw, rh = max(25, round_half_up(crop.shape[1] * s)), max(25, round_half_up(crop.shape[0] * s))
            level = np.ascontiguousarray(cv2.resize(crop, (rw, rh), interpolation=cv2.INTER_AREA))
            raw = cascade.detectMultiScale(level, scaleFactor=SCALE_FACTOR, minNeighbors=0, flags=0,
                                           minSize=(24, 24), maxSize=(24, 24))
            entry["raw"] = {"width": rw, "height": rh, "pixels": base64.b64encode(level.tobytes()).decode(),
                            "origins": sorted([int(r[0]), int(r[1])] for r in raw)}
        boxes = []
        if dets:
            x, y, bw, bh = dets[0][:4]  # OpenCV's best face, mapped back to frame pixels
            boxes.append(("haar", [round_half_up(x * factor), round_half_up(y * factor),
                                   round_half_up(bw * factor), round_half_up(bh * factor)]))
        hogs = hog(rgb, 0)
        if len(hogs):
            d = max(hogs, key=lambda r: r.area())
            boxes.append(("hog", [d.left(), d.top(), d.right() - d.left() + 1, d.bottom() - d.top() + 1]))
        entry["landmarks"] = []
        for kind, (x, y, bw, bh) in boxes:
            shape = predictor(rgb, dlib.rectangle(x, y, x + bw - 1, y + bh - 1))
            pts = [v for i in range(shape.num_parts) for v in (shape.part(i).x, shape.part(i).y)]
            entry["landmarks"].append({"box_from": kind, "box": [x, y, bw, bh], "points": pts})
        frames.append(entry)
        print(f"{name}#{index}: {w}x{h} -> {ow}x{oh}, {len(dets)} face(s) {[d for d in dets]}, "
              f"{len(entry.get('raw', {}).get('origins', []))} raw, boxes {[b for _, b in boxes]}")

    doc = {
        "generator": "tools/face-fixtures/make_fixtures.py",
        "versions": {"opencv": cv2.__version__, "dlib": dlib.__version__, "numpy": np.__version__,
                     "ffmpeg": subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split()[2]},
        "cascade": CASCADE,
        "landmark_model": LANDMARKS, "landmark_model_sha256": model_sha,
        "detector": {"scale_factor": SCALE_FACTOR, "min_neighbors": MIN_NEIGHBORS,
                     "analysis_side": ANALYSIS_SIDE, "min_face_fraction": MIN_FACE_FRACTION},
        "sws_flags": SWS_FLAGS,
        "grey_samples": grey_samples(),
        "frames": frames,
    }
    with open(OUT, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
