"""Checkpoint import (mxrepro/weights.py, tools/convert_weights.py).

The tests write their own checkpoints: a minimal protocol-2 pickle emitter below (independent of the
reader, which uses Python's unpickler) produces both torch.save layouts (zip and legacy), and the
official key names and shapes are generated from the original module structures
(IBM/BigLittleNet models/blresnet.py, blresnext.py, blseresnext.py @ dff4654; YimianDai/open-aff
model/{classification,block,fusion}.py @ 806562e (paper era) and 7853412 (HEAD)), with random values.
"""
import io
import os
import struct
import subprocess
import sys
import zipfile
from collections import OrderedDict

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

from mxrepro import get_model
from mxrepro import weights as W

from tools import convert_weights  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ================================================================================================
# A minimal pickle writer (protocol 2 opcodes) and the two torch.save layouts
# ================================================================================================
class Glob:
    """A module-level name, emitted with the GLOBAL opcode."""

    def __init__(self, module, name):
        self.module, self.name = module, name


class Call:
    """fn(*args), emitted with REDUCE."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, tuple(args)


class PID:
    """A persistent id (BINPERSID)."""

    def __init__(self, pid):
        self.pid = pid


class WithState:
    """``obj`` followed by BUILD with ``state`` (how a state_dict's ``_metadata`` attribute is pickled)."""

    def __init__(self, obj, state):
        self.obj, self.state = obj, state


def _emit(obj, out):
    if obj is None:
        out += b"N"
    elif obj is True:
        out += b"\x88"
    elif obj is False:
        out += b"\x89"
    elif isinstance(obj, int):
        if -2 ** 31 <= obj < 2 ** 31:
            out += b"J" + struct.pack("<i", obj)
        else:
            raw = obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True)
            out += b"\x8a" + bytes([len(raw)]) + raw
    elif isinstance(obj, float):
        out += b"G" + struct.pack(">d", obj)
    elif isinstance(obj, str):
        raw = obj.encode("utf-8")
        out += b"X" + struct.pack("<I", len(raw)) + raw
    elif isinstance(obj, Glob):
        out += b"c" + obj.module.encode() + b"\n" + obj.name.encode() + b"\n"
    elif isinstance(obj, Call):
        _emit(obj.fn, out)
        _emit(obj.args, out)
        out += b"R"
    elif isinstance(obj, PID):
        _emit(obj.pid, out)
        out += b"Q"
    elif isinstance(obj, WithState):
        _emit(obj.obj, out)
        _emit(obj.state, out)
        out += b"b"
    elif isinstance(obj, tuple):
        if not obj:
            out += b")"
        else:
            out += b"("
            for v in obj:
                _emit(v, out)
            out += b"t"
    elif isinstance(obj, list):
        out += b"]"
        if obj:
            out += b"("
            for v in obj:
                _emit(v, out)
            out += b"e"
    elif isinstance(obj, dict):
        if isinstance(obj, OrderedDict):
            _emit(Call(Glob("collections", "OrderedDict"), ()), out)
        else:
            out += b"}"
        if obj:
            out += b"("
            for k, v in obj.items():
                _emit(k, out)
                _emit(v, out)
            out += b"u"
    else:
        raise TypeError("cannot emit %r" % (obj,))


def dumps(obj):
    out = bytearray(b"\x80\x02")
    _emit(obj, out)
    out += b"."
    return bytes(out)


class TRef:
    """A tensor in a checkpoint under construction: storage key, offset, size, stride (elements)."""

    def __init__(self, key, offset, size, stride, view=None):
        self.key, self.offset, self.size, self.stride, self.view = key, offset, tuple(size), tuple(stride), view


STORAGE_CLASS = {np.dtype("float32"): "FloatStorage", np.dtype("float16"): "HalfStorage",
                 np.dtype("float64"): "DoubleStorage", np.dtype("int64"): "LongStorage",
                 np.dtype("int32"): "IntStorage", np.dtype("uint8"): "ByteStorage", np.dtype("bool"): "BoolStorage"}


def _to_pickle_obj(obj, storages, legacy):
    if isinstance(obj, WithState):
        return WithState(_to_pickle_obj(obj.obj, storages, legacy), obj.state)
    if isinstance(obj, TRef):
        cls, flat, loc = storages[obj.key]
        module = "torch.cuda" if loc.startswith("cuda") else "torch"
        pid = ("storage", Glob(module, cls), obj.key, loc, int(flat.size))
        if legacy:
            pid = pid + (obj.view,)
        return Call(Glob("torch._utils", "_rebuild_tensor_v2"),
                    (PID(pid), obj.offset, obj.size, obj.stride, False, OrderedDict()))
    if isinstance(obj, OrderedDict):
        return OrderedDict((k, _to_pickle_obj(v, storages, legacy)) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: _to_pickle_obj(v, storages, legacy) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_pickle_obj(v, storages, legacy) for v in obj]
    return obj


