"""Config files and overrides: values land where they should; mistakes get one clear line."""

from pathlib import Path

import pytest

from symclr_ft.config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SEED_EXPERIMENTS = {
    # name: (temperature, weight_decay, aug_strength, scheduler)
    "baseline": (0.07, 1e-4, 1.0, "cosine"),
    "high_temp": (0.5, 1e-4, 1.0, "cosine"),
    "low_temp": (0.01, 1e-4, 1.0, "cosine"),
    "strong_aug": (0.07, 1e-4, 1.5, "cosine"),
    "no_scheduler": (0.07, 1e-4, 1.0, "none"),
    "high_wd": (0.07, 1e-3, 1.0, "cosine"),
    "low_wd": (0.07, 1e-5, 1.0, "cosine"),
}


@pytest.mark.parametrize("name", sorted(SEED_EXPERIMENTS))
def test_seed_experiments_have_the_seeds_values(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert (cfg.loss.temperature, cfg.optim.weight_decay, cfg.views.aug_strength, cfg.optim.scheduler) == SEED_EXPERIMENTS[name]
    assert (cfg.model.arch, cfg.data.image_size, cfg.data.batch_size, cfg.train.epochs) == ("resnet18", 224, 32, 50)
    assert (cfg.model.out_dim, cfg.optim.lr, cfg.optim.hold_epochs) == (128, 3e-4, 10)
    assert cfg.run.name == name


def test_every_config_file_loads():
    for path in CONFIGS.glob("*.yaml"):
        load_config(path)


def test_overrides_use_the_same_dotted_names():
    cfg = load_config(CONFIGS / "baseline.yaml", ["optim.lr=1e-3", "--train.epochs=2", "views.preset=drawing", "train.eval_every=0"])
    assert (cfg.optim.lr, cfg.train.epochs, cfg.views.preset, cfg.train.eval_every) == (1e-3, 2, "drawing", 0)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("optim.lrr=1", "unknown key optim.lrr (valid in optim: lr, weight_decay"),
        ("optimizer.lr=1", "unknown section optimizer"),
        ("optim.lr=0", "optim.lr=0.0 must be > 0"),
        ("optim.lr=-1e-3", "must be > 0"),
        ("loss.temperature=0", "loss.temperature=0.0 must be > 0"),
        ("loss.infonce_weight=-1", "loss.infonce_weight=-1.0 must be >= 0"),
        ("loss.infonce_weight=0.5", "applies to loss.name=supcon only"),
        ("train.epochs=1.5", "train.epochs: expected an integer"),
        ("train.epochs=abc", "expected an integer"),
        ("loss.name=triplet", "is not one of infonce, supcon"),
        ("model.channels_last=3", "expected true or false"),
        ("model.init=simclr", "needs a file path"),
        ("optim.lr=nan", "finite"),
        ("lr=3", "expected section.key=value"),
        # every check happens when the config loads, before anything runs
        ("run.name=", "must be a plain folder name"),
        ("run.name=..", "must be a plain folder name"),
        ("run.name=a/b", "must be a plain folder name"),
        ("eval.split=train", "eval.split=train is the training split"),
        ("data.streaming=true", "set loss.mask_same_class=true"),
        ("views.crop_scale_min=0", "must be in (0, 1]"),
        ("views.grayscale_p=2", "must be a probability in [0, 1]"),
        ("eval.image_size=8", "must be 0 (same as training) or >= 16"),
        ("data.batch_size=1", "must be at least 2"),
    ],
)
def test_bad_values_are_one_line_errors(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS / "baseline.yaml", [override])
    message = str(err.value)
    assert fragment in message and "\n" not in message


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML at line"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(bad)


def test_bare_no_in_yaml_means_the_string_no(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  mixed_precision: no\n")
    assert load_config(path).train.mixed_precision == "no"
    assert load_config(None, ["train.mixed_precision=no"]).train.mixed_precision == "no"


def test_exponent_without_a_dot_is_a_number(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1e-3\nrun:\n  name: nan\n")
    cfg = load_config(path)
    assert cfg.optim.lr == 1e-3 and cfg.run.name == "nan"


def test_a_seed_variant_states_only_what_differs_from_its_base(tmp_path):
    variant = load_config(CONFIGS / "high_temp.yaml")
    base = load_config(CONFIGS / "baseline.yaml", ["loss.temperature=0.5", "run.name=high_temp"])
    assert variant == base
    assert "base:" in (CONFIGS / "high_temp.yaml").read_text()


def test_base_is_resolved_relative_to_the_file_and_the_resolved_config_is_written(tmp_path):
    from symclr_ft.config import dump_config

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "parent.yaml").write_text("optim:\n  lr: 0.01\n  weight_decay: 0.5\n")
    (tmp_path / "child.yaml").write_text("base: sub/parent.yaml\noptim:\n  lr: 0.02\n")
    cfg = load_config(tmp_path / "child.yaml", ["train.epochs=3"])
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.train.epochs) == (0.02, 0.5, 3)
    assert "base" not in dump_config(cfg) and "weight_decay: 0.5" in dump_config(cfg)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("base: nowhere.yaml\n", "nowhere.yaml: config file not found"),
        ("base: 3\n", "base: expected the path of another config file"),
        ("base: loop.yaml\n", "leads back to itself"),
    ],
)
def test_bad_base_is_one_line(tmp_path, text, fragment):
    (tmp_path / "loop.yaml").write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "loop.yaml")
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_the_old_name_of_hold_epochs_is_still_read(tmp_path):
    """Run folders written before the rename hold optim.warmup_epochs in their config.yaml."""
    assert load_config(CONFIGS / "baseline.yaml", ["optim.warmup_epochs=3"]).optim.hold_epochs == 3
    (tmp_path / "both.yaml").write_text("optim:\n  warmup_epochs: 1\n  hold_epochs: 2\n")
    with pytest.raises(ConfigError, match="optim.warmup_epochs is the old name of optim.hold_epochs; give only"):
        load_config(tmp_path / "both.yaml")
