"""Import released checkpoints into this project's Gluon networks.

Two sources are supported:

* **bL-Net** (IBM/BigLittleNet, PyTorch ``.pth.tar``, README model links): read *without PyTorch* by a
  restricted unpickler (:func:`read_torch_checkpoint`) that understands both ``torch.save`` layouts:

  - the zip layout of torch >= 1.6: ``<root>/data.pkl`` + one ``<root>/data/<key>`` record per storage;
  - the legacy layout (the released 2019 files): magic number, protocol version, system info, the
    pickled object whose storages are persistent ids, the sorted storage keys, then every storage as
    an 8-byte element count followed by its raw bytes.

  Only the globals a state dict needs are resolved (``collections.OrderedDict``, the
  ``torch._utils._rebuild_*`` helpers, the ``torch[.cuda].<Type>Storage`` classes, NumPy scalars);
  any other global is refused with an error naming it. Tensors become NumPy arrays (storage offset
  and strides honoured, so non-contiguous views come out right).

* **AFF** (YimianDai/open-aff, Gluon ``save_parameters`` files whose keys are the original attribute
  paths), in the paper-era layout (commit 806562e: 7x7 stem, strided 1x1 shortcuts) and the
  HEAD layout (commit 7853412 and later: deep stem, avg-down shortcuts, which our ``deep_stem=True,
  avg_down=True`` builds).

The name maps go from *our* parameter names (the structural names ``save_parameters`` writes,
``net._collect_params_with_prefix()``) to the source names; they are explicit (:data:`BLNET_RULES`,
:func:`aff_name_map`) and never positional. :func:`map_weights` then demands that every source tensor
is used exactly once with the same shape, and raises :class:`WeightMapError` listing unmatched,
missing and mis-shaped names otherwise. Conversion keeps values bit for bit (only the dtype is cast to
the parameter's, normally float32).

PyTorch -> Gluon per layer: Conv2d ``weight`` (out, in/groups, kh, kw) and ``bias`` keep their names
and layout; BatchNorm2d ``weight``/``bias``/``running_mean``/``running_var`` -> ``gamma``/``beta``/
``running_mean``/``running_var`` (the BatchNorm operator's ``moving_mean``/``moving_var`` aux states;
``num_batches_tracked`` is dropped); Linear ``weight`` (out, in) -> Dense ``weight`` (units, in_units),
no transpose.

Entry points: :func:`load_pretrained` (what ``get_model(name, pretrained=PATH)`` calls),
:func:`convert_checkpoint` (``tools/convert_weights.py``).
"""
import collections
import io
import os
import pickle
import re
import struct
import tarfile
import zipfile
from collections import OrderedDict

import numpy as np

from .ckptfile import WeightsFileError, check_writable, mx_error_line, verify_checkpoint_file

