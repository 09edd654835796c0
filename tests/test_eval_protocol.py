"""The evaluation protocol as config: presets, YAML file, overrides."""

import pytest

from verl_ext.eval.protocol import load_protocol


def test_presets():
    d = load_protocol("default")
    assert (d.temperature, d.top_p, d.top_k, d.presence_penalty, d.n, d.max_new_tokens) == (0.7, 0.8, 20, 1.5, 1, 4096)
    g = load_protocol("greedy")
    assert g.greedy and g.temperature == 0.0 and g.presence_penalty == 0.0


def test_yaml_then_overrides(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("max_new_tokens: 2048\ntemperature: 1.0\n")
    p = load_protocol("default", str(f), {"temperature": "0.6", "splits": "{mathvision: [testmini]}"})
    assert p.max_new_tokens == 2048 and p.temperature == 0.6  # the override wins over the file
    assert p.splits["mathvision"] == ["testmini"] and p.splits["mmmu"] == ["validation"]  # merged
    assert p.to_dict()["top_k"] == 20


def test_bad_fields_are_errors():
    with pytest.raises(KeyError, match="unknown protocol field 'temprature'"):
        load_protocol("default", None, {"temprature": "1"})
    with pytest.raises(ValueError, match="n must be 1"):
        load_protocol("default", None, {"n": "4"})
    with pytest.raises(KeyError, match="unknown preset"):
        load_protocol("beam")
