"""The engine's pieces against closed forms: LR schedules (FBN slow-start, gluon-cv warm-up/step/cosine,
per-epoch cosine = PyTorch CosineAnnealingLR, the original FBN epoch size), the MXNet-0.x NAG, the
name-rule multipliers, checkpoints (atomic, self-describing, the original FBN files), the gluon-cv
label helpers, the sharded sampler and the command-line helpers."""
import json
import math
import os

import mxnet as mx
import numpy as np
import pytest
from mxnet import nd

from mxrepro.cli import HelpFormatter, device_count, pasteable
from mxrepro.data import ShardedShuffleSampler
from mxrepro.engine import NAGOriginal, OptimizerSpec, ParamRule, ScheduleSpec, build_schedule, make_optimizer, multipliers
from mxrepro.engine.checkpoint import Checkpointer, atomic_write
from mxrepro.engine.steps import mixup_labels, smooth_labels


def _seq(spec, lr, epochs, upe):
    s = build_schedule(spec, lr, epochs, upe)
    return [s(u) for u in range(1, epochs * upe + 1)]  # MXNet passes the 1-based update count


# ------------------------------------------------------------------------------------------------
# Schedules
# ------------------------------------------------------------------------------------------------
def fbn_closed_form(t, epoch_size, base, steps, slowstart, scale):
    """docs/reference/fbn.md §3.1 for the 0-based global iteration t: linear ramp from scale*base over `slowstart`
    epochs, then x0.1 at every ABSOLUTE epoch in `steps` (epoch-wise bookkeeping)."""
    epoch, within = divmod(t, epoch_size)
    if epoch < slowstart:
        return base * (scale + (1 - scale) * (epoch * epoch_size + within) / float(slowstart * epoch_size))
    return base * 0.1 ** sum(1 for s in steps if epoch >= s)


@pytest.mark.parametrize("slowstart,steps", [(3, [5, 8]), (0, [2]), (2, []), (1, [1, 4])])
def test_fbn_slow_start_closed_form_and_resume(slowstart, steps):
    es, base, scale, total = 7, 0.2, 0.1, 10
    spec = ScheduleSpec("step", decay_epochs=steps, factor=0.1, warmup_epochs=slowstart, warmup_lr=scale * base,
                        warmup_mode="slowstart")
    seq = _seq(spec, base, total, es)
    np.testing.assert_allclose(seq, [fbn_closed_form(t, es, base, steps, slowstart, scale) for t in range(es * total)],
                               rtol=1e-12)
    # a resumed optimizer counts on from the checkpoint's update: the same values
    s = build_schedule(spec, base, total, es)
    for begin in range(1, total):
        np.testing.assert_allclose([s(es * begin + u) for u in range(1, es * (total - begin) + 1)], seq[es * begin:])


def test_schedule_driven_by_mxnet_optimizer():
    """MXNet's SGD calls the scheduler with num_update starting at 1: the first update uses the warm-up's
    start value and the sequence advances once per step."""
    sched = build_schedule(ScheduleSpec("step", [3], warmup_epochs=2, warmup_lr=0.05, warmup_mode="slowstart"), 0.5,
                           5, 4)
    opt = mx.optimizer.create("sgd", learning_rate=0.5, momentum=0.9, lr_scheduler=sched)
    upd = mx.optimizer.get_updater(opt)
    w, g = mx.nd.ones((3,)), mx.nd.ones((3,))
    seen = []
    for _ in range(16):
        upd(0, g, w)
        seen.append(sched.last[1])
    np.testing.assert_allclose(seen, [fbn_closed_form(t, 4, 0.5, [3], 2, 0.1) for t in range(16)])


def test_warmup_cosine_values():
    # 5 warm-up + 95 cosine epochs at 10 it/epoch -> 0, .204, .4, .200, 0 at 0/25/50/525/999 (docs/reference/mxnet.md §2)
    lrs = _seq(ScheduleSpec("cosine", warmup_epochs=5), 0.4, 100, 10)
    np.testing.assert_allclose([lrs[i] for i in (0, 25, 50, 525, 999)], [0, 0.2041, 0.4, 0.1997, 0], atol=1e-4)
    assert max(lrs) == pytest.approx(0.4) and all(b <= a + 1e-12 for a, b in zip(lrs[50:], lrs[51:]))