__all__ = ["CheckpointError", "WeightMapError", "read_torch_checkpoint", "read_torch_state_dict",
           "extract_state_dict", "read_gluon_params", "checkpoint_format", "BLNET_RULES", "blnet_name_map",
           "blnet_model_from_arch", "aff_name_map", "detect_aff_layout", "infer_aff_kwargs", "map_weights",
           "target_shapes", "load_pretrained", "convert_checkpoint", "save_gluon_params"]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (format, corrupt data, forbidden global)."""


class WeightMapError(ValueError):
    """Source tensors and network parameters do not correspond one to one.

    Attributes: ``unmatched`` (source names no parameter uses), ``missing`` (list of (our name, source
    name) whose source tensor is absent), ``mismatched`` (list of (our name, source name, source shape,
    our shape)), ``hint`` (a suggestion, may be empty). ``str()`` gives every name; :meth:`summary` one
    line."""

    def __init__(self, what, unmatched=(), missing=(), mismatched=(), hint="", problems=()):
        self.what = what
        self.unmatched = list(unmatched)
        self.missing = list(missing)
        self.mismatched = list(mismatched)
        self.problems = list(problems)
        self.hint = hint
        super().__init__(self._full())

    def _counts(self):
        parts = []
        if self.problems:
            parts.append("; ".join(self.problems))
        if self.unmatched:
            parts.append("%d source tensor(s) unmatched" % len(self.unmatched))
        if self.missing:
            parts.append("%d missing" % len(self.missing))
        if self.mismatched:
            parts.append("%d shape mismatch(es)" % len(self.mismatched))
        return ", ".join(parts)

    def summary(self):
        """One line: counts and the first few names of each kind."""
        def few(names, n=3):
            return ", ".join(names[:n]) + (" ..." if len(names) > n else "")

        ex = []
        if self.unmatched:
            ex.append("unmatched: " + few(self.unmatched))
        if self.missing:
            ex.append("missing: " + few([s for _, s in self.missing]))
        if self.mismatched:
            ex.append("shape: " + few(["%s %s vs %s" % (s, tuple(a), tuple(b)) for _, s, a, b in self.mismatched], 2))
        line = "%s: %s" % (self.what, self._counts())
        if ex:
            line += " (" + "; ".join(ex) + ")"
        if self.hint:
            line += "; hint: " + self.hint
        return line

    def _full(self):
        lines = ["%s: %s" % (self.what, self._counts())]
        if self.unmatched:
            lines.append("  unmatched (in the source, used by no parameter): " + ", ".join(self.unmatched))
        if self.missing:
            lines.append("  missing (needed, absent from the source): " +
                         ", ".join("%s (for %s)" % (s, o) for o, s in self.missing))
        if self.mismatched:
            lines.append("  shape mismatch: " + ", ".join(
                "%s %s in the source vs %s %s here" % (s, tuple(a), o, tuple(b)) for o, s, a, b in self.mismatched))
        if self.hint:
            lines.append("  hint: " + self.hint)
        return "\n".join(lines)


# ================================================================================================
# PyTorch checkpoint reader (no PyTorch)
# ================================================================================================
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001

# torch storage class -> NumPy dtype (little-endian); 'bfloat16' is widened to float32 on read.
_STORAGE_DTYPES = {
    "DoubleStorage": "<f8", "FloatStorage": "<f4", "HalfStorage": "<f2", "BFloat16Storage": "bfloat16",
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?", "ComplexFloatStorage": "<c8", "ComplexDoubleStorage": "<c16",
}


class _StorageType:
    """Stands for a ``torch[.cuda].<Type>Storage`` class named in the pickle."""

    def __init__(self, module, name):
        self.name = "%s.%s" % (module, name)
        self.bfloat16 = _STORAGE_DTYPES[name] == "bfloat16"
        self.dtype = np.dtype("<u2" if self.bfloat16 else _STORAGE_DTYPES[name])


class _Storage:
    """One serialized storage: ``numel`` elements of ``stype``; ``data`` is filled lazily."""

    def __init__(self, key, stype, numel, location, fetch=None, big_endian=False):
        self.key, self.stype, self.numel, self.location = key, stype, int(numel), location
        self.fetch = fetch  # callable -> bytes (zip layout); legacy storages are filled by the reader
        self.big_endian = big_endian
        self.data = None
        self.needed = False

    def array(self):
        if self.data is None:
            if self.fetch is None:
                raise CheckpointError("storage %r was never read (truncated legacy checkpoint?)" % self.key)
            self.set_bytes(self.fetch())
        return self.data

    def set_bytes(self, raw):
        dt = self.stype.dtype.newbyteorder(">") if self.big_endian else self.stype.dtype
        need = self.numel * dt.itemsize
        if len(raw) != need:
            raise CheckpointError("storage %r holds %d bytes, expected %d (%d x %s)"
                                  % (self.key, len(raw), need, self.numel, self.stype.name))
        self.data = np.frombuffer(raw, dtype=dt, count=self.numel)


class _StorageView:
    """A legacy storage view (``view_metadata``): ``size`` elements of ``root`` from ``offset``."""

    def __init__(self, root, offset, size):
        self.root, self.offset, self.numel = root, int(offset), int(size)
        self.stype = root.stype
        self.key = "%s[%d:%d]" % (root.key, offset, offset + size)

    @property
    def needed(self):
        return self.root.needed

    @needed.setter
    def needed(self, v):
        self.root.needed = self.root.needed or v

    def array(self):
        return self.root.array()[self.offset:self.offset + self.numel]


class LazyTensor:
    """A tensor of the checkpoint: storage + offset + size + stride, turned into NumPy by ``numpy()``."""

    def __init__(self, storage, offset, size, stride):
        self.storage = storage
        self.offset = int(offset)
        self.shape = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)
        if len(self.shape) != len(self.stride):
            raise CheckpointError("tensor with size %r but stride %r" % (self.shape, self.stride))

    def numpy(self):
        flat = self.storage.array()
        st = self.storage.stype
        dtype = flat.dtype
        if any(s == 0 for s in self.shape):
            out = np.empty(self.shape, dtype=dtype)
        else:
            last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride))
            if self.offset < 0 or min(self.stride, default=0) < 0 or last >= flat.size:
                raise CheckpointError("tensor %r (offset %d, stride %r) exceeds its storage of %d elements"
                                      % (self.shape, self.offset, self.stride, flat.size))
            view = np.lib.stride_tricks.as_strided(flat[self.offset:], shape=self.shape,
                                                   strides=[s * dtype.itemsize for s in self.stride],
                                                   writeable=False)
            out = np.array(view, order="C")
        if st.bfloat16:
            return (out.astype("=u4") << 16).view(np.float32)
        return out.astype(dtype.newbyteorder("="), copy=False)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    return LazyTensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    return LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    return data


def _numpy_scalar(*args):
    return np.core.multiarray.scalar(*args)


def _allowed_globals():
    allowed = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        # NumPy scalars (e.g. a best-accuracy value) and the bytes they carry under protocol 2
        ("numpy.core.multiarray", "scalar"): _numpy_scalar,
        ("numpy._core.multiarray", "scalar"): _numpy_scalar,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): lambda s, enc="utf-8": s.encode(enc),
    }
    for name in _STORAGE_DTYPES:
        allowed[("torch", name)] = _StorageType("torch", name)
        allowed[("torch.cuda", name)] = _StorageType("torch.cuda", name)
    return allowed


_ALLOWED = _allowed_globals()


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only :data:`_ALLOWED` globals; storages come back as :class:`_Storage` placeholders."""

    def __init__(self, f, storages, fetch=None, big_endian=False):
        super().__init__(f)
        self.storages = storages  # key -> _Storage (shared between the tensors that use it)
        self.fetch = fetch        # key -> bytes, zip layout only
        self.big_endian = big_endian

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise CheckpointError(
                "checkpoint needs the global '%s.%s', which this reader does not allow (it reads state "
                "dicts of tensors, dicts, lists and numbers only; a pickled nn.Module or custom class is "
                "not supported: save model.state_dict() instead)" % (module, name)) from None

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid:
            raise CheckpointError("unexpected persistent id %r" % (pid,))
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage":
            raise CheckpointError("unsupported persistent id type %r (only tensor storages are read)" % (kind,))
        if len(pid) == 5:            # zip: (tag, storage_type, key, location, numel)
            _, stype, key, location, numel = pid
            view = None
        elif len(pid) == 6:          # legacy: (tag, storage_type, root_key, location, numel, view_metadata)
            _, stype, key, location, numel, view = pid
        else:
            raise CheckpointError("unexpected storage id %r" % (pid,))
        if not isinstance(stype, _StorageType):
            raise CheckpointError("storage of unknown type %r" % (stype,))
        key = str(key)
        st = self.storages.get(key)
        if st is None:
            fetch = (lambda k=key: self.fetch(k)) if self.fetch is not None else None
            st = self.storages[key] = _Storage(key, stype, numel, location, fetch, self.big_endian)
        if view is not None:
            _view_key, offset, view_size = view
            return _StorageView(st, offset, view_size)
        return st


