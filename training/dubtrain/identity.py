"""dlib's face-recognition ResNet (dlib_face_recognition_resnet_model_v1) in PyTorch, so an
identity loss can backpropagate through the same 128-d descriptor that `make eval` measures with.

The network is dlib's `anet_type` (examples/dnn_face_recognition_ex.cpp): a 29-conv ResNet on a
150×150 RGB face chip (dlib.get_face_chip(img, shape, size=150, padding=0.25)), ending in a
128-d descriptor; two chips of the same person lie closer than 0.6 (Euclidean). The output is
NOT normalised: loss_metric's to_label copies the fc output as it is, and dlib's Python
`compute_face_descriptor` returns exactly that, so neither does `descriptor` here.

The weights are read straight from the `.dat` that the face_recognition_models wheel ships
(`model_path()`), by a reader of dlib's serialization format (below), so no converted weights
live in git. Parsing the 22 MB file takes about 30 ms, so nothing is cached.

Details of dlib that a naive port gets wrong, all matched here:
- input: (pixel - mean) / 256 per channel, the means (122.782, 117.001, 104.298) read from the
  file's input layer; pixels in 0..255, RGB order;
- padding: dlib's con/max_pool/avg_pool pad by size//2 only when the stride is 1, and not at all
  when it is 2 (the 7×7 stem, the 3×3 max pool, the first 3×3 conv and the 2×2 average pool of
  each down block all use padding 0); the file stores each layer's padding and the loader checks;
- add_prev: when the two tensors differ in shape, dlib sums them as if each were zero-padded at
  the end (more channels; more rows and columns at the bottom and right). The down blocks need
  both: channels double (32→64, 64→128, 128→256), and with padding 0 the strided conv and the
  2×2 pool disagree on odd sizes: from 8×8 the conv gives 3×3 and the pool 4×4, from 4×4 the
  conv gives 1×1 and the pool 2×2, so the residual branch lands in the top-left corner only
  (aligning it anywhere else moves the descriptors by ~0.15);
- affine: batch norm frozen into a per-channel scale and shift (dlib's affine_ in CONV_MODE);
- fc_no_bias: output = input · W with W stored as [inputs, outputs].

Use: `net = identity.load()` (eval mode, frozen); `identity.descriptor(net, chip)` for uint8
chips as dlib gives them; `net(x)` for a differentiable batch, x float RGB [N, 3, 150, 150] in
0..255 (not 0..1: scale first). tests/test_identity.py checks the port against dlib-bin on the
chips of tests/fixtures/identity (max abs difference ~3e-7).

Licence of the weights: public domain / CC0. Davis King's dlib-models README
(https://github.com/davisking/dlib-models/blob/master/README.md) says of his model files "anyone
can do whatever they want with these model files as I've released them into the public domain",
and that repository's LICENSE is CC0 1.0 Universal; the face_recognition_models wheel repeats it
("created by Davis King ... licensed in the public domain or under CC0 1.0 Universal") and
ships the CC0 text. The model was trained on FaceScrub, VGG-Face and images the author scraped.
We commit no weights anyway.
"""
import importlib.util
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SAME_PERSON = 0.6          # dlib's threshold: descriptors of one person lie closer than this
CHIP_SIZE = 150


