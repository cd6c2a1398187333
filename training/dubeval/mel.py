"""Log-mel spectrogram in numpy (our own; independent of the engine's Swift mel).

16 kHz mono, 25 ms Hann window (400 samples), 10 ms hop (160): 100 mel frames per second,
HTK-style mel scale, `n_mels` triangular filters from 55 Hz to 7.6 kHz, log10 of power
clamped at 1e-5, then per-clip mean/variance normalisation (the sync model sees shapes, not level).
Frame k is centred at k·10 ms (the signal is reflect-padded by half a window).
"""
import numpy as np

from .media import SAMPLE_RATE

N_FFT = 512
WIN = 400
HOP = 160
FRAMES_PER_SECOND = SAMPLE_RATE // HOP   # 100


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)


def mel_filters(n_mels=80, fmin=55.0, fmax=7600.0, sr=SAMPLE_RATE, n_fft=N_FFT):
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fb = np.zeros((n_mels, len(freqs)), np.float32)
    for i in range(n_mels):
        lo, c, hi = edges[i], edges[i + 1], edges[i + 2]
        up = (freqs - lo) / (c - lo)
        down = (hi - freqs) / (hi - c)
        fb[i] = np.maximum(0.0, np.minimum(up, down))
    return fb


def log_mel(audio, n_mels=80, normalise=True):
    """[T, n_mels] float32, T = len(audio) // HOP + 1."""
    audio = np.asarray(audio, np.float32)
    if len(audio) < WIN:
        audio = np.pad(audio, (0, WIN - len(audio)))
    x = np.pad(audio, (WIN // 2, WIN // 2), mode="reflect")
    n = 1 + (len(x) - WIN) // HOP
    idx = np.arange(WIN)[None, :] + HOP * np.arange(n)[:, None]
    frames = x[idx] * np.hanning(WIN + 1)[:-1].astype(np.float32)
    spec = np.abs(np.fft.rfft(frames, n=N_FFT, axis=1)) ** 2
    mel = np.log10(np.maximum(spec @ mel_filters(n_mels).T, 1e-5)).astype(np.float32)
    if normalise:
        mel = (mel - mel.mean(0, keepdims=True)) / (mel.std(0, keepdims=True) + 1e-5)
    return mel