def checkpoint_format(path):
    """'torch-zip', 'torch-legacy', 'torch-tar' or 'gluon-params' (MXNet NDArray file), from the bytes."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:4] == b"PK\x03\x04":
        return "torch-zip"
    if head[:1] == b"\x80":  # a pickle (PROTO opcode): the legacy layout starts with the magic number
        return "torch-legacy"
    if head[:8] == struct.pack("<Q", 0x112):  # MXNet NDArray list magic (kMXAPINDArrayListMagic)
        return "gluon-params"
    if tarfile.is_tarfile(path):
        return "torch-tar"
    raise CheckpointError("%s: not a PyTorch checkpoint (zip or legacy pickle) nor an MXNet .params file" % path)


def _walk(obj, fn):
    """Rebuild ``obj`` with every LazyTensor replaced by ``fn(tensor)`` (dict/OrderedDict/list/tuple)."""
    if isinstance(obj, LazyTensor):
        return fn(obj)
    if isinstance(obj, OrderedDict):
        out = OrderedDict((k, _walk(v, fn)) for k, v in obj.items())
        out.__dict__.update(getattr(obj, "__dict__", {}))  # e.g. a state_dict's _metadata
        return out
    if isinstance(obj, dict):
        return {k: _walk(v, fn) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_walk(v, fn) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_walk(v, fn) for v in obj)
    return obj


def _tensors(obj):
    out = []
    _walk(obj, out.append)
    return out


def _read_zip(path):
    zf = zipfile.ZipFile(path)
    names = zf.namelist()
    pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") <= 1]
    if len(pkl) != 1:
        raise CheckpointError("%s: zip checkpoint without a single <root>/data.pkl (found %r)" % (path, pkl))
    root = pkl[0][:-len("data.pkl")]
    big = False
    if root + "byteorder" in names:
        order = zf.read(root + "byteorder").strip()
        if order not in (b"little", b"big"):
            raise CheckpointError("%s: unknown byteorder record %r" % (path, order))
        big = order == b"big"
    storages = {}

    def fetch(key):
        rec = root + "data/" + key
        if rec not in names:
            raise CheckpointError("%s: storage record %s is missing" % (path, rec))
        return zf.read(rec)

    obj = _RestrictedUnpickler(io.BytesIO(zf.read(pkl[0])), storages, fetch, big).load()
    return obj, (lambda needed_only: None), {"format": "torch-zip"}


def _read_legacy(path):
    f = open(path, "rb")
    storages = {}

    state = {"big": False}

    def load_plain():
        return _RestrictedUnpickler(f, storages, big_endian=state["big"]).load()

    try:
        magic = load_plain()
    except (pickle.UnpicklingError, EOFError) as e:
        f.close()
        raise CheckpointError("%s: not a legacy PyTorch checkpoint (%s)" % (path, e))
    if magic != _LEGACY_MAGIC:
        f.close()
        raise CheckpointError("%s: pickle file without the PyTorch legacy magic number (got %r); "
                              "not a torch.save file" % (path, magic))
    protocol = load_plain()
    if protocol != _LEGACY_PROTOCOL:
        f.close()
        raise CheckpointError("%s: unsupported legacy protocol version %r (expected %d)"
                              % (path, protocol, _LEGACY_PROTOCOL))
    sys_info = load_plain()
    big = state["big"] = isinstance(sys_info, dict) and sys_info.get("little_endian") is False
    obj = load_plain()
    keys = load_plain()
    if not isinstance(keys, (list, tuple)):
        f.close()
        raise CheckpointError("%s: storage key list missing after the pickled object" % path)

    def read_storages(needed_only):
        try:
            for key in keys:
                key = str(key)
                head = f.read(8)
                if len(head) != 8:
                    raise CheckpointError("%s: truncated before storage %s" % (path, key))
                numel = struct.unpack(">q" if big else "<q", head)[0]
                st = storages.get(key)
                if st is None:
                    raise CheckpointError("%s: storage %s listed but not referenced by any tensor" % (path, key))
                if numel != st.numel:
                    raise CheckpointError("%s: storage %s has %d elements, its tensors expect %d"
                                          % (path, key, numel, st.numel))
                nbytes = numel * st.stype.dtype.itemsize
                if needed_only and not st.needed:
                    f.seek(nbytes, 1)
                else:
                    raw = f.read(nbytes)
                    st.set_bytes(raw)
        finally:
            f.close()

    return obj, read_storages, {"format": "torch-legacy", "sys_info": sys_info, "close": f.close}


def _open_torch(path):
    fmt = checkpoint_format(path)
    if fmt == "torch-zip":
        return _read_zip(path)
    if fmt == "torch-legacy":
        return _read_legacy(path)
    if fmt == "torch-tar":
        raise CheckpointError("%s: tar-format checkpoint (PyTorch < 0.4) is not supported; re-save it with "
                              "torch.save(state_dict) in any PyTorch >= 1.0" % path)
    raise CheckpointError("%s: an MXNet .params file, not a PyTorch checkpoint" % path)


def read_torch_checkpoint(path):
    """The object ``torch.save`` wrote to ``path``, with every tensor as a NumPy array.

    Works without PyTorch for the zip (torch >= 1.6) and legacy layouts. Raises
    :class:`CheckpointError` for other files, corrupt data and any global outside the whitelist."""
    obj, finish, _ = _open_torch(path)
    finish(False)
    return _walk(obj, lambda t: t.numpy())


_IGNORED_SUFFIXES = ("num_batches_tracked",)


def extract_state_dict(obj, key=None):
    """The state dict inside a loaded checkpoint: ``obj`` itself, or ``obj[key]``, or ``obj['state_dict']``
    / ``obj['model']``. Returns (OrderedDict name -> tensor with any ``module.`` prefix removed,
    list of ignored names (``num_batches_tracked``))."""
    def is_sd(d):
        return isinstance(d, dict) and d and all(isinstance(k, str) for k in d) and \
            all(isinstance(v, (LazyTensor, np.ndarray)) for v in d.values())

    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            raise CheckpointError("checkpoint has no entry %r (top-level keys: %s)"
                                  % (key, sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__))
        sd = obj[key]
    elif is_sd(obj):
        sd = obj
    elif isinstance(obj, dict) and is_sd(obj.get("state_dict")):
        sd = obj["state_dict"]
    elif isinstance(obj, dict) and is_sd(obj.get("model")):
        sd = obj["model"]
    else:
        raise CheckpointError("no state dict found: expected a dict of tensors or a dict holding one under "
                              "'state_dict' or 'model' (top-level: %s)"
                              % (sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__))
    if not is_sd(sd):
        raise CheckpointError("entry is not a state dict of tensors")
    out, ignored = OrderedDict(), []
    for name, t in sd.items():
        if name.endswith(_IGNORED_SUFFIXES):
            ignored.append(name)
            continue
        short = name[len("module."):] if name.startswith("module.") else name
        if short in out:
            raise CheckpointError("state dict has %r both with and without the 'module.' prefix" % short)
        out[short] = t
    return out, ignored


def read_torch_state_dict(path, key=None, info=None):
    """OrderedDict name -> NumPy array of the state dict in a PyTorch checkpoint (see
    :func:`extract_state_dict`); only the storages it uses are read. ``info`` (a dict) receives
    ``format``, ``ignored`` and the checkpoint's ``arch`` entry if any."""
    obj, finish, meta = _open_torch(path)
    try:
        sd, ignored = extract_state_dict(obj, key)
    except Exception:
        meta.get("close", lambda: None)()
        raise
    for t in sd.values():
        if isinstance(t, LazyTensor):
            t.storage.needed = True
    finish(True)
    out = OrderedDict((k, t.numpy() if isinstance(t, LazyTensor) else np.asarray(t)) for k, t in sd.items())
    if info is not None:
        info.update(meta)
        info["ignored"] = ignored
        if isinstance(obj, dict) and isinstance(obj.get("arch"), str):
            info["arch"] = obj["arch"]
    return out


