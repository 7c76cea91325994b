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
    ("data.fold=x", "a fold number (0, 1, ...) or all"),
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


# ------------------------------------------------------------------------------------------------- value rules


def test_rule_tables_name_existing_keys_and_agree_with_the_registries():
    from core.config import _all_prefixes, flatten, load_with_bases
    from ingest.version import DATA_DEFAULT
    from ingest.version import RULES as DATA_RULES
    from train.config import CLASS_WEIGHT_SCHEMES, LOSS_ALIASES, LOSS_NAMES, OPTIM_NAMES, RULES, SCHEDULE_NAMES
    from train.losses import ALIASES, LOSSES
    from train.losses import CLASS_WEIGHT_SCHEMES as SCHEMES
    from train.schedule import SCHEDULES

    for default, rules in ((TRAIN_DEFAULT, RULES), (DATA_DEFAULT, DATA_RULES)):
        schema = load_with_bases(default)
        keys = set(flatten(schema)) | _all_prefixes(schema)
        for pattern in rules:
            assert pattern.rstrip(".*") in keys, f"{pattern} is not a key of {default}"
    assert set(LOSS_NAMES) == set(LOSSES.names()) and tuple(SCHEDULE_NAMES) == tuple(SCHEDULES)
    assert set(LOSS_ALIASES) == set(ALIASES) and CLASS_WEIGHT_SCHEMES == SCHEMES
    assert set(OPTIM_NAMES) == {"adamw", "sgd"}


def test_rule_checks():
    from core.config import Rule, check_rules

    rules = {"a.n": Rule(min=1), "a.size": Rule(length=2, min=1), "a.r.*": Rule(min=0, max=1),
             "a.name": Rule(choices=("adamw", "sgd")), "a.out": Rule(name=True)}
    check_rules({"a": {"n": 3, "size": [1, 2], "r": {"x": 0.5}, "name": "sgd", "out": "run-1"}}, rules, "f.yaml")
    for bad, words in [({"n": 0}, ">= 1, got 0"), ({"n": float("nan")}, ">= 1"), ({"size": [1]}, "list of 2"),
                       ({"size": [1, "2"]}, "must hold numbers"), ({"r": {"y": 2}}, "'a.r.y' must be >= 0 and <= 1"),
                       ({"name": "adam"}, "did you mean 'adamw'"), ({"out": "../x"}, "must not contain '/'"),
                       ({"out": ".x"}, "must not start with '.'"), ({"out": ""}, "must not be empty")]:
        with pytest.raises(ConfigError) as e:
            check_rules({"a": bad}, rules, "f.yaml")
        assert words in str(e.value) and "f.yaml" in str(e.value) and "fix:" in str(e.value)
    check_rules({"a": {"n": None}}, rules, "f.yaml")  # null (a nullable key) is not judged


def test_device_must_exist():
    import torch

    from train.config import device_problem

    assert device_problem("auto") is None and device_problem("cpu") is None
    assert "auto, cpu, cuda" in device_problem("gpu")
    missing = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"
    assert device_problem(missing) is not None
    with pytest.raises(ConfigError, match="train.device"):
        load_train_config(None, [f"train.device={missing}"])


def test_bad_value_in_a_file_names_the_file(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text(f"base: {TRAIN_DEFAULT}\noptim:\n  lr: 0\n")
    with pytest.raises(ConfigError) as e:
        load_train_config(f)
    assert str(f) in str(e.value) and "'optim.lr' must be > 0" in str(e.value)


RECIPES = sorted((TRAIN_DEFAULT.parent.parent / "experiments").rglob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[str(r.relative_to(TRAIN_DEFAULT.parent.parent)) for r in RECIPES])
def test_every_shipped_recipe_builds(recipe):
    """Every recipe in configs/experiments/ resolves, and its model, loss, augmentation and reasons are accepted
    for its own dataset's taxonomy (what a run checks before it loads a single image)."""
    from core.config import project_path
    from ingest.taxonomy import load_taxonomy
    from ingest.version import load_data_config
    from tasks import get
    from train.config import load_train_config
    from train.data import build_augment
    from train.engine import check_reasons
    from train.losses import build_loss
    from train.models.heads import decoding_of

    cfg = load_train_config(recipe)
    taxonomy = load_taxonomy(project_path(load_data_config(cfg["data"]["config"])["taxonomy"]))
    models = get(cfg["task"]).training().models
    models.check_args(cfg["model"]["name"], dict(cfg["model"]["args"]), ("num_classes",))
    check_reasons(cfg, models.parameters(cfg["model"]["name"]))
    if cfg["task"] != "semantic":
        return
    args = {k: v for k, v in cfg["model"]["args"].items() if k not in models.init_only(cfg["model"]["name"])}
    model = models.build(cfg["model"]["name"], args, num_classes=taxonomy.num_classes)
    build_loss(cfg["loss"], decoding_of(model).loss_mode, taxonomy.ignore_index, None)
    build_augment(cfg["augment"], tuple(cfg["data"]["image_size"]), taxonomy.ignore_index)
    missing = [c for c in cfg["augment"]["copy_blob"]["classes"] if c not in taxonomy.names]
    assert not missing, missing


def test_naming_another_model_or_loss_starts_its_arguments_afresh():
    from train.config import load_train_config

    demo = TRAIN_DEFAULT.parent.parent / "experiments" / "demo.yaml"
    cfg = load_train_config(demo, ["model.name=unet"])
    assert cfg["model"]["args"] == {} and not [k for k in cfg["why"] if k.startswith("model.args")]
    cfg = load_train_config(demo, ["model.name=resunet", "model.args.width=8"])
    assert cfg["model"]["args"] == {"stem_stride": 2, "width": 8}  # the same model keeps its arguments
    dice = TRAIN_DEFAULT.parent.parent / "experiments" / "zoo" / "loss-dice.yaml"
    assert load_train_config(dice, ["loss.name=focal"])["loss"]["args"] == {}