def _raw(cls, flat):
    if cls == "BFloat16Storage":
        return (np.asarray(flat, np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
    return np.ascontiguousarray(flat).astype(flat.dtype.newbyteorder("<")).tobytes()


def write_torch(path, obj, storages, layout):
    """``storages``: key -> (storage class name, flat NumPy array, location)."""
    if layout == "zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr("ckpt/data.pkl", dumps(_to_pickle_obj(obj, storages, False)))
            zf.writestr("ckpt/byteorder", b"little")
            for key, (cls, flat, _) in storages.items():
                zf.writestr("ckpt/data/%s" % key, _raw(cls, flat))
            zf.writestr("ckpt/version", b"3\n")
        return
    buf = io.BytesIO()
    buf.write(dumps(0x1950a86a20f9469cfc6c))
    buf.write(dumps(1001))
    buf.write(dumps({"protocol_version": 1001, "little_endian": True,
                     "type_sizes": {"short": 2, "int": 4, "long": 4}}))
    buf.write(dumps(_to_pickle_obj(obj, storages, True)))
    keys = sorted(storages)
    buf.write(dumps(keys))
    for key in keys:
        cls, flat, _ = storages[key]
        buf.write(struct.pack("<q", flat.size))
        buf.write(_raw(cls, flat))
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def torch_state_dict(arrays, prefix="", start=0, location="cpu"):
    """NumPy state dict -> (OrderedDict of TRef, storages), one contiguous storage per tensor."""
    sd, storages = OrderedDict(), {}
    for i, (name, a) in enumerate(arrays.items(), start=start):
        a = np.asarray(a)
        key = str(i)
        storages[key] = (STORAGE_CLASS[a.dtype], a.reshape(-1).copy(), location)
        stride = tuple(s // a.itemsize for s in a.strides) if a.ndim else ()
        sd[prefix + name] = TRef(key, 0, a.shape, stride)
    return sd, storages


def gather(flat, offset, size, stride):
    """Tensor values by explicit index arithmetic (independent of the reader's as_strided)."""
    out = np.empty(size, dtype=flat.dtype)
    for idx in np.ndindex(*size):
        out[idx] = flat[offset + sum(i * s for i, s in zip(idx, stride))]
    return out


# ================================================================================================
# Official key layouts generated from the original module structures
# ================================================================================================
def official_blnet(depth=50, alpha=2, beta=4, cardinality=1, basewidth=64, se=False,
                   num_channels=(64, 128, 256, 512), classes=1000):
    """name -> shape of an IBM/BigLittleNet bLResNet/bLResNeXt/bLSEResNeXt state_dict, in PyTorch
    registration order (module attributes in __init__ order; params, then buffers)."""
    layers = {50: (3, 4, 6, 3), 101: (4, 8, 18, 3), 152: (5, 12, 30, 3)}[depth]
    keys = OrderedDict()

    def conv(p, o, i, k, bias=False):
        keys[p + ".weight"] = (o, i, k, k)
        if bias:
            keys[p + ".bias"] = (o,)

    def bn(p, c):
        for n in ("weight", "bias", "running_mean", "running_var"):
            keys[p + "." + n] = (c,)
        keys[p + ".num_batches_tracked"] = ()

    def bottleneck(p, inplanes, planes, bw, card, stride, downsample):
        width = int(planes * bw / 64.0) // 4 * card        # D * C
        conv(p + ".conv1", width, inplanes, 1)
        bn(p + ".bn1", width)
        conv(p + ".conv2", width, width // card, 3)
        bn(p + ".bn2", width)
        conv(p + ".conv3", planes, width, 1)
        bn(p + ".bn3", planes)
        if downsample:                                     # Sequential([AvgPool2d], [Conv2d, BN])
            idx = 1 if stride != 1 else 0
            if inplanes != planes:
                conv(p + ".downsample.%d" % idx, planes, inplanes, 1)
                bn(p + ".downsample.%d" % (idx + 1), planes)
        if se:                                             # se_layer is assigned after downsample
            conv(p + ".se_layer.fc1", planes // 16, planes, 1, bias=True)
            conv(p + ".se_layer.fc2", planes, planes // 16, 1, bias=True)

    def make_layer(p, inplanes, planes, blocks, bw, card, stride):
        bottleneck(p + ".0", inplanes, planes, bw, card, stride, stride != 1 or inplanes != planes)
        for i in range(1, blocks):
            bottleneck(p + ".%d" % i, planes, planes, bw, card, 1, False)

    c0 = num_channels[0]
    conv("conv1", c0, 3, 7)
    bn("bn1", c0)
    conv("b_conv0", c0, c0, 3)
    bn("bn_b0", c0)
    conv("l_conv0", c0 // alpha, c0, 3)
    bn("bn_l0", c0 // alpha)
    conv("l_conv1", c0 // alpha, c0 // alpha, 3)
    bn("bn_l1", c0 // alpha)
    conv("l_conv2", c0, c0 // alpha, 1)
    bn("bn_l2", c0)
    conv("bl_init", c0, c0, 1)
    bn("bn_bl_init", c0)
    ins = (c0, 4 * num_channels[0], 4 * num_channels[1])
    for l, stride in zip((1, 2, 3), (2, 2, 1)):
        cin, cout, k = ins[l - 1], 4 * num_channels[l - 1], layers[l - 1]
        make_layer("layer%d.big" % l, cin, cout, k - 1, basewidth, cardinality, 2)
        lbw, lcard = (basewidth * alpha, cardinality // alpha) if cardinality > 1 else (basewidth, cardinality)
        make_layer("layer%d.little" % l, cin, cout // alpha, max(1, k // beta - 1), lbw, lcard, 1)
        conv("layer%d.little_e.0" % l, cout, cout // alpha, 1)
        bn("layer%d.little_e.1" % l, cout)
        make_layer("layer%d.fusion" % l, cout, cout, 1, basewidth, cardinality, stride)
    make_layer("layer4", 4 * num_channels[2], 4 * num_channels[3], layers[3], basewidth, cardinality, 2)
    keys["fc.weight"] = (classes, 4 * num_channels[3])
    keys["fc.bias"] = (classes,)
    return keys


def _g_conv(keys, p, o, i, k, bias=False):
    keys[p + ".weight"] = (o, i, k, k)
    if bias:
        keys[p + ".bias"] = (o,)


def _g_bn(keys, p, c):
    for n in ("gamma", "beta", "running_mean", "running_var"):
        keys[p + "." + n] = (c,)


def _g_attention(keys, p, c, r, fusion):
    """ASKCFuse: local_att [conv, BN, relu, conv, BN], global_att [GAP, conv, BN, relu, conv, BN];
    ResGlobLocaforGlobLocaChaFuse adds local_att2 / global_att2."""
    inter = c // r
    for suffix in ("", "2") if fusion == "iaff" else ("",):
        _g_conv(keys, p + ".local_att%s.0" % suffix, inter, c, 1, True)
        _g_bn(keys, p + ".local_att%s.1" % suffix, inter)
        _g_conv(keys, p + ".local_att%s.3" % suffix, c, inter, 1, True)
        _g_bn(keys, p + ".local_att%s.4" % suffix, c)
        _g_conv(keys, p + ".global_att%s.1" % suffix, inter, c, 1, True)
        _g_bn(keys, p + ".global_att%s.2" % suffix, inter)
        _g_conv(keys, p + ".global_att%s.4" % suffix, c, inter, 1, True)
        _g_bn(keys, p + ".global_att%s.5" % suffix, c)


def official_aff_resnet(layers, layout, fusion="aff", classes=1000, stem_width=32, start_layer=3):
    """ResNet50_v1bASKC (paper era) / AFFResNet (HEAD, deep stem + avg-down) Gluon keys."""
    k = OrderedDict()
    if layout == "paper":
        _g_conv(k, "conv1", 64, 3, 7)
        inpl = 64
    else:
        _g_conv(k, "conv1.0", stem_width, 3, 3)
        _g_bn(k, "conv1.1", stem_width)
        _g_conv(k, "conv1.3", stem_width, stem_width, 3)
        _g_bn(k, "conv1.4", stem_width)
        _g_conv(k, "conv1.6", 2 * stem_width, stem_width, 3)
        inpl = 2 * stem_width
    _g_bn(k, "bn1", inpl)
    for s, (n, planes) in enumerate(zip(layers, (64, 128, 256, 512)), start=1):
        for i in range(n):
            p = "layer%d.%d" % (s, i)
            _g_conv(k, p + ".conv1", planes, inpl, 1)
            _g_bn(k, p + ".bn1", planes)
            _g_conv(k, p + ".conv2", planes, planes, 3)
            _g_bn(k, p + ".bn2", planes)
            _g_conv(k, p + ".conv3", 4 * planes, planes, 1)
            _g_bn(k, p + ".bn3", 4 * planes)
            if i == 0:
                d = 0 if layout == "paper" else 1          # HEAD: AvgPool2D first, in every stage
                _g_conv(k, p + ".downsample.%d" % d, 4 * planes, inpl, 1)
                _g_bn(k, p + ".downsample.%d" % (d + 1), 4 * planes)
            if fusion and s >= start_layer:
                _g_attention(k, p + ".attention", 4 * planes, 16, fusion)
            inpl = 4 * planes
    k["fc.weight"] = (classes, 2048)
    k["fc.bias"] = (classes,)
    return k


def official_aff_resnext(layers, layout, fusion="aff", classes=1000, stem_width=64, start_layer=3):
    """ResNextASKC (paper era) / AFFResNeXt (HEAD) Gluon keys; 32x4d."""
    k = OrderedDict()
    if layout == "paper":
        _g_conv(k, "features.0", 64, 3, 7)
        _g_bn(k, "features.1", 64)
        off, inpl = 4, 64
    else:
        _g_conv(k, "features.0", stem_width, 3, 3)
        _g_bn(k, "features.1", stem_width)
        _g_conv(k, "features.3", stem_width, stem_width, 3)
        _g_bn(k, "features.4", stem_width)
        _g_conv(k, "features.6", 2 * stem_width, stem_width, 3)
        _g_bn(k, "features.7", 2 * stem_width)
        off, inpl = 10, 2 * stem_width
    channels = 64
    for s, n in enumerate(layers, start=1):
        gw = 32 * int(channels * 4 / 64)
        for i in range(n):
            p = "features.%d.%d" % (off + s - 1, i)
            _g_conv(k, p + ".body.0", gw, inpl, 1)
            _g_bn(k, p + ".body.1", gw)
            _g_conv(k, p + ".body.3", gw, gw // 32, 3)
            _g_bn(k, p + ".body.4", gw)
            _g_conv(k, p + ".body.6", 4 * channels, gw, 1)
            _g_bn(k, p + ".body.7", 4 * channels)
            if i == 0:
                d = 1 if (layout == "head" and s > 1) else 0   # HEAD: avg_down off in stage 1
                _g_conv(k, p + ".downsample.%d" % d, 4 * channels, inpl, 1)
                _g_bn(k, p + ".downsample.%d" % (d + 1), 4 * channels)
            if fusion and s >= start_layer:
                _g_attention(k, p + ".attention", 4 * channels, 16, fusion)
            inpl = 4 * channels
        channels *= 2
    k["output.weight"] = (classes, inpl)
    k["output.bias"] = (classes,)
    return k


def official_aff_cifar_resnet(blocks, ct, layout, fusion="aff", classes=100):
    """ResNet110V2ASKC (paper era) / CIFARAFFResNet (HEAD) Gluon keys, pre-activation blocks, r=4."""
    k = OrderedDict()
    ch = [ct * c for c in (16, 16, 32, 64)]
    _g_bn(k, "features.0", 3)                         # BatchNorm(scale=False, center=False)
    _g_conv(k, "features.1", ch[0], 3, 3)
    inc = ch[0]
    for s in (1, 2, 3):
        for i in range(blocks):
            p = "features.%d.%d" % (1 + s, i)
            _g_bn(k, p + ".resfwd.0", inc)
            _g_conv(k, p + ".resfwd.2", ch[s], inc, 3)
            _g_bn(k, p + ".resfwd.3", ch[s])
            _g_conv(k, p + ".resfwd.5", ch[s], ch[s], 3)
            if inc != ch[s]:
                _g_conv(k, p + ".downsample.%d" % (0 if layout == "paper" else 1), ch[s], inc, 1)
            _g_attention(k, p + ".attention", ch[s], 4, fusion)
            inc = ch[s]
    _g_bn(k, "features.5", inc)
    k["output.weight"] = (classes, inc)
    k["output.bias"] = (classes,)
    return k


def official_aff_cifar_resnext(blocks, layout, fusion="aff", classes=100):
    """CIFARResNextASKC (paper era) / CIFARAFFResNeXt (HEAD, avg-down in every stage) keys, r=16."""
    k = OrderedDict()
    _g_conv(k, "features.0", 64, 3, 3)
    _g_bn(k, "features.1", 64)
    inpl, channels = 64, 64
    for s in (1, 2, 3):
        gw = 32 * int(channels * 4 / 64)
        for i in range(blocks):
            p = "features.%d.%d" % (2 + s, i)
            _g_conv(k, p + ".body.0", gw, inpl, 1)
            _g_bn(k, p + ".body.1", gw)
            _g_conv(k, p + ".body.3", gw, gw // 32, 3)
            _g_bn(k, p + ".body.4", gw)
            _g_conv(k, p + ".body.6", 4 * channels, gw, 1)
            _g_bn(k, p + ".body.7", 4 * channels)
            if i == 0:
                d = 0 if layout == "paper" else 1
                _g_conv(k, p + ".downsample.%d" % d, 4 * channels, inpl, 1)
                _g_bn(k, p + ".downsample.%d" % (d + 1), 4 * channels)
            _g_attention(k, p + ".attention", 4 * channels, 16, fusion)
            inpl = 4 * channels
        channels *= 2
    k["output.weight"] = (classes, inpl)
    k["output.bias"] = (classes,)
    return k


def random_arrays(shapes, seed=0):
    rng = np.random.RandomState(seed)
    out = OrderedDict()
    for name, shape in shapes.items():
        if name.endswith("num_batches_tracked"):
            out[name] = np.array(1234, dtype=np.int64)
        elif name.endswith("running_var"):
            out[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:
            out[name] = (rng.standard_normal(shape) * 0.1).astype(np.float32)
    return out


def params_of(net):
    return OrderedDict((k, v.data().asnumpy()) for k, v in net._collect_params_with_prefix().items())


def load_by_position(net, source_order, arrays):
    """Assign ``arrays`` to ``net``'s parameters in registration order (the position-based load)."""
    params = list(net._collect_params_with_prefix().values())
    assert len(params) == len(source_order)
    net.initialize()
    for p, name in zip(params, source_order):
        assert p.shape == arrays[name].shape, (p.name, name)
        p.set_data(mx.nd.array(arrays[name]))


# ================================================================================================
# Reader
# ================================================================================================
TRICKY = {  # name -> (storage key, storage class, flat values, offset, size, stride)
    "contiguous": ("0", "FloatStorage", np.arange(6, dtype=np.float32), 0, (2, 3), (3, 1)),
    "transposed": ("1", "FloatStorage", np.arange(12, dtype=np.float32) * 0.5, 0, (4, 3), (1, 4)),
    "offset_slice": ("2", "FloatStorage", np.arange(20, dtype=np.float32), 7, (5,), (1,)),
    "strided_4d": ("3", "DoubleStorage", np.arange(96, dtype=np.float64), 5, (2, 2, 3, 2), (40, 12, 3, 2)),
    "half": ("4", "HalfStorage", np.array([0.5, -1.25, 3.0, 65504.0], dtype=np.float16), 1, (3,), (1,)),
    "int64": ("5", "LongStorage", np.array([2 ** 40, -7, 3, 9], dtype=np.int64), 0, (2, 2), (1, 2)),
    "uint8": ("6", "ByteStorage", np.array([0, 7, 255, 128], dtype=np.uint8), 0, (4,), (1,)),
    "bool": ("7", "BoolStorage", np.array([True, False, True], dtype=np.bool_), 0, (3,), (1,)),
    "scalar": ("8", "FloatStorage", np.array([1.5, 2.5, 3.5], dtype=np.float32), 2, (), ()),
    "shared_a": ("9", "FloatStorage", np.arange(8, dtype=np.float32) + 100, 0, (2, 4), (4, 1)),
    "shared_b": ("9", "FloatStorage", np.arange(8, dtype=np.float32) + 100, 3, (2, 2), (1, 2)),
    "empty": ("10", "FloatStorage", np.zeros(0, dtype=np.float32), 0, (0, 3), (3, 1)),
    "bfloat16": ("11", "BFloat16Storage", np.array([1.0, -2.5, 3.140625], dtype=np.float32), 0, (3,), (1,)),
}


def _tricky_checkpoint(path, layout):
    storages, sd = {}, OrderedDict()
    for name, (key, cls, flat, off, size, stride) in TRICKY.items():
        storages[key] = (cls, flat, "cpu")
        sd[name] = TRef(key, off, size, stride)
    write_torch(path, sd, storages, layout)


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_reader_tricky_tensors(tmp_path, layout):
    path = str(tmp_path / ("tricky.%s.pth" % layout))
    _tricky_checkpoint(path, layout)
    assert W.checkpoint_format(path) == "torch-" + layout
    got = W.read_torch_checkpoint(path)
    assert list(got) == list(TRICKY)
    for name, (key, cls, flat, off, size, stride) in TRICKY.items():
        want = gather(flat, off, size, stride)
        assert got[name].shape == tuple(size), name
        assert got[name].dtype == flat.dtype, name
        np.testing.assert_array_equal(got[name], want, err_msg=name)
    # the reader's result owns C-contiguous memory (a copy, not a view of the storage)
    assert got["transposed"].flags["C_CONTIGUOUS"] and got["transposed"].flags["OWNDATA"]
    assert got["int64"][0, 0] == 2 ** 40 and got["half"][2] == np.float16(65504.0)


def test_reader_legacy_storage_view(tmp_path):
    """Legacy files can name a view of a larger storage (view_metadata = (key, offset, size))."""
    flat = np.arange(30, dtype=np.float32)
    storages = {"root": ("FloatStorage", flat, "cpu")}
    sd = OrderedDict(v=TRef("root", 2, (2, 3), (3, 1), view=("root_view", 10, 12)),
                     whole=TRef("root", 0, (30,), (1,)))
    path = str(tmp_path / "view.pth")
    write_torch(path, sd, storages, "legacy")
    got = W.read_torch_checkpoint(path)
    np.testing.assert_array_equal(got["v"], gather(flat, 12, (2, 3), (3, 1)))
    np.testing.assert_array_equal(got["whole"], flat)


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_reader_refuses_other_globals(tmp_path, layout):
    path = str(tmp_path / "evil.pth")
    obj = {"state_dict": Call(Glob("os", "system"), ("echo should-not-run",))}
    write_torch(path, obj, {}, layout)
    with pytest.raises(W.CheckpointError, match=r"'os\.system'"):
        W.read_torch_checkpoint(path)
    # a pickled module (torch.save(model)) names its class
    write_torch(path, Call(Glob("models.blresnet", "bLResNet"), ()), {}, layout)
    with pytest.raises(W.CheckpointError, match=r"models\.blresnet\.bLResNet"):
        W.read_torch_state_dict(path)


def test_reader_rejects_non_checkpoints(tmp_path):
    bad = tmp_path / "junk.pth"
    bad.write_bytes(b"\x80\x02K\x05.")   # a pickle of the int 5, no magic number
    with pytest.raises(W.CheckpointError, match="magic"):
        W.read_torch_checkpoint(str(bad))
    txt = tmp_path / "text.pth"
    txt.write_bytes(b"hello world")
    with pytest.raises(W.CheckpointError):
        W.read_torch_checkpoint(str(txt))


@pytest.mark.parametrize("layout", ["zip", "legacy"])
@pytest.mark.parametrize("wrapper", ["training", "model", "bare"])
def test_state_dict_extraction(tmp_path, layout, wrapper):
    """module. prefix (DataParallel), num_batches_tracked, a training checkpoint's extra entries
    (epoch, arch, a CUDA 0-d best_top1, optimizer momentum buffers), the 'model' key, a bare dict."""
    arrays = OrderedDict([("conv.weight", np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2)),
                          ("bn.weight", np.array([1.0, 2.0], dtype=np.float32)),
                          ("bn.num_batches_tracked", np.array(77, dtype=np.int64))])
    prefix = "module." if wrapper != "bare" else ""
    sd, storages = torch_state_dict(arrays, prefix, location="cuda:0")
    if wrapper == "training":
        # state_dict() is an OrderedDict carrying a _metadata attribute (pickled with BUILD)
        sd = WithState(sd, {"_metadata": OrderedDict([("", {"version": 1}), ("bn", {"version": 2})])})
        storages["90"] = ("FloatStorage", np.array([77.59], dtype=np.float32), "cuda:0")
        storages["91"] = ("FloatStorage", np.ones(8, dtype=np.float32), "cuda:0")
        obj = {"epoch": 110, "arch": "ImageNet-bLResNet-50-a2-b4", "state_dict": sd,
               "best_top1": TRef("90", 0, (), ()),
               "optimizer": {"state": {0: {"momentum_buffer": TRef("91", 0, (2, 1, 2, 2), (4, 4, 2, 1))}},
                             "param_groups": [{"lr": 0.0, "momentum": 0.9, "nesterov": True, "params": [0]}]}}
    elif wrapper == "model":
        obj = {"model": sd, "epoch": 3}
    else:
        obj = sd
    path = str(tmp_path / "ckpt.pth")
    write_torch(path, obj, storages, layout)
    info = {}
    got = W.read_torch_state_dict(path, info=info)
    assert list(got) == ["conv.weight", "bn.weight"]
    assert info["ignored"] == [prefix + "bn.num_batches_tracked"]
    np.testing.assert_array_equal(got["conv.weight"], arrays["conv.weight"])
    if wrapper == "training":
        assert info["arch"] == "ImageNet-bLResNet-50-a2-b4"
        whole = W.read_torch_checkpoint(path)
        assert whole["epoch"] == 110 and abs(float(whole["best_top1"]) - 77.59) < 1e-5
        assert whole["optimizer"]["param_groups"][0]["nesterov"] is True
        assert whole["state_dict"]._metadata["bn"] == {"version": 2}
    with pytest.raises(W.CheckpointError, match="no entry 'nope'"):
        W.read_torch_state_dict(path, key="nope")


# ================================================================================================
# bL-Net
# ================================================================================================
SMALL_NC = (16, 32, 64, 128)   # official num_channels scaled down (widths = 4x, stem = first)


def _small_bl(name, **kw):
    return get_model(name, stem_width=SMALL_NC[0], widths=tuple(4 * c for c in SMALL_NC), **kw)


def _write_blnet(tmp_path, keys, layout="legacy", seed=0, tag="bl"):
    arrays = random_arrays(keys, seed)
    sd, storages = torch_state_dict(arrays, "module.")
    obj = {"epoch": 110, "arch": "ImageNet-bLResNet-50-a2-b4", "state_dict": sd}
    path = str(tmp_path / ("%s.%s.pth.tar" % (tag, layout)))
    write_torch(path, obj, storages, layout)
    return path, arrays


# hand-written pairs (official key, our structural name) for bL-ResNet-50 a2 b4
BL50_SPOT = [
    ("bn1.running_var", "conv1.1.running_var"),
    ("l_conv2.weight", "stem.little_e.weight"),
    ("bn_bl_init.weight", "stem.bl_bn.gamma"),
    ("layer1.big.0.downsample.1.weight", "layer1.big.body.0.downsample.1.weight"),
    ("layer1.big.0.downsample.2.running_mean", "layer1.big.body.0.downsample.2.running_mean"),
    ("layer1.little.0.downsample.0.weight", "layer1.little.body.0.downsample.0.weight"),
    ("layer2.little_e.1.bias", "layer2.transition.little_e_bn.beta"),
    ("layer3.fusion.0.bn3.weight", "layer3.transition.fusion.bn3.gamma"),
    ("layer3.big.4.conv2.weight", "layer3.big.body.4.conv2.weight"),
    ("layer4.0.downsample.1.weight", "layer4.0.downsample.1.weight"),
    ("fc.weight", "fc.weight"),
]


def test_blnet_resnet50_full(tmp_path):
    """The real bL-ResNet-50 (a2 b4) layout, legacy file as released: every tensor used once,
    spot-checked by name, and the name map equals the registration order (known identical)."""
    keys = official_blnet(50)
    net = get_model("bl_resnet50")
    name_map = W.blnet_name_map(net)
    official_order = [k for k in keys if not k.endswith("num_batches_tracked")]
    assert list(name_map.values()) == official_order
    path, arrays = _write_blnet(tmp_path, keys, "legacy", tag="ImageNet-bLResNet-50-a2-b4")
    rep = W.load_pretrained(net, path, "bl_resnet50")
    assert rep["mapped"] == len(official_order) and rep["format"] == "torch-legacy" and rep["ignored"] > 0
    assert rep["parameters"] == 26694568 + sum(int(np.prod(s)) for k, s in keys.items()
                                               if k.endswith(("running_mean", "running_var")))
    got = params_of(net)
    for src, ours in BL50_SPOT:
        np.testing.assert_array_equal(got[ours], arrays[src], err_msg=src)


@pytest.mark.parametrize("name,kw,gen", [
    ("bl_resnet50", {}, dict(depth=50)),
    ("bl_resnet101", {}, dict(depth=101)),
    ("bl_resnext50_32x4d", {}, dict(depth=50, cardinality=32, basewidth=4)),
    ("bl_resnext101_64x4d", {}, dict(depth=101, cardinality=64, basewidth=4)),
    ("bl_resnet50", dict(alpha=4, beta=2), dict(depth=50, alpha=4, beta=2)),
])
def test_blnet_small_output_equals_positional(tmp_path, name, kw, gen):
    """Scaled-down widths (same block lists): the name-mapped model computes exactly what the same
    weights loaded by position compute (the original registration order equals ours here)."""
    keys = official_blnet(num_channels=SMALL_NC, classes=10, **gen)
    net = _small_bl(name, num_classes=10, **kw)
    path, arrays = _write_blnet(tmp_path, keys, "zip", seed=1)
    W.load_pretrained(net, path, name)
    ref = _small_bl(name, num_classes=10, **kw)
    load_by_position(ref, [k for k in keys if not k.endswith("num_batches_tracked")], arrays)
    x = mx.nd.array(np.random.RandomState(2).standard_normal((2, 3, 40, 40)).astype(np.float32))
    out, want = net(x).asnumpy(), ref(x).asnumpy()
    np.testing.assert_array_equal(out, want)
    assert np.abs(out).max() > 0


@pytest.mark.parametrize("depth", [50, 101])
def test_blnet_seresnext_order_differs(tmp_path, depth):
    """bL-SEResNeXt: the original registers downsample before se_layer, ours se before downsample,
    so a positional load is wrong; by name it is right, and equals a position load in the original order
    with se moved after downsample (the known permutation)."""
    name = "bl_seresnext%d_32x4d" % depth
    keys = official_blnet(depth, cardinality=32, basewidth=4, se=True, num_channels=SMALL_NC, classes=10)
    net = _small_bl(name, num_classes=10)
    official_order = [k for k in keys if not k.endswith("num_batches_tracked")]
    ours = list(net._collect_params_with_prefix())
    naive = [(o, s) for o, s in zip(ours, official_order)
             if net._collect_params_with_prefix()[o].shape != keys[s]]
    assert naive, "a positional map should misplace tensors here"
    name_map = W.blnet_name_map(net)
    assert list(name_map.values()) != official_order and sorted(name_map.values()) == sorted(official_order)

    def our_order(order):  # move each block's se_layer.* in front of its downsample.*
        out, i = [], 0
        while i < len(order):
            k = order[i]
            if ".downsample." in k:
                blk = k.split(".downsample.")[0]
                ds = [x for x in order[i:] if x.startswith(blk + ".downsample.")]
                se = [x for x in order[i:] if x.startswith(blk + ".se_layer.")]
                out += se + ds
                i += len(ds) + len(se)
            else:
                out.append(k)
                i += 1
        return out

    permuted = our_order(official_order)
    assert list(name_map.values()) == permuted
    path, arrays = _write_blnet(tmp_path, keys, "legacy", seed=3)
    W.load_pretrained(net, path, name)
    got = params_of(net)
    np.testing.assert_array_equal(got["layer1.big.body.0.se.fc1.bias"], arrays["layer1.big.0.se_layer.fc1.bias"])
    np.testing.assert_array_equal(got["layer2.transition.fusion.se.fc2.weight"],
                                  arrays["layer2.fusion.0.se_layer.fc2.weight"])
    np.testing.assert_array_equal(got["layer1.big.body.0.downsample.1.weight"],
                                  arrays["layer1.big.0.downsample.1.weight"])
    ref = _small_bl(name, num_classes=10)
    load_by_position(ref, permuted, arrays)
    x = mx.nd.array(np.random.RandomState(4).standard_normal((2, 3, 36, 36)).astype(np.float32))
    np.testing.assert_array_equal(net(x).asnumpy(), ref(x).asnumpy())


def test_blnet_renamed_missing_and_shape_errors(tmp_path):
    keys = official_blnet(50, num_channels=SMALL_NC, classes=10)
    arrays = random_arrays(keys)
    net = _small_bl("bl_resnet50", num_classes=10)
    # renamed key: listed as unmatched, its expected name as missing
    renamed = OrderedDict(((k.replace("layer2.little_e.0.weight", "layer2.little_e.9.weight"), v)
                           for k, v in arrays.items()))
    sd, st = torch_state_dict(renamed, "module.")
    path = str(tmp_path / "renamed.pth")
    write_torch(path, {"state_dict": sd}, st, "zip")
    with pytest.raises(W.WeightMapError) as e:
        W.load_pretrained(net, path, "bl_resnet50")
    assert e.value.unmatched == ["layer2.little_e.9.weight"]
    assert e.value.missing == [("layer2.transition.little_e.weight", "layer2.little_e.0.weight")]
    assert "layer2.little_e.9.weight" in str(e.value) and "layer2.little_e.0.weight" in e.value.summary()
    # missing key only
    del renamed["layer2.little_e.9.weight"]
    del renamed["fc.bias"]
    sd, st = torch_state_dict(renamed, "module.")
    write_torch(path, {"state_dict": sd}, st, "legacy")
    with pytest.raises(W.WeightMapError) as e:
        W.load_pretrained(net, path, "bl_resnet50")
    assert not e.value.unmatched and {s for _, s in e.value.missing} == {"layer2.little_e.0.weight", "fc.bias"}
    # shape mismatch (a 1000-class checkpoint into a 10-class model)
    keys1000 = official_blnet(50, num_channels=SMALL_NC, classes=1000)
    path2, _ = _write_blnet(tmp_path, keys1000, "zip", tag="c1000")
    with pytest.raises(W.WeightMapError) as e:
        W.load_pretrained(net, path2, "bl_resnet50")
    assert [(o, s) for o, s, _, _ in e.value.mismatched] == [("fc.weight", "fc.weight"), ("fc.bias", "fc.bias")]
    assert "num_classes=1000" in e.value.hint


def test_blnet_map_refuses_fusion_hooks():
    net = _small_bl("bl_resnet50", fusion="aff", fusion_r=4, fusion_stages=(4,))
    with pytest.raises(W.WeightMapError, match="without an official bL-Net counterpart"):
        W.blnet_name_map(net)


def test_blnet_arch_names():
    assert W.blnet_model_from_arch("ImageNet-bLResNet-50-a2-b4") == ("bl_resnet50", {"alpha": 2, "beta": 4})
    assert W.blnet_model_from_arch("pretrained/ImageNet-bLResNeXt-101-64x4d-a2-b4.pth.tar") == \
        ("bl_resnext101_64x4d", {"alpha": 2, "beta": 4})
    assert W.blnet_model_from_arch("ImageNet-bLSEResNeXt-50-32x4d-a2-b4") == \
        ("bl_seresnext50_32x4d", {"alpha": 2, "beta": 4})
    assert W.blnet_model_from_arch("resnet50.pth") is None


# ================================================================================================
# AFF (open-aff Gluon .params)
# ================================================================================================
AFF_CASES = {
    # id: (model, kwargs for our builder, generator, official spot pairs (source, ours))
    "imagenet-resnet-paper": (
        "aff_resnet50", dict(layers=[1, 1, 1, 1]),
        lambda: official_aff_resnet([1, 1, 1, 1], "paper"),
        [("layer3.0.attention.global_att.4.weight", "features.2.0.fuse.att.branches.1.body.3.weight"),
         ("layer2.0.downsample.0.weight", "features.1.0.downsample.0.weight"),
         ("bn1.running_var", "stem.1.running_var"), ("fc.bias", "output.bias")]),
    "imagenet-resnet-head-iaff": (
        "iaff_resnet50", dict(layers=[1, 1, 2, 1], deep_stem=True, avg_down=True),
        lambda: official_aff_resnet([1, 1, 2, 1], "head", "iaff"),
        [("conv1.6.weight", "stem.6.weight"), ("conv1.4.gamma", "stem.4.gamma"),
         ("layer1.0.downsample.1.weight", "features.0.0.downsample.0.weight"),
         ("layer3.1.attention.local_att2.3.bias", "features.2.1.fuse.att2.branches.0.body.3.bias"),
         ("layer4.0.attention.global_att.5.running_mean", "features.3.0.fuse.att1.branches.1.body.4.running_mean")]),
    "imagenet-resnext-paper-iaff": (
        "iaff_resnext50_32x4d", dict(layers=[1, 1, 1, 1]),
        lambda: official_aff_resnext([1, 1, 1, 1], "paper", "iaff"),
        [("features.7.0.attention.global_att2.1.weight", "features.3.0.fuse.att2.branches.1.body.0.weight"),
         ("features.1.gamma", "stem.1.gamma"), ("features.5.0.body.3.weight", "features.1.0.body.3.weight")]),
    "imagenet-resnext-head": (
        "aff_resnext50_32x4d", dict(layers=[1, 1, 1, 1], deep_stem=True, stem_width=64, avg_down=True),
        lambda: official_aff_resnext([1, 1, 1, 1], "head"),
        [("features.11.0.downsample.2.gamma", "features.1.0.downsample.2.gamma"),
         ("features.10.0.downsample.0.weight", "features.0.0.downsample.0.weight"),
         ("features.7.running_var", "stem.7.running_var")]),
    "cifar-resnet-paper": (
        "aff_cifar_resnet", dict(blocks=2, channel_times=1),
        lambda: official_aff_cifar_resnet(2, 1, "paper"),
        [("features.0.running_mean", "stem.0.running_mean"), ("features.5.gamma", "head.0.gamma"),
         ("features.3.0.downsample.0.weight", "features.1.0.downsample.0.weight"),
         ("features.2.1.attention.local_att.1.gamma", "features.0.1.fuse.att.branches.0.body.1.gamma")]),
    "cifar-resnet-head-iaff": (
        "iaff_cifar_resnet", dict(blocks=1, channel_times=1, avg_down=True),
        lambda: official_aff_cifar_resnet(1, 1, "head", "iaff"),
        [("features.4.0.downsample.1.weight", "features.2.0.downsample.1.weight"),
         ("features.3.0.resfwd.5.weight", "features.1.0.body.5.weight")]),
    "cifar-resnext-paper": (
        "aff_cifar_resnext29_32x4d", dict(blocks=1),
        lambda: official_aff_cifar_resnext(1, "paper"),
        [("features.3.0.downsample.0.weight", "features.0.0.downsample.0.weight"),
         ("features.5.0.attention.global_att.2.beta", "features.2.0.fuse.att.branches.1.body.1.beta")]),
    "cifar-resnext-head": (
        "aff_cifar_resnext29_32x4d", dict(blocks=1, avg_down=True),
        lambda: official_aff_cifar_resnext(1, "head"),
        [("features.3.0.downsample.1.weight", "features.0.0.downsample.0.weight"),
         ("features.4.0.downsample.2.gamma", "features.1.0.downsample.2.gamma")]),
}


def _write_params(path, arrays):
    mx.nd.save(path, OrderedDict((k, mx.nd.array(v)) for k, v in arrays.items()))


@pytest.mark.parametrize("case", list(AFF_CASES))
def test_aff_params(tmp_path, case):
    model, kw, gen, spots = AFF_CASES[case]
    keys = gen()
    arrays = random_arrays(keys, seed=5)
    path = str(tmp_path / (case + ".params"))
    _write_params(path, arrays)
    layout = "head" if "head" in case else "paper"
    assert W.detect_aff_layout(keys) == layout
    net = get_model(model, **kw)
    rep = W.load_pretrained(net, path, model)
    assert rep["mapping"] == "aff" and rep["layout"] == layout and rep["mapped"] == len(keys)
    got = params_of(net)
    for src, ours in spots:
        np.testing.assert_array_equal(got[ours], arrays[src], err_msg=src)
    ref = get_model(model, **kw)
    load_by_position(ref, list(keys), arrays)
    x = mx.nd.array(np.random.RandomState(6).standard_normal((2, 3, 32, 32)).astype(np.float32))
    out = net(x).asnumpy()
    np.testing.assert_array_equal(out, ref(x).asnumpy())
    assert np.abs(out).max() > 0


def test_aff_layout_mismatch_explained(tmp_path):
    """A HEAD checkpoint into the paper-layout network fails with the names and the builder hint."""
    keys = official_aff_resnet([1, 1, 1, 1], "head")
    path = str(tmp_path / "head.params")
    _write_params(path, random_arrays(keys))
    net = get_model("aff_resnet50", layers=[1, 1, 1, 1])
    with pytest.raises(W.WeightMapError) as e:
        W.load_pretrained(net, path, "aff_resnet50")
    msg = e.value.summary()
    assert "avg_down=True" in msg and "deep_stem=True" in msg and "stem_width=32" in msg
    # an iAFF checkpoint into an AFF model: the second attention is unmatched
    keys = official_aff_resnet([1, 1, 1, 1], "paper", "iaff")
    _write_params(path, random_arrays(keys))
    with pytest.raises(W.WeightMapError) as e:
        W.load_pretrained(net, path, "aff_resnet50")
    assert any("local_att2" in u for u in e.value.unmatched) and "iaff_" in e.value.hint
    # a renamed key
    keys = official_aff_resnet([1, 1, 1, 1], "paper")
    arrays = random_arrays(keys)
    arrays["layer3.0.attention.local_att.0.wieght"] = arrays.pop("layer3.0.attention.local_att.0.weight")
    _write_params(path, arrays)
    with pytest.raises(W.WeightMapError) as e:
        W.load_pretrained(net, path, "aff_resnet50")
    assert e.value.unmatched == ["layer3.0.attention.local_att.0.wieght"]
    assert e.value.missing == [("features.2.0.fuse.att.branches.0.body.0.weight",
                                "layer3.0.attention.local_att.0.weight")]


def test_aff_map_refuses_other_fusions():
    net = get_model("cifar_resnet", blocks=1, channel_times=1, fusion="ms_gau")
    with pytest.raises(W.WeightMapError, match="MSGAU"):
        W.aff_name_map(net)


# ================================================================================================
# load_pretrained with this project's own files, and the CLI
# ================================================================================================
def test_load_pretrained_own_params(tmp_path):
    a = get_model("aff_cifar_resnet", blocks=1, channel_times=1)
    a.initialize(mx.init.Xavier())
    x = mx.nd.array(np.random.RandomState(7).standard_normal((2, 3, 32, 32)).astype(np.float32))
    want = a(x).asnumpy()
    path = str(tmp_path / "own.params")
    a.save_parameters(path)
    b = get_model("aff_cifar_resnet", blocks=1, channel_times=1)
    rep = W.load_pretrained(b, path, "aff_cifar_resnet")
    assert rep["mapping"] == "own"
    np.testing.assert_array_equal(b(x).asnumpy(), want)
    # a PyTorch file into an AFF model is refused
    pth = str(tmp_path / "x.pth")
    sd, st = torch_state_dict(OrderedDict(w=np.zeros(2, np.float32)))
    write_torch(pth, sd, st, "zip")
    with pytest.raises(W.WeightMapError, match="not a bL-Net"):
        W.load_pretrained(b, pth, "aff_cifar_resnet")


def test_cli_blnet_and_aff(tmp_path, capsys):
    keys = official_blnet(50, num_channels=SMALL_NC, classes=10)
    src, arrays = _write_blnet(tmp_path, keys, "legacy", tag="ImageNet-bLResNet-50-a2-b4")
    out = str(tmp_path / "bl.params")
    rc = convert_weights.main([src, out, "--kw", "num_classes=10", "--kw", "stem_width=16",
                               "--kw", "widths=64,128,256,512"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "get_model('bl_resnet50'" in text and "alpha=2" in text and "loaded back: OK" in text
    n = len([k for k in keys if not k.endswith("num_batches_tracked")])
    assert "mapped:     %d tensors" % n in text
    net = _small_bl("bl_resnet50", num_classes=10)
    net.load_parameters(out)
    np.testing.assert_array_equal(params_of(net)["stem.little_e.weight"], arrays["l_conv2.weight"])
    # AFF HEAD checkpoint: deep stem / avg-down / classes inferred from the file
    keys = official_aff_resnet([1, 1, 1, 1], "head", classes=7)
    aff_src = str(tmp_path / "aff_head.params")
    aff_arrays = random_arrays(keys, 9)
    _write_params(aff_src, aff_arrays)
    aff_out = str(tmp_path / "aff_ours.params")
    rc = convert_weights.main(["--family", "aff", "--model", "aff_resnet50", "--kw", "layers=[1,1,1,1]",
                               "--json", aff_src, aff_out])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert '"layout": "head"' in text and '"deep_stem": true' in text and '"classes": 7' in text
    net = get_model("aff_resnet50", layers=[1, 1, 1, 1], deep_stem=True, stem_width=32, avg_down=True, classes=7)
    net.load_parameters(aff_out)
    np.testing.assert_array_equal(params_of(net)["stem.6.weight"], aff_arrays["conv1.6.weight"])


def test_cli_bad_input_exit_2(tmp_path, capsys):
    assert convert_weights.main([str(tmp_path / "missing.pth"), str(tmp_path / "o.params")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: checkpoint not found") and err.count("\n") == 1
    keys = official_blnet(50, num_channels=SMALL_NC, classes=10)
    arrays = random_arrays(keys)
    arrays["layer1.fusion.0.conv9.weight"] = arrays.pop("layer1.fusion.0.conv1.weight")
    sd, st = torch_state_dict(arrays, "module.")
    src = str(tmp_path / "renamed.pth")
    write_torch(src, {"state_dict": sd}, st, "zip")
    argv = ["--model", "bl_resnet50", "--kw", "num_classes=10", "--kw", "stem_width=16",
            "--kw", "widths=64,128,256,512", src, str(tmp_path / "o.params")]
    assert convert_weights.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "layer1.fusion.0.conv9.weight" in err and "layer1.fusion.0.conv1.weight" in err
    assert not os.path.exists(str(tmp_path / "o.params"))
    junk = tmp_path / "junk.params"
    junk.write_bytes(b"\x00" * 64)
    assert convert_weights.main(["--model", "aff_resnet50", str(junk), str(tmp_path / "o.params")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_cli_process_exit_code(tmp_path):
    """As a process: exit status 2, one stderr line, OMP_NUM_THREADS set by the package import."""
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    code = ("import os, runpy, sys; sys.argv = ['convert_weights.py', %r, %r]\n"
            "try:\n    runpy.run_path(%r, run_name='__main__')\n"
            "except SystemExit as e:\n    print('OMP=%%s rc=%%s' %% (os.environ.get('OMP_NUM_THREADS'), e.code))\n"
            % (str(tmp_path / "nope.pth"), str(tmp_path / "o.params"),
               os.path.join(ROOT, "tools", "convert_weights.py")))
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert "rc=2" in p.stdout and "OMP=None" not in p.stdout, p.stdout + p.stderr
    assert p.stderr.strip().count("\n") == 0 and p.stderr.startswith("error: ")


# ================================================================================================
# The BatchNorm framework difference recorded in docs/weights.md
# ================================================================================================
@pytest.mark.parametrize("n", [16, 4096])
def test_mxnet_cpu_batchnorm_running_var_is_biased(n):
    """MXNet (CPU) moves running_var towards the biased batch variance (divide by n); PyTorch uses
    the unbiased one (n-1). Momentum 0.9 here == PyTorch momentum 0.1."""
    bn = gluon.nn.BatchNorm(in_channels=1, momentum=0.9, epsilon=1e-5)
    bn.initialize()
    x = (np.random.RandomState(0).standard_normal((n, 1, 1, 1)) * 3 + 1).astype(np.float32)
    xx = mx.nd.array(x)
    xx.attach_grad()
    with autograd.record():
        y = bn(xx)
    y.backward()   # on the CPU the running statistics are updated in the backward pass
    rv = float(bn.running_var.data().asscalar())
    biased, unbiased = x.astype(np.float64).var(), x.astype(np.float64).var(ddof=1)
    assert abs(rv - (0.9 + 0.1 * biased)) < 1e-5
    assert abs(rv - (0.9 + 0.1 * unbiased)) > 1e-4
    assert abs(unbiased / biased - n / (n - 1.0)) < 1e-12
