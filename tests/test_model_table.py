"""tools/model_table.py: counts against the papers' printed numbers.

Runs the tool on small subsets (the full table, ~40 s on 2 cores, is the slow test) and checks
that an injected wrong printed number makes it fail while an explained one only carries a note."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from tools import model_table as mt  # noqa: E402


def test_subset_matches_and_writes_markdown(tmp_path):
    out = tmp_path / "table.md"
    rc = mt.main(["--models", "resnet-small-fmconv", "bl_resnet50_a4_b4", "aff_cifar_resnet", "--out", str(out),
                  "--quiet"])
    assert rc == 0
    text = out.read_text()
    # independent closed forms: FB head adds N*F*C + N params (docs/reference/fbn.md §4.5) -> 1.739M + 100*20*256+100
    assert "| ResNet-164-FBN (n=18, F=20) | `resnet-small-fmconv` (num_classes=100, res_module_num=18) | 32 | 2.251 |" \
        in text
    assert "known: paper-v1" in text          # AFF-ResNet-32 '5.0M' carries its note
    assert "Unexplained mismatches: none" in text


def test_counts_are_consistent_with_closed_forms():
    base = mt.count_row("resnet-small", dict(res_module_num=18, num_classes=100), 32)
    fbn = mt.count_row("resnet-small-fmconv", dict(res_module_num=18, num_classes=100), 32)
    # FBN head replaces FC(256->100) by FB (100*20*256 + 100) + 1x1 conv (256*100 + 100): same linear part
    assert round((fbn["params"] - base["params"]) * 1e6) == 100 * 20 * 256 + 100
    assert abs(fbn["fb_params"] * 1e6 - (100 * 20 * 256 + 100)) < 0.5
    # FB MACs: 8*8 positions * 100 classes * (F*C + C); linear 1x1 conv 8*8*100*256 vs FC 256*100
    extra = (fbn["gmacs"] - base["gmacs"]) * 1e9
    assert round(extra) == 64 * 100 * (20 * 256 + 256) + 64 * 100 * 256 - 256 * 100


def test_bcnn_row_counts_bilinear_pooling():
    """B-CNN row: same body as Inception-BN-small; the FC reads C*C = 336^2 values and the bilinear
    pooling (batch_dot) costs C*C*HW multiply-adds on the 8 x 8 map."""
    assert any(r[1] == "inception-bn-small-bilinear" for r in mt.FBN_ROWS)
    base = mt.count_row("inception-bn-small", dict(num_classes=100), 32)
    bcnn = mt.count_row("inception-bn-small-bilinear", dict(num_classes=100), 32)
    c, n, hw = 336, 100, 64
    assert round((bcnn["params"] - base["params"]) * 1e6) == (c * c - c) * n
    assert round((bcnn["gmacs"] - base["gmacs"]) * 1e9) == c * c * hw + (c * c - c) * n


def test_injected_mismatch_fails(monkeypatch, capsys):
    rows = mt.all_rows(("blnet",), ["bl_resnet50_a4_b2"])
    assert rows and rows[0][4], "bl_resnet50_a4_b2 has printed numbers in its registry cfg"
    label, name, kw, size, checks = rows[0]
    bad = checks + [dict(what="params", value=30.1, digits=1, source="injected")]
    results, failures = mt.build_table([(label, name, kw, size, bad)], progress=False)
    assert len(failures) == 1 and "injected" in failures[0]
    # the same difference with an explanation is not a failure
    noted = checks + [dict(what="params", value=30.1, digits=1, source="injected", note="explained")]
    _, failures = mt.build_table([(label, name, kw, size, noted)], progress=False)
    assert failures == []
    # and through the command line: exit status 1
    monkeypatch.setitem(mt.EXTRA_CHECKS, "bl_resnet50_a4_b2",
                        [dict(what="gmacs", value=2.6, digits=2, source="injected")])
    assert mt.main(["--models", "bl_resnet50_a4_b2", "--check-only", "--quiet"]) == 1
    assert "unexplained mismatch" in capsys.readouterr().err


def test_judge_rounding_and_truncation():
    assert mt.judge({"params": 30.354}, dict(what="params", value=30.4, digits=1)) == (True, "matches")
    assert mt.judge({"params": 30.354}, dict(what="params", value=30.3, digits=1)) == (True, "matches (truncated)")
    ok, text = mt.judge({"params": 30.354}, dict(what="params", value=30.2, digits=1))
    assert not ok and text.startswith("differs by +0.15")


@pytest.mark.slow
def test_full_table():
    assert mt.main(["--check-only", "--quiet"]) == 0