def read_gluon_params(path):
    """OrderedDict name -> NumPy array of an MXNet ``.params`` file (``save_parameters`` format; the
    ``arg:``/``aux:`` prefixes of ``Module.save_checkpoint`` files are removed)."""
    import mxnet as mx
    try:
        loaded = mx.nd.load(path)
    except mx.base.MXNetError as e:
        raise CheckpointError("%s: cannot be read as an MXNet .params file (%s)" % (path, mx_error_line(e))) from None
    if not isinstance(loaded, dict):
        raise CheckpointError("%s: holds an unnamed NDArray list, not named parameters" % path)
    out = OrderedDict()
    for k, v in loaded.items():
        name = k.split(":", 1)[1] if k.startswith(("arg:", "aux:")) else k
        out[name] = v.asnumpy()
    return out


# ================================================================================================
# Parameter shapes and the generic matcher
# ================================================================================================
def _our_params(net):
    """OrderedDict structural name -> Parameter (the names save_parameters writes)."""
    return OrderedDict(net._collect_params_with_prefix())


def target_shapes(net, input_size=None):
    """OrderedDict structural name -> shape of ``net``'s parameters. Shapes still unknown (0) are
    inferred by initialising and running a zero input of ``input_size`` (default 224)."""
    params = _our_params(net)
    if any(0 in (p.shape or (0,)) for p in params.values()):
        import mxnet as mx
        net.initialize()
        s = input_size or 224
        net(mx.nd.zeros((1, 3, s, s)))
    return OrderedDict((k, tuple(p.shape)) for k, p in params.items())


def map_weights(source, name_map, shapes, what="checkpoint", hint=""):
    """Pair source tensors with parameters through ``name_map`` (our name -> source name).

    Every entry of ``shapes`` (our name -> shape) must be mapped, every source tensor used exactly
    once, and shapes must agree; otherwise :class:`WeightMapError` lists the offending names.
    Returns OrderedDict our name -> array (in ``shapes`` order)."""
    problems = []
    unmapped = [k for k in shapes if k not in name_map]
    if unmapped:
        problems.append("no source name for parameter(s) %s" % ", ".join(unmapped))
    inverse = {}
    for ours, src in name_map.items():
        if src in inverse:
            problems.append("source tensor %s claimed by both %s and %s" % (src, inverse[src], ours))
        inverse[src] = ours
    missing = [(o, s) for o, s in name_map.items() if s not in source]
    unmatched = [s for s in source if s not in inverse]
    mismatched = [(o, s, tuple(np.shape(source[s])), tuple(shapes[o])) for o, s in name_map.items()
                  if s in source and o in shapes and tuple(np.shape(source[s])) != tuple(shapes[o])]
    if problems or missing or unmatched or mismatched:
        raise WeightMapError(what, unmatched, missing, mismatched, hint, problems)
    return OrderedDict((o, source[name_map[o]]) for o in shapes)


# ================================================================================================
# bL-Net: our names -> IBM/BigLittleNet state_dict keys (models/blresnet.py, blresnext.py,
# blseresnext.py at dff4654)
# ================================================================================================
_BN = {"gamma": "weight", "beta": "bias", "running_mean": "running_mean", "running_var": "running_var"}

# Stem: our BLStem attribute -> official bLResNet attribute
_BL_STEM = {"big_conv": "b_conv0", "big_bn": "bn_b0", "little_conv1": "l_conv0", "little_bn1": "bn_l0",
            "little_conv2": "l_conv1", "little_bn2": "bn_l1", "little_e": "l_conv2", "little_e_bn": "bn_l2",
            "bl_init": "bl_init", "bl_bn": "bn_bl_init"}

#: Explicit bL-Net name rules, applied to our structural names (whole-name matches, first hit wins).
#: ``{blk}`` is a bottleneck suffix translated by ``_BL_BLOCK``; ``{bn}`` a BatchNorm parameter.
BLNET_RULES = (
    (r"conv1\.0\.weight", "conv1.weight"),
    (r"conv1\.1\.{bn}", "bn1.{bn}"),
    (r"stem\.(?P<stem>\w+)\.(?P<p>weight)", "{stem}.weight"),
    (r"stem\.(?P<stem>\w+)\.{bn}", "{stem}.{bn}"),
    (r"layer(?P<l>[123])\.big\.body\.(?P<i>\d+)\.{blk}", "layer{l}.big.{i}.{blk}"),
    (r"layer(?P<l>[123])\.little\.body\.(?P<i>\d+)\.{blk}", "layer{l}.little.{i}.{blk}"),
    (r"layer(?P<l>[123])\.transition\.little_e\.weight", "layer{l}.little_e.0.weight"),
    (r"layer(?P<l>[123])\.transition\.little_e_bn\.{bn}", "layer{l}.little_e.1.{bn}"),
    (r"layer(?P<l>[123])\.transition\.fusion\.{blk}", "layer{l}.fusion.0.{blk}"),
    (r"layer4\.(?P<i>\d+)\.{blk}", "layer4.{i}.{blk}"),
    (r"fc\.(?P<fc>weight|bias)", "fc.{fc}"),
)

