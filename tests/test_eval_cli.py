"""``ofa eval geobench`` end to end on the toy GEO-Bench: two checkpoints side by side
(a random init and a real saved checkpoint read back with ``from_pretrained``)."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest


from ofa.pipeline.cli import main

FAST = ["--img-size", "32", "--patch-size", "8", "--max-samples", "16", "--probe-epochs", "20",
        "--seg-epochs", "3", "--decoder-channels", "16", "--batch-size", "16"]


def test_compare_writes_csv_markdown_png(geobench_root: Path, tmp_path: Path, capsys) -> None:
    from ofa.model import MaskedAutoencoder, ModelConfig, save_pretrained

    ckpt = tmp_path / "ckpt-multi"
    save_pretrained(MaskedAutoencoder(ModelConfig(size="tiny", img_size=32, patch_size=8)), str(ckpt))
    out = tmp_path / "out"
    rc = main(["eval", "geobench", "--root", str(geobench_root), "--compare", "random=random", f"multi={ckpt}",
               "--seeds", "2", "--out", str(out), *FAST])
    assert rc == 0
    runs = list(csv.DictReader(open(out / "geobench_runs.csv")))
    assert len(runs) == 2 * 3 * 2
    assert {(r["checkpoint"], r["task"]) for r in runs} == {
        (c, t) for c in ("random", "multi") for t in ("m-toy-s2", "m-toy-multilabel", "m-toy-seg")}
    summary = list(csv.DictReader(open(out / "geobench_results.csv")))
    assert len(summary) == 6 and {r["metric"] for r in summary} == {"accuracy", "f1_micro", "miou"}
    assert all(r["n_seeds"] == "2" for r in summary)
    for s in summary:  # each summary row is the mean and sample std of its two seeds' runs
        a, b = (float(r["value"]) for r in runs if (r["checkpoint"], r["task"]) == (s["checkpoint"], s["task"]))
        assert float(s["mean"]) == pytest.approx((a + b) / 2) and float(s["std"]) == pytest.approx(abs(a - b) / 2 ** 0.5)
    table = (out / "geobench_results.md").read_text()
    assert "| task | metric | protocol | random | multi |" in table
    rows = [line for line in table.splitlines() if line.startswith("| m-toy")]
    assert len(rows) == 3 and all(line.count(" ± ") == 2 for line in rows)
    png = (out / "geobench_results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert "m-toy-multilabel" in capsys.readouterr().out


def test_wavelength_embedding_single_task(geobench_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc = main(["eval", "geobench", "--root", str(geobench_root / "classification_v1.0"), "--checkpoint", "random",
               "--embedding", "wavelength", "--tasks", "m-toy-s2", "--partition", "0.25x_train", "--seeds", "1",
               "--out", str(out), *FAST])
    assert rc == 0
    (row,) = list(csv.DictReader(open(out / "geobench_runs.csv")))
    assert row["task"] == "m-toy-s2" and row["checkpoint"] == "random" and row["partition"] == "0.25x_train"
    assert float(row["value"]) > 0.4


def test_list_tasks(geobench_root: Path, capsys) -> None:
    assert main(["eval", "geobench", "--root", str(geobench_root), "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    seg = next(line for line in lines if line.startswith("m-toy-seg"))
    assert "segmentation" in seg and "64/24/40" in seg and "naip[4] zero-filled NIR" in seg


def test_bad_arguments(geobench_root: Path, tmp_path: Path, capsys) -> None:
    assert main(["eval", "geobench", "--root", str(geobench_root), "--checkpoint", "random", "--tasks", "m-nope",
                 "--out", str(tmp_path)]) == 2
    assert "unknown task(s) ['m-nope']" in capsys.readouterr().err
    assert main(["eval", "geobench", "--root", str(tmp_path), "--checkpoint", "random", "--out", str(tmp_path)]) == 3
    assert "no GEO-Bench task" in capsys.readouterr().err
    assert main(["eval", "geobench", "--root", str(geobench_root), "--out", str(tmp_path)]) == 2
    assert "--checkpoint PATH|random" in capsys.readouterr().err
    assert main(["eval", "geobench", "--root", str(geobench_root), "--checkpoint", "random"]) == 2
    assert "--out DIR is required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["eval", "geobench", "--help"])
    assert exc.value.code == 0 and "--partition" in capsys.readouterr().out


def test_a_bad_checkpoint_stops_before_any_task(geobench_root: Path, tmp_path: Path, capsys) -> None:
    """The checkpoint is checked once, up front: one line and the bad-input code, no task skipped one by one."""
    rc = main(["eval", "geobench", "--root", str(geobench_root), "--compare", "random=random", f"gone={tmp_path / 'gone'}",
               "--out", str(tmp_path / "out"), *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 3 and len(err) == 1, err
    assert err[0].startswith("ofa eval geobench: error: ") and "gone" in err[0] and "no config.json" in err[0]
    assert not (tmp_path / "out").exists()
