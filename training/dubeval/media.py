"""Video and audio in and out through the ffmpeg/ffprobe command-line tools."""
import json
import subprocess

import numpy as np

SAMPLE_RATE = 16000


def probe(path):
    """(width, height, fps) of the first video stream."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "stream=width,height,avg_frame_rate,r_frame_rate", "-of", "json", path],
                         check=True, capture_output=True, text=True).stdout
    s = json.loads(out)["streams"][0]
    rate = s.get("avg_frame_rate") or s["r_frame_rate"]
    if rate in ("0/0", ""):
        rate = s["r_frame_rate"]
    num, den = rate.split("/")
    return int(s["width"]), int(s["height"]), float(num) / float(den)


def read_frames(path, max_frames=0):
    """All decoded frames of the first video stream as uint8 RGB [N, H, W, 3], and the fps."""
    w, h, fps = probe(path)
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-i", path, "-map", "0:v:0", "-vsync", "passthrough"]
    if max_frames:
        cmd += ["-frames:v", str(int(max_frames))]
    cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    raw = subprocess.run(cmd, check=True, capture_output=True).stdout
    n = len(raw) // (w * h * 3)
    return np.frombuffer(raw, np.uint8)[: n * w * h * 3].reshape(n, h, w, 3), fps


def read_audio(path, seconds=0.0):
    """The first audio stream as float32 mono at 16 kHz (empty if the file has none)."""
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-i", path, "-map", "0:a:0?", "-ac", "1",
           "-ar", str(SAMPLE_RATE)]
    if seconds:
        cmd += ["-t", f"{seconds:.3f}"]
    cmd += ["-f", "s16le", "-"]
    raw = subprocess.run(cmd, check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.int16).astype(np.float32) / 32768.0


def extract_wav(video, wav, seconds=0.0):
    """The video's own audio as a 16-bit WAV (kept at 44.1/48 kHz stereo as in the source)."""
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-y", "-i", video, "-map", "0:a:0", "-vn"]
    if seconds:
        cmd += ["-t", f"{seconds:.3f}"]
    subprocess.run(cmd + ["-c:a", "pcm_s16le", wav], check=True, capture_output=True)


def trim_video(video, out, seconds):
    """The first `seconds` of a video, re-encoded near-losslessly (x264 CRF 10), audio kept."""
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-i", video, "-t", f"{seconds:.3f}",
                    "-map", "0:v:0", "-map", "0:a:0?", "-c:v", "libx264", "-crf", "10", "-preset", "veryfast",
                    "-pix_fmt", "yuv420p", "-c:a", "aac", out], check=True, capture_output=True)


def mux(video, audio, out):
    """`video`'s picture with `audio` as its sound, cut to the video's length (picture copied)."""
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-i", video, "-i", audio,
                    "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-c:a", "aac", "-shortest", out],
                   check=True, capture_output=True)
