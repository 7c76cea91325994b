import pytest

from core.config import parse_override, resolve_config
from core.errors import ConfigError
from train.config import TRAIN_DEFAULT, load_train_config


def test_defaults_load_and_overrides_apply():
    cfg = load_train_config(None, ["train.epochs=3", "optim.lr=1e-3", "data.image_size=[32,64]", "resume=null"])
    assert cfg["train"]["epochs"] == 3
    assert cfg["optim"]["lr"] == pytest.approx(0.001)
    assert cfg["data"]["image_size"] == [32, 64]
    assert cfg["resume"] is None


def test_unknown_key_suggests_close_match():
    with pytest.raises(ConfigError) as e:
        load_train_config(None, ["train.epoch=3"])
    assert "train.epochs" in str(e.value)
    assert "unknown config key 'train.epoch'" in str(e.value)


def test_unknown_key_in_file_names_file(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text("base: " + str(TRAIN_DEFAULT) + "\noptim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_train_config(f)
    assert str(f) in str(e.value) and "optim.lr" in str(e.value)


@pytest.mark.parametrize("override,expected", [
    ("train.epochs=ten", "must be an integer"),
    ("train.amp=3", "must be a boolean"),
    ("data.image_size=5", "must be a list"),
    ("loss.class_weights=7", "a string or a list"),
    ("data.fold=x", "an integer"),
])
def test_wrong_types_rejected(override, expected):
    with pytest.raises(ConfigError) as e:
        load_train_config(None, [override])
    assert expected in str(e.value)


def test_int_accepted_for_float_and_nullable_float():
    cfg = load_train_config(None, ["optim.lr=1", "train.time_limit=2"])
    assert cfg["optim"]["lr"] == 1 and cfg["train"]["time_limit"] == 2


def test_inheritance_chain(tmp_path):
    (tmp_path / "a.yaml").write_text(f"base: {TRAIN_DEFAULT}\ntrain:\n  epochs: 7\n  batch_size: 2\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\ntrain:\n  epochs: 9\n")
    cfg = load_train_config(tmp_path / "b.yaml", ["train.seed=5"])
    assert (cfg["train"]["epochs"], cfg["train"]["batch_size"], cfg["train"]["seed"]) == (9, 2, 5)
    assert cfg["optim"]["name"] == "adamw"  # untouched defaults survive


def test_inheritance_cycle_and_bad_yaml(tmp_path):
    (tmp_path / "x.yaml").write_text("base: y.yaml\n")
    (tmp_path / "y.yaml").write_text("base: x.yaml\n")
    with pytest.raises(ConfigError, match="inherits from itself"):
        resolve_config(TRAIN_DEFAULT, tmp_path / "x.yaml")
    (tmp_path / "bad.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="does not parse"):
        resolve_config(TRAIN_DEFAULT, tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="not found"):
        resolve_config(TRAIN_DEFAULT, tmp_path / "missing.yaml")


def test_parse_override_forms():
    assert parse_override("a.b=1e-3") == ("a.b", 0.001)
    assert parse_override("a=[1, 2]") == ("a", [1, 2])
    assert parse_override("a=null") == ("a", None)
    assert parse_override("name=run-1") == ("name", "run-1")
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("epochs")


def test_key_with_alternative_types():
    cfg = load_train_config(None, ["loss.class_weights=[1, 2.5]"])
    assert cfg["loss"]["class_weights"] == [1, 2.5]
    assert load_train_config(None, ["loss.class_weights=null"])["loss"]["class_weights"] is None
