#!/usr/bin/env python
"""ImageNet (or any image-folder dataset) -> the RecordIO files the training scripts read.

    python tools/prepare_imagenet.py DATA_ROOT --out DIR [--formats fbn,gluon] [--threads N]
    python tools/prepare_imagenet.py DATA_ROOT --out DIR --val-labels LOC_val_solution.csv   # flat val/

Input: DATA_ROOT/train/<class>/<image> and DATA_ROOT/val/<class>/<image>; a flat DATA_ROOT/val/
(the ILSVRC2012 tarball layout) is sorted into class folders first from --val-labels (see
--help of that option). Class ids are the sorted train/ folder names (written to DIR/synsets.txt),
the convention of im2rec --recursive and of gluon's ImageFolderDataset.

Output in DIR (all packed by the wheel's mxnet/tools/im2rec.py with --num-thread):
  fbn:   train_480_q90.rec/.idx, train_256_q90.rec/.idx, val_256_q90.rec/.idx
         (short side resized to 480/256, JPEG quality 90: imagenet/train_imagenet.py, FBN)
  gluon: train.rec/.idx, val.rec/.idx  (gluon-cv's ImageNet recipe, `imagenet.py --with-rec`:
         original JPEG bytes with --pass-through --pack-label; --gluon-resize N re-encodes instead)
plus train.lst/val.lst (canonical lists), synsets.txt and prepare_info.json.

Each image is checked before packing: its bytes must hold a complete JPEG/PNG stream that
cv2.imdecode decodes. Corrupt, truncated, zero-byte and non-image files are skipped, listed by path
(with the reason) in the summary and in prepare_info.json. Every output is read back before it is
moved into place; a failure names the record and its source file and exits 2. Re-runs skip
outputs that exist and verify; --force redoes them.
"""
import argparse
import collections
import os
import sys
import tempfile

import mxrepro  # noqa: E402,F401  (sets OMP_NUM_THREADS before mxnet)
from mxrepro import datasets as D  # noqa: E402

LAYOUT = ("DATA_ROOT/train/<class>/<image>.jpg and DATA_ROOT/val/<class>/<image>.jpg "
          "(or a flat DATA_ROOT/val/ plus --val-labels FILE)")
FORMATS = {
    # name: [(output, split, resize, quality)]
    "fbn": [("train_480_q90", "train", 480, 90), ("train_256_q90", "train", 256, 90),
            ("val_256_q90", "val", 256, 90)],
    "gluon": [("train", "train", None, None), ("val", "val", None, None)],
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_root", metavar="DATA_ROOT", help="folder holding train/ and val/")
    p.add_argument("--out", required=True, help="output folder for the .rec/.idx/.lst files")
    p.add_argument("--formats", default="fbn,gluon",
                   help="comma list of output sets: fbn (train_480_q90, train_256_q90, val_256_q90), "
                        "gluon (train, val); default: both")
    p.add_argument("--val-labels", default=None, metavar="FILE",
                   help="labels for a flat val/: lines 'filename synset' or 'filename id' (0-based id "
                        "into the sorted train folders, Caffe's val.txt), Kaggle's LOC_val_solution.csv, "
                        "or ILSVRC2012_validation_ground_truth.txt (1-based IDs; needs --val-synsets)")
    p.add_argument("--val-synsets", default=None, metavar="FILE",
                   help="for the ground-truth list: the devkit's data/meta.mat, or a text file whose "
                        "line i is the synset of ILSVRC2012_ID i")
    p.add_argument("--sort-val", default="symlink", choices=["symlink", "move", "copy"],
                   help="how a flat val/ is sorted: symlink/copy into DIR/val_by_class/<class>/ (DATA_ROOT "
                        "untouched), or move into DATA_ROOT/val/<class>/ in place (gluon-cv's layout)")
    p.add_argument("--gluon-resize", type=int, default=0, metavar="N",
                   help="gluon set: 0 (default) stores the original bytes as gluon-cv does; N>0 resizes "
                        "the short side to N and re-encodes as JPEG --gluon-quality")
    p.add_argument("--gluon-quality", type=int, default=95, help="JPEG quality when --gluon-resize > 0")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2,
                   help="image-check threads and im2rec --num-thread (at least 2 for im2rec)")
    p.add_argument("--force", action="store_true", help="redo every list and output")
    args = p.parse_args(argv)
    args.formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    bad = [f for f in args.formats if f not in FORMATS]
    if bad or not args.formats:
        p.error("--formats: unknown %s (choose from %s)" % (",".join(bad) or "(empty)", ",".join(FORMATS)))
    return args


def _subdirs(d):
    out, hidden = [], []
    for n in sorted(os.listdir(d)):
        if os.path.isdir(os.path.join(d, n)):
            (hidden if n.startswith(".") else out).append(n)
    return out, hidden