def model_path():
    """The .dat inside the face_recognition_models wheel (found without importing the package,
    whose __init__ needs pkg_resources, gone from recent setuptools)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None:
        raise FileNotFoundError("pip install face_recognition_models (training/requirements.txt)")
    return os.path.join(list(spec.submodule_search_locations)[0], "models",
                        "dlib_face_recognition_resnet_model_v1.dat")


# ----------------------------------------------------------------------------- dlib serialization

class DlibReader:
    """Reads the primitives of dlib/serialize.h from a byte string.

    - integers: a control byte (bit 7: negative; low 4 bits: byte count n) then n bytes, little
      endian magnitude;
    - bool: the ASCII byte '1' or '0';
    - std::string: its length (an integer) then the bytes;
    - float/double ("portable float"): two integers, mantissa then exponent, value
      mantissa·2^exponent; exponents 32000/32001/32002 mean inf/-inf/nan;
    - tensor (dlib/cuda/tensor.h): version 2, num_samples, k, nr, nc, then raw little-endian
      IEEE float32s; alias_tensor: version 1 and the four sizes only.
    """

    def __init__(self, data):
        self.data, self.pos = data, 0

    def byte(self):
        b = self.data[self.pos]
        self.pos += 1
        return b

    def int(self):
        control = self.byte()
        n = control & 0x0F
        if n == 0 or n > 8:
            raise ValueError(f"bad integer control byte 0x{control:02x} at {self.pos - 1}")
        value = int.from_bytes(self.data[self.pos:self.pos + n], "little")
        self.pos += n
        return -value if control & 0x80 else value

    def bool(self):
        c = self.byte()
        if c not in b"01":
            raise ValueError(f"bad bool byte {c} at {self.pos - 1}")
        return c == ord("1")

    def str(self):
        n = self.int()
        s = self.data[self.pos:self.pos + n].decode("ascii")
        self.pos += n
        return s

    def float(self):
        if self.data[self.pos] & 0x70:
            raise ValueError(f"old ASCII float format at {self.pos} is not supported")
        mantissa, exponent = self.int(), self.int()
        specials = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
        return specials[exponent] if exponent in specials else math.ldexp(mantissa, exponent)

    def tensor(self):
        if self.int() != 2:
            raise ValueError(f"unexpected tensor version at {self.pos}")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        a = np.frombuffer(self.data, "<f4", count, self.pos).reshape(shape)
        self.pos += 4 * count
        return a.astype(np.float32)

    def alias_tensor(self):
        if self.int() != 1:
            raise ValueError(f"unexpected alias_tensor version at {self.pos}")
        return tuple(self.int() for _ in range(4))

    def version(self, *allowed):
        v = self.str()
        if v not in allowed:
            raise ValueError(f"expected one of {allowed}, found {v!r} at {self.pos}")
        return v


# ----------------------------------------------------------------------------- the architecture

def _ares(n, down=False):
    """dlib's ares/ares_down as its layers from input to output (C++ nests them output-first):
    tag1, block = con(stride) affine relu con affine, [tag2 skip1 avg_pool 2x2/2,] add_prev, relu."""
    layers = [("tag", 1), ("con", n, 3, 2 if down else 1), ("affine",), ("relu",),
              ("con", n, 3, 1), ("affine",)]
    if down:
        layers += [("tag", 2), ("skip", 1), ("avg_pool", 2, 2), ("add_prev", 2)]
    else:
        layers += [("add_prev", 1)]
    return layers + [("relu",)]


def anet_layers():
    """anet_type from input to loss as (kind, …) tuples: the order of dlib's layer records."""
    layers = [("input",), ("con", 32, 7, 2), ("affine",), ("relu",), ("max_pool", 3, 2)]
    layers += _ares(32) * 3                                     # alevel4
    layers += _ares(64, down=True) + _ares(64) * 3              # alevel3
    layers += _ares(128, down=True) + _ares(128) * 2            # alevel2
    layers += _ares(256, down=True) + _ares(256) * 2            # alevel1
    layers += _ares(256, down=True)                             # alevel0
    return layers + [("avg_pool_everything",), ("fc", 128)]


