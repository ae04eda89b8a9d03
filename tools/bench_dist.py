#!/usr/bin/env python
"""Data-parallel throughput on this machine: 1 process vs N workers on MXNet's parameter server.

    python tools/bench_dist.py                          # ResNet-20 (CIFAR), batch 32/worker, 1 and 2 workers
    python tools/bench_dist.py --workers 1,2,4 --batch-size 64 --steps 30 --json dist.json
    python tools/bench_dist.py --model-kwargs blocks=3,channel_times=4,classes=10   # 16x the parameters

Every configuration trains the same Gluon network (``mxrepro.get_model``; default the CIFAR
ResNet-20, ``cifar_resnet`` blocks=3 channel_times=1) with SGD-momentum on random 3x32x32 batches:

* ``local``: one process, no kvstore, all cores (OMP_NUM_THREADS = cores), and the same with one
  thread (the per-core speed a worker of a 2-worker job on 2 cores can at best reach);
* ``dist_sync x1`` with all cores and with one thread (the parameter-server overhead alone);
* ``dist_sync xN``: ``tools/launch.py -n N -s 1 --loopback`` (a scheduler, one server, N workers on
  127.0.0.1; the launcher splits the cores between the workers), each worker with its own batch
  (weak scaling: the effective batch is N x --batch-size), ``trainer.step`` pushing gradients to
  and pulling weights from the server every step.

Configurations are interleaved over ``--rounds`` repetitions; the best round of each (other
jobs on the machine only slow a run down) gives the ratios, the median and every round are shown.
Reported: images/s (all workers together: images / slowest worker's time over the timed steps,
after warm-up and a barrier), the speed-up over ``local``, and the communication volume per worker
per step: computed (gradients pushed + weights pulled = 2 x parameter bytes; BatchNorm running
statistics are not communicated) and measured (bytes through the loopback interface during the
timed steps, from /proc/net/dev, divided by workers and steps; includes ps-lite headers and any
other loopback traffic on the machine). The machine's load is printed too: other jobs running at
the same time lower every number, the distributed ones most.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "tools", "launch.py")
MARK = "BENCH_DIST_RESULT "


def parse_kwargs(text):
    out = {}
    for item in filter(None, (s.strip() for s in (text or "").split(","))):
        k, v = item.split("=", 1)
        try:
            out[k] = int(v)
        except ValueError:
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


def lo_bytes():
    """Bytes sent through the loopback interface so far (None where /proc/net/dev is missing)."""
    try:
        with open("/proc/net/dev") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name.strip() == "lo":
                    return int(rest.split()[8])   # transmit bytes (= received bytes on lo)
    except OSError:
        return None
    return None


# ------------------------------------------------------------------------------------------ worker
def worker(a):
    """One training process (run directly for `local`, through tools/launch.py for dist_sync)."""
    import mxrepro  # noqa: F401  (threads before mxnet)
    import mxnet as mx
    import numpy as np
    from mxnet import autograd, gluon
    from mxrepro import get_model
    from mxrepro.engine import dist as distributed

    kv = mx.kv.create(a.kv_store) if a.kv_store.startswith("dist") else None
    distributed.guard_worker(kv)
    n = kv.num_workers if kv is not None else 1
    net = get_model(a.model, **parse_kwargs(a.model_kwargs))
    net.initialize(mx.init.Xavier(magnitude=2))
    if not a.no_hybridize:
        net.hybridize(static_alloc=True, static_shape=True)
    rng = np.random.RandomState(kv.rank if kv is not None else 0)
    x = mx.nd.array(rng.uniform(-1, 1, (a.batch_size, 3, 32, 32)))
    classes = int(parse_kwargs(a.model_kwargs).get("classes", parse_kwargs(a.model_kwargs).get("num_classes", 10)))
    y = mx.nd.array(rng.randint(0, classes, a.batch_size))
    net(x).wait_to_read()
    params = {k: p for k, p in net.collect_params().items() if p.grad_req != "null"}
    param_bytes = sum(int(np.prod(p.shape)) * np.dtype(p.dtype).itemsize for p in params.values())
    trainer = gluon.Trainer(params, "sgd", {"learning_rate": 0.05, "momentum": 0.9, "wd": 1e-4},
                            kvstore=kv if kv is not None else "local")
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()

    def step():
        with autograd.record():
            loss = loss_fn(net(x), y)
        loss.backward()
        trainer.step(a.batch_size * n)

    for _ in range(a.warmup):
        step()
    mx.nd.waitall()
    if kv is not None:
        kv._barrier()
    lo0, t0 = lo_bytes(), time.perf_counter()
    for _ in range(a.steps):
        step()
    mx.nd.waitall()
    sec = time.perf_counter() - t0
    lo1 = lo_bytes()
    res = {"kv_store": a.kv_store, "rank": kv.rank if kv is not None else 0, "num_workers": n,
           "images": a.steps * a.batch_size, "seconds": sec, "param_bytes": param_bytes,
           "num_params": param_bytes // 4, "lo_bytes": (lo1 - lo0) if lo0 is not None and lo1 is not None else None,
           "omp_threads": os.environ.get("OMP_NUM_THREADS")}
    if kv is not None:
        kv._barrier()          # the others stop measuring before anyone leaves
    print(MARK + json.dumps(res), flush=True)
    return 0


# ---------------------------------------------------------------------------------------- driver
def _results(text):
    return [json.loads(line.split(MARK, 1)[1]) for line in text.splitlines() if MARK in line]


def run_config(a, workers, threads=None):
    me = [sys.executable, os.path.abspath(__file__), "--worker", "--model", a.model, "--model-kwargs",
          a.model_kwargs, "--batch-size", str(a.batch_size), "--warmup", str(a.warmup), "--steps",
          str(a.steps)] + (["--no-hybridize"] if a.no_hybridize else [])
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)          # local: mxrepro uses every core; dist: launcher splits
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    if workers == 0:
        cmd = me + ["--kv-store", "local"]
    else:
        cmd = [sys.executable, LAUNCH, "-n", str(workers), "-s", "1", "--loopback", "--timeout",
               str(a.timeout)] + me + ["--kv-store", "dist_sync"]
    tic = time.time()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    res = _results(r.stdout)
    if r.returncode != 0 or len(res) != max(1, workers):
        raise SystemExit("error: %s failed (exit %d):\n%s" % ("local" if workers == 0 else "%d workers" % workers,
                                                              r.returncode, r.stdout[-3000:]))
    images = sum(x["images"] for x in res)
    sec = max(x["seconds"] for x in res)
    lo = [x["lo_bytes"] for x in res if x["lo_bytes"] is not None]
    name = "local" if workers == 0 else "dist_sync x%d" % workers
    return {"config": name + (" (%d thread%s)" % (threads, "s" if threads > 1 else "") if threads else ""), "workers": max(1, workers),
            "img_s": images / sec, "seconds": sec, "wall_s": time.time() - tic,
            "omp_threads": res[0]["omp_threads"], "param_bytes": res[0]["param_bytes"],
            "comm_bytes_per_worker_step": 0 if workers == 0 else 2 * res[0]["param_bytes"],
            "lo_bytes_per_worker_step": (max(lo) / float(workers * a.steps)) if lo and workers else None}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--model", default="cifar_resnet", help="registry name (mxrepro.list_models())")
    ap.add_argument("--model-kwargs", default="blocks=3,channel_times=1,classes=10",
                    help="builder arguments k=v,...; the default is ResNet-20 for CIFAR-10")
    ap.add_argument("--batch-size", type=int, default=32, help="per worker")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps")
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--workers", default="1,2", help="dist_sync worker counts to run after `local`")
    ap.add_argument("--rounds", type=int, default=3, help="repetitions of every configuration, interleaved; "
                                                             "ratios use the best round")
    ap.add_argument("--timeout", type=float, default=900, help="per distributed job (tools/launch.py --timeout)")
    ap.add_argument("--no-hybridize", action="store_true")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--kv-store", default="local", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        return worker(a)

    cores = os.cpu_count() or 1
    load0 = os.getloadavg()
    print("model %s(%s), batch %d per worker, %d warm-up + %d timed steps, %d round(s), %d cores, load average %.1f"
          % (a.model, a.model_kwargs, a.batch_size, a.warmup, a.steps, a.rounds, cores, load0[0]), flush=True)
    counts = [int(w) for w in a.workers.split(",") if w.strip()]
    configs = [(0, None)] + ([(0, 1)] if cores > 1 else []) + [(w, None) for w in counts]
    if cores > 1 and 1 in counts:
        configs.insert(configs.index((1, None)) + 1, (1, 1))   # 1 worker on 1 core: per-core scaling
    plan = [(r, c) for r in range(a.rounds) for c in configs]   # interleaved: load drift hits all
    try:
        from tqdm import tqdm
        plan = tqdm(plan, desc="runs")
    except ImportError:
        pass
    runs = {c: [] for c in configs}
    for _, c in plan:
        runs[c].append(run_config(a, *c))
    rows = []
    for c in configs:
        rs = sorted(runs[c], key=lambda r: r["img_s"])
        row = dict(rs[len(rs) // 2])
        row["img_s_median"] = row["img_s"]
        row["img_s_best"] = rs[-1]["img_s"]
        row["img_s_all"] = [round(r["img_s"], 1) for r in runs[c]]
        rows.append(row)
    # Other jobs on the machine only ever slow a run down, so the best round is the least disturbed
    # estimate of each configuration's own speed; ratios use it (medians shown for the spread).
    base = rows[0]["img_s_best"]
    mb = 1024.0 * 1024.0
    print("\n| config | workers | threads/worker | images/s best | median | all rounds | best vs local | "
          "comm/worker/step computed | measured on lo |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        r["speedup"] = r["img_s_best"] / base
        print("| %s | %d | %s | %.1f | %.1f | %s | %.2fx | %s | %s |" % (
            r["config"], r["workers"], r["omp_threads"], r["img_s_best"], r["img_s_median"],
            " ".join(map(str, r["img_s_all"])), r["speedup"],
            "%.2f MB" % (r["comm_bytes_per_worker_step"] / mb) if r["comm_bytes_per_worker_step"] else "-",
            "%.2f MB" % (r["lo_bytes_per_worker_step"] / mb) if r["lo_bytes_per_worker_step"] else "-"))
    by = {r["config"]: r["img_s_best"] for r in rows}
    best_single = max(r["img_s_best"] for r in rows if r["config"].startswith("local"))
    for r in rows:
        if r["workers"] > 1:
            print("%s (best rounds): %.2fx the best single process (%.1f img/s)%s%s" % (
                r["config"], r["img_s_best"] / best_single, best_single,
                "; %.2fx one worker with all cores" % (r["img_s_best"] / by["dist_sync x1"])
                if "dist_sync x1" in by else "",
                "; %.2fx one worker with one thread" % (r["img_s_best"] / by["dist_sync x1 (1 thread)"])
                if "dist_sync x1 (1 thread)" in by else ""))
    p = rows[0]["param_bytes"]
    print("\nparameters: %d (%.2f MB float32); per worker per step: push %.2f MB of gradients + pull %.2f MB of "
          "weights" % (p // 4, p / mb, p / mb, p / mb))
    load1 = os.getloadavg()
    print("load average before/after: %.1f / %.1f on %d cores%s" % (
        load0[0], load1[0], cores, " -- the machine was busy; rerun on an idle machine for clean numbers"
        if max(load0[0], load1[0]) > cores else ""))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "cores": cores, "load": [load0, load1], "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