def test_step_decays_at_the_given_epochs_and_the_original_shift():
    ipe = 4
    by_epoch = lambda lrs: [lrs[e * ipe:(e + 1) * ipe] for e in range(10)]  # noqa: E731
    ep = by_epoch(_seq(ScheduleSpec("step", (5, 8), warmup_epochs=2), 1.0, 10, ipe))
    assert ep[0][0] == 0 and ep[1][-1] == pytest.approx(1.0)
    assert all(v == 1.0 for e in (2, 3, 4) for v in ep[e])
    assert all(v == pytest.approx(0.1) for e in (5, 6, 7) for v in ep[e])
    assert all(v == pytest.approx(0.01) for e in (8, 9) for v in ep[e])
    # the AFF CIFAR script's bug (docs/reference/aff.md §3.2): decays moved earlier by the warm-up length
    lrs = _seq(ScheduleSpec("step", (5, 8), warmup_epochs=2, decay_shift=2), 1.0, 10, ipe)
    assert lrs[3 * ipe] == pytest.approx(0.1) and lrs[3 * ipe - 1] == 1.0 and lrs[6 * ipe] == pytest.approx(0.01)
    with pytest.raises(ValueError):
        build_schedule(ScheduleSpec("step", (3,), warmup_epochs=5), 0.1, 10, 4)


def test_per_epoch_cosine_is_pytorch_cosine_annealing():
    ipe, E = 3, 6
    lrs = _seq(ScheduleSpec("cosine", per="epoch"), 0.1, E, ipe)
    for e in range(E):
        want = 0.05 * (1 + math.cos(math.pi * e / E))
        assert all(v == pytest.approx(want, abs=1e-12) for v in lrs[e * ipe:(e + 1) * ipe])