def _layer_details(r, kind):
    """One layer's own record (the `details` that add_layer serializes) as a dict."""
    if kind == "input":
        r.version("input_rgb_image_sized")
        mean = [r.float() for _ in range(3)]
        size = (r.int(), r.int())
        return {"mean": mean, "size": size}
    if kind == "con":
        v = r.version("con_4", "con_5", "con_6")
        params = r.tensor().reshape(-1)
        num_filters, nr, nc, stride_y, stride_x, pad_y, pad_x = (r.int() for _ in range(7))
        filters, biases = r.alias_tensor(), r.alias_tensor()
        [r.float() for _ in range(4)]                           # learning-rate / decay multipliers
        use_bias = r.bool() if v in ("con_5", "con_6") else True
        use_relu = r.bool() if v == "con_6" else False
        nf = int(np.prod(filters))
        out = {"weight": params[:nf].reshape(filters), "stride": (stride_y, stride_x),
               "padding": (pad_y, pad_x), "kernel": (nr, nc), "num_filters": num_filters,
               "bias": params[nf:nf + num_filters] if use_bias else None}
        if use_relu:
            raise ValueError("con_ with a fused relu is not expected in anet_type")
        return out
    if kind == "affine":
        v = r.version("affine_", "affine_2")
        params = r.tensor().reshape(-1)
        gamma, beta = r.alias_tensor(), r.alias_tensor()
        mode = r.int()                                          # 0 = CONV_MODE (per channel)
        disabled = r.bool() if v == "affine_2" else False
        ng = int(np.prod(gamma))
        return {"gamma": params[:ng], "beta": params[ng:ng + int(np.prod(beta))],
                "mode": mode, "disabled": disabled}
    if kind == "relu":
        v = r.version("relu_", "relu_2")
        return {"disabled": r.bool() if v == "relu_2" else False}
    if kind in ("max_pool", "avg_pool", "avg_pool_everything"):
        r.version("avg_pool_2" if kind.startswith("avg") else "max_pool_2")
        nr, nc, stride_y, stride_x, pad_y, pad_x = (r.int() for _ in range(6))
        return {"kernel": (nr, nc), "stride": (stride_y, stride_x), "padding": (pad_y, pad_x)}
    if kind == "add_prev":
        r.version("add_prev_")
        return {}
    if kind == "fc":
        v = r.version("fc_2", "fc_3")
        num_outputs, num_inputs = r.int(), r.int()
        params = r.tensor().reshape(-1)
        weights, biases = r.alias_tensor(), r.alias_tensor()
        bias_mode = r.int()                                     # 1 = FC_NO_BIAS
        [r.float() for _ in range(4)]
        use_bias = r.bool() if v == "fc_3" else True
        nw = num_inputs * num_outputs
        return {"weight": params[:nw].reshape(num_inputs, num_outputs),
                "bias": params[nw:nw + num_outputs] if bias_mode == 0 and use_bias else None}
    raise ValueError(kind)


def _check_spec(rec, spec):
    """A record must be the layer anet_type declares there (filters, kernel, stride)."""
    kind = spec[0]
    if kind == "con":
        want = {"num_filters": spec[1], "kernel": (spec[2],) * 2, "stride": (spec[3],) * 2}
    elif kind in ("max_pool", "avg_pool"):
        want = {"kernel": (spec[1],) * 2, "stride": (spec[2],) * 2}
    elif kind == "avg_pool_everything":
        want = {"kernel": (0, 0), "stride": (1, 1)}
    elif kind == "fc":
        want = {"weight": (256, spec[1])}
        rec = {"weight": rec["weight"].shape}
    else:
        return
    got = {k: rec[k] for k in want}
    if got != want:
        raise ValueError(f"{kind}: file has {got}, anet_type declares {want}")


