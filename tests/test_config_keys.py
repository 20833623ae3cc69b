"""Keys that no schema has are refused (opcd.config_keys), including Hydra's `+key=value` additions."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from opcd import config as C
from opcd.config_keys import check_known_keys, unknown_keys

CONF = Path(__file__).resolve().parents[1] / "conf"
C.register_configs()


def _compose(name="train", overrides=()):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(name, overrides=list(overrides))


def test_plus_adds_a_key_that_the_typed_config_lacks_and_it_is_found():
    cfg = _compose(overrides=["+algo.lrr=1e-3", "+task.foo=1", "+toplevel=2", "++algo.lr=0.5"])
    assert cfg.algo.lrr == 1e-3  # Hydra's force_add got past the struct flag...
    assert unknown_keys(cfg) == [("task.foo", []), ("algo.lrr", ["lr"]), ("toplevel", [])]  # ...this does not
    with pytest.raises(ValueError) as e:
        check_known_keys(cfg)
    assert str(e.value) == ("unknown config keys task.foo, algo.lrr (did you mean algo.lr?), toplevel: no config has "
                            "such a field, so the run would ignore it (every field is listed in opcd/config.py)")


@pytest.mark.parametrize("group", ["experiment", "model", "task", "algo", "rollout", "learner", "logger"])
def test_every_shipped_option_has_only_known_keys(group):
    """No false refusal: each YAML option of each group composes to schema fields only."""
    for option in sorted(p.stem for p in (CONF / group).glob("*.yaml")):
        cfg = _compose(overrides=[f"{group}={option}"])
        assert unknown_keys(cfg) == [], (group, option)
    for name in ("eval", "experience"):
        assert unknown_keys(_compose(name)) == [], name
