#!/usr/bin/env python3
"""A dubfarm worker in Python, written against docs/protocol.md.

It speaks DUBFARM-WORK/6 over a ZeroMQ DEALER socket (CURVE optional) and runs the passthrough
stage without a codec: it returns each segment's own packets, restamped with their frame
indices (docs/protocol.md, section 7), so the input must be all-intra. The stage runs on a
thread of its own, so heartbeats go on while it works: put a PyTorch model in `run_stage` and a
GPU machine joins the farm.

    .venv/bin/python tools/pyworker/worker.py --connect tcp://HOST:5555 \\
        [--key-file NAME.key_secret --server-key coordinator.key]
"""
import argparse
import os
import queue
import signal
import socket
import struct
import sys
import threading
import time

import zmq

PROTOCOL = b"DUBFARM-WORK/6"
VERSION = "pyworker-1"
NAME_MAX, TEXT_MAX = 1024, 64 << 10


def log(message):
    print(time.strftime("%Y-%m-%dT%H:%M:%S"), message, flush=True)


# --- Header encoding (section 4): little-endian, no padding. struct codes: B u8/bool, H u16,
# I u32, Q u64, q i64, d f64. Strings and blobs are a u32 length and the bytes. -----------------

class Writer:
    def __init__(self):
        self.buf = bytearray()

    def put(self, fmt, *values):
        self.buf += struct.pack("<" + fmt, *values)
        return self

    def blob(self, data):
        self.put("I", len(data))
        self.buf += data
        return self

    def string(self, text):
        return self.blob(text.encode("utf-8"))

    def optional_string(self, text):
        self.put("B", text is not None)
        return self.string(text) if text is not None else self


class Malformed(Exception):
    pass


class Reader:
    """Reads a header; every length is checked against what is left, and `end` insists that
    the header was read to its last byte."""

    def __init__(self, data):
        self.data, self.at = memoryview(data), 0

    def take(self, n):
        if n > len(self.data) - self.at:
            raise Malformed(f"{n} bytes wanted at byte {self.at}, {len(self.data) - self.at} left")
        self.at += n
        return self.data[self.at - n:self.at]

    def get(self, fmt):
        values = struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))
        return values[0] if len(values) == 1 else values

    def bool(self):
        v = self.get("B")
        if v > 1:
            raise Malformed(f"bad boolean {v}")
        return v == 1

    def blob(self, limit=1 << 32):
        n = self.get("I")
        if n > limit:
            raise Malformed(f"blob of {n} bytes exceeds {limit}")
        return bytes(self.take(n))

    def string(self, limit=NAME_MAX):
        return self.blob(limit).decode("utf-8")

    def optional_string(self, limit=NAME_MAX):
        return self.string(limit) if self.bool() else None

    def count(self, min_size, limit=1 << 24):
        n = self.get("I")
        if n > limit or n * min_size > len(self.data) - self.at:
            raise Malformed(f"count {n} exceeds the message")
        return n

    def end(self):
        if self.at != len(self.data):
            raise Malformed(f"{len(self.data) - self.at} trailing bytes")


# --- Messages (section 5) ------------------------------------------------------------------------

TASK_REF = "qqQQ"  # job, segment index, lease token high, low: copied back as it came


def message(command, header=b"", *payload):
    return [PROTOCOL, command.encode(), bytes(header)] + [bytes(p) for p in payload]


def read_bundle(data):
    """A packet bundle: "DFPB", u16 version 1, codec parameters, u32 count, packets."""
    r = Reader(data)
    if bytes(r.take(4)) != b"DFPB" or r.get("H") != 1:
        raise Malformed("not a version 1 packet bundle")
    codec = {"name": r.string(64), "extradata": r.blob(1 << 20), "size": r.get("qq"),
             "pixel_format": r.string(64), "rationals": list(r.get("qqqqqq")), "enums": r.get("qqqqqq")}
    # rationals: time base, frame rate, sample aspect; enums: profile, level and the colour fields
    packets = []
    for _ in range(r.count(29)):
        pts, dts, duration = r.get("qqq")
        packets.append((pts, dts, duration, r.bool(), r.blob()))
    r.end()
    return codec, packets


