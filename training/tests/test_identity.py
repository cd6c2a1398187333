"""The PyTorch port of dlib's face-recognition ResNet (dubtrain.identity) against dlib itself, on
the committed chips of tests/fixtures/identity (remade by make_fixtures.py there)."""
import json
import os

import dlib
import numpy as np
import pytest
import torch
from PIL import Image

from dubtrain import identity

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "identity")
TOLERANCE = 1e-4   # max abs difference per descriptor component (issue 18)


@pytest.fixture(scope="module")
def fixtures():
    with open(os.path.join(FIXTURES, "descriptors.json")) as f:
        meta = json.load(f)["chips"]
    chips = np.stack([np.asarray(Image.open(os.path.join(FIXTURES, c["file"])).convert("RGB"))
                      for c in meta])
    return meta, chips


@pytest.fixture(scope="module")
def net():
    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, threads))       # small batches: more threads buy nothing
    yield identity.load()
    torch.set_num_threads(threads)


def test_reader_primitives():
    """dlib's integer, bool, string and portable-float encodings, written by hand."""
    data = bytes([0x01, 0x05,                     # int 5
                  0x82, 0x00, 0x01,               # int -256
                  ord("1"), ord("0"),             # true, false
                  0x01, 0x03]) + b"abc" + bytes([  # "abc"
                  0x01, 0x03, 0x81, 0x01,         # 3·2^-1 = 1.5
                  0x81, 0x05, 0x81, 0x02,         # -5·2^-2 = -1.25
                  0x01, 0x00, 0x02, 0x00, 0x7D])  # 0 with exponent 32000: inf
    r = identity.DlibReader(data)
    assert (r.int(), r.int(), r.bool(), r.bool(), r.str()) == (5, -256, True, False, "abc")
    assert (r.float(), r.float(), r.float()) == (1.5, -1.25, float("inf"))
    assert r.pos == len(data)


def test_parse_dat():
    """The whole .dat parses to the end, layer by layer, into anet_type's shape."""
    records = identity.read_dat()
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "input" and kinds[-2:] == ["fc", "loss_metric"]
    assert kinds.count("con") == 29 and kinds.count("affine") == 29 and kinds.count("add_prev") == 14
    assert np.allclose(records[0]["mean"], [122.782, 117.001, 104.298]) and records[0]["size"] == (150, 150)
    assert records[-1]["distance_threshold"] == pytest.approx(identity.SAME_PERSON)
    stem, pool = records[1], records[4]
    assert stem["weight"].shape == (32, 3, 7, 7) and stem["stride"] == (2, 2) and stem["padding"] == (0, 0)
    assert pool["kind"] == "max_pool" and pool["padding"] == (0, 0)
    assert records[-2]["weight"].shape == (256, 128) and records[-2]["bias"] is None


def test_matches_dlib(fixtures, net):
    """Port vs dlib-bin on every chip: both live and as stored in descriptors.json."""
    meta, chips = fixtures
    ours = identity.descriptor(net, chips)
    encoder = dlib.face_recognition_model_v1(identity.model_path())
    for c, chip, d in zip(meta, chips, ours):
        live = np.array(encoder.compute_face_descriptor(chip))
        stored = np.array(c["descriptor"])
        assert np.abs(live - stored).max() < 1e-6, f"{c['file']}: dlib differs from the fixture"
        assert np.abs(d - live).max() < TOLERANCE, f"{c['file']}: {np.abs(d - live).max():.2e}"
    assert np.allclose(identity.descriptor(net, chips[0]), ours[0], atol=1e-6)   # single chip


def test_same_and_different_people(fixtures, net):
    meta, chips = fixtures
    d = identity.descriptor(net, chips)
    people = [c["person"] for c in meta]
    same = different = 0
    for i in range(len(d)):
        for j in range(i + 1, len(d)):
            dist = identity.distance(d[i], d[j])
            if people[i] == people[j]:
                assert dist < identity.SAME_PERSON, (meta[i]["file"], meta[j]["file"], dist)
                same += 1
            else:
                assert dist > identity.SAME_PERSON, (meta[i]["file"], meta[j]["file"], dist)
                different += 1
    assert same >= 2 and different >= 10


def test_gradients(fixtures, net):
    """An identity loss backpropagates to the input: finite, non-zero, and equal to a central
    difference of the loss along a random direction (float64). The difference is taken at the
    chip plus uniform noise: flat regions of a uint8 chip give exact ties in the max pool, where
    the loss has no derivative to compare against."""
    _, chips = fixtures
    x = torch.from_numpy(chips[:2]).permute(0, 3, 1, 2).float().requires_grad_(True)
    target = net(torch.from_numpy(chips[2:3]).permute(0, 3, 1, 2).float())
    loss = identity.distance(net(x), target).mean()
    loss.backward()
    g = x.grad
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())        # the backbone stays frozen

    net64 = net.double()
    try:
        gen = torch.Generator().manual_seed(0)
        x = x.detach().double()[:1]
        x = (x + torch.rand(x.shape, generator=gen, dtype=torch.float64)).requires_grad_(True)
        v = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        f = lambda t: identity.distance(net64(t), target.double()).sum()
        f(x).backward()
        eps = 1e-6                                   # small enough to cross almost no ReLU kink
        with torch.no_grad():
            numeric = (f(x + eps * v) - f(x - eps * v)) / (2 * eps)
        analytic = (x.grad * v).sum()
        assert abs(numeric - analytic) < 1e-4 * abs(analytic)
    finally:
        net.float()
