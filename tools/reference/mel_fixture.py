#!/usr/bin/env python3
"""Reference log-mel for the AudioFeatures tests, in plain numpy (no librosa).

Re-implements, independently of the Swift code, what Wav2Lip's audio.py computes with its
hparams (which call librosa 0.7 with its defaults):

    y      = preemphasis(x, 0.97)                  y[0] = x[0], y[n] = x[n] - 0.97 x[n-1]
    D      = stft(y, n_fft=800, hop=200, win=800)  periodic Hann, center=True, reflect padding
    M      = mel_basis @ |D|                       80 Slaney mel filters (librosa.filters.mel,
                                                   htk=False, norm='slaney'), fmin 55, fmax 7600
    S_db   = 20 log10(max(1e-5, M)) - 20           min_level_db = -100, ref_level_db = 20
    S      = clip(8 (S_db + 100) / 100 - 4, -4, 4) symmetric normalisation, max_abs_value 4

Writes into Tests/AudioFeaturesTests/Fixtures/:
    mel_input.f32     the test signal: float32 little-endian, 16 kHz mono
    mel_expected.f32  S as float32 little-endian, frame-major (frames x 80)
    mel_fixture.json  shapes and parameters

Run from the repository root: python3 tools/reference/mel_fixture.py
"""
import json
import os

import numpy as np

SR, N_FFT, HOP, WIN, N_MELS, FMIN, FMAX = 16000, 800, 200, 800, 80, 55.0, 7600.0
PREEMPH, MIN_LEVEL_DB, REF_LEVEL_DB, MAX_ABS = 0.97, -100.0, 20.0, 4.0


def hz_to_mel(f):
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-300) / min_log_hz) / logstep, mels)


def mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    freqs = f_sp * m
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), freqs)


def mel_filters():
    fft_freqs = np.linspace(0, SR / 2, 1 + N_FFT // 2)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(FMIN), hz_to_mel(FMAX), N_MELS + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    w = np.zeros((N_MELS, len(fft_freqs)))
    for i in range(N_MELS):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        w[i] = np.maximum(0, np.minimum(lower, upper))
    w *= (2.0 / (mel_f[2:N_MELS + 2] - mel_f[:N_MELS]))[:, None]
    return w


def log_mel(x):
    x = np.asarray(x, dtype=np.float64)
    y = np.empty_like(x)
    y[0] = x[0]
    y[1:] = x[1:] - PREEMPH * x[:-1]
    y = np.pad(y, N_FFT // 2, mode="reflect")
    n_frames = 1 + (len(y) - N_FFT) // HOP
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN) / WIN)  # periodic Hann
    frames = np.stack([y[i * HOP:i * HOP + N_FFT] * window for i in range(n_frames)])
    mag = np.abs(np.fft.rfft(frames, axis=1))  # frames x 401
    mel = mag @ mel_filters().T                # frames x 80
    s_db = 20 * np.log10(np.maximum(1e-5, mel)) - REF_LEVEL_DB
    return np.clip(2 * MAX_ABS * (s_db - MIN_LEVEL_DB) / -MIN_LEVEL_DB - MAX_ABS, -MAX_ABS, MAX_ABS)


def test_signal():
    rng = np.random.default_rng(20261121)
    t = np.arange(SR) / SR                              # 1.0 s
    chirp = 0.3 * np.sin(2 * np.pi * (100 * t + 0.5 * 3900 * t * t))
    tone = 0.2 * np.sin(2 * np.pi * 440 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    x = chirp + tone + 0.01 * rng.standard_normal(len(t))
    x[6000:9200] = 0.0                                  # digital silence: the floor value
    x[9200:10800] = 1e-4 * rng.standard_normal(1600)    # near-silence
    return x.astype(np.float32)


def main():
    out = os.path.join("Tests", "AudioFeaturesTests", "Fixtures")
    os.makedirs(out, exist_ok=True)
    x = test_signal()
    s = log_mel(x.astype(np.float64))
    x.astype("<f4").tofile(os.path.join(out, "mel_input.f32"))
    s.astype("<f4").tofile(os.path.join(out, "mel_expected.f32"))
    meta = {"sample_rate": SR, "samples": int(len(x)), "frames": int(s.shape[0]), "bins": int(s.shape[1]),
            "layout": "frame-major float32 little-endian", "n_fft": N_FFT, "hop": HOP, "win": WIN,
            "fmin": FMIN, "fmax": FMAX, "preemphasis": PREEMPH, "min_level_db": MIN_LEVEL_DB,
            "ref_level_db": REF_LEVEL_DB, "max_abs_value": MAX_ABS,
            "min": float(s.min()), "max": float(s.max())}
    with open(os.path.join(out, "mel_fixture.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(meta)


if __name__ == "__main__":
    main()
