"""Face-swap metrics (issue 18). Every function takes arrays and returns plain floats (NaN when
there is nothing to measure); frames without a descriptor or landmarks (NaN rows) are skipped.

To source: mean over frames with a descriptor of the distance of the output's dlib 128-d
descriptor to the source photo's (same person below 0.6): how well the swap took the photo's
identity. The "to target" figure is metrics.identity_distance (output frame to the same input
frame): it should rise under a swap.
Identity spread: mean distance of each frame's descriptor to the clip's mean descriptor (the
paper's consistency over time); reported as output spread / the original video's, per clip.
Expression difference, identity removed: per frame four landmark shapes, the eye aspect ratio of
each eye (Soukupová & Čech 2016: (|p2−p6| + |p3−p5|) / (2 |p1−p4|), points 36–41 and 42–47), the
inner mouth's (height 62–66 over width 60–64) and the outer mouth's (51–57 over 48–54); each
ratio minus its own clip median (the person's resting shape, i.e. the identity, cancels), then the
mean over frames and features of |output − original|. The medians are over the frames where both
have landmarks, so a missed frame shifts neither.
Pose difference: head roll (the angle of the line through the two eye centres, means of 36–41
and 42–47) as mean |roll(output) − roll(original)| in degrees, not centred; and a yaw proxy, the
nose tip's (30) offset from the eye centres' midpoint along the eye line, over the eye-centre
distance, compared the same way.
"""
import numpy as np

RIGHT_EYE, LEFT_EYE = 36, 42      # first of the six points of each eye in dlib's 68 (image left first)
NOSE_TIP = 30
EXPRESSION_FEATURES = ("eye_right", "eye_left", "mouth_inner", "mouth_outer")


def _mean_or_nan(x):
    x = x[~np.isnan(x)]
    return float(x.mean()) if len(x) else float("nan")


def _dist(lmk, i, j):
    return np.linalg.norm(lmk[:, i] - lmk[:, j], axis=1)


def dist_source(out_desc, source_desc):
    """Mean descriptor distance of the output's frames [N, 128] to one source photo's [128]."""
    return _mean_or_nan(np.linalg.norm(out_desc - np.asarray(source_desc)[None], axis=1))


def id_spread(desc):
    """Mean distance of each frame's descriptor to the clip's mean descriptor."""
    d = desc[~np.isnan(desc).any(1)]
    if not len(d):
        return float("nan")
    return float(np.linalg.norm(d - d.mean(0), axis=1).mean())


def spread_ratio(out_desc, ref_desc):
    """Output's identity spread over the original's (NaN when the original's is zero or unknown)."""
    ref = id_spread(ref_desc)
    return id_spread(out_desc) / ref if ref > 0 else float("nan")


def eye_aspect_ratio(lmk, first):
    """Soukupová & Čech's EAR of the eye whose six points start at `first`, per frame."""
    p = lambda k: first + k - 1
    return (_dist(lmk, p(2), p(6)) + _dist(lmk, p(3), p(5))) / (2 * _dist(lmk, p(1), p(4)))


def expression_features(lmk):
    """[N, 4]: EAR right and left, inner and outer mouth height over width (EXPRESSION_FEATURES)."""
    return np.stack([eye_aspect_ratio(lmk, RIGHT_EYE), eye_aspect_ratio(lmk, LEFT_EYE),
                     _dist(lmk, 62, 66) / _dist(lmk, 60, 64), _dist(lmk, 51, 57) / _dist(lmk, 48, 54)], 1)


def expr_diff(out_lmk, ref_lmk):
    """Mean |feature − its clip median| difference, output against original, over the frames
    where both have landmarks and over the four features."""
    a, b = expression_features(out_lmk), expression_features(ref_lmk)
    ok = ~(np.isnan(a).any(1) | np.isnan(b).any(1))
    if not ok.any():
        return float("nan")
    a, b = a[ok], b[ok]
    return float(np.abs((a - np.median(a, 0)) - (b - np.median(b, 0))).mean())


def _eye_centres(lmk):
    return lmk[:, RIGHT_EYE:RIGHT_EYE + 6].mean(1), lmk[:, LEFT_EYE:LEFT_EYE + 6].mean(1)


def roll(lmk):
    """Head roll per frame, degrees: the angle of the line from the right to the left eye centre."""
    r, l = _eye_centres(lmk)
    d = l - r
    return np.degrees(np.arctan2(d[:, 1], d[:, 0]))


def yaw_proxy(lmk):
    """Nose tip's offset from the eye centres' midpoint along the eye line, in eye-centre distances
    (0 facing the camera; the sign says which way the head turns)."""
    r, l = _eye_centres(lmk)
    axis = l - r
    io = np.linalg.norm(axis, axis=1)
    return np.einsum("ij,ij->i", lmk[:, NOSE_TIP] - (r + l) / 2, axis) / io ** 2


def roll_diff(out_lmk, ref_lmk):
    """Mean |roll(output) − roll(original)| in degrees (wrapped to ±180)."""
    d = (roll(out_lmk) - roll(ref_lmk) + 180) % 360 - 180
    return _mean_or_nan(np.abs(d))


def yaw_diff(out_lmk, ref_lmk):
    """Mean |yaw proxy(output) − yaw proxy(original)|, in eye-centre distances."""
    return _mean_or_nan(np.abs(yaw_proxy(out_lmk) - yaw_proxy(ref_lmk)))
