"""Single-crop evaluation of a checkpoint with each paper's own protocol (what ``tools/evaluate.py`` runs).

Protocols (:func:`make_protocol`; ``default_protocol(model)`` picks one from the model's family):

* ``blnet`` -- the official bL-Net evaluation (torchvision; docs/reference/blnet.md §3): short side to
  ``int(S/0.875 + 0.5)`` (256 for S = 224) with bilinear interpolation, the long side
  ``int(256 * long / short)``, centre crop S with torchvision's offset ``round((H - S) / 2)``, ToTensor
  (/255), mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225). Backend ``pil`` (default: PIL decode +
  ``Image.resize(BILINEAR)``, which filters over the whole footprint when it shrinks, as torchvision
  does) or ``opencv`` (``cv2.imdecode`` + ``INTER_LINEAR``, which samples 2x2 neighbours and does not).
* ``aff`` -- gluon-cv's ImageNet evaluation (open-aff ``train_imagenet.py``; docs/reference/aff.md §3.1):
  short side to ``ceil(S / 0.875)``, bilinear (OpenCV), centre crop S at ``floor((H - S) / 2)``. A
  ``.rec`` goes through ``mx.io.ImageRecordIter(resize=..., data_shape=...)`` with gluon-cv's RecordIO
  constants (mean 123.68/116.779/103.939, std 58.393/57.12/57.375 on 0-255), an image folder through its
  DataLoader path (ToTensor, mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)) -- gluon-cv's own
  two paths.
* ``aff-cifar`` -- open-aff ``train_cifar.py``'s test pipeline (docs/reference/aff.md §3.2): no resize
  or crop (32x32 images), ToTensor, CIFAR mean (0.4914, 0.4822, 0.4465) / std (0.2023, 0.1994, 0.2010).
* ``fbn`` -- the FBN scripts' validation iterator (docs/reference/fbn.md §5.1, §5.3): a centre crop of S
  at ``floor((H - S) / 2)`` and mean subtraction (123.68, 116.779, 103.939) only, no std, no /255.
  ImageNet networks read the original's ``val_256_q90.rec`` (short side 256 already; the ``resize=256``
  applied here is then an exact no-op, and makes a full-size ``.rec`` or an image folder come out the
  same way); CIFAR networks (S = 32) are not resized. ``.rec`` files go through ``mx.io.ImageRecordIter``
  as in the original.

Everything else (folders, and ``.rec`` files for ``blnet`` / ``aff-cifar``) is decoded and transformed
here in NumPy with OpenCV or PIL. Class ``i`` of an image folder is its ``i``-th sorted sub-folder
(torchvision ``ImageFolder`` and Gluon ``ImageFolderDataset`` agree); a ``.rec`` holds its labels.

Models: Gluon networks of the registry get ``mxrepro.weights.load_pretrained`` (this project's
``.params``, an official bL-Net ``.pth``, an official open-aff ``.params``); FBN symbol networks are
run with the Module API from ``<prefix>-symbol.json`` + ``<prefix>-NNNN.params``
(``mx.model.load_checkpoint``; also ``-latest`` / ``-best``) or from a symbol rebuilt by name. The
``.json`` the training engine writes beside a checkpoint supplies the model name, its keywords, the
class count and the input size, and the top-1 the run itself measured at that checkpoint.

:func:`evaluate` returns one result row (:data:`ROW_FIELDS`), written by :func:`write_json` /
:func:`append_csv`.
"""
import ast
import csv
import datetime
import hashlib
import inspect
import io
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from .ckptfile import WeightsFileError, mx_error_line, verify_checkpoint_file
from .lifeline import loader_workers_die_with_parent

__all__ = ["PROTOCOLS", "Protocol", "make_protocol", "default_protocol", "EvalData", "open_data", "read_sidecar",
           "paper_numbers", "evaluate", "ROW_FIELDS", "write_json", "append_csv", "check_csv", "sha256_prefix"]

PROTOCOLS = ("blnet", "aff", "aff-cifar", "fbn")
BACKENDS = ("opencv", "pil")

# the constants as each original writes them
TORCHVISION_MEAN, TORCHVISION_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
GLUONCV_REC_MEAN, GLUONCV_REC_STD = (123.68, 116.779, 103.939), (58.393, 57.12, 57.375)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
FBN_MEAN = (123.68, 116.779, 103.939)


def _usage(msg):
    from .engine.config import UsageError
    return UsageError(" ".join(str(msg).split()))


def _data_error(msg):
    from .integrity import DataError
    return DataError(" ".join(str(msg).split()))