# Bottleneck suffix: ours -> official (se -> se_layer; the shortcut Sequential keeps its indices
# because both build it the same way: [AvgPool if strided] [1x1 conv, BN if the width changes]).
_BL_BLOCK = (
    (r"conv(?P<c>[123])\.weight", "conv{c}.weight"),
    (r"bn(?P<c>[123])\.{bn}", "bn{c}.{bn}"),
    (r"downsample\.(?P<d>\d+)\.weight", "downsample.{d}.weight"),
    (r"downsample\.(?P<d>\d+)\.{bn}", "downsample.{d}.{bn}"),
    (r"se\.fc(?P<f>[12])\.(?P<sp>weight|bias)", "se_layer.fc{f}.{sp}"),
)

_BN_RE = r"(?P<bn>gamma|beta|running_mean|running_var)"


def _compile(rules, blk=None):
    out = []
    for pat, repl in rules:
        pat = pat.replace("{bn}", _BN_RE).replace("{blk}", r"(?P<blk>.+)")
        out.append((re.compile(pat + r"\Z"), repl))
    return out


_BL_TOP_C = _compile(BLNET_RULES)
_BL_BLOCK_C = _compile(_BL_BLOCK)


def _sub(compiled, name):
    for rx, repl in compiled:
        m = rx.match(name)
        if m is None:
            continue
        g = {k: v for k, v in m.groupdict().items() if v is not None}
        if "bn" in g:
            g["bn"] = _BN[g["bn"]]
        if "stem" in g:
            if g["stem"] not in _BL_STEM:
                return None
            g["stem"] = _BL_STEM[g["stem"]]
        if "blk" in g:
            inner = _sub(_BL_BLOCK_C, g["blk"])
            if inner is None:
                return None
            g["blk"] = inner
        return repl.format(**g)
    return None


def blnet_name_map(net):
    """OrderedDict our structural name -> official bL-Net state_dict key (without ``module.``).

    Built from :data:`BLNET_RULES` by name, not by position (our bL-SEResNeXt registers ``se``
    before ``downsample``; the original registers ``downsample`` first). Raises
    :class:`WeightMapError` for a parameter with no official counterpart (e.g. ``fusion=`` hooks)."""
    out, orphans = OrderedDict(), []
    for name in _our_params(net):
        src = _sub(_BL_TOP_C, name)
        if src is None:
            orphans.append(name)
        else:
            out[name] = src
    if orphans:
        raise WeightMapError("bL-Net name map", problems=[
            "%d parameter(s) without an official bL-Net counterpart: %s%s (fusion=/merge_fusion= hooks are "
            "not part of the released networks)" % (len(orphans), ", ".join(orphans[:8]),
                                                    " ..." if len(orphans) > 8 else "")])
    return out


_ARCH_RE = re.compile(r"bL(?P<kind>ResNet|ResNeXt|SEResNeXt)-(?P<depth>\d+)(?:-(?P<card>\d+)x(?P<bw>\d+)d)?"
                      r"-a(?P<a>\d+)-b(?P<b>\d+)", re.I)


def blnet_model_from_arch(arch):
    """(registry name, kwargs) for an official arch string or file name, e.g.
    ``'ImageNet-bLResNeXt-101-64x4d-a2-b4'`` -> ``('bl_resnext101_64x4d', {'alpha': 2, 'beta': 4})``;
    None if the string does not name a bL-Net."""
    m = _ARCH_RE.search(os.path.basename(str(arch)))
    if m is None:
        return None
    kind = {"resnet": "bl_resnet", "resnext": "bl_resnext", "seresnext": "bl_seresnext"}[m.group("kind").lower()]
    name = "%s%s" % (kind, m.group("depth"))
    if kind != "bl_resnet":
        name += "_%sx%sd" % (m.group("card") or 32, m.group("bw") or 4)
    return name, {"alpha": int(m.group("a")), "beta": int(m.group("b"))}


# ================================================================================================
# AFF: our names -> YimianDai/open-aff Gluon attribute paths
# ================================================================================================
AFF_LAYOUTS = ("paper", "head")


def detect_aff_layout(keys):
    """'head' when the shortcuts start with an AvgPool (a ``downsample.1.weight`` conv, the HEAD
    avg-down layout), else 'paper' (conv first). Gluon BN parameters are never called ``weight``."""
    return "head" if any(re.search(r"(^|\.)downsample\.1\.weight$", k) for k in keys) else "paper"


def _leaves(block, our_path, src_path):
    """(our name, source name) for the parameters registered directly on a leaf block."""
    return [("%s.%s" % (our_path, p), "%s.%s" % (src_path, p)) for p in block._reg_params]


def _children(block):
    return list(block._children.values()) if block is not None else []


def _stride(conv):
    s = conv._kwargs.get("stride", (1, 1))
    return max(s) if isinstance(s, (tuple, list)) else int(s)


def _fusion_pairs(fuse, our_path, src_path):
    """Our AFF/IAFF attention -> original ASKCFuse / ResGlobLocaforGlobLocaChaFuse attributes:
    local branch body k -> local_att.k; global branch body k -> global_att.(k+1) (the original's
    global_att starts with a GlobalAvgPool2D child, ours pools in hybrid_forward)."""
    from .models.fusions import AFF, IAFF
    if fuse is None:
        return []
    if type(fuse) is AFF:
        atts = [("att", "")]
    elif type(fuse) is IAFF:
        atts = [("att1", ""), ("att2", "2")]
    else:
        raise WeightMapError("AFF name map", problems=[
            "%s uses fusion %s, which has no counterpart in the released open-aff checkpoints (AFF = ASKCFuse, "
            "iAFF = ResGlobLocaforGlobLocaChaFuse only)" % (our_path, type(fuse).__name__)])
    pairs = []
    for att_name, suffix in atts:
        att = getattr(fuse, att_name)
        if att.kinds != ("local", "global"):
            raise WeightMapError("AFF name map", problems=["%s.%s has branches %r, expected (local, global)"
                                                           % (our_path, att_name, att.kinds)])
        for bi, (branch, kind) in enumerate(zip(_children(att.branches), att.kinds)):
            body = _children(branch.body)
            if len(body) != 5:
                raise WeightMapError("AFF name map", problems=["%s: only the C/r bottleneck MS-CAM branches of the "
                                                               "released models are mapped" % our_path])
            shift = 1 if kind == "global" else 0
            for k, child in enumerate(body):
                pairs += _leaves(child, "%s.%s.branches.%d.body.%d" % (our_path, att_name, bi, k),
                                 "%s.%s_att%s.%d" % (src_path, kind, suffix, k + shift))
    return pairs


