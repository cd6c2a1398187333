"""Shared fixtures: the dubfarm binary (built by `make test` before pytest runs) and a tiny
dataset made from the demo clip with the real `dubfarm dataset build`."""
import json
import os
import subprocess
import sys

import pytest

TRAINING = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(TRAINING)
sys.path.insert(0, TRAINING)
DUBFARM = os.environ.get("DUBFARM", os.path.join(ROOT, ".build", "release", "dubfarm"))


@pytest.fixture(scope="session")
def dubfarm():
    if not os.path.exists(DUBFARM):
        pytest.fail(f"{DUBFARM} is missing: build it first (make build)")
    return DUBFARM


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory, dubfarm):
    """demo/speaker.mp4 (125 frames) as a 16-pixel dataset, and a split that holds nothing out."""
    out = tmp_path_factory.mktemp("tiny-dataset")
    subprocess.run([dubfarm, "dataset", "build", os.path.join(ROOT, "demo", "speaker.mp4"),
                    "--out", str(out / "data"), "--config", "tiny"], check=True, capture_output=True)
    split = out / "split.json"
    split.write_text(json.dumps({"heldOutSpeakers": []}))
    return str(out / "data"), str(split)