# ================================================================================================
# Protocols
# ================================================================================================
@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol at one input size. ``resize``: short side before the crop (0 = none);
    ``crop``: ``'round'`` (torchvision) or ``'floor'`` (MXNet, OpenCV); ``unit``: divide by 255 before
    the mean/std (which are then on the 0-1 scale); ``std`` None = mean subtraction only; ``rec_iter``:
    ImageRecordIter arguments for ``.rec`` input (None = decode here like a folder)."""
    name: str
    input_size: int
    resize: int
    crop: str
    mean: tuple
    std: tuple = None
    unit: bool = True
    backend: str = "opencv"
    rec_iter: dict = field(default=None, compare=False)
    source: str = ""

    # -- geometry ---------------------------------------------------------------------------------
    def resized_shape(self, h, w):
        """(H, W) after the short-side resize: short -> ``resize``, long -> ``int(resize * long / short)``
        (torchvision, gluon ``Resize(keep_ratio=True)`` and ImageRecordIter all truncate)."""
        if not self.resize:
            return h, w
        if h <= w:
            return self.resize, self.resize * w // h
        return self.resize * h // w, self.resize

    def crop_box(self, h, w):
        """(top, left) of the centre crop of ``input_size`` in an H x W image."""
        s = self.input_size
        if self.crop == "round":
            return int(round((h - s) / 2.0)), int(round((w - s) / 2.0))
        return (h - s) // 2, (w - s) // 2

    # -- pixels -------------------------------------------------------------------------------------
    def decode(self, data, what):
        """Encoded bytes -> an RGB image (HxWx3 uint8 array; a PIL image with the pil backend)."""
        if self.backend == "pil":
            from PIL import Image
            try:
                img = Image.open(io.BytesIO(bytes(data)))
                return img.convert("RGB")
            except Exception as e:  # noqa: BLE001  (any PIL failure is a bad image)
                raise _data_error("%s: PIL cannot decode it (%s)" % (what, e)) from None
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if len(data) else None
        if img is None or img.size == 0:
            raise _data_error("%s: OpenCV cannot decode it (not a complete JPEG/PNG image?)" % what)
        return img[:, :, ::-1]

    def transform(self, img, what="image"):
        """A decoded RGB image -> the network input, CHW float32."""
        pil = not isinstance(img, np.ndarray)
        w, h = img.size if pil else (img.shape[1], img.shape[0])
        nh, nw = self.resized_shape(h, w)
        if (nh, nw) != (h, w):
            if pil:
                from PIL import Image
                img = img.resize((nw, nh), Image.BILINEAR)
            else:
                img = cv2.resize(np.ascontiguousarray(img), (nw, nh), interpolation=cv2.INTER_LINEAR)
        s = self.input_size
        if nh < s or nw < s:
            raise _data_error("%s: %dx%d after resizing, smaller than the %dx%d crop (protocol %s)"
                              % (what, nw, nh, s, s, self.name))
        top, left = self.crop_box(nh, nw)
        if pil:
            img = img.crop((left, top, left + s, top + s))
            x = np.asarray(img, dtype=np.uint8)
        else:
            x = img[top:top + s, left:left + s]
        x = x.astype(np.float32)
        if self.unit:
            x = x / np.float32(255.0)
        x = x - np.asarray(self.mean, np.float32)
        if self.std is not None:
            x = x / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    # -- description ---------------------------------------------------------------------------------
    def describe(self, kind="folder"):
        """One line: what is done to an image of a ``kind`` ('rec' or 'folder') input."""
        if kind == "rec" and self.rec_iter is not None:
            k = self.rec_iter
            parts = ["mx.io.ImageRecordIter"]
            if k.get("resize", -1) > 0:
                parts.append("short side %d (OpenCV bilinear)" % k["resize"])
            parts.append("centre crop %d (floor offset)" % self.input_size)
            mean = tuple(k.get(m, 0.0) for m in ("mean_r", "mean_g", "mean_b"))
            std = tuple(k.get(m, 1.0) for m in ("std_r", "std_g", "std_b"))
            parts.append("mean %s" % _fmt(mean) + (" std %s" % _fmt(std) if "std_r" in k else " (no std)"))
            return ", ".join(parts)
        parts = ["%s decode" % ("PIL" if self.backend == "pil" else "OpenCV")]
        if self.resize:
            parts.append("short side %d (%s bilinear)" % (self.resize, "PIL" if self.backend == "pil" else "OpenCV"))
        parts.append("centre crop %d (%s offset)" % (self.input_size, self.crop))
        if self.unit:
            parts.append("/255")
        parts.append("mean %s" % _fmt(self.mean) + (" std %s" % _fmt(self.std) if self.std else " (no std)"))
        return ", ".join(parts)


def _fmt(t):
    return "(" + ", ".join("%g" % v for v in t) + ")"


def make_protocol(name, input_size=224, backend=None, resize=None, crop_ratio=0.875):
    """The protocol ``name`` (:data:`PROTOCOLS`) for ``input_size``; ``resize`` (short side, 0 = none)
    and ``backend`` ('opencv'/'pil', ``blnet`` only) override its defaults."""
    if name not in PROTOCOLS:
        raise _usage("--protocol %s is not one of %s" % (name, ", ".join(PROTOCOLS)))
    s = int(input_size)
    if s < 1:
        raise _usage("--input-size %d must be positive" % s)
    if resize is not None and resize < 0:
        raise _usage("--resize %d must be >= 0 (0 = no resize)" % resize)
    if backend is not None and backend not in BACKENDS:
        raise _usage("--backend %s is not one of %s" % (backend, ", ".join(BACKENDS)))
    if backend == "pil" and name != "blnet":
        raise _usage("--backend pil applies to --protocol blnet (the torchvision pipeline); %s decodes and resizes "
                     "with OpenCV, as its original does" % name)
    if name == "blnet":
        r = int(s / crop_ratio + 0.5) if resize is None else resize
        return Protocol("blnet", s, r, "round", TORCHVISION_MEAN, TORCHVISION_STD, True, backend or "pil",
                        source="IBM/BigLittleNet imagenet_utils.py (torchvision Resize, CenterCrop, ToTensor, "
                               "Normalize)")
    if name == "aff":
        from .data import gluoncv_rec_kwargs
        r = int(math.ceil(s / crop_ratio)) if resize is None else resize
        it = dict(gluoncv_rec_kwargs(s, crop_ratio)[1], label_width=1)
        if r:
            it["resize"] = r
        else:
            it.pop("resize", None)
        return Protocol("aff", s, r, "floor", TORCHVISION_MEAN, TORCHVISION_STD, True, "opencv", rec_iter=it,
                        source="gluon-cv train_imagenet.py (as open-aff): ImageRecordIter resize + centre crop, or "
                               "Resize(keep_ratio) + CenterCrop + ToTensor + Normalize")
    if name == "aff-cifar":
        r = 0 if resize is None else resize
        return Protocol("aff-cifar", s, r, "floor", CIFAR_MEAN, CIFAR_STD, True, "opencv",
                        source="open-aff train_cifar.py test transform (ToTensor + Normalize)")
    from .data import fbn_rec_kwargs
    r = (0 if s <= 32 else max(256, s)) if resize is None else resize
    it = dict(fbn_rec_kwargs("imagenet", s, mean=FBN_MEAN)[1])
    if r:
        it["resize"] = r
    return Protocol("fbn", s, r, "floor", FBN_MEAN, None, False, "opencv", rec_iter=it,
                    source="FBN train_cifar.py / train_imagenet.py validation ImageRecordIter (mean subtraction only)")


def default_protocol(model_name):
    """``blnet`` for bL-Net, ``fbn`` for the FBN symbol networks, ``aff-cifar`` for the 32x32 Gluon
    networks (AFF CIFAR hosts and their baselines), ``aff`` for the other Gluon networks."""
    from .models.registry import model_info
    e = model_info(model_name)
    if e.family == "blnet":
        return "blnet"
    if e.family == "fbn":
        return "fbn"
    return "aff-cifar" if e.cfg.get("input_size") == 32 else "aff"


# ================================================================================================
# Data
# ================================================================================================
class EvalData:
    """A validation set: a ``.rec`` with its ``.idx`` (checked by :func:`mxrepro.integrity.verify_recordio`)
    or an image folder ``ROOT/<class>/<image>``. ``num_images`` (after ``limit``), ``num_classes`` (class
    folders; for a ``.rec`` max label + 1), ``label_min`` / ``label_max``."""

    def __init__(self, path, limit=None):
        from . import integrity
        self.path = path
        self.limit = limit
        if os.path.isdir(path):
            self.kind = "folder"
            subs = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
            splits = [d for d in subs if d in ("train", "val", "test")]
            if splits and len(splits) == len(subs) and len(subs) > 1:
                raise _data_error("%s holds the splits %s, not class folders: pass %s" % (
                    path, "/".join(splits), " or ".join(os.path.join(path, d) for d in splits if d != "train")))
            from mxnet import gluon
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # non-image files: ImageFolderDataset skips them
                ds = gluon.data.vision.ImageFolderDataset(path)
            if not ds.synsets:
                raise _data_error("%s: no class folders (expected ROOT/<class>/<image>)" % path)
            if not ds.items:
                raise _data_error("%s: no images (.jpg, .jpeg, .png) in its %d class folders" % (path, len(ds.synsets)))
            self.items, self.synsets = list(ds.items), list(ds.synsets)
            self.total = len(self.items)
            self.num_classes, self.label_min, self.label_max = len(self.synsets), 0, len(self.synsets) - 1
        elif path.endswith(".rec"):
            self.kind = "rec"
            self.idx = os.path.splitext(path)[0] + ".idx"
            if not os.path.isfile(path):
                raise _data_error("%s: no such file" % path)
            if not os.path.isfile(self.idx):
                raise _data_error("%s: its index %s is missing (`python -m mxrepro.integrity --repair %s` rebuilds "
                                  "it)" % (path, os.path.basename(self.idx), path))
            s = integrity.verify_recordio(path, self.idx, sample_decode=16)
            self.summary = s
            if s.label_min is None:
                raise _data_error("%s: holds no records" % path)
            if s.label_min < 0 or float(s.label_min) != int(s.label_min) or float(s.label_max) != int(s.label_max):
                raise _data_error("%s: labels run %s..%s; class labels must be integers >= 0" % (
                    path, s.label_min, s.label_max))
            self.total = s.records
            self.label_min, self.label_max = int(s.label_min), int(s.label_max)
            self.num_classes = max(int(s.num_labels), self.label_max + 1)
        elif not os.path.exists(path):
            raise _data_error("%s: no such file or folder" % path)
        else:
            raise _data_error("%s: expected a .rec file (with its .idx) or an image folder ROOT/<class>/<image>" % path)
        if limit is not None and limit < 1:
            raise _usage("--limit %d must be at least 1" % limit)
        self.num_images = min(self.total, limit) if limit else self.total

    def check_classes(self, num_classes, model):
        """A classes mismatch between the data and a head of ``num_classes`` outputs is an error."""
        if self.kind == "folder" and self.num_classes != num_classes:
            raise _usage("classes mismatch: %s has %d class folders but %s has %d outputs (class i is the i-th "
                         "sorted folder, so they must agree; --num-classes / the weights)" % (
                             self.path, self.num_classes, model, num_classes))
        if self.kind == "rec" and self.label_max >= num_classes:
            raise _usage("classes mismatch: %s has labels up to %d but %s has %d outputs (--num-classes / the "
                         "weights)" % (self.path, self.label_max, model, num_classes))

    def batches(self, protocol, batch_size, workers=0):
        """``(data NCHW float32, label)`` NDArray batches of the first ``num_images`` images, in order."""
        if self.kind == "rec" and protocol.rec_iter is not None:
            return self._rec_iter(protocol, batch_size, workers)
        from mxnet import gluon
        ds = _Decoded(self, protocol)
        sampler = gluon.data.BatchSampler(gluon.data.SequentialSampler(self.num_images), batch_size, "keep")
        if workers > 0:  # decoding processes end with this one (mxrepro.lifeline)
            loader_workers_die_with_parent()
        return gluon.data.DataLoader(ds, batch_sampler=sampler, num_workers=int(workers))

    def _rec_iter(self, protocol, batch_size, workers):
        import mxnet as mx
        from .data import RecIterLoader
        kw = dict(protocol.rec_iter)

        def make(_seed):
            return mx.io.ImageRecordIter(path_imgrec=self.path, path_imgidx=self.idx, batch_size=batch_size,
                                         shuffle=False, round_batch=False, preprocess_threads=max(1, int(workers)),
                                         data_name="data", label_name="softmax_label", **kw)
        return RecIterLoader(make, self.num_images, batch_size, False, self.path)

    def describe(self):
        if self.kind == "folder":
            return "%s (%d images in %d class folders)" % (self.path, self.total, self.num_classes)
        return "%s (%d records, labels %d..%d)" % (self.path, self.total, self.label_min, self.label_max)


class _Decoded:
    """Gluon dataset: image i of an :class:`EvalData` decoded and transformed by a :class:`Protocol`."""

    def __init__(self, data, protocol):
        self.kind, self.path, self.protocol = data.kind, data.path, protocol
        self.items = data.items if data.kind == "folder" else None
        self._records = None

    def __len__(self):
        return len(self.items) if self.items is not None else self.records.__len__()

    @property
    def records(self):
        if self._records is None:
            from mxnet import gluon
            self._records = gluon.data.RecordFileDataset(self.path)  # reopens its file after a fork
        return self._records

    def __getitem__(self, i):
        import mxnet as mx
        if self.items is not None:
            path, label = self.items[i]
            what = path
            try:
                with open(path, "rb") as f:
                    buf = f.read()
            except OSError as e:
                raise _data_error("%s: cannot read it (%s)" % (path, e.strerror or e)) from None
        else:
            header, buf = mx.recordio.unpack(self.records[i])
            label = header.label if np.isscalar(header.label) else np.asarray(header.label).ravel()[0]
            what = "%s record %d (id %d)" % (self.path, i, header.id)
        x = self.protocol.transform(self.protocol.decode(buf, what), what)
        return x, np.float32(label)


def open_data(path, limit=None):
    """:class:`EvalData` of ``path`` (checks it; DataError naming the file on bad input)."""
    return EvalData(path, limit)


# ================================================================================================
# Checkpoints and models
# ================================================================================================
_TAG = re.compile(r"^(?P<prefix>.+)-(?P<tag>\d{4}|latest|best)\.params$")


def sha256_prefix(path, n=16, chunk=1 << 22):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()[:n]


def _literal(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def read_sidecar(weights):
    """What the training engine's ``<checkpoint>.json`` beside ``weights`` says, or None: ``model``,
    ``model_kwargs``, ``num_classes``, ``input_size``, ``epoch``, ``val_top1`` / ``val_topk`` (the run's
    own validation at this checkpoint). A description whose size does not match the file is ignored."""
    side = os.path.splitext(weights)[0] + ".json"
    try:
        with open(side) as f:
            meta = json.load(f)
        fp = meta["config"]["fingerprint"]
        size = meta.get("files", {}).get("params", {}).get("size")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if size is not None and size != os.path.getsize(weights):
        print("warning: %s does not describe %s (size differs); ignored" % (side, weights), file=sys.stderr)
        return None
    out = {"path": side, "model": fp.get("model"), "num_classes": fp.get("num_classes"),
           "model_kwargs": {k: _literal(v) for k, v in (fp.get("model_kwargs") or {}).items()},
           "epoch": meta.get("epoch")}
    shape = fp.get("input_shape")
    if shape and len(shape) == 3:
        out["input_size"] = int(shape[1])
    hist = meta.get("history") or []
    if hist and hist[-1].get("epoch") == meta.get("epoch") and "val_top1" in hist[-1]:
        out["val_top1"], out["val_topk"], out["k"] = hist[-1]["val_top1"], hist[-1].get("val_topk"), hist[-1].get("k")
    return out


def _class_count_from_mismatch(pairs):
    """N when every shape mismatch is the same head of N outputs: (ours, theirs) shapes that differ in
    the first axis only, all with the same first axis in the file; else None."""
    ns = set()
    for ours, theirs in pairs:
        ours, theirs = tuple(ours), tuple(theirs)
        if len(ours) != len(theirs) or not ours or ours[1:] != theirs[1:]:
            return None
        ns.add(theirs[0])
    return ns.pop() if len(ns) == 1 else None


def _open_aff_layout(name, weights, net, kwargs):
    """Builder keywords an open-aff ``.params`` implies (deep stem, stem width, avg-down shortcuts; the
    layout, never depth or width) and ``kwargs`` does not set; {} for any other file."""
    from .models.registry import model_info
    from .weights import CheckpointError, checkpoint_format, infer_aff_kwargs, read_gluon_params
    if model_info(name).family not in ("aff", "resnet"):
        return {}
    try:
        if checkpoint_format(weights) != "gluon-params":
            return {}
        src = read_gluon_params(weights)
    except (CheckpointError, OSError):
        return {}
    ours = set(net._collect_params_with_prefix())
    if len(set(src) & ours) * 2 >= len(ours):
        return {}  # this project's own parameter names
    try:
        inferred = infer_aff_kwargs(src, name)
    except (KeyError, ValueError, TypeError, IndexError):
        return {}
    for k in ("_fusion", "blocks", "channel_times", "classes"):
        inferred.pop(k, None)
    if not inferred.get("deep_stem"):
        inferred.pop("stem_width", None)
    if "cifar" in name and "resnext" in name:
        inferred.pop("deep_stem", None)
    return {k: v for k, v in inferred.items() if k not in kwargs and not (k == "deep_stem" and v is False)
            and not (k == "avg_down" and v is False)}


class GluonModel:
    """A Gluon network of the registry with its weights loaded (``mxrepro.weights.load_pretrained``)."""
    kind = "gluon"

    def __init__(self, name, weights, num_classes, kwargs, contexts, note=print):
        from .models.registry import get_model
        from .weights import CheckpointError, WeightMapError, load_pretrained
        self.name, self.contexts = name, contexts
        kwargs = dict(kwargs)
        for attempt in (0, 1):
            try:
                net = get_model(name, classes=num_classes, **kwargs)
            except (TypeError, ValueError) as e:
                raise _usage("cannot build %s with %s: %s" % (name, _kw_text(dict(kwargs, classes=num_classes)), e))
            if attempt == 0:
                add = _open_aff_layout(name, weights, net, kwargs)
                if add:
                    note("note: %s is an open-aff checkpoint of the layout %s" % (os.path.basename(weights),
                                                                                  _kw_text(add)))
                    kwargs.update(add)
                    net = get_model(name, classes=num_classes, **kwargs)
            try:
                self.report = load_pretrained(net, weights, name, ctx=contexts, verify_crc=False,
                                              warn=lambda m: None)  # checked once by evaluate()
                break
            except WeightMapError as e:
                n = _class_count_from_mismatch([(b, a) for _, _, a, b in e.mismatched]) \
                    if e.mismatched and not e.missing and not e.unmatched else None
                if attempt == 0 and n is not None and n != num_classes:
                    note("note: %s holds a %d-class head; evaluating with %d classes" % (
                        os.path.basename(weights), n, n))
                    num_classes = n
                    continue
                raise _usage("wrong weights for %s: %s" % (name, e.summary())) from None
            except (CheckpointError, FileNotFoundError) as e:
                raise _usage(str(e)) from None
        self.net, self.num_classes, self.kwargs = net, num_classes, kwargs
        net.hybridize(static_alloc=True)
        fmt = self.report.get("format", "")
        self.format = {"own": "mxrepro .params", "blnet": "bL-Net PyTorch (%s)" % fmt,
                       "aff": "open-aff .params (%s layout)" % self.report.get("layout")}.get(
            self.report.get("mapping"), fmt)

    def __call__(self, data):
        from mxnet import gluon
        xs = gluon.utils.split_and_load(data, self.contexts, even_split=False) if len(self.contexts) > 1 \
            else [data.as_in_context(self.contexts[0])]
        outs = [self.net(x) for x in xs]
        return np.concatenate([o.asnumpy() for o in outs]) if len(outs) > 1 else outs[0].asnumpy()

    def params_m(self):
        from .flops import count_params
        return count_params(self.net)[0] / 1e6


class ModuleModel:
    """An FBN symbol network run with the Module API: ``<prefix>-symbol.json`` + the ``.params``
    (``mx.model.load_checkpoint``) or, with ``rebuild`` or without the ``.json``, the registry's symbol."""
    kind = "symbol"

    def __init__(self, name, weights, num_classes, kwargs, contexts, input_size, batch_size, rebuild=False,
                 note=print):
        import mxnet as mx
        self.name, self.contexts, self.kwargs = name, contexts, dict(kwargs)
        m = _TAG.match(os.path.basename(weights))
        prefix = os.path.join(os.path.dirname(weights), m.group("prefix")) if m else None
        sym_file = prefix + "-symbol.json" if prefix else None
        self.rebuilt = rebuild or not (sym_file and os.path.isfile(sym_file))
        arg = aux = None
        if not self.rebuilt:
            sym = None
            if m.group("tag").isdigit():
                try:
                    sym, arg, aux = mx.model.load_checkpoint(prefix, int(m.group("tag")))
                except (mx.base.MXNetError, ValueError):
                    sym = None  # read again below for a message that names the problem
            if sym is None:
                try:
                    sym = mx.sym.load(sym_file)
                except mx.base.MXNetError as e:
                    raise _usage("cannot read %s: %s (a symbol this MXNet cannot load: --rebuild builds it by name, "
                                 "with the run's --kw)" % (sym_file, mx_error_line(e))) from None
            self.format = "Module checkpoint (%s)" % os.path.basename(sym_file)
        else:
            if not rebuild:
                note("note: no %s beside %s: rebuilding %s by name (%s)" % (
                    os.path.basename(sym_file) if sym_file else "<prefix>-symbol.json", os.path.basename(weights),
                    name, _kw_text(kwargs) or "default keywords"))
            sym = self._build(name, num_classes, kwargs)
            self.format = "Module checkpoint (symbol rebuilt by name)"
        if arg is None:
            arg, aux = self._load_params(weights)
        shape = (1, 3, input_size, input_size)
        for attempt in (0, 1):
            problems, bad = self._fit(sym, shape, arg, aux)
            if not problems:
                break
            n = _class_count_from_mismatch([(w, h) for _, w, h in bad]) if problems == ["shape"] else None
            if attempt == 0 and self.rebuilt and n is not None and n != num_classes:
                note("note: %s holds a %d-class head; rebuilding %s with %d classes" % (
                    os.path.basename(weights), n, name, n))
                num_classes = n
                sym = self._build(name, n, kwargs)
                continue
            raise _usage("wrong weights for %s: %s does not fit %s: %s%s" % (
                name, os.path.basename(weights), "the rebuilt symbol" if self.rebuilt else "its symbol",
                self._problem_text(sym, shape, arg, aux),
                " (rebuilding needs the training keywords, e.g. --kw res_module_num=18 --kw depth=34 "
                "--kw fmconv_factor=50)" if self.rebuilt else ""))
        out = sym.infer_shape(data=shape)[1][0]
        self.num_classes = int(np.prod(out[1:]))
        self.labels = [n for n in sym.list_arguments() if n.endswith("label")]
        self.sym, self.arg, self.aux, self.shape = sym, arg, aux, shape
        b = max(int(batch_size), len(contexts))
        try:
            self.mod = mx.mod.Module(sym, data_names=("data",), label_names=tuple(self.labels), context=contexts)
            self.mod.bind(data_shapes=[("data", (b, 3, input_size, input_size))],
                          label_shapes=[(n, (b,)) for n in self.labels] or None, for_training=False)
            self.mod.set_params(arg, aux, allow_missing=False, allow_extra=False)
        except (mx.base.MXNetError, ValueError) as e:
            raise _usage("cannot run %s from %s: %s" % (name, os.path.basename(weights),
                                                        mx_error_line(e))) from None

    @staticmethod
    def _build(name, num_classes, kwargs):
        from .models.registry import get_model
        try:
            return get_model(name, num_classes=num_classes, **kwargs)
        except (TypeError, ValueError) as e:
            raise _usage("cannot build %s with %s: %s" % (name, _kw_text(dict(kwargs, num_classes=num_classes)), e))

    @classmethod
    def _compare(cls, sym, shape, arg, aux):
        """(missing, unused, [(name, symbol shape, file shape)]) of the parameters against the symbol."""
        want = cls._shapes(sym, shape)
        have = {k: tuple(v.shape) for k, v in list(arg.items()) + list(aux.items())}
        missing = sorted(set(want) - set(have))
        extra = sorted(set(have) - set(want))
        bad = [(k, tuple(want[k]), have[k]) for k in sorted(set(want) & set(have)) if tuple(want[k]) != have[k]]
        return missing, extra, bad

    @classmethod
    def _fit(cls, sym, shape, arg, aux):
        missing, extra, bad = cls._compare(sym, shape, arg, aux)
        problems = (["missing"] if missing else []) + (["unused"] if extra else []) + (["shape"] if bad else [])
        return problems, bad

    @classmethod
    def _problem_text(cls, sym, shape, arg, aux):
        missing, extra, bad = cls._compare(sym, shape, arg, aux)

        def few(names):
            return ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
        parts = []
        if missing:
            parts.append("%d missing (%s)" % (len(missing), few(missing)))
        if extra:
            parts.append("%d unused (%s)" % (len(extra), few(extra)))
        if bad:
            parts.append("%d shape mismatch(es): %s" % (len(bad), ", ".join(
                "%s %s in the file vs %s" % (k, h, w) for k, w, h in bad[:2])))
        return "; ".join(parts)

    @staticmethod
    def _shapes(sym, shape):
        try:
            args, _, auxs = sym.infer_shape(data=shape)
        except Exception as e:  # noqa: BLE001  (MXNetError with the operator's message)
            raise _usage("the symbol does not take a %s input: %s" % (
                "x".join(map(str, shape[1:])), mx_error_line(e))) from None
        out = {n: s for n, s in zip(sym.list_arguments(), args) if n != "data" and not n.endswith("label")}
        out.update(zip(sym.list_auxiliary_states(), auxs))
        return out

    @staticmethod
    def _load_params(path):
        import mxnet as mx
        try:
            blob = mx.nd.load(path)
        except mx.base.MXNetError as e:
            raise _usage("%s: not an MXNet parameter file (%s)" % (path, mx_error_line(e))) from None
        if not isinstance(blob, dict) or not blob:
            raise _usage("%s: holds no named parameters" % path)
        arg, aux = {}, {}
        for k, v in blob.items():
            kind, _, n = k.partition(":")
            if kind not in ("arg", "aux") or not n:
                raise _usage("wrong weights for a symbol network: %s is not a Module checkpoint (key %r has no "
                             "arg:/aux: prefix; a Gluon .params belongs to a Gluon model)"
                             % (os.path.basename(path), k))
            (arg if kind == "arg" else aux)[n] = v
        return arg, aux

    def matches_registry(self):
        """Whether the registry's symbol with this run's keywords has exactly these parameter shapes (then
        the paper row of those keywords applies)."""
        if self.rebuilt:
            return True
        try:
            sym = self._build(self.name, self.num_classes, self.kwargs)
            return not self._fit(sym, self.shape, self.arg, self.aux)[0]
        except Exception:  # noqa: BLE001  (any failure: cannot tell, so no paper number)
            return False

    def __call__(self, data):
        import mxnet as mx
        n = data.shape[0]
        labels = [mx.nd.zeros((n,)) for _ in self.labels]
        self.mod.forward(mx.io.DataBatch(data=[data], label=labels or None), is_train=False)
        return self.mod.get_outputs()[0].asnumpy().reshape(n, -1)


