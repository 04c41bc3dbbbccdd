"""Every ``ofa`` command takes its options from flags, ``--config FILE.yaml`` and ``OFA_<COMMAND>__<OPTION>``
environment variables, typed by the same rules, and prints them with ``--print_config`` (jsonargparse over the
config dataclasses). No training runs here: ``parse`` is what ``main`` runs the command with."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ofa.pipeline.cli import main, parse
from ofa.pipeline.config import TrainConfig
from ofa.pipeline.options import build

DATA = Path(__file__).parent / "data"


def train_config(argv: list[str]) -> TrainConfig:
    args = parse(["train", *argv])
    assert args.command == "train"
    return build(TrainConfig, vars(args))


def print_config(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_print_config_is_a_config_that_loads_unchanged(tmp_path, capsys):
    argv = ["--data", "s3://b/one", "--data", "./two", "--size", "tiny", "--lr", "3e-4", "--weights", '{"naip": 2}',
            "--no-tensorboard", "--mixed-precision", "bf16", "--storage-options", '{"anon": true}']
    printed = print_config(["train", *argv, "--print_config"], capsys)
    assert "size: tiny" in printed and "tensorboard: false" in printed and "batch_size: 64" in printed
    (tmp_path / "printed.yaml").write_text(printed)
    assert train_config(["--config", str(tmp_path / "printed.yaml")]) == train_config(argv)
    assert print_config(["train", "--config", str(tmp_path / "printed.yaml"), "--print_config"], capsys) == printed
    defaults = print_config(["train", "--print_config"], capsys)  # every option, with its default
    (tmp_path / "defaults.yaml").write_text(defaults)
    assert train_config(["--config", str(tmp_path / "defaults.yaml")]) == TrainConfig()


def test_a_config_yaml_written_by_the_demo_before_jsonargparse_loads():
    """The run folder of an ``ofa demo`` from before: ``ofa train --config OUT/config.yaml`` reruns that run."""
    cfg = train_config(["--config", str(DATA / "demo_run_config_7a19066.yaml")])
    assert cfg == TrainConfig(data=["/tmp/demo_base/ofa-demo/dataset"], out="/tmp/demo_base/ofa-demo/train", size="tiny",
                              steps=300, batch_size=8, img_size=64, patch_size=8, lr=0.05, seed=0, save_every=150,
                              resume="auto", cpu=True)
    assert cfg.model_config({"naip": 4}).patch_size == 8 and cfg.loader_config(rank=1).batch_size == 8


def test_yaml_and_flags_give_the_same_typed_config(tmp_path):
    yaml_text = ("data: [a, s3://b/c]\nsize: small\nbatch-size: 4\nlr: 1.5e-4\nwarmup_steps: null\ncpu: yes\n"
                 "weights: {sentinel-2: 2, naip: 1}\ndataset_weights: [1, 0.5]\nmixed_precision: fp16\nclip: 0\n")
    (tmp_path / "c.yaml").write_text(yaml_text)
    from_yaml = train_config(["--config", str(tmp_path / "c.yaml")])
    from_flags = train_config(["--data", "a", "--data", "s3://b/c", "--size", "small", "--batch-size", "4", "--lr",
                               "1.5e-4", "--warmup-steps", "null", "--cpu", "--weights", "{sentinel-2: 2, naip: 1}",
                               "--dataset-weights", "[1, 0.5]", "--mixed-precision", "fp16", "--clip", "0"])
    assert from_yaml == from_flags
    assert from_yaml.lr == 1.5e-4 and isinstance(from_yaml.lr, float)  # YAML 1.1 reads 1.5e-4 as text; typed here
    assert from_yaml.weights == {"sentinel-2": 2.0, "naip": 1.0} and from_yaml.dataset_weights == [1.0, 0.5]
    assert isinstance(from_yaml.clip, float) and from_yaml.cpu is True and from_yaml.warmup_steps is None


def test_flags_win_over_the_file_wherever_they_stand_and_the_file_over_the_environment(tmp_path, monkeypatch):
    (tmp_path / "c.yaml").write_text("steps: 20\nsize: small\n")
    monkeypatch.setenv("OFA_TRAIN__STEPS", "7")
    monkeypatch.setenv("OFA_TRAIN__SIZE", "large")
    monkeypatch.setenv("OFA_TRAIN__DATA", "[s3://env/a, s3://env/b]")
    monkeypatch.setenv("OFA_TRAIN__CPU", "true")
    from_env = train_config([])
    assert (from_env.steps, from_env.size, from_env.data, from_env.cpu) == (7, "large", ["s3://env/a", "s3://env/b"], True)
    assert train_config(["--config", str(tmp_path / "c.yaml")]).steps == 20
    for argv in (["--steps", "5", "--config", str(tmp_path / "c.yaml")], ["--config", str(tmp_path / "c.yaml"), "--steps", "5"]):
        cfg = train_config(argv)
        assert (cfg.steps, cfg.size) == (5, "small")
    monkeypatch.setenv("OFA_TRAIN__STEPS", "many")
    assert main(["train"]) == 2


def test_other_commands_read_the_environment_too(monkeypatch):
    monkeypatch.setenv("OFA_MODEL__INFO__SIZE", "tiny")
    monkeypatch.setenv("OFA_EVAL__GEOBENCH__SEEDS", "1")
    assert parse(["model", "info"]).size == "tiny"
    assert parse(["eval", "geobench", "--root", "r"]).seeds == 1


@pytest.mark.parametrize("argv,key", [(["train"], "stepz"), (["ingest"], "chip_sise"), (["embed"], "pooling"),
                                      (["eval", "geobench"], "seedz")])
def test_an_unknown_key_is_one_line_naming_it_and_exit_2(argv, key, tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text(f"{key}: 3\n")
    assert main([*argv, "--config", str(tmp_path / "bad.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and err.startswith(f"ofa {' '.join(argv)}: error: ") and key in err


@pytest.mark.parametrize("argv,needle", [(["train", "--size", "huge"], "size"), (["train", "--steps", "1.5"], "steps"),
                                         (["train", "--bogus"], "--bogus"), (["ingest", "--bbox", "1,2,3"], "--bbox"),
                                         (["model", "info", "--storage-options", "{not json"], "storage_options")])
def test_a_bad_flag_value_is_one_line_and_exit_2(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and needle in err and "Traceback" not in err


def test_ingest_keys_as_before(tmp_path):
    """``collection`` or ``collections``, dashes or underscores, bands and bbox as text or lists."""
    (tmp_path / "a.yaml").write_text("catalog: http://x\ncollection: [s2, s1]\nmax-cloud: 30\nbands: B04,B08\n"
                                     "bbox: 1,2,3,4\nout: o\n")
    (tmp_path / "b.yaml").write_text("catalog: http://x\ncollections: [s2, s1]\nmax_cloud: 30.0\nbands: [B04, B08]\n"
                                     "bbox: [1, 2, 3, 4]\nout: o\n")
    a, b = (vars(parse(["ingest", "--config", str(tmp_path / f"{n}.yaml")])) for n in "ab")
    flags = vars(parse(["ingest", "--catalog", "http://x", "--collection", "s2", "--collection", "s1", "--max-cloud", "30",
                        "--bands", "B04,B08", "--bbox", "1,2,3,4", "--out", "o"]))
    assert a == b == flags
    assert a["collections"] == ["s2", "s1"] and a["bbox"] == [1.0, 2.0, 3.0, 4.0] and a["bands"] == ["B04", "B08"]


def test_accelerate_launch_modules_take_the_same_options(tmp_path):
    """``accelerate launch -m ofa.pipeline.train`` runs this module: the same parser, the same environment names."""
    (tmp_path / "c.yaml").write_text("steps: 9\n")
    env = {"OFA_TRAIN__BATCH_SIZE": "3", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "ofa.pipeline.train", "--config", str(tmp_path / "c.yaml"), "--size",
                          "tiny", "--print_config"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "steps: 9" in out.stdout and "size: tiny" in out.stdout and "batch_size: 3" in out.stdout
    out = subprocess.run([sys.executable, "-m", "ofa.pipeline.embed", "--checkpoint", "c", "--data", "d", "--out", "o",
                          "--print_config"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and "checkpoint: c" in out.stdout and "data:\n- d" in out.stdout, out.stderr


def test_the_model_and_loader_configs_are_built_from_the_options_of_their_names():
    """The one place TrainConfig's flat options become the model's and the loader's configs, field for field as
    training built them by hand before."""
    from ofa.model.config import ModelConfig
    from ofa.pipeline.data import LoaderConfig

    cfg = train_config(["--data", "a", "--data", "b", "--size", "small", "--embedding", "wavelength", "--img-size", "96",
                        "--patch-size", "8", "--mask-ratio", "0.6", "--seed", "4", "--batch-size", "3", "--shuffle-buffer",
                        "9", "--resampled", "--weights", "{naip: 2}", "--dataset-weights", "[1, 2]", "--device-augment",
                        "--storage-options", '{"anon": true}'])
    assert cfg.model_config({"naip": 4}) == ModelConfig(size="small", embedding="wavelength", img_size=96, patch_size=8,
                                                        modalities={"naip": 4}, mask_ratio=0.6)
    assert cfg.loader_config(rank=1, world_size=2, skip_batches=5) == LoaderConfig(
        data=["a", "b"], batch_size=3, img_size=96, seed=4, shuffle_buffer=9, resampled=True, weights={"naip": 2.0},
        dataset_weights=[1.0, 2.0], storage_options={"anon": True}, rank=1, world_size=2, skip_batches=5,
        device_augment=True)


@pytest.mark.parametrize("argv", [
    ["demo", "--steps", "3", "--no-progress"],
    ["ingest", "--catalog", "http://x", "--collection", "a", "--bbox", "1,2,3,4", "--bands", "B04", "--out", "o"],
    ["manifest", "verify", "s3://b/ds", "--storage-options", '{"anon": true}'],
    ["manifest", "show", "ds", "--json"],
    ["eval", "geobench", "--root", "r", "--compare", "a=b", "c=d", "--epochs", "2"],
    ["model", "info", "--size", "tiny"],
    ["model", "export", "--checkpoint", "c", "--format", "hf", "--out", "o"],
    ["embed", "--checkpoint", "c", "--data", "d", "--out", "o.parquet", "--no-progress"],
])
def test_every_command_prints_a_config_it_loads_unchanged(argv, tmp_path, capsys):
    words = [a for a in argv[:2] if not a.startswith("-") and a in ("demo", "ingest", "manifest", "verify", "show", "eval",
                                                                   "geobench", "model", "info", "export", "embed")]
    printed = print_config([*argv, "--print_config"], capsys)
    (tmp_path / "c.yaml").write_text(printed)
    assert parse([*words, "--config", str(tmp_path / "c.yaml")]) == parse(argv)