def test_original_fbn_epoch_size_decays_at_39000_and_58500():
    """CIFAR at batch 128: the original counted floor(50000/128) = 390 updates per epoch while its
    iterator made 391 batches, so --lr-step 100,150 decays at updates 39,000 / 58,500; counting the
    iterator's batches (the default) decays at 39,100 / 58,650 (1-based: the first update at the new rate)."""
    steps = ScheduleSpec("step", (100, 150), warmup_epochs=3, warmup_lr=0.01, warmup_mode="slowstart")
    orig = build_schedule(steps, 0.1, 200, 50000 // 128)
    ours = build_schedule(steps, 0.1, 200, int(math.ceil(50000 / 128)))
    assert [u for u, _ in orig.changes(200)] == [1171, 39001, 58501]
    assert orig(39000) == pytest.approx(0.1) and orig(39001) == pytest.approx(0.01)
    assert orig(58500) == pytest.approx(0.01) and orig(58501) == pytest.approx(0.001)
    assert [u for u, _ in ours.changes(200)] == [1174, 39101, 58651]


# ------------------------------------------------------------------------------------------------
# Optimizers
# ------------------------------------------------------------------------------------------------
def test_nag_original_equals_the_mxnet0_formula_across_an_lr_change():
    """20 steps, LR 0.1 then 0.01 from step 11, wd 1e-3, clipping at 0.5, rescale 1/4: the optimizer
    equals mom = mu*mom + (g + wd*w); w -= lr*(g + wd*w + mu*mom) with g = clip(rescale*grad)."""
    rs = np.random.RandomState(0)
    w0 = rs.randn(5, 3).astype(np.float32)
    grads = [rs.randn(5, 3).astype(np.float32) * 3 for _ in range(20)]
    sched = build_schedule(ScheduleSpec("step", (10,)), 0.1, 20, 1)
    opt = make_optimizer(OptimizerSpec("nag_original", 0.9, 1e-3, clip_gradient=0.5), 0.1, sched, 0.25)
    assert isinstance(opt, NAGOriginal)
    upd = mx.optimizer.get_updater(opt)
    w = mx.nd.array(w0)
    ref_w, mom = w0.astype(np.float64), np.zeros_like(w0, dtype=np.float64)
    stock_w = mx.nd.array(w0)
    stock = mx.optimizer.get_updater(make_optimizer(OptimizerSpec("nag", 0.9, 1e-3, clip_gradient=0.5), 0.1,
                                                    build_schedule(ScheduleSpec("step", (10,)), 0.1, 20, 1), 0.25))
    for i, g in enumerate(grads):
        upd(0, mx.nd.array(g), w)
        stock(0, mx.nd.array(g), stock_w)
        lr = 0.1 if i < 10 else 0.01
        gg = np.clip(0.25 * g, -0.5, 0.5) + 1e-3 * ref_w
        mom = 0.9 * mom + gg
        ref_w = ref_w - lr * (gg + 0.9 * mom)
        np.testing.assert_allclose(w.asnumpy(), ref_w, rtol=1e-5, atol=1e-6, err_msg="step %d" % i)
    # stock NAG is a different update once the rate has changed
    assert np.abs(stock_w.asnumpy() - ref_w).max() > 1e-3


def test_multipliers_by_name_rules():
    names = ["conv0_weight", "conv0_bias", "bn0_gamma", "bn0_beta", "bilinear1_weight", "cifar_fc8_weight"]
    rules = [ParamRule(r"(_bias|_gamma|_beta)$", wd_mult=0.0), ParamRule(r"^bilinear", lr_mult=0.1),
             ParamRule("cifar", lr_mult=0.0, invert=True)]
    wd, lr = multipliers(names, rules)
    assert wd == {"conv0_bias": 0.0, "bn0_gamma": 0.0, "bn0_beta": 0.0}
    assert lr == {n: 0.0 for n in names if "cifar" not in n}  # --freeze wins over --fmconv (later rule)
    assert multipliers(names, []) == ({}, {})


# ------------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------------
class _FakeStep:
    can_save_states = True

    def __init__(self, value):
        self.value = value

    def save_params(self, p):
        mx.nd.save(p, {"arg:w": mx.nd.array([self.value])})

    def save_states(self, p):
        open(p, "wb").write(b"states%d" % self.value)

    def write_extras(self, base):
        pass


def test_checkpoints_are_self_describing_and_a_broken_one_is_skipped(tmp_path):
    ck = Checkpointer(str(tmp_path), "run", _FakeStep(1))
    ck.save(["latest", "0001"], {"epoch": 1, "num_update": 10, "best": {"top1": 0.5, "epoch": 1}})
    assert os.stat(ck.path("latest", ".params")).st_ino != os.stat(ck.path("0001", ".params")).st_ino  # copies
    ck.step = _FakeStep(2)
    ck.save("latest", {"epoch": 2, "num_update": 20})
    assert mx.nd.load(ck.path("0001", ".params"))["arg:w"].asscalar() == 1
    m = ck.find_resume()
    assert m["epoch"] == 2 and m["params_path"].endswith("run-latest.params") and not ck.rejected
    # a params file that does not match its description: the next newest, and the reason in one line
    open(ck.path("latest", ".params"), "ab").write(b"x")
    m = ck.find_resume()
    assert m["tag"] == "0001" and m["epoch"] == 1
    assert ck.rejected_line().startswith("latest is incomplete (run-latest.params has ")
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def test_tags_are_independent_files_and_best_is_a_fallback(tmp_path):
    ck = Checkpointer(str(tmp_path), "run", _FakeStep(3))
    ck.save(["latest", "best", "0003"], {"epoch": 3, "num_update": 30, "best": {"top1": 0.7, "epoch": 3}})
    for tag in ("latest", "best", "0003"):
        assert json.load(open(ck.path(tag, ".json")))["files"]["params"]["name"] == "run-%s.params" % tag
    open(ck.path("latest", ".params"), "wb").close()  # truncating one leaves the others
    assert os.path.getsize(ck.path("best", ".params")) > 0 and ck.read("best") and ck.read("0003")
    os.remove(ck.path("0003", ".json"))
    os.remove(ck.path("0003", ".params"))
    m = ck.find_resume()
    assert m["tag"] == "best" and m["epoch"] == 3 and "latest" in ck.rejected


def _journal_interrupted(tmp_path, at):
    """Save epoch 1, then kill (simulated) the epoch-2 save just before its file step ``at``."""
    from mxrepro.engine import checkpoint as C
    ck = Checkpointer(str(tmp_path), "run", _FakeStep(1))
    ck.save(["latest", "0001"], {"epoch": 1, "num_update": 10})
    ck.step = _FakeStep(2)

    class Killed(BaseException):
        pass
    calls = [0]

    def fault():
        calls[0] += 1
        if calls[0] == at:
            raise Killed()
    old, C._fault_point = C._fault_point, fault
    old_remove = os.remove
    try:  # a real kill cleans nothing up: keep the temporary files
        os.remove = lambda p: None if os.path.basename(p).startswith(".tmp-") else old_remove(p)
        with pytest.raises(Killed):
            ck.save(["latest", "best", "0002"], {"epoch": 2, "num_update": 20})
    finally:
        C._fault_point, os.remove = old, old_remove
    return ck


def test_commit_steps_counts_every_fault_point(tmp_path):
    from mxrepro.engine import checkpoint as C
    calls = [0]
    old, C._fault_point = C._fault_point, lambda: calls.__setitem__(0, calls[0] + 1)
    try:
        Checkpointer(str(tmp_path), "run", _FakeStep(1)).save(["latest", "best", "0001"], {"epoch": 1})
        n3 = calls[0]
        Checkpointer(str(tmp_path), "run", _FakeStep(1)).save("latest", {"epoch": 1})
    finally:
        C._fault_point = old
    assert n3 == C.commit_steps(3) and calls[0] - n3 == C.commit_steps(1)


@pytest.mark.parametrize("at", range(1, 24))
def test_journal_rolls_forward_or_back_at_every_step(tmp_path, at):
    """A write killed at any file step: after recover() every tag is the old state or the new one, the
    newest valid checkpoint is epoch 1 (before the commit point) or epoch 2 (after it), no temporary files."""
    from mxrepro.engine.checkpoint import commit_steps
    assert commit_steps(3) == 23
    ck = _journal_interrupted(tmp_path, at)
    committed = at > 12  # step 12 is the journal's rename, the commit point
    assert os.path.exists(ck.journal) == committed
    msg = ck.recover()
    assert not os.path.exists(ck.journal) and not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]
    assert (msg is not None) == committed and (not committed or msg.startswith("completed"))
    m = ck.find_resume()
    assert not ck.rejected, ck.rejected
    assert m["epoch"] == (2 if committed else 1)
    for tag in ("latest", "best", "0002"):
        r = ck.read(tag)
        assert r is None if not committed and tag != "latest" else r["epoch"] == (2 if committed else 1)
        if r is not None:
            assert mx.nd.load(r["params_path"])["arg:w"].asscalar() == r["epoch"]