def _kw_text(kw):
    return ", ".join("%s=%r" % kv for kv in sorted(kw.items()))


# ================================================================================================
# Paper numbers
# ================================================================================================
# keywords that do not change what a paper row measures (layout of an imported checkpoint, numerics)
_NEUTRAL_KW = {"deep_stem", "stem_width", "avg_down", "last_gamma", "dropfactor_mode", "grad_mode", "workspace",
               "memonger", "bn_mom", "fb_op"}


def paper_numbers(model, kwargs=None, num_classes=1000, params_m=None):
    """``{paper_top1_err, paper_top5_err, reference_top1_err, paper_source}`` (percent; None where
    unknown) of ``model`` with builder ``kwargs`` and ``num_classes`` outputs, from the registry's
    ``paper`` entries. ``reference_top1_err`` is the released code's own figure (bL-Net README
    PyTorch retrain; AFF CIFAR-100 fine-label logs). Nothing is returned for a configuration the
    paper did not run (other classes, depth or widths); ``params_m`` (trainable parameters of the
    built network, millions) is checked against the row's when the registry knows it."""
    from .models.registry import list_models, model_info
    kwargs = dict(kwargs or {})
    out = dict(paper_top1_err=None, paper_top5_err=None, reference_top1_err=None, paper_source=None)
    e = model_info(model)
    paper = dict(e.cfg.get("paper") or {})
    fam = e.family
    if fam == "fbn":
        variant = None
        keys = list(paper)
        fb = any(k.endswith("-fbn") for k in keys)
        if e.name in ("resnet", "resnet-fmconv"):
            variant = "resnet-%d%s" % (kwargs.get("depth", 50), "-fbn" if fb else "")
        elif e.name.startswith("resnet-small"):
            variant = "resnet-%d%s" % (9 * int(kwargs.get("res_module_num", 18)) + 2, "-fbn" if fb else "")
        elif len(keys) == 1:
            variant = keys[0]
        p = paper.get(variant) if variant else None
        if not p:
            return out
        if e.cfg.get("input_size") == 32:
            err = p.get("cifar%d_err" % num_classes)
            out.update(paper_top1_err=err)
        elif num_classes == 1000:
            out.update(paper_top1_err=p.get("top1_err"), paper_top5_err=p.get("top5_err"))
        if any(v is not None for v in out.values()):
            out["paper_source"] = "FBN paper (%s)" % variant
        return out
    if fam == "blnet":
        a, b = kwargs.get("alpha", paper.get("alpha")), kwargs.get("beta", paper.get("beta"))
        if (a, b) != (paper.get("alpha"), paper.get("beta")):
            alt = re.sub(r"(_a\d+_b\d+)?$", "_a%s_b%s" % (a, b), e.name, count=1)
            if alt == e.name or alt not in list_models():
                return out
            paper = dict(model_info(alt).cfg.get("paper") or {})
    expected = e.cfg.get("num_classes", 100) if e.cfg.get("input_size") == 32 else 1000
    if num_classes != expected:
        return out
    if params_m is not None and paper.get("params_m"):
        # the row's network has a known size: the built one must have it (whatever keywords made it)
        if abs(params_m - paper["params_m"]) > 0.015:
            return out
    else:
        # otherwise every keyword must be the builder's default or leave the network as it is
        sig = inspect.signature(e.fn).parameters
        for k, v in kwargs.items():
            if k in _NEUTRAL_KW or k in ("classes", "num_classes") or (fam == "blnet" and k in ("alpha", "beta")):
                continue
            if k in sig and sig[k].default is not inspect.Parameter.empty and sig[k].default == v:
                continue
            return out
    ref = paper.get("top1_err_official")
    if ref is None and paper.get("acc_fine100_reference") is not None:
        ref = round(100.0 - paper["acc_fine100_reference"], 4)
    out.update(paper_top1_err=paper.get("top1_err"), paper_top5_err=paper.get("top5_err"), reference_top1_err=ref)
    if any(v is not None for v in out.values()):
        out["paper_source"] = paper.get("source")
    return out


