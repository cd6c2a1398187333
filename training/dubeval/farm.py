"""Running a system through the real farm: `dubfarm local up` (a private farm per system),
`dubfarm submit VIDEO --audio WAV [--face PHOTO] --wait --out OUT.mp4` per input, `dubfarm local down`.

The model is chosen with `local up --model SPEC` when the binary has that option; otherwise the
farm starts with no workers and this module starts `dubfarm worker --model SPEC` processes
against it with the farm's keys (SPEC `untrained:small` on a binary that predates the option
means the worker's built-in default, which is then the untrained seeded model). Either way the
model each worker actually loaded (its `model=NAME@VERSION` log line) is recorded.

With `personalise=True` the farm is started with `local up --personalise` (its workers can
fine-tune a job on its own footage: `submit --personalise=SECONDS`), and `env` (e.g.
`DUBFARM_PERSONALISE_MAX_FRAMES`) reaches the coordinator, which reads its settings from the
environment it is started in.
"""
import json
import os
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor


def _help(binary, *cmd):
    return subprocess.run([binary, *cmd, "--help"], capture_output=True, text=True).stdout


class Farm:
    def __init__(self, binary, directory, model, workers=2, threads=1, log=print, personalise=False, env=None):
        self.binary, self.dir, self.model = binary, directory, model
        self.workers, self.threads, self.log = workers, threads, log
        self.personalise, self.env = personalise, dict(env or {})
        self.procs = []

    def __enter__(self):
        if not os.path.exists(self.binary):
            raise SystemExit(f"dubeval: no dubfarm binary at {self.binary} (make build)")
        for attempt in range(3):
            self._wait_binary()
            try:
                return self._start()
            except RuntimeError as e:
                # a farm whose start failed half-way (e.g. the binary was relinked under it) leaves
                # its PostgreSQL running without a farm.json for `local down` to find
                self._stop_leftovers()
                if attempt == 2 or "cannot start" not in str(e):
                    raise
                self.log(f"farm {self.dir}: start failed ({str(e).strip().splitlines()[-1]}); retrying in 30 s")
                time.sleep(30)

    def _wait_binary(self, stable=5, timeout=900):
        """Waits while the binary is missing or being rewritten (its size or mtime still changing)."""
        deadline, last = time.time() + timeout, None
        while time.time() < deadline:
            try:
                st = os.stat(self.binary)
                now = (st.st_size, st.st_mtime)
            except FileNotFoundError:
                now = None
            if now is not None and now == last and time.time() - now[1] >= stable:
                return
            last = now
            time.sleep(1)
        raise SystemExit(f"dubeval: {self.binary} missing or changing for {timeout} s")

    def _stop_leftovers(self):
        if os.path.exists(os.path.join(self.dir, "farm.json")):
            subprocess.run([self.binary, "local", "down", "--dir", self.dir], capture_output=True)
        data = os.path.join(self.dir, "postgres", "data")
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            import glob
            ctl = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")) or [shutil.which("pg_ctl") or "pg_ctl"]
            cmd = [ctl[-1], "-D", data, "-m", "fast", "-w", "stop"]
            if os.geteuid() == 0:          # the local farm runs PostgreSQL as `postgres` (runuser)
                cmd = ["runuser", "-u", "postgres", "--"] + cmd
            subprocess.run(cmd, capture_output=True)

    def _start(self):
        self._stop_leftovers()                                     # a farm left by an interrupted run
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        up = [self.binary, "local", "up", "--dir", self.dir]
        up_help = _help(self.binary, "local", "up")
        if self.personalise:
            if "--personalise" not in up_help:
                raise SystemExit(f"dubeval: {self.binary} has no `local up --personalise` (make build)")
            up.append("--personalise")
        if "--model" in up_help:
            up += ["--workers", str(self.workers), "--threads", str(self.threads), "--model", self.model]
            self._run(up, env=dict(os.environ, **self.env))
        else:
            self._run(up + ["--workers", "0"], env=dict(os.environ, **self.env))
            with open(os.path.join(self.dir, "farm.json")) as f:
                farm = json.load(f)
            keys = os.path.join(self.dir, "keys")
            model = ["--model", self.model]
            if self.model.startswith("untrained:") and "untrained" not in _help(self.binary, "worker"):
                model = []                  # this binary's default is the untrained seeded model
            os.makedirs(os.path.join(self.dir, "logs"), exist_ok=True)
            for i in range(self.workers):
                logf = open(os.path.join(self.dir, "logs", f"eval-{i + 1}.log"), "w")
                self.procs.append(subprocess.Popen(
                    ["nice", "-n", "15", self.binary, "worker", "--connect", farm["workEndpoint"],
                     "--name", f"eval-{i + 1}", "--threads", str(self.threads), "--stage", "dub", *model,
                     "--key-file", os.path.join(keys, "workers", "worker.key_secret"),
                     "--server-key", os.path.join(keys, "coordinator.key")],
                    stdout=logf, stderr=subprocess.STDOUT))
        self.loaded = self._wait_models()
        self.log(f"farm {self.dir}: {self.workers} worker(s), model {', '.join(sorted(set(self.loaded)))}")
        return self

    def _run(self, cmd, **kw):
        r = subprocess.run(cmd, capture_output=True, text=True, **kw)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stdout[-2000:]}{r.stderr[-2000:]}")
        return r.stdout

    def _wait_models(self, timeout=120):
        """The model name each worker logged as ready (fails if a worker died or never got ready)."""
        logs = os.path.join(self.dir, "logs")
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = []
            for name in sorted(os.listdir(logs)):
                if name.startswith("coordinator"):
                    continue
                with open(os.path.join(logs, name), errors="replace") as f:
                    text = f.read()
                m = re.findall(r"model=(\S+).*dub stage ready", text)
                if m:
                    found.append(m[-1])
            if len(found) >= self.workers:
                return found
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"dubfarm worker exited ({p.returncode}); see {logs}")
            time.sleep(0.5)
        raise RuntimeError(f"workers not ready in {timeout} s; see {logs}")

    def dub(self, video, audio, out, face=None, personalise=0):
        """Submits, waits, downloads to `out`; returns the job id. face: a source photo to swap in
        (submit --face; the worker leaves it out when its weights have no trained swap);
        personalise: the job's training budget in seconds (submit --personalise=N; 0: none)."""
        self._wait_binary()
        env = dict(os.environ, DUBFARM_LOCAL_DIR=self.dir)
        tmp = out + ".part.mp4"
        cmd = ["nice", "-n", "15", self.binary, "submit", video, "--audio", audio, "--wait", "--out", tmp]
        if face:
            cmd += ["--face", face]
        if personalise:
            cmd.append(f"--personalise={int(personalise)}")
        text = self._run(cmd, env=env)
        os.replace(tmp, out)
        m = re.search(r"job (\d+) submitted", text)
        return int(m.group(1)) if m else None

    def _json_cmd(self, *args):
        env = dict(os.environ, DUBFARM_LOCAL_DIR=self.dir)
        return self._run([self.binary, *args, "--json"], env=env)

    def status(self, job):
        """`dubfarm status JOB --json`: {"job": {...}, "segments": [...]}."""
        return json.loads(self._json_cmd("status", str(job)))

    def frame_counts(self, job):
        """{frames, swapped}: the job's output frames and those its workers swapped the source face
        into, summed over its segments' stats (`status --json`)."""
        stats = [g.get("stats") or {} for g in self.status(job).get("segments") or []]
        return {"frames": sum(x.get("frames", 0) for x in stats), "swapped": sum(x.get("framesSwapped", 0) for x in stats)}

    def events(self, job):
        """`dubfarm logs JOB --json`: the job's history, one dict per event, oldest first."""
        return [json.loads(line) for line in self._json_cmd("logs", str(job)).splitlines() if line.strip()]

    def coordinator_log(self):
        with open(os.path.join(self.dir, "logs", "coordinator.log"), errors="replace") as f:
            return f.read()

    def worker_logs(self):
        logs = os.path.join(self.dir, "logs")
        out = []
        for name in sorted(os.listdir(logs)):
            if not name.startswith("coordinator"):
                with open(os.path.join(logs, name), errors="replace") as f:
                    out.append(f.read())
        return "\n".join(out)

    def weights_file(self, sha256):
        """Where the coordinator keeps a job's personalised weights (content-addressed)."""
        return os.path.join(self.dir, "store", "weights", f"{sha256}.safetensors")

    def dub_all(self, jobs, parallel=4):
        """jobs: [(video, audio, out[, face])]; submitted side by side so every worker has work;
        returns their job ids."""
        with ThreadPoolExecutor(parallel) as pool:
            return list(pool.map(lambda j: self.dub(*j), jobs))

    def __exit__(self, *exc):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run([self.binary, "local", "down", "--dir", self.dir], capture_output=True)