def write_bundle(codec, packets):
    w = Writer().put("4sH", b"DFPB", 1).string(codec["name"]).blob(codec["extradata"])
    w.put("qq", *codec["size"]).string(codec["pixel_format"])
    w.put("qqqqqq", *codec["rationals"]).put("qqqqqq", *codec["enums"]).put("I", len(packets))
    for pts, dts, duration, key, data in packets:
        w.put("qqqB", pts, dts, duration, key).blob(data)
    return w.buf


def read_task(frames):
    """TASK: [header, packet bundle, PCM, face image] after the command."""
    if len(frames) != 4:
        raise Malformed(f"TASK with {len(frames) + 2} frames, expected 6")
    r = Reader(frames[0])
    t = {"ref": r.get(TASK_REF), "stage": r.string()}
    t["output"], t["decoded"] = r.get("qq"), r.get("qq")
    t["frame_pts"] = [r.get("q") for _ in range(r.count(8))]
    t["frame_rate"] = r.get("qq")
    t["encoder"] = (r.string(64), r.get("q"), r.string(64), r.string(64))  # codec, crf, preset, pixel format
    t["audio_start"], t["has_face"] = r.get("q"), r.bool()
    t["model"], t["weights"] = r.optional_string(), r.optional_string()
    t["rotation"] = r.get("H")  # degrees counter-clockwise; passthrough does not need it
    r.end()
    t["codec"], t["packets"] = read_bundle(frames[1])
    t["face"] = frames[3] if t["has_face"] else None   # frames[2]: u32 n + n float32, 16 kHz mono
    return t


def result_message(ref, bundle, frames, seconds):
    # SegmentStats: frames, with a face, swapped; decode, stage, encode, total seconds; no steps
    stats = Writer().put(TASK_REF, *ref).put("qqqddddB", frames, 0, 0, 0.0, seconds, 0.0, seconds, 0)
    return message("RESULT", stats.buf, bundle)


def failed_message(ref, code, text, handed_back=False):
    w = Writer().put(TASK_REF, *ref).string(code).string(text).put("B", handed_back)
    return message("FAILED", w.buf)


# --- The stage -----------------------------------------------------------------------------------

class StageError(Exception):
    def __init__(self, code, text):
        super().__init__(text)
        self.code = code


def run_stage(task, cancelled):
    """The passthrough stage without a codec (section 7): for each output frame the input packet
    of that frame's pts, which must be a keyframe, stamped pts = dts = frame index, duration 1,
    in a bundle whose time base is 1/frame rate."""
    if task["stage"] != "passthrough":
        raise StageError("unsupported", f"this worker runs stage 'passthrough', not '{task['stage']}'")
    by_pts = {p[0]: p for p in task["packets"]}
    start, end = task["output"]
    out = []
    for frame in range(start, end):
        if cancelled.is_set():
            raise StageError("cancelled", "segment cancelled")
        i = frame - task["decoded"][0]
        p = by_pts.get(task["frame_pts"][i]) if 0 <= i < len(task["frame_pts"]) else None
        if p is None:
            raise StageError("badInput", f"no packet for frame {frame} in the task")
        if not p[3]:
            raise StageError("unsupported", f"frame {frame} is not a keyframe: this worker copies packets "
                                            "and needs an all-intra input (ffmpeg -g 1 -bf 0)")
        out.append((frame, frame, 1, True, p[4]))
    codec = dict(task["codec"])
    num, den = task["frame_rate"]
    codec["rationals"] = [den, num] + codec["rationals"][2:]
    return write_bundle(codec, out), len(out)


class Running:
    """The segment being processed: its TaskRef and cancel flag."""

    def __init__(self, ref):
        self.ref, self.cancelled, self.handed_back = ref, threading.Event(), False


# --- The worker (section 6) ----------------------------------------------------------------------

