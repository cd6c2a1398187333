"""Running a system through the real farm: `dubfarm local up` (a private farm per system),
`dubfarm submit VIDEO --audio WAV --wait --out OUT.mp4` per input, `dubfarm local down`.

The model is chosen with `local up --model SPEC` when the binary has that option; otherwise the
farm starts with no workers and this module starts `dubfarm worker --model SPEC` processes
against it with the farm's keys (SPEC `untrained:small` on a binary that predates the option
means the worker's built-in default, which is then the untrained seeded model). Either way the
model each worker actually loaded (its `model=NAME@VERSION` log line) is recorded.
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
    def __init__(self, binary, directory, model, workers=2, threads=1, log=print):
        self.binary, self.dir, self.model = binary, directory, model
        self.workers, self.threads, self.log = workers, threads, log
        self.procs = []

    def __enter__(self):
        if not os.path.exists(self.binary):
            raise SystemExit(f"dubeval: no dubfarm binary at {self.binary} (make build)")
        if os.path.exists(os.path.join(self.dir, "farm.json")):   # a farm left by an interrupted run
            subprocess.run([self.binary, "local", "down", "--dir", self.dir], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        up = [self.binary, "local", "up", "--dir", self.dir]
        if "--model" in _help(self.binary, "local", "up"):
            up += ["--workers", str(self.workers), "--threads", str(self.threads), "--model", self.model]
            self._run(up)
        else:
            self._run(up + ["--workers", "0"])
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

    def dub(self, video, audio, out):
        env = dict(os.environ, DUBFARM_LOCAL_DIR=self.dir)
        tmp = out + ".part.mp4"
        self._run(["nice", "-n", "15", self.binary, "submit", video, "--audio", audio, "--wait",
                   "--out", tmp], env=env)
        os.replace(tmp, out)
        return out

    def dub_all(self, jobs, parallel=4):
        """jobs: [(video, audio, out)]; submitted side by side so every worker has work."""
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
