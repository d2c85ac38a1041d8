from typing import Literal

import pytest
from pydantic import Field

from onnxopt.config import StrictModel, load_toml, validate
from onnxopt.errors import ConfigError


class Inner(StrictModel):
    weight_width: int = Field(8, ge=2, le=16)
    mode: Literal["output_only", "both", "input_only"] = "both"


class Outer(StrictModel):
    name: str = "x"
    default: Inner = Inner()
    by_name: dict[str, Inner] = {}
    layers: list[Inner] = []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"nmae": "a"}, "unknown key 'nmae'; did you mean 'name'"),
        (
            {"default": {"weight_widht": 4}},
            "unknown key 'default.weight_widht'; did you mean 'weight_width'",
        ),
        ({"by_name": {"fc1": {"weigth_width": 4}}}, "'by_name.fc1.weigth_width'"),
        ({"layers": [{"mdoe": "both"}]}, "'layers\\[0\\].mdoe'"),
        ({"default": {"weight_width": 1}}, "default.weight_width: Input should be greater"),
        ({"default": {"mode": "sideways"}}, "default.mode: Input should be 'output_only'"),
    ],
)
def test_errors_name_the_key_path_and_closest_key(data, message):
    with pytest.raises(ConfigError, match=message) as info:
        validate(Outer, data)
    assert info.value.exit_code == 2 and "\n" not in str(info.value)


def test_valid_config_is_frozen(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('name = "n"\n[by_name.fc1]\nweight_width = 4\n')
    cfg = load_toml(path, Outer)
    assert cfg.by_name["fc1"].weight_width == 4
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error type
        cfg.name = "other"


def test_bad_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_toml(tmp_path / "nope.toml", Outer)
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(bad, Outer)