# ================================================================================================
# The run
# ================================================================================================
ROW_FIELDS = ("date", "model", "model_kwargs", "num_classes", "input_size", "weights", "weights_bytes",
              "weights_sha256", "weights_format", "data", "data_kind", "images", "protocol", "protocol_desc",
              "top1_err", "top5_err", "top1_correct", "top5_correct", "paper_top1_err", "paper_top5_err",
              "reference_top1_err", "paper_source", "recorded_top1_err", "images_per_s", "seconds", "batch_size",
              "devices", "limit", "mxnet")


def evaluate(model=None, weights=None, data=None, protocol=None, batch_size=50, workers=4, gpus="",
             num_classes=None, input_size=None, resize=None, backend=None, kwargs=None, rebuild=False, limit=None,
             progress=True, log=print, verify_crc=True):
    """Evaluate ``weights`` of registry model ``model`` on ``data`` (``.rec`` or image folder); return the
    result row (dict with the keys of :data:`ROW_FIELDS`). Bad input raises ``UsageError`` / ``DataError``
    with a one-line message, before any image is read where it can be told beforehand. FBN symbol
    networks must be registered first (``import symbols``; tools/evaluate.py does). A checkpoint of this
    project that no longer matches the size and CRC-32 recorded beside it is refused (``verify_crc=False``:
    evaluated with a warning)."""
    import mxnet as mx
    from .engine.loop import parse_devices
    from .models.registry import model_info
    if not weights:
        raise _usage("--weights is required")
    if not os.path.isfile(weights):
        raise _usage("weights not found: %s" % weights)
    try:  # this project's checkpoints: the size and CRC-32 recorded beside them
        verify_checkpoint_file(weights, verify=verify_crc, warn=lambda m: print(m, file=sys.stderr))
    except WeightsFileError as e:
        raise _usage(e) from None
    if not data:
        raise _usage("--data is required")
    side = read_sidecar(weights)
    if model is None:
        if not side or not side.get("model"):
            raise _usage("--model is required (no training description %s beside %s names it)" % (
                os.path.basename(os.path.splitext(weights)[0] + ".json"), weights))
        model = side["model"]
    try:
        entry = model_info(model)
    except KeyError as e:
        raise _usage(e.args[0] if e.args else e) from None
    model = entry.name
    if side and side.get("model") and side["model"] != model:
        raise _usage("%s was trained as %s (its %s says so), not %s: pass --model %s" % (
            os.path.basename(weights), side["model"], os.path.basename(side["path"]), model, side["model"]))
    if batch_size < 1:
        raise _usage("--batch-size %d must be at least 1" % batch_size)
    if workers < 0:
        raise _usage("--workers %d must be >= 0" % workers)
    kw = dict((side or {}).get("model_kwargs") or {})
    kw.update(kwargs or {})
    size = input_size or (side or {}).get("input_size") or entry.cfg.get("input_size") or 224
    proto = make_protocol(protocol or default_protocol(model), size, backend=backend, resize=resize)
    contexts = parse_devices(gpus, "--gpus")
    ds = open_data(data, limit)
    classes = num_classes or (side or {}).get("num_classes") or ds.num_classes
    if classes < 1:
        raise _usage("--num-classes %d must be at least 1" % classes)
    if entry.kind == "symbol":
        net = ModuleModel(model, weights, classes, kw, contexts, size, batch_size, rebuild=rebuild, note=log)
    else:
        if rebuild:
            raise _usage("--rebuild applies to FBN symbol networks; %s is a Gluon model" % model)
        net = GluonModel(model, weights, classes, kw, contexts, note=log)
        kw = net.kwargs
    if num_classes and net.num_classes != num_classes:
        raise _usage("classes mismatch: --num-classes %d but %s holds a %d-class head" % (
            num_classes, os.path.basename(weights), net.num_classes))
    classes = net.num_classes
    ds.check_classes(classes, model)
    desc = proto.describe(ds.kind)
    log("evaluating %s (%d classes, input %d) from %s [%s] on %s" % (
        model, classes, size, weights, net.format, ds.describe()))
    log("protocol %s: %s" % (proto.name, desc))

    k = 5 if classes > 5 else 0
    c1 = c5 = seen = 0
    total = ds.num_images
    from tqdm import tqdm
    bar = tqdm(total=total, unit="img", desc="evaluate", disable=None if progress else True, dynamic_ncols=True,
               file=sys.stderr)
    t0 = time.time()
    try:
        for batch, label in ds.batches(proto, batch_size, workers):
            scores = net(batch)
            y = label.asnumpy().astype(np.int64).ravel()
            if scores.shape != (len(y), classes):
                raise _usage("the network gives scores of shape %s for a batch of %d images (%d classes expected)"
                             % (scores.shape, len(y), classes))
            c1 += int((scores.argmax(axis=1) == y).sum())
            if k:
                top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
                c5 += int((top == y[:, None]).any(axis=1).sum())
            seen += len(y)
            bar.update(len(y))
            if seen:
                bar.set_postfix_str("top-1 err %.2f%%" % (100.0 * (1 - c1 / seen)))
    finally:
        bar.close()
    seconds = time.time() - t0
    if seen != total:
        raise _data_error("%s: read %d of %d images" % (data, seen, total))
    top1 = round(100.0 * (1 - c1 / seen), 4)
    top5 = round(100.0 * (1 - c5 / seen), 4) if k else None
    if entry.kind == "gluon":
        try:
            paper = paper_numbers(model, kw, classes, net.params_m())
        except ValueError:
            paper = paper_numbers(model, kw, classes)
    elif net.matches_registry():
        paper = paper_numbers(model, kw, classes)
    else:
        paper = dict(paper_top1_err=None, paper_top5_err=None, reference_top1_err=None, paper_source=None)
        log("note: the checkpoint's symbol is not %s with %s: no paper number (pass its keywords with --kw)" % (
            model, _kw_text(kw) or "default keywords"))
    row = dict(date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"), model=model,
               model_kwargs=kw, num_classes=classes, input_size=size, weights=weights,
               weights_bytes=os.path.getsize(weights), weights_sha256=sha256_prefix(weights),
               weights_format=net.format, data=data, data_kind=ds.kind, images=seen, protocol=proto.name,
               protocol_desc=desc, top1_err=top1, top5_err=top5, top1_correct=c1, top5_correct=c5 if k else None,
               recorded_top1_err=round(100.0 * (1 - side["val_top1"]), 4) if side and "val_top1" in side else None,
               images_per_s=round(seen / max(seconds, 1e-9), 2), seconds=round(seconds, 3), batch_size=batch_size,
               devices=",".join(str(c) for c in contexts), limit=limit, mxnet=mx.__version__, **paper)
    log(result_line(row))
    return row