def read_dat(path=None):
    """dlib's serialized anet_type as a list of per-layer dicts, input first.

    The file nests like the C++ type: add_loss_layer writes its version, the loss record, then
    its subnetwork; each add_layer writes its version, then its whole subnetwork, then its own
    record and state (three bools and three cached tensors); tag/skip layers write only a
    version. The input layer has no add_layer of its own: it sits inside the first con's, whose
    version is 3 and whose state ends with a sample-expansion factor. So the file holds the
    versions from the loss inwards, then the records from the input outwards, the order of the
    returned list (which ends with the loss record: margin and distance threshold)."""
    with open(path or model_path(), "rb") as f:
        r = DlibReader(f.read())
    if r.int() != 1:
        raise ValueError("not a dlib add_loss_layer")
    loss = {"kind": "loss_metric", "margin": 0.1, "distance_threshold": 0.75}  # loss_metric_
    if r.version("loss_metric_", "loss_metric_2") == "loss_metric_2":
        loss["margin"], loss["distance_threshold"] = r.float(), r.float()
    layers = anet_layers()
    versions = {}
    for i in range(len(layers) - 1, 0, -1):                     # versions, output inwards
        kind, v = layers[i][0], r.int()
        ok = (1,) if kind in ("tag", "skip") else (2, 3) if i == 1 else (1, 2)
        if v not in ok:
            raise ValueError(f"layer {i} ({kind}): unexpected version {v} at {r.pos}")
        versions[i] = v
    records = []
    for i, spec in enumerate(layers):                           # records, input outwards
        kind = spec[0]
        if kind in ("tag", "skip"):
            records.append({"kind": kind, "id": spec[1]})
            continue
        rec = _layer_details(r, kind)
        rec["kind"] = kind
        _check_spec(rec, spec)
        records.append(rec)
        if kind == "input":
            continue                                            # its state is the con's below
        [r.bool() for _ in range(3)]                            # setup called, stale, disabled
        r.tensor(), r.tensor(), r.tensor()                      # x_grad, output, params/input grad
        if versions[i] >= 3:
            r.int()                                             # sample expansion factor
    if r.pos != len(r.data):
        raise ValueError(f"{len(r.data) - r.pos} bytes left after the last layer")
    return records + [loss]


# ----------------------------------------------------------------------------- the network

class Affine(nn.Module):
    """dlib's affine_ in CONV_MODE: y = x·γ[c] + β[c] (batch norm with its statistics folded in)."""

    def __init__(self, channels):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return x * self.weight[:, None, None] + self.bias[:, None, None]