def test_a_journal_with_a_broken_file_is_discarded(tmp_path):
    ck = _journal_interrupted(tmp_path, 15)  # committed, two renames done (latest.params, latest.states)
    j = json.load(open(ck.journal))
    pending = [e for e in j["renames"] if os.path.exists(os.path.join(str(tmp_path), e["tmp"]))]
    open(os.path.join(str(tmp_path), pending[0]["tmp"]), "ab").write(b"!")
    assert "discarded" in ck.recover()
    assert not os.path.exists(ck.journal)
    m = ck.find_resume()  # whatever was renamed no longer matches its old description: epoch 1 survives
    assert m["epoch"] == 1 and m["tag"] == "0001"


def test_recover_removes_only_this_prefixs_temporary_files(tmp_path):
    names = [".tmp-run-latest.params.0a1b2c3d", ".tmp-run-0004.json.00ff00ff", ".tmp-run-journal.12345678",
             ".tmp-run-symbol.json.9abcdef0", ".tmp-run-warm-latest.params.0a1b2c3d", ".tmp-runx-best.states.0a1b2c3d",
             "run-latest.params"]
    for n in names:
        open(str(tmp_path / n), "wb").close()  # zero-byte, as a kill right after creating them leaves them
    assert Checkpointer(str(tmp_path), "run", None).recover() is None
    assert sorted(os.listdir(tmp_path)) == sorted(names[4:])


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path):
    """The API for disk-full handling: the original OSError, no temporary files, the old latest valid."""
    import errno
    ck = Checkpointer(str(tmp_path), "run", _FakeStep(1))
    ck.save("latest", {"epoch": 1})
    before = open(ck.path("latest", ".params"), "rb").read()

    class Full(_FakeStep):
        def save_states(self, p):
            open(p, "wb").write(b"half")
            raise OSError(errno.ENOSPC, "No space left on device", p)
    ck.step = Full(2)
    with pytest.raises(OSError) as e:
        ck.save(["latest", "best"], {"epoch": 2})
    assert e.value.errno == errno.ENOSPC
    assert sorted(os.listdir(tmp_path)) == ["run-latest.json", "run-latest.params", "run-latest.states"]
    assert ck.read("latest")["epoch"] == 1 and open(ck.path("latest", ".params"), "rb").read() == before