def _src_pool(layout, kind, stage):
    """Does the original shortcut Sequential start with an AvgPool2D in this stage?"""
    if layout == "paper":
        return False
    if kind == "resnext":          # HEAD AFFResNeXt: avg_down off in stage 1 only
        return stage > 1
    return True                    # HEAD AFFResNet (AvgPool(1) even in stage 1), CIFAR ResNet/ResNeXt


def _shortcut_pairs(ds, our_path, src_path, layout, kind, stage, stride, problems):
    from mxnet.gluon import nn
    kids = _children(ds)
    ours_pool = bool(kids) and isinstance(kids[0], nn.AvgPool2D)
    src_pool = _src_pool(layout, kind, stage)
    if stride != 1 and ours_pool != src_pool:
        problems.append("%s: the %s-layout shortcut %s an AvgPool but this network's %s (build with avg_down=%s)"
                        % (our_path, layout, "starts with" if src_pool else "has no",
                           "does" if ours_pool else "does not", src_pool))
    pairs = []
    for k, child in enumerate(kids):
        pairs += _leaves(child, "%s.%d" % (our_path, k), "%s.%d" % (src_path, k - ours_pool + src_pool))
    return pairs


def aff_name_map(net, layout="paper"):
    """OrderedDict our structural name -> open-aff Gluon key, for the networks of
    :mod:`mxrepro.models.resnet` with AFF/iAFF (or no) fusion:

    ============================  ==========================  ===================================
    ours                          paper-era / HEAD original   source names
    ============================  ==========================  ===================================
    ResNetV1b, cardinality 1      ResNet50_v1bASKC/AFFResNet  conv1[.k], bn1, layerS.I.{conv1,bn1,
                                                              conv2,bn2,conv3,bn3,downsample.k,
                                                              attention}, fc
    ResNetV1b, cardinality > 1    ResNextASKC / AFFResNeXt    features.k (stem), features.N.I.{body.k,
                                                              downsample.k, attention}, output
    CIFARPreActResNet             ResNet110V2ASKC /           features.k (stem), features.N.I.{resfwd.k,
                                  CIFARAFFResNet              downsample.k, attention}, features.N (BN),
                                                              output
    CIFARResNeXt                  CIFARResNextASKC /          features.k, features.N.I.{body.k,
                                  CIFARAFFResNeXt             downsample.k, attention}, output
    ============================  ==========================  ===================================

    ``attention``: ``local_att.{0,1,3,4}`` and ``global_att.{1,2,4,5}`` (AFF), plus ``local_att2`` /
    ``global_att2`` (iAFF). Shortcut indices shift by one where the original starts with an AvgPool2D
    and ours does not (HEAD stage 1, a stride-1 AvgPool); ``layout`` is 'paper' or 'head'."""
    from .models.resnet import CIFARPreActResNet, CIFARResNeXt, ResNetV1b
    if layout not in AFF_LAYOUTS:
        raise ValueError("layout must be one of %s, got %r" % (AFF_LAYOUTS, layout))
    pairs, problems = [], []
    stem = _children(net.stem)
    stages = _children(net.features)
    if isinstance(net, ResNetV1b):
        first = _children(_children(stages[0])[0].body)
        kind = "resnext" if first[3]._kwargs.get("num_group", 1) > 1 else "resnet"
    elif isinstance(net, CIFARPreActResNet):
        kind = "cifar_resnet"
    elif isinstance(net, CIFARResNeXt):
        kind = "cifar_resnext"
    else:
        raise WeightMapError("AFF name map", problems=["%s is not an AFF host network (ResNetV1b, "
                                                       "CIFARPreActResNet, CIFARResNeXt)" % type(net).__name__])
    # stem
    deep = len(stem) > 4
    for k, child in enumerate(stem):
        if not child._reg_params:
            continue
        if kind == "resnet":
            src = "bn1" if k == len(stem) - 3 else ("conv1.%d" % k if deep else "conv1")
        else:
            src = "features.%d" % k
        pairs += _leaves(child, "stem.%d" % k, src)
    # stages
    resnet_body = {0: "conv1", 1: "bn1", 3: "conv2", 4: "bn2", 6: "conv3", 7: "bn3"}
    for s, stage in enumerate(stages, start=1):
        src_stage = "layer%d" % s if kind == "resnet" else "features.%d" % (len(stem) + s - 1)
        for i, blk in enumerate(_children(stage)):
            ours, src = "features.%d.%d" % (s - 1, i), "%s.%d" % (src_stage, i)
            body = _children(blk.body)
            for k, child in enumerate(body):
                if child._reg_params:
                    if kind == "resnet":
                        name = resnet_body[k]
                    elif kind == "cifar_resnet":
                        name = "resfwd.%d" % k
                    else:
                        name = "body.%d" % k
                    pairs += _leaves(child, "%s.body.%d" % (ours, k), "%s.%s" % (src, name))
            if blk.downsample is not None:
                conv = body[2] if kind == "cifar_resnet" else body[3]
                pairs += _shortcut_pairs(blk.downsample, ours + ".downsample", src + ".downsample", layout,
                                         kind, s, _stride(conv), problems)
            pairs += _fusion_pairs(blk.fuse, ours + ".fuse", src + ".attention")
    # head
    if kind == "cifar_resnet":
        pairs += _leaves(_children(net.head)[0], "head.0", "features.%d" % (len(stem) + len(stages)))
    pairs += _leaves(net.output, "output", "fc" if kind == "resnet" else "output")
    if problems:
        raise WeightMapError("AFF name map (%s layout)" % layout, problems=problems)
    out = OrderedDict(pairs)
    ours = list(_our_params(net))
    left = [n for n in ours if n not in out]
    if left:
        raise WeightMapError("AFF name map", problems=["parameter(s) not covered: %s" % ", ".join(left)])
    return OrderedDict((n, out[n]) for n in ours)


def _aff_kind_from_name(model_name):
    n = (model_name or "").lower()
    if "cifar" in n:
        return "cifar_resnext" if "resnext" in n else "cifar_resnet"
    return "resnext" if "resnext" in n else "resnet"