def result_line(row):
    """The one-line summary of a result row."""
    s = "%s: top-1 error %.2f%%" % (row["model"], row["top1_err"])
    if row.get("top5_err") is not None:
        s += ", top-5 error %.2f%%" % row["top5_err"]
    s += " on %d images of %s (protocol %s)" % (row["images"], row["data"], row["protocol"])
    ref = []
    if row.get("paper_top1_err") is not None:
        ref.append("paper %.2f%s" % (row["paper_top1_err"], " / %.2f" % row["paper_top5_err"]
                                     if row.get("paper_top5_err") is not None else ""))
    if row.get("reference_top1_err") is not None:
        ref.append("released code %.2f" % row["reference_top1_err"])
    if row.get("recorded_top1_err") is not None:
        ref.append("training run's own validation %.2f" % row["recorded_top1_err"])
    if ref:
        s += " [" + "; ".join(ref) + "]"
    return s + ", %.1f img/s" % row["images_per_s"]


def write_json(row, path):
    """The row as a JSON object in ``path`` (replaced atomically)."""
    from .engine.checkpoint import atomic_write

    def dump(p):
        with open(p, "w") as f:
            json.dump({k: row.get(k) for k in ROW_FIELDS}, f, indent=1)
            f.write("\n")
    atomic_write(path, dump)


def check_csv(path):
    """UsageError when ``path`` exists with other columns than :data:`ROW_FIELDS` (checked before a run)."""
    if not path or not os.path.exists(path) or os.path.getsize(path) == 0:
        return
    with open(path, newline="") as f:
        head = next(csv.reader(f), None)
    if head != list(ROW_FIELDS):
        raise _usage("--csv %s has other columns (%s...): write to a new file" % (
            path, ",".join((head or [])[:4])))


def append_csv(row, path):
    """Append the row to ``path`` (header first when the file is new or empty)."""
    check_csv(path)
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(ROW_FIELDS)
        w.writerow(["" if row.get(k) is None else json.dumps(row[k], sort_keys=True) if isinstance(row.get(k), dict)
                    else row[k] for k in ROW_FIELDS])
