"""The initial-LR grid: folder names, the tuned multiplier (validation only), the runs to train."""

import math

import pytest

from adaptive_lr.grid import mult_dir, runs_of, select_tuned


def test_mult_dir_names_each_multiplier_of_the_default_grid():
    assert [mult_dir(m) for m in (0.1, 0.3, 1.0, 3, 10.0)] == ["0.1x", "0.3x", "1x", "3x", "10x"]


def test_the_tuned_multiplier_has_the_lowest_mean_validation_loss():
    assert select_tuned({0.1: [0.9, 0.8], 1.0: [0.5, 0.7], 3.0: [0.55, 0.6], 10.0: [2.0, 0.1]}) == 3.0


@pytest.mark.parametrize("bad", [None, math.nan, math.inf])
def test_a_diverged_seed_rules_its_multiplier_out(bad):
    assert select_tuned({1.0: [0.5, 0.5], 3.0: [0.1, bad]}) == 1.0


def test_equal_means_go_to_the_multiplier_closest_to_one_then_the_smaller():
    assert select_tuned({0.1: [0.5], 3.0: [0.5], 10.0: [0.5]}) == 3.0
    assert select_tuned({0.5: [0.4, 0.6], 2.0: [0.6, 0.4]}) == 0.5  # equal log distance: the smaller one
    assert select_tuned({0.3: [0.5], 1.0: [0.5], 3.0: [0.5]}) == 1.0


def test_every_multiplier_diverged_gives_one_else_the_smallest():
    assert select_tuned({0.3: [None], 1.0: [math.inf], 3.0: [math.nan]}) == 1.0
    assert select_tuned({3.0: [None], 0.3: [None], 10.0: [math.inf]}) == 0.3


def test_select_tuned_needs_positive_multipliers():
    with pytest.raises(ValueError):
        select_tuned({})
    with pytest.raises(ValueError):
        select_tuned({0.0: [0.5], 1.0: [0.4]})


def test_runs_of_the_grid_plus_the_extra_seeds_at_one_and_at_the_tuned_multiplier():
    grid = [(m, s) for m in (0.1, 0.3, 1.0, 3.0, 10.0) for s in (0, 1, 2)]
    assert runs_of([0.1, 0.3, 1, 3, 10], [0, 1, 2], [3, 4], None) == grid + [(1.0, 3), (1.0, 4)]
    assert runs_of([0.1, 0.3, 1, 3, 10], [0, 1, 2], [3, 4], 3.0) == grid + [(1.0, 3), (1.0, 4), (3.0, 3), (3.0, 4)]
    # tuned at 1x: no duplicates
    assert runs_of([0.1, 0.3, 1, 3, 10], [0, 1, 2], [3, 4], 1.0) == grid + [(1.0, 3), (1.0, 4)]


def test_runs_of_without_one_in_the_grid_and_with_overlapping_seeds():
    assert runs_of([0.3, 3], [0, 1], [1, 2], None) == [(0.3, 0), (0.3, 1), (3.0, 0), (3.0, 1)]
    assert runs_of([0.3, 3], [0, 1], [1, 2], 0.3) == [(0.3, 0), (0.3, 1), (3.0, 0), (3.0, 1), (0.3, 2)]
    with pytest.raises(ValueError, match="not in the grid"):
        runs_of([0.3, 3], [0], [1], 1.0)
