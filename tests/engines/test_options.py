"""``engines.options``: the per-session option checks the engines share."""

from __future__ import annotations

import pytest

from liveface.engines.options import bool_option, seed_option, session_options
from liveface.errors import BadInputError


def test_unknown_options_are_named_and_known_ones_pass():
    assert session_options(None, ("seed",), "X") == {}
    assert session_options({"seed": 1}, ("seed",), "X") == {"seed": 1}
    with pytest.raises(BadInputError, match=r"unknown X option\(s\) a, b"):
        session_options({"b": 1, "a": 2, "seed": 3}, ("seed",), "X")


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True, None])
def test_a_seed_is_a_non_negative_int(bad):
    assert seed_option({}, 7) == 7
    assert seed_option({"seed": 0}, 7) == 0
    with pytest.raises(BadInputError, match="seed must be a non-negative int"):
        seed_option({"seed": bad}, 7)


@pytest.mark.parametrize("bad", [1, 0, "yes", None])
def test_a_bool_option_is_a_bool(bad):
    assert bool_option({}, "codebook", True) is True
    assert bool_option({"codebook": False}, "codebook", True) is False
    with pytest.raises(BadInputError, match="codebook must be a bool"):
        bool_option({"codebook": bad}, "codebook", True)
