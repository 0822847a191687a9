"""`Sampling`: the one place the sampling settings are checked, each fault naming its field."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from memexp.errors import ConfigError
from memexp.models.sampling import GREEDY, Sampling, sample_next


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(temperature=0.0), "temperature=0.0: expected temperature > 0"),
        (dict(temperature=-0.5), "temperature=-0.5: expected temperature > 0"),
        (dict(top_k=-1), "top_k=-1: expected top_k >= 0"),
        (dict(top_p=1.5), "top_p=1.5: expected 0 < top_p <= 1"),
        (dict(top_p=0.0), "top_p=0.0: expected 0 < top_p <= 1"),
        (dict(top_p=float("nan")), "top_p=nan: expected 0 < top_p <= 1"),
    ],
)
def test_bad_settings_name_the_field(settings, message):
    with pytest.raises(ConfigError) as e:
        Sampling(**settings)
    assert str(e.value).startswith(message)


def test_good_settings_and_greedy_without_a_temperature():
    Sampling(temperature=0.8, top_k=40, top_p=1.0, seed=0)
    assert Sampling(temperature=0.0, greedy=True).greedy
    assert Sampling.from_settings(temperature=0.0).greedy  # the command lines' temperature=0
    assert not Sampling.from_settings(temperature=0.8).greedy


def test_it_is_frozen_and_replace_checks_again():
    s = Sampling(temperature=0.8, seed=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.top_p = 2.0
    assert dataclasses.replace(s, seed=2).seed == 2
    with pytest.raises(ConfigError, match="top_p=2"):
        dataclasses.replace(s, top_p=2.0)


def test_a_seed_fixes_the_draws_and_greedy_takes_the_argmax():
    logits = torch.randn(3, 50)
    s = Sampling(temperature=1.0, seed=7)
    assert torch.equal(sample_next(logits, s, s.generator("cpu")), sample_next(logits, s, s.generator("cpu")))
    assert Sampling().generator("cpu") is None
    assert torch.equal(sample_next(logits, GREEDY), logits.argmax(-1))