def _scan_split(split, split_dir, common, classes, info, force, threads, shuffle, tmp):
    """List one split with im2rec --list, label by top folder -> class id, drop non-images and
    undecodable images. Returns items with paths relative to ``common`` (the root im2rec packs
    from). Reuses the stored list when the file tree is unchanged."""
    images, others = D.scan_tree(split_dir)
    cls_id = {c: i for i, c in enumerate(classes)}
    outside = [r for r in images if os.sep not in r]
    if len(images) == len(outside):
        raise D.DatasetError("%s holds no images (%s) in class folders%s; expected %s"
                             % (split_dir, "/".join(D.IMAGE_EXTS), " (only: %s)" % ", ".join(others[:3])
                                if others else "", LAYOUT))
    fp = D.fingerprint(D.stamped(split_dir, images))  # names, sizes and mtimes: a changed file is checked again
    prefix = os.path.relpath(split_dir, common)
    stored = info.data["inputs"].get(split)
    lst = os.path.join(info.out_dir, split + ".lst")
    if (not force and stored and stored.get("fingerprint") == fp and stored.get("root") == split_dir
            and stored.get("common") == common and os.path.isfile(lst)):
        D.log("%s: file tree unchanged since the last run; reusing %s" % (split, lst))
        return D.read_lst(lst), stored
    listed = D.im2rec_list(os.path.join(tmp, split), split_dir, recursive=True, shuffle=shuffle)
    items, unknown = [], []
    for idx, _, rel in listed:
        if os.sep not in rel:
            continue  # a file lying outside the class folders
        top = rel.split(os.sep)[0]
        if top not in cls_id:
            unknown.append(rel)
            continue
        items.append((idx, cls_id[top], rel))
    if unknown:
        raise D.DatasetError("%s/%s is not a class of train/ (val classes must be train/ folders)"
                             % (split, unknown[0].split(os.sep)[0]))
    bad = D.validate_images(split_dir, [r for _, _, r in items], threads=threads,
                            desc="checking %s images" % split)
    items = [(i, l, r if prefix == "." else os.path.join(prefix, r)) for i, l, r in items if r not in bad]
    for what, names in (("non-image files", others), ("images outside class folders", outside),
                        ("unreadable/corrupt images", sorted(bad))):
        if names:
            D.warn("%s: skipping %d %s (e.g. %s)" % (split, len(names), what, ", ".join(
                "%s: %s" % (n, bad[n]) if n in bad else n for n in names[:3])))
    if not items:
        raise D.DatasetError("%s holds no readable images in class folders; expected %s" % (split_dir, LAYOUT))
    D.write_lst(lst, items)
    stats = dict(fingerprint=fp, root=split_dir, common=common, found=len(images) - len(outside),
                 images=len(items), corrupt=sorted(bad), corrupt_reasons=dict(sorted(bad.items())),
                 non_image=others, outside=outside,
                 labels=D.label_info((l for _, l, _ in items), len(classes)))
    info.data["inputs"][split] = stats
    info.save()
    return items, stats