class Worker:
    def __init__(self, args):
        self.args = args
        self.name = args.name or f"{socket.gethostname()}-{os.getpid()}"
        self.silence = args.heartbeat * args.liveness
        self.context = zmq.Context()
        self.sock = self.connect()
        self.done = queue.Queue()       # (Running, message) from the stage thread
        self.pending = []               # messages that would have blocked, in order
        self.current = None
        self.stop_at = None
        self.last_sent = self.last_heard = time.monotonic()
        self.backoff = self.silence
        self.connected = False

    def connect(self):
        s = self.context.socket(zmq.DEALER)
        s.setsockopt(zmq.ROUTING_ID, f"{self.name}#{os.getpid()}".encode())
        s.setsockopt(zmq.MAXMSGSIZE, 1 << 30)
        s.setsockopt(zmq.RECONNECT_IVL, 100)
        s.setsockopt(zmq.RECONNECT_IVL_MAX, 10_000)
        s.setsockopt(zmq.LINGER, 0)
        if self.args.key_file:
            public, secret = read_key_pair(self.args.key_file)
            s.curve_serverkey = read_server_key(self.args.server_key).encode()
            s.curve_publickey, s.curve_secretkey = public.encode(), secret.encode()
        s.connect(self.args.connect)
        return s

    def send(self, frames):
        self.pending.append(frames)
        self.flush()
        self.last_sent = time.monotonic()

    def flush(self):
        while self.pending:
            try:
                self.sock.send_multipart(self.pending[0], zmq.NOBLOCK)
            except zmq.Again:
                return
            self.pending.pop(0)

    def send_ready(self):
        w = Writer().string(self.name).string(socket.gethostname()).put("qq", os.getpid(), 1)  # pid, threads
        w.string("passthrough").optional_string(None)                                        # stage, model
        w.put("I", 1).string("stage:passthrough").string(VERSION)                            # capabilities, version
        w.put("B", self.current is not None)                                                 # busy with …
        if self.current is not None:
            w.put(TASK_REF, *self.current.ref)
        w.put("B", False)                                                                    # busy training: never
        self.send(message("READY", w.buf))

    def run(self):
        log(f"connecting to {self.args.connect} as {self.name} (CURVE {'on' if self.args.key_file else 'off'})")
        self.send_ready()
        while True:
            self.drain_results()
            now = time.monotonic()
            if self.stop_at is not None:
                if self.current is None:
                    self.send(message("DISCONNECT", Writer().string("worker stopping").buf))
                    log("stopped")
                    break
                if now - self.stop_at > self.args.grace and not self.current.handed_back:
                    log("grace period over: handing the segment back")
                    self.current.handed_back = True
                    self.current.cancelled.set()
            if now - self.last_sent >= self.args.heartbeat:
                self.send(message("HEARTBEAT"))
            if now - self.last_heard > self.backoff:
                if self.connected:
                    log(f"coordinator silent for {self.silence:g} s: saying READY again")
                self.connected = False
                self.send_ready()
                self.last_heard = now
                self.backoff = min(self.backoff * 2, 10.0)
            wait = min(self.args.heartbeat - (time.monotonic() - self.last_sent), 0.05)
            if self.sock.poll(max(1, int(wait * 1000))):
                self.receive_all()
            self.flush()
        self.sock.close(linger=5000)    # the last RESULT and the DISCONNECT still go out
        self.context.term()

    def receive_all(self):
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.last_heard, self.backoff = time.monotonic(), self.silence
            if not self.connected:
                self.connected = True
                log("coordinator answered")
            try:
                self.handle(frames)
            except (Malformed, UnicodeDecodeError, struct.error) as e:
                log(f"dropped a malformed message from the coordinator: {e}")

    def handle(self, frames):
        if len(frames) < 3 or frames[0] != PROTOCOL:
            raise Malformed(f"not a {PROTOCOL.decode()} message")
        command = frames[1].decode()
        if command == "TASK":
            task = read_task(frames[2:])
            if self.current is not None or self.stop_at is not None:
                self.send(failed_message(task["ref"], "cancelled", f"worker {self.name} is busy or stopping", True))
                return
            self.current = Running(task["ref"])
            threading.Thread(target=self.process, args=(task, self.current), daemon=True).start()
        elif command == "CANCEL":
            r = Reader(frames[2])
            ref = r.get(TASK_REF)
            r.end()
            if self.current is not None and self.current.ref == ref:
                log(f"segment {ref[0]}/{ref[1]} cancelled by the coordinator")
                self.current.cancelled.set()
        elif command == "DISCONNECT":
            log(f"coordinator said goodbye: {Reader(frames[2]).string(TEXT_MAX)}")
        # HEARTBEAT needs no answer; WEIGHTS, TRAIN and TRAIN-CANCEL go only to dub workers and to
        # workers that advertise `personalise`, which this one is not.

    def process(self, task, running):
        """On the stage thread: runs the stage and posts RESULT or FAILED for the main loop."""
        ref, started = task["ref"], time.monotonic()
        log(f"segment {ref[0]}/{ref[1]} started: frames {task['output'][0]}..<{task['output'][1]}")
        try:
            bundle, frames = run_stage(task, running.cancelled)
            seconds = time.monotonic() - started
            reply = result_message(ref, bundle, frames, seconds)
            log(f"segment {ref[0]}/{ref[1]} done: {frames} frames in {seconds:.3f} s")
        except Exception as e:
            code = e.code if isinstance(e, StageError) else "internalError"
            log(f"segment {ref[0]}/{ref[1]} {'handed back' if running.handed_back else 'failed'}: {e}")
            reply = failed_message(ref, code, str(e), running.handed_back)
        self.done.put((running, reply))

    def drain_results(self):
        while True:
            try:
                running, reply = self.done.get_nowait()
            except queue.Empty:
                return
            self.send(reply)
            if self.current is running:
                self.current = None

    def stop(self, *_):
        if self.stop_at is None:
            self.stop_at = time.monotonic()