def add_prev(a, b):
    """dlib's add_prev: a + b, the smaller zero-padded at the end of channels, rows and columns."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))
    pad = lambda t: F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))
    return pad(a) + pad(b)


def _conv(cin, cout, k, stride):
    """dlib's con_: padding k//2 when the stride is 1, none otherwise."""
    return nn.Conv2d(cin, cout, k, stride, padding=k // 2 if stride == 1 else 0)


class Residual(nn.Module):
    """ares (stride 1, identity skip) or ares_down (strided first conv, 2×2/2 average-pooled skip
    path): relu(add_prev(affine(con(relu(affine(con(x))))), skip))."""

    def __init__(self, cin, cout, down):
        super().__init__()
        self.down = down
        self.conv1, self.affine1 = _conv(cin, cout, 3, 2 if down else 1), Affine(cout)
        self.conv2, self.affine2 = _conv(cout, cout, 3, 1), Affine(cout)

    def forward(self, x):
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(add_prev(y, skip))


class FaceRecognitionNet(nn.Module):
    """anet_type. forward takes float RGB [N, 3, 150, 150] with values in 0..255 (dlib's pixel
    scale: a training image in [-1, 1] enters as (x + 1) * 127.5) and returns the raw 128-d
    descriptors [N, 128], differentiable with respect to the input."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([122.782, 117.001, 104.298]))
        self.conv, self.affine = _conv(3, 32, 7, 2), Affine(32)
        blocks, cin = [], 32
        for n, count in ((32, 3), (64, 4), (128, 3), (256, 3), (256, 1)):
            for i in range(count):
                down = i == 0 and n != 32
                blocks.append(Residual(cin, n, down))
                cin = n
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(256, 128, bias=False)

    def forward(self, x):
        x = (x - self.mean[:, None, None]) / 256.0
        x = F.max_pool2d(F.relu(self.affine(self.conv(x))), 3, 2)
        for block in self.blocks:
            x = block(x)
        return self.fc(x.mean((2, 3)))

    def dlib_order(self):
        """The con/affine/fc modules in the order of their records in the .dat."""
        mods = [self.conv, self.affine]
        for b in self.blocks:
            mods += [b.conv1, b.affine1, b.conv2, b.affine2]
        return mods + [self.fc]

    def load_dat(self, path=None):
        """Fills the weights from dlib's .dat, checking every shape, stride and padding."""
        records = read_dat(path)
        self.mean.copy_(torch.tensor(records[0]["mean"]))
        if tuple(records[0]["size"]) != (CHIP_SIZE, CHIP_SIZE):
            raise ValueError(f"input size {records[0]['size']}")
        weighted = [r for r in records if r["kind"] in ("con", "affine", "fc")]
        mods = self.dlib_order()
        if len(weighted) != len(mods):
            raise ValueError(f"{len(weighted)} weighted layers in the file, {len(mods)} in the net")
        with torch.no_grad():
            for rec, m in zip(weighted, mods):
                if rec["kind"] == "con":
                    if rec["stride"] != m.stride or rec["padding"] != m.padding:
                        raise ValueError(f"con stride/padding {rec['stride']}/{rec['padding']} "
                                         f"vs {m.stride}/{m.padding}")
                    m.weight.copy_(torch.from_numpy(rec["weight"]))
                    m.bias.copy_(torch.from_numpy(rec["bias"]))
                elif rec["kind"] == "affine":
                    if rec["mode"] != 0 or rec["disabled"]:
                        raise ValueError("expected an enabled CONV_MODE affine layer")
                    m.weight.copy_(torch.from_numpy(rec["gamma"]))
                    m.bias.copy_(torch.from_numpy(rec["beta"]))
                else:
                    if rec["bias"] is not None:
                        raise ValueError("expected fc_no_bias")
                    m.weight.copy_(torch.from_numpy(rec["weight"].T))
        for rec in records:
            if rec["kind"] in ("max_pool", "avg_pool") and rec["padding"] != (0, 0):
                raise ValueError(f"{rec['kind']} padding {rec['padding']}")
            if rec["kind"] == "relu" and rec["disabled"]:
                raise ValueError("a disabled relu")
        return self


def load(path=None, device="cpu", dtype=torch.float32):
    """The network with dlib's weights, in eval mode and frozen (requires_grad False): gradients
    still flow to its input, which is what an identity loss needs."""
    net = FaceRecognitionNet().load_dat(path).to(device=device, dtype=dtype).eval()
    return net.requires_grad_(False)


@torch.no_grad()
def descriptor(net, chip):
    """The 128-d descriptor (float32 numpy) of an aligned 150×150 RGB uint8 chip [150, 150, 3]
    or a batch of them [N, 150, 150, 3], as dlib's compute_face_descriptor(chip) gives it."""
    chip = np.asarray(chip)
    if chip.shape[-3:] != (CHIP_SIZE, CHIP_SIZE, 3) or chip.dtype != np.uint8:
        raise ValueError(f"expected uint8 [.., 150, 150, 3], got {chip.dtype} {chip.shape}")
    p = next(net.parameters())
    x = torch.tensor(chip, device=p.device, dtype=p.dtype)     # a copy: chips may be read-only
    x = x.reshape(-1, CHIP_SIZE, CHIP_SIZE, 3).permute(0, 3, 1, 2)
    out = net(x).float().cpu().numpy()
    return out[0] if chip.ndim == 3 else out


def distance(a, b):
    """dlib's descriptor distance (Euclidean, last axis); same person below SAME_PERSON."""
    if isinstance(a, torch.Tensor):
        return torch.linalg.vector_norm(a - b, dim=-1)
    return np.linalg.norm(np.asarray(a) - np.asarray(b), axis=-1)