def infer_aff_kwargs(source, model_name):
    """Architecture keywords an open-aff checkpoint implies for our builder ``model_name``:
    ``deep_stem``/``stem_width``/``avg_down`` (layout), ``classes``, and for CIFAR models ``blocks``
    / ``channel_times``. Also returns the fusion the checkpoint holds ('aff', 'iaff' or None) under
    the key ``'_fusion'``."""
    kind = _aff_kind_from_name(model_name)
    keys = list(source)
    kw = {"avg_down": detect_aff_layout(keys) == "head"}
    shape = {k: tuple(np.shape(v)) for k, v in source.items()}
    if kind == "resnet":
        if "conv1.0.weight" in shape:
            kw.update(deep_stem=True, stem_width=shape["conv1.0.weight"][0])
        else:
            kw["deep_stem"] = False
        if "fc.weight" in shape:
            kw["classes"] = shape["fc.weight"][0]
    elif kind == "resnext":
        w = shape.get("features.0.weight")
        if w is not None and len(w) == 4:
            kw["deep_stem"] = w[2] == 3
            if w[2] == 3:
                kw["stem_width"] = w[0]
    if kind != "resnet" and "output.weight" in shape:
        kw["classes"] = shape["output.weight"][0]
    if kind.startswith("cifar"):
        deep = kind == "cifar_resnet" and "features.2.gamma" in shape
        if kind == "cifar_resnet":
            kw["deep_stem"] = deep
        off = 8 if deep else (2 if kind == "cifar_resnet" else 3)
        blocks = {int(m.group(1)) for k in keys for m in [re.match(r"features\.%d\.(\d+)\." % off, k)] if m}
        if blocks:
            kw["blocks"] = max(blocks) + 1
        if kind == "cifar_resnet":
            w = shape.get("features.%d.0.resfwd.2.weight" % off)
            if w is not None:
                kw["channel_times"] = w[0] // 16
    kw["_fusion"] = "iaff" if any("local_att2" in k for k in keys) else ("aff" if any("local_att" in k for k in keys)
                                                                         else None)
    return kw


def _aff_hint(source, model_name, net):
    kw = infer_aff_kwargs(source, model_name)
    fusion = kw.pop("_fusion")
    parts = []
    if fusion == "iaff" and not (model_name or "").startswith("iaff"):
        parts.append("the checkpoint holds iAFF attention (local_att2/global_att2): use an iaff_* model")
    elif fusion == "aff" and (model_name or "").startswith("iaff"):
        parts.append("the checkpoint holds AFF attention (no local_att2): use an aff_* model")
    parts.append("it implies %s (layout %s)" % (", ".join("%s=%r" % kv for kv in sorted(kw.items())),
                                                detect_aff_layout(source)))
    return "; ".join(parts)


# ================================================================================================
# Loading and converting
# ================================================================================================
def _family_of(model_name, net=None):
    if model_name:
        try:
            from .models.registry import model_info
            fam = model_info(model_name).family
            if fam in ("blnet", "aff", "resnet"):
                return "blnet" if fam == "blnet" else "aff"
        except KeyError:
            pass
        return "blnet" if model_name.lower().startswith("bl_") else "aff"
    if net is not None:
        from .models.blnet import BLResNet
        return "blnet" if isinstance(net, BLResNet) else "aff"
    return None


def _source_for(path, family, net, model_name, layout=None, state_dict_key=None):
    """(mapped arrays, report) for ``path`` into ``net``."""
    fmt = checkpoint_format(path)
    shapes = target_shapes(net)
    label = model_name or type(net).__name__
    report = {"source": path, "format": fmt, "model": model_name}
    if fmt.startswith("torch"):
        if family != "blnet":
            raise WeightMapError("%s into %s" % (os.path.basename(path), label), problems=[
                "PyTorch checkpoints are the official bL-Net releases; %s is not a bL-Net (bl_*) model" % label])
        info = {}
        src = read_torch_state_dict(path, key=state_dict_key, info=info)
        report.update(format=info["format"], ignored=len(info["ignored"]), arch=info.get("arch"))
        hint = ""
        if "fc.weight" in src and "fc.weight" in shapes and src["fc.weight"].shape != shapes["fc.weight"]:
            hint = "the checkpoint has %d classes: build with num_classes=%d" % ((src["fc.weight"].shape[0],) * 2)
        if info.get("arch"):
            guess = blnet_model_from_arch(info["arch"])
            if guess and guess[0] != (model_name or guess[0]):
                hint = (hint + "; " if hint else "") + "the checkpoint's arch is %r (%s with %s)" % (
                    info["arch"], guess[0], guess[1])
        arrays = map_weights(src, blnet_name_map(net), shapes, "%s into %s" % (os.path.basename(path), label), hint)
        report.update(tensors=len(src), mapping="blnet")
        return arrays, report
    if fmt != "gluon-params":
        raise CheckpointError("%s: unsupported format %s" % (path, fmt))
    src = read_gluon_params(path)
    report["tensors"] = len(src)
    own = set(src) & set(shapes)
    if family == "blnet" or len(own) * 2 >= len(shapes):
        # this project's own save_parameters file
        arrays = map_weights(src, OrderedDict((k, k) for k in shapes), shapes,
                             "%s (this project's parameter names) into %s" % (os.path.basename(path), label))
        report["mapping"] = "own"
        return arrays, report
    layout = layout or detect_aff_layout(src)
    what = "%s (open-aff %s layout) into %s" % (os.path.basename(path), layout, label)
    try:
        name_map = aff_name_map(net, layout)
    except WeightMapError as e:
        raise WeightMapError(what, problems=e.problems, hint=_aff_hint(src, model_name, net)) from None
    arrays = map_weights(src, name_map, shapes, what, _aff_hint(src, model_name, net))
    report.update(mapping="aff", layout=layout)
    return arrays, report


def _assign(net, arrays, ctx=None):
    import mxnet as mx
    params = _our_params(net)
    for name, arr in arrays.items():
        p = params[name]
        data = mx.nd.array(np.asarray(arr), dtype=p.dtype or "float32")
        init = p._data is not None
        p._load_init(data, None if init or p._deferred_init else (ctx or mx.cpu()), cast_dtype=True)