# --- Key files (section 2) -----------------------------------------------------------------------

Z85 = set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#")


def key_values(path):
    """The public keys and the secret key of a key file (CZMQ certificate, or bare keys)."""
    public, secret = [], None
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            for name in ("public-key", "secret-key"):
                if line.startswith(name):
                    value = line[len(name):].lstrip(" =").strip('" ')
                    if len(value) != 40 or not set(value) <= Z85:
                        sys.exit(f"{path}: {name} is not a 40-character Z85 CURVE key")
                    if name == "secret-key":
                        secret = value
                    else:
                        public.append(value)
            if len(line) == 40 and set(line) <= Z85:
                public.append(line)
    return public, secret


def read_key_pair(path):
    public, secret = key_values(path)
    if secret is None:
        sys.exit(f"{path}: no secret-key (pass the NAME.key_secret file)")
    derived = zmq.curve_public(secret.encode()).decode()
    if public and public[0] != derived:
        sys.exit(f"{path}: the public-key does not belong to the secret-key")
    return derived, secret


def read_server_key(key_or_file):
    if len(key_or_file) == 40 and not os.path.exists(key_or_file):
        return key_or_file
    public, _ = key_values(key_or_file)
    if not public:
        sys.exit(f"{key_or_file}: no public-key")
    return public[0]


def main():
    p = argparse.ArgumentParser(description="A dubfarm passthrough worker in Python (docs/protocol.md).")
    p.add_argument("--connect", required=True, help="the coordinator's work endpoint, e.g. tcp://HOST:5555")
    p.add_argument("--name", help="unique worker name (default: HOST-PID)")
    p.add_argument("--heartbeat", type=float, default=1.0, help="seconds between heartbeats (the coordinator's)")
    p.add_argument("--liveness", type=int, default=5, help="missed heartbeats before the coordinator counts as silent")
    p.add_argument("--grace", type=float, default=30.0, help="seconds a stopping worker waits before handing its segment back")
    p.add_argument("--key-file", help="CURVE: this worker's NAME.key_secret")
    p.add_argument("--server-key", help="CURVE: the coordinator's public key, or its coordinator.key file")
    args = p.parse_args()
    if bool(args.key_file) != bool(args.server_key):
        p.error("--key-file and --server-key go together")
    worker = Worker(args)
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    # A parent may have started us with these blocked (the signal mask is inherited).
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    worker.run()


if __name__ == "__main__":
    main()