def run(args):
    D.check_positive(args.threads, "--threads", "im2rec packing processes")
    D.check_positive(args.gluon_resize, "--gluon-resize", "0 keeps the images as they are", 0)
    D.check_positive(args.gluon_quality, "--gluon-quality", "JPEG quality", 1, 100)
    root = os.path.abspath(args.data_root)
    out = os.path.abspath(args.out)
    D.check_dir(root, "DATA_ROOT", LAYOUT)
    train_dir, val_dir = os.path.join(root, "train"), os.path.join(root, "val")
    D.check_dir(train_dir, "train folder", LAYOUT)
    D.check_dir(val_dir, "val folder", LAYOUT)
    classes, hidden = _subdirs(train_dir)
    if hidden:
        D.warn("ignoring hidden folders in train/: %s" % ", ".join(hidden))
    if not classes:
        raise D.DatasetError("%s has no class folders (it is %s); expected %s"
                             % (train_dir, "empty" if not os.listdir(train_dir) else "flat", LAYOUT))
    D.check_out(out)
    os.makedirs(out, exist_ok=True)
    D.clean_stale_work(out)
    info = D.PrepInfo(out, "prepare_imagenet", force=args.force)

    # a flat val/ (images lying directly in it) is sorted into class folders first
    flat = [f for f in os.listdir(val_dir) if os.path.isfile(os.path.join(val_dir, f)) and D.is_image_name(f)]
    val_classes, _ = _subdirs(val_dir)
    val_root = val_dir
    if flat:
        if args.val_labels:
            synsets = D.load_synsets(args.val_synsets) if args.val_synsets else None
            dest = val_dir if args.sort_val == "move" else os.path.join(out, "val_by_class")
            res = D.sort_val(val_dir, args.val_labels, dest_dir=dest, mode=args.sort_val,
                             classes=classes, synsets=synsets)
            D.log("val: sorted %d flat images into %s/<class>/ (%s)" % (res["sorted"], dest, args.sort_val))
            val_root = dest
        elif not val_classes:
            raise D.DatasetError("%s holds %d images directly (the flat ILSVRC layout) and no class folders: "
                                 "pass --val-labels FILE (and --val-synsets for the ground-truth list)"
                                 % (val_dir, len(flat)))
        else:
            D.warn("val: %d images lie directly in %s without --val-labels; they are skipped"
                   % (len(flat), val_dir))
    elif not val_classes:
        raise D.DatasetError("%s is empty; expected %s" % (val_dir, LAYOUT))

    # one root for every list, so outputs with equal settings are packed in one im2rec call
    common = os.path.commonpath([train_dir, val_root])
    with tempfile.TemporaryDirectory(prefix=".lists-", dir=out) as tmp:
        train_items, train_stats = _scan_split("train", train_dir, common, classes, info, args.force,
                                               args.threads, True, tmp)
        val_items, val_stats = _scan_split("val", val_root, common, classes, info, args.force,
                                           args.threads, False, tmp)
    lists = dict(train=train_items, val=val_items)
    present = {l for _, l, _ in train_items}
    empty = [c for i, c in enumerate(classes) if i not in present]
    if empty:
        D.warn("train: %d class folders hold no readable image (ids kept): %s" % (len(empty), ", ".join(empty[:5])))
    D.write_lines(os.path.join(out, "synsets.txt"), classes)

    # group the wanted outputs by packing settings
    groups = collections.OrderedDict()
    wanted = []
    for fmt in args.formats:
        for name, split, resize, quality in FORMATS[fmt]:
            if fmt == "gluon":
                if args.gluon_resize:
                    resize, quality = args.gluon_resize, args.gluon_quality
                settings = dict(resize=resize or 0, quality=quality, pass_through=not resize, pack_label=True)
            else:
                settings = dict(resize=resize, quality=quality, pass_through=False, pack_label=False)
            settings.update(split=split, images=len(lists[split]),
                            fingerprint=info.data["inputs"][split]["fingerprint"])
            wanted.append((name, split, settings))
            if info.done(name, settings):
                D.log("%s.rec: present and verified, skipped (--force to redo)" % name)
                continue
            key = tuple(sorted((k, v) for k, v in settings.items() if k not in ("split", "images", "fingerprint")))
            groups.setdefault(key, {})[name] = (split, settings)
    for key, jobs in groups.items():
        s = dict(key)
        desc = "im2rec " + "+".join(jobs)
        D.log("packing %s (%s)" % (", ".join(n + ".rec" for n in jobs),
                                   "original bytes" if s["pass_through"] else
                                   "short side %d, JPEG q%d" % (s["resize"], s["quality"]) if s["resize"]
                                   else "JPEG q%d" % s["quality"]))

        def check(name, prefix, failed, jobs=jobs):
            # read back in the work folder: a failing output never reaches OUT (DatasetError, exit 2)
            split, settings = jobs[name]
            return D.verify_records(prefix, lists[split], shown=os.path.join(out, name + ".rec"), sample=50,
                                    short_side=settings["resize"])

        with D.disk.writing(os.path.join(out, "+".join(jobs) + ".rec")):  # a full disk: one line, exit 3
            failed, checked = D.pack({n: lists[sp] for n, (sp, _) in jobs.items()}, common, out,
                                     resize=s["resize"], quality=s["quality"] or 95, encoding=".jpg",
                                     pass_through=s["pass_through"], pack_label=s["pack_label"],
                                     num_thread=args.threads, desc=desc, check=check)
        for name, (split, settings) in jobs.items():
            got = checked[name]
            info.record(name, settings, got["count"], split=split,
                        labels=D.label_info(got["labels"].elements(), len(classes)),
                        short_sides=sorted({min(sh[:2]) for sh in got["shapes"]}))

    # summary
    D.log("summary (%s): %d classes (synsets.txt)" % (out, len(classes)))
    for split, st in (("train", train_stats), ("val", val_stats)):
        lab = st.get("labels") or {}
        D.log("  %-5s %7d images packed of %d found in class folders, labels %s..%s (%s of %d classes); "
              "skipped: %d corrupt, %d non-image files, %d outside class folders"
              % (split, st["images"], st["found"], lab.get("min"), lab.get("max"), lab.get("present"), len(classes),
                 len(st["corrupt"]), len(st["non_image"]), len(st["outside"])))
        D.list_paths("corrupt (skipped)", st["corrupt"], st.get("corrupt_reasons"))
        D.list_paths("non-image files (skipped)", st["non_image"])
        D.list_paths("outside class folders (skipped)", st["outside"])
    for name, split, settings in wanted:
        e = info.data["outputs"].get(name, {})
        ss = e.get("short_sides") or []
        D.log("  %-14s %7d records  %s" % (name + ".rec", e.get("count", 0),
                                         "short side %d, JPEG q%d" % (settings["resize"], settings["quality"])
                                         if settings["resize"] else "original bytes (sampled short sides %s..%s)"
                                         % (min(ss) if ss else "?", max(ss) if ss else "?")))
    return 0


def main(argv=None):
    args = parse_args(argv)
    return D.run_cli(run, args)


if __name__ == "__main__":
    sys.exit(main())