def _checked_source(path, verify_crc=True, warn=None):
    """The checks before ``path`` is read: it exists and is readable, and (this project's checkpoints) its
    size and CRC-32 match the ``.json`` beside it (``verify_crc=False``: a mismatch is only warned about)."""
    if not os.path.exists(path):
        raise FileNotFoundError("checkpoint not found: %s" % path)
    try:
        return verify_checkpoint_file(path, verify=verify_crc, warn=warn or _warn)
    except WeightsFileError as e:
        raise CheckpointError(str(e)) from None


def _warn(msg):
    import sys
    print(msg, file=sys.stderr)


def load_pretrained(net, path, model_name=None, layout=None, ctx=None, state_dict_key=None, verify_crc=True,
                    warn=None):
    """Load a checkpoint into the built network ``net`` and return a small report (dict).

    ``path``: this project's own ``.params`` (``save_parameters``), an official bL-Net PyTorch
    checkpoint (``.pth``/``.pth.tar``, either torch.save layout, a bare state dict or one under
    ``state_dict``/``model``, with or without ``module.``), or an official open-aff ``.params``
    (``layout`` 'paper'/'head', detected when None). ``model_name`` (registry name) picks the name
    map and improves the messages. A checkpoint of this project is refused when it no longer matches
    the size and CRC-32 recorded beside it (``verify_crc=False``: loaded with a warning to ``warn``).
    Raises :class:`WeightMapError` / :class:`CheckpointError` / FileNotFoundError."""
    _checked_source(path, verify_crc, warn)
    family = _family_of(model_name, net)
    arrays, report = _source_for(path, family, net, model_name, layout, state_dict_key)
    _assign(net, arrays, ctx)
    report["parameters"] = int(sum(np.size(a) for a in arrays.values()))
    report["mapped"] = len(arrays)
    return report


def save_gluon_params(arrays, path, dtype="float32"):
    """Write OrderedDict name -> array as a ``save_parameters``-compatible ``.params`` file."""
    import mxnet as mx
    d = os.path.dirname(os.path.abspath(path))
    tmp = path + ".tmp"
    try:
        os.makedirs(d, exist_ok=True)
        mx.nd.save(tmp, OrderedDict((k, mx.nd.array(np.asarray(v), dtype=dtype)) for k, v in arrays.items()))
        os.replace(tmp, path)
    except (OSError, mx.base.MXNetError) as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise CheckpointError("cannot write %s: %s" % (path, mx_error_line(e) if isinstance(e, mx.base.MXNetError)
                                                       else (e.strerror or e))) from None


def _infer_family(src, model_name):
    if model_name:
        return _family_of(model_name)
    fmt = checkpoint_format(src)
    return "blnet" if fmt.startswith("torch") else "aff"


def convert_checkpoint(src, out, model_name=None, family=None, model_kwargs=None, layout=None,
                       state_dict_key=None, verify=True, verify_crc=True, warn=None):
    """Convert an official checkpoint into a ``.params`` file for ``get_model(model_name, **model_kwargs)``.

    ``family`` ('blnet' or 'aff') defaults to the model name's family, else to the file format
    (PyTorch -> blnet, .params -> aff). bL-Net: ``model_name`` defaults to the checkpoint's ``arch``
    entry or file name (``ImageNet-bLResNet-50-a2-b4.pth.tar`` -> ``bl_resnet50``, alpha 2, beta 4).
    AFF: deep stem / avg-down / classes are taken from the checkpoint unless given in
    ``model_kwargs``. With ``verify`` the written file is loaded back with ``load_parameters`` into a
    fresh network. ``src`` is checked as in :func:`load_pretrained` (``verify_crc``) and ``out`` for
    writability before anything is converted. Returns a summary dict."""
    from .models.registry import get_model, model_info
    _checked_source(src, verify_crc, warn)
    try:
        check_writable(out)
    except WeightsFileError as e:
        raise CheckpointError(str(e)) from None
    family = family or _infer_family(src, model_name)
    if family not in ("blnet", "aff"):
        raise ValueError("family must be 'blnet' or 'aff', got %r" % family)
    kw = dict(model_kwargs or {})
    if family == "blnet":
        if model_name is None:
            info = {}
            if checkpoint_format(src).startswith("torch"):
                obj, finish, _ = _open_torch(src)
                finish(True)  # nothing marked needed: reads no tensor data
                if isinstance(obj, dict) and isinstance(obj.get("arch"), str):
                    info["arch"] = obj["arch"]
            guess = blnet_model_from_arch(info.get("arch") or src)
            if guess is None:
                raise ValueError("cannot tell which bL-Net %s holds (no 'arch' entry, no bLResNet-50-a2-b4 style "
                                 "file name): pass --model" % src)
            model_name = guess[0]
            for k, v in guess[1].items():
                kw.setdefault(k, v)
    else:
        if model_name is None:
            raise ValueError("AFF checkpoints need --model (e.g. aff_resnet50, iaff_resnext50_32x4d, aff_cifar_resnet)")
        if checkpoint_format(src) == "gluon-params":
            inferred = infer_aff_kwargs(read_gluon_params(src), model_name)
            inferred.pop("_fusion")
            inferred.pop("blocks", None)
            inferred.pop("channel_times", None)
            if not inferred.get("deep_stem"):
                inferred.pop("stem_width", None)
            if _aff_kind_from_name(model_name) == "cifar_resnext":
                inferred.pop("deep_stem", None)
            for k, v in inferred.items():
                kw.setdefault(k, v)
    model_info(model_name)  # unknown names fail here with the registry's message
    net = get_model(model_name, **kw)
    arrays, report = _source_for(src, family, net, model_name, layout, state_dict_key)
    save_gluon_params(arrays, out)
    report.update(model=model_name, model_kwargs=kw, family=family, output=out, mapped=len(arrays),
                  parameters=int(sum(np.size(a) for a in arrays.values())))
    if verify:
        check = get_model(model_name, **kw)
        try:
            check.load_parameters(out)
        except Exception as e:  # noqa: BLE001  (MXNetError or a name mismatch: one line)
            raise CheckpointError("%s was written but does not load back into %s: %s"
                                  % (out, model_name, mx_error_line(e))) from None
        report["verified"] = True
    return report


def _register():
    from .models.registry import register_weights_loader
    register_weights_loader(lambda net, path, name: load_pretrained(net, path, name))


_register()