def test_run_lock_refuses_a_second_holder_and_takes_over_a_dead_ones(tmp_path):
    import subprocess
    import sys
    from mxrepro.engine.checkpoint import RunLock
    a = RunLock(str(tmp_path), "run")
    assert a.acquire("first") is None
    with pytest.raises(BlockingIOError) as e:
        RunLock(str(tmp_path), "run").acquire("second")
    assert e.value.holder["pid"] == os.getpid() and e.value.holder["command"] == "first"
    assert RunLock(str(tmp_path), "run").active()["command"] == "first"
    assert RunLock(str(tmp_path), "other").acquire("x") is None  # another prefix in the same folder
    a.release()
    assert not os.path.exists(a.path)
    # a process that dies holding the lock: its file stays, the lock does not
    code = "from mxrepro.engine.checkpoint import RunLock; import os; RunLock(%r, 'run').acquire('dead'); os._exit(9)"
    assert subprocess.run([sys.executable, "-c", code % str(tmp_path)]).returncode == 9
    assert RunLock(str(tmp_path), "run").active() is None
    b = RunLock(str(tmp_path), "run")
    assert b.acquire("new")["command"] == "dead"
    b.release()


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path):
    p = tmp_path / "f.txt"
    p.write_text("old")

    def boom(tmp):
        open(tmp, "w").write("half")
        raise RuntimeError("crash")
    with pytest.raises(RuntimeError):
        atomic_write(str(p), boom)
    assert p.read_text() == "old" and os.listdir(tmp_path) == ["f.txt"]


def test_original_fbn_checkpoint_is_resumed_from_its_epoch(tmp_path):
    """A checkpoint of the original scripts (model/<prefix>-NNNN.params + -symbol.json written by
    mx.model.save_checkpoint, no description) is found with its epoch and loads with MXNet's reader."""
    import symbols
    sym = symbols.get_symbol("resnet-small", num_classes=4, res_module_num=1)
    mod = mx.mod.Module(sym, context=mx.cpu())
    mod.bind(data_shapes=[("data", (2, 3, 32, 32))], label_shapes=[("softmax_label", (2,))])
    mod.init_params(mx.init.Xavier())
    arg, aux = mod.get_params()
    mx.model.save_checkpoint(str(tmp_path / "orig"), 7, sym, arg, aux)
    m = Checkpointer(str(tmp_path), "orig", None).find_resume()
    assert m["epoch"] == 7 and m["foreign"] and m["states_path"] is None
    from mxrepro.engine.steps import ModuleStep, load_module_params
    a2, x2 = load_module_params(m["params_path"])
    assert sorted(a2) == sorted(arg) and sorted(x2) == sorted(aux)
    step = ModuleStep(sym, [mx.cpu()], 2, (3, 32, 32))
    step.initialize("xavier_fbn", m["params_path"])
    got, _ = step.mod.get_params()
    for k in arg:
        np.testing.assert_array_equal(got[k].asnumpy(), arg[k].asnumpy())
    # and the engine's own NNNN files are readable by mx.model.load_checkpoint
    step.write_extras(str(tmp_path / "ours"))
    step.save_params(str(tmp_path / "ours-0003.params"))
    s3, a3, x3 = mx.model.load_checkpoint(str(tmp_path / "ours"), 3)
    assert s3.tojson() == sym.tojson() and sorted(a3) == sorted(arg)


# ------------------------------------------------------------------------------------------------
# Small pieces
# ------------------------------------------------------------------------------------------------
def test_label_helpers_closed_form():
    y = nd.array([0, 2, 1])
    s = smooth_labels(y, 4, 0.1).asnumpy()
    np.testing.assert_allclose(s[1], [0.025, 0.025, 0.925, 0.025], rtol=1e-6)
    m = mixup_labels(y, 3, lam=0.7).asnumpy()
    np.testing.assert_allclose(m, [[0.7, 0.3, 0], [0, 0, 1], [0.3, 0.7, 0]], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(mixup_labels(y, 4, 0.6, 0.1).asnumpy().sum(axis=1), 1.0, rtol=1e-6)


def test_sharded_sampler_disjoint_equal_deterministic():
    parts = [list(ShardedShuffleSampler(103, num_parts=4, part_index=i, seed=5)) for i in range(4)]
    assert all(len(p) == 25 for p in parts)
    flat = sum(parts, [])
    assert len(set(flat)) == len(flat) and max(flat) < 103
    s = ShardedShuffleSampler(103, seed=5)
    s.set_epoch(1)
    a = list(s)
    s.set_epoch(1)
    assert list(s) == a
    s.set_epoch(2)
    assert list(s) != a
    assert list(ShardedShuffleSampler(7, shuffle=False)) == list(range(7))


def test_help_formatter_states_each_default_once():
    import argparse
    p = argparse.ArgumentParser(formatter_class=HelpFormatter)
    p.add_argument("--a", type=int, default=2, help="data workers")
    p.add_argument("--b", default="x", help="folder (default: data/x)")
    p.add_argument("--c", action="store_true", help="switch")
    h = p.format_help()
    assert "data workers (default: 2)" in h and h.count("default") == 2 and "switch (default" not in h


def test_cli_helpers():
    from mxrepro.cli import parse_kw
    assert parse_kw(["alpha=4", "se=True", "widths=(64,128)", "name=x", "on=true"]) == dict(
        alpha=4, se=True, widths=(64, 128), name="x", on=True)
    with pytest.raises(ValueError, match="--kw expects KEY=VALUE"):
        parse_kw(["alpha"])
    assert device_count("") == 1 and device_count("0,1,3") == 3 and device_count(None) == 1
    assert pasteable(["python", "a.py", "--gpus", "", "--x", "a b"]) == "python a.py --gpus '' --x 'a b'"


def test_one_fb_mac_rule_closed_form_for_k_above_1():
    """FMConvolution1/3 with a 3x3 kernel, stride 2, pad 1: (F+1)·C·kh·kw multiply-adds per output
    element (the F factor projections and the diagonal term over the whole patch)."""
    import mxrepro.ops  # noqa: F401
    from mxrepro import flops
    B, C, H, N, F = 2, 5, 9, 6, 4
    for op in ("FMConvolution1", "FMConvolution3"):
        sym = getattr(mx.sym, op)(data=mx.sym.var("data"), num_filter=N, num_factor=F, kernel=(3, 3), stride=(2, 2),
                                  pad=(1, 1), name="fb")
        rep = flops.count_macs(sym, (B, C, H, H))
        out = (H + 2 - 3) // 2 + 1
        assert rep["macs"] == B * N * out * out * (F + 1) * C * 3 * 3, op
        assert flops.count_params(sym, (B, C, H, H))[0] == N * F * C * 9 + N
