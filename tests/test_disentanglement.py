"""Disentanglement metrics on synthetic codes: maxima, rotations, ignored factors, hand-computed tiny cases and
the synthetic cases of google-research/disentanglement_lib's metric tests (disentanglement_lib/evaluation/metrics/)."""

import math

import numpy as np
import pytest

from keras_vae import disentanglement as dis


class FactorsAsImages(dis.GroundTruthData):
    """Independent uniform factors whose "images" are the factor values themselves."""

    factor_names = tuple("abcdefghij")

    def __init__(self, sizes=(2, 3, 4)):
        self.factor_sizes = sizes
        self.factor_names = self.factor_names[: len(sizes)]

    def sample_factors(self, num, rng):
        return np.stack([rng.integers(0, size, num) for size in self.factor_sizes], axis=1)

    def images_of(self, factors, rng=None):
        return np.asarray(factors, "float64")


def _draw(num=600, seed=0):
    """Factors and codes equal to them: each factor scaled into [0, 1), plus a little noise."""
    rng = np.random.default_rng(seed)
    factors = FactorsAsImages().sample_factors(num, rng)
    return factors, factors / np.array([2.0, 3.0, 4.0]) + rng.normal(0.0, 0.03, factors.shape)


def _code_scores(codes, factors):
    dci = dis.dci(codes, factors)
    return np.array([dis.mig(codes, factors), dis.sap(codes, factors, continuous_factors=True),
                     dis.sap(4 * codes, factors), dci["disentanglement"], dci["completeness"]])


def test_codes_equal_to_the_factors_score_near_the_maxima_and_random_rotations_far_lower():
    factors, codes = _draw()
    exact = _code_scores(codes, factors)  # MIG, SAP (continuous), SAP (discrete), DCI D, DCI C
    assert (exact[[0, 1, 3, 4]] > 0.95).all()  # MIG: the binned MI of independent codes is slightly above 0
    # Discrete SAP is at most mean(1 - 1/2, 1 - 1/3, 1 - 1/4) = 0.64 for these factors (see `sap`).
    assert exact[2] > 0.4
    rotations = [np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))[0] for seed in range(5)]
    rotated = np.mean([_code_scores(codes @ rotation, factors) for rotation in rotations], axis=0)
    assert (rotated < 0.6 * exact).all(), (exact, rotated)
    data = FactorsAsImages()
    score = dis.factor_vae_score(lambda x: x, data, np.random.default_rng(0), num_train=300, num_eval=200,
                                 num_variance_estimate=1000)
    assert score["eval_accuracy"] == 1.0 and score["num_active_dims"] == 3
    beta = dis.beta_vae_score(lambda x: x, data, np.random.default_rng(0), num_train=300, num_eval=200)
    assert beta["eval_accuracy"] > 0.98


def test_a_code_that_ignores_a_factor_loses_completeness_and_informativeness():
    factors, codes = _draw()
    full, partial = dis.dci(codes, factors), dis.dci(codes[:, :2], factors)
    assert full["completeness"] - partial["completeness"] > 0.2
    assert full["informativeness"] - partial["informativeness"] > 0.2
    assert dis.mig(codes[:, :2], factors) < 0.7  # the ignored factor's gap is zero


def test_mutual_information_and_mig_by_hand():
    # Two binary factors in every combination; code 0 copies factor a, code 1 is a AND b.
    factors = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    codes = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    h_and = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))  # H(a AND b)
    i_and = h_and - 0.5 * math.log(2)  # I(a; a AND b) = H(a AND b) - H(a AND b | a), the same for b
    expected = np.array([[math.log(2), i_and], [0.0, i_and]])
    np.testing.assert_allclose(dis.mutual_information(codes, factors, num_bins=2), expected, atol=1e-12)
    np.testing.assert_allclose(dis.factor_entropy(factors), [math.log(2)] * 2)
    # MIG = mean((log 2 - i_and) / log 2, (i_and - 0) / log 2) = 1/2.
    assert dis.mig(codes, factors, num_bins=2) == pytest.approx(0.5, abs=1e-12)


def test_sap_by_hand():
    factors = np.array([[0, 0], [1, 1], [2, 1], [3, 0]])
    codes = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 1.0], [3.0, 1.0]])
    # Squared correlations: factor 0 with codes (1, 4/5), factor 1 with codes (0, 0): SAP = (1/5 + 0) / 2.
    np.testing.assert_allclose(dis.sap_matrix(codes, factors, codes, factors, continuous_factors=True),
                               [[1.0, 0.8], [0.0, 0.0]], atol=1e-12)
    assert dis.sap(codes, factors, codes, factors, continuous_factors=True) == pytest.approx(0.1)
    # Discrete: a binary factor that one code separates and a constant code cannot predict.
    factors = np.repeat([[0], [1]], 50, axis=0)
    codes = np.stack([factors[:, 0] * 4.0, np.zeros(100)], axis=1)
    np.testing.assert_allclose(dis.sap_matrix(codes, factors, codes, factors), [[1.0, 0.5]])


def test_dci_by_hand():
    # R[factor, code]: code 0 serves both factors (2/3, 1/3), code 1 only factor 1; factor 1 is split evenly.
    importance = np.array([[1.0, 0.0], [0.5, 0.5]])
    h = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    disentanglement = 0.75 * (1 - h) + 0.25 * 1.0  # code weights 1.5/2 and 0.5/2
    completeness = 0.5 * 1.0 + 0.5 * 0.0  # factor weights 1/2 each
    got = dis.dci_from_importance(importance)
    assert got == pytest.approx((disentanglement, completeness), abs=1e-9)
    assert dis.dci_from_importance(np.zeros((2, 3))) == pytest.approx((0.0, 0.0), abs=1e-9)


def _ten_factors(num, values=10, seed=0):
    """disentanglement_lib's `dummy_data.IdentityObservationsData`: 10 independent uniform factors of 10 values."""
    return np.random.default_rng(seed).integers(0, values, (num, 10))


def test_zero_code_scores_near_zero():
    """Mirrors disentanglement_lib's mig_test.py, sap_score_test.py and factor_vae_test.py `test_bad_metric`."""
    factors = _ten_factors(3000)
    zero = np.zeros(factors.shape)
    assert 0.0 <= dis.mig(zero, factors) <= 0.2
    assert 0.0 <= dis.sap(zero, factors, continuous_factors=True) <= 0.2
    data = FactorsAsImages(sizes=(10,) * 10)
    score = dis.factor_vae_score(np.zeros_like, data, np.random.default_rng(0), batch_size=5, num_train=3000,
                                 num_eval=2000, num_variance_estimate=2500)
    assert 0.0 <= score["train_accuracy"] <= 0.2 and 0.0 <= score["eval_accuracy"] <= 0.2


def test_duplicated_code_has_no_gap_and_splits_completeness():
    """Mirrors `test_duplicated_latent_space` of disentanglement_lib's mig_test.py, sap_score_test.py, dci_test.py.

    The codes (v, v) carry every factor twice: the best two codes tie, so MIG and SAP gaps vanish, and each
    factor's importance is split between two of the 2K codes. DCI uses 5 values per factor (disentanglement_lib:
    10) and 400 + 200 draws (1,000 + 1,000) to keep the gradient-boosted trees fast; K stays 10.
    """
    factors = _ten_factors(3000)
    duplicated = np.hstack([factors, factors]).astype("float64")
    assert 0.0 <= dis.mig(duplicated, factors) <= 0.1
    assert 0.0 <= dis.sap(duplicated, factors, continuous_factors=True) <= 0.2
    factors = _ten_factors(600, values=5)
    scores = dis.dci(np.hstack([factors, factors]).astype("float64"), factors)
    assert 0.9 <= scores["disentanglement"] <= 1.0
    # disentanglement_lib's target, 1 - log 2 / log K (K = 10 factors); an even split over the 2K codes gives
    # exactly 1 - log 2 / log 2K = 0.769 (the entropy is in base D = 2K), inside the same band.
    target = 1 - math.log(2) / math.log(10)
    assert target - 0.1 <= scores["completeness"] <= target + 0.1, scores


def test_row_permuted_codes_are_neither_disentangled_nor_complete():
    """Mirrors disentanglement_lib's dci_test.py `DCITest.test_bad_metric`: each row's code is its factors shuffled.

    5 values per factor and 400 + 200 draws (disentanglement_lib: 10 values, 1,000 + 1,000), as above.
    """
    factors = _ten_factors(600, values=5)
    rng = np.random.default_rng(1)
    codes = np.array([rng.permutation(row) for row in factors], "float64")
    scores = dis.dci(codes, factors)
    assert 0.0 <= scores["disentanglement"] <= 0.2 and 0.0 <= scores["completeness"] <= 0.2, scores


@pytest.mark.parametrize("name, importance, expected", [
    # Each case mirrors disentanglement_lib's dci_test.py DisentanglementTest.test_<name> and
    # CompletenessTest.test_<name>; its matrices are (code, factor), ours (factor, code), so they are transposed.
    ("diagonal", np.diag(5.0 * np.ones(5)), (1.0, 1.0)),
    ("diagonal_empty_codes", np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]).T, (1.0, 1.0)),
    ("zero", np.zeros((10, 10)), (0.0, 0.0)),
    ("redundant_codes", np.hstack([np.diag(5.0 * np.ones(5))] * 2), (1.0, 1 - math.log(2) / math.log(10))),
    ("missed_factors", np.diag(5.0 * np.ones(5))[:2].T, (1.0, 1.0)),
    ("one_code_two_factors", np.vstack([np.diag(5.0 * np.ones(5))] * 2), (1 - math.log(2) / math.log(10), 1.0)),
])
def test_dci_of_disentanglement_libs_importance_matrices(name, importance, expected):
    # The zero matrix's disentanglement is 2e-16 (floating point), hence atol.
    np.testing.assert_allclose(dis.dci_from_importance(importance), expected, rtol=1e-7, atol=1e-7, err_msg=name)


def test_beta_vae_score_by_hand():
    # Two binary factors, one pair per point: a pair that shares the other factor too (probability 1/2)
    # has difference (0, 0) and says nothing, so the best classifier is right 1/2 + 1/2 * 1/2 = 3/4 of the time.
    data = FactorsAsImages(sizes=(2, 2))
    score = dis.beta_vae_score(lambda x: x, data, np.random.default_rng(0), batch_size=1, num_train=2000,
                               num_eval=2000)
    assert score["eval_accuracy"] == pytest.approx(0.75, abs=0.03)


def test_factor_vae_score_by_hand():
    # Codes (a, a): fixing a zeroes both variances and fixing b leaves them equal, so every vote goes to code 0
    # and the classifier names one factor for it: right on half of the points.
    data = FactorsAsImages(sizes=(2, 2))
    score = dis.factor_vae_score(lambda x: x[:, [0, 0]], data, np.random.default_rng(0), batch_size=16,
                                 num_train=400, num_eval=2000, num_variance_estimate=500)
    assert score["eval_accuracy"] == pytest.approx(0.5, abs=0.04)
    # A collapsed code is pruned, and with every code collapsed the score is 0.
    assert dis.factor_vae_score(lambda x: x * [1.0, 0.01], data, np.random.default_rng(0), num_train=50,
                                num_eval=50, num_variance_estimate=200)["num_active_dims"] == 1
    assert dis.factor_vae_score(lambda x: x * 0.0, data, np.random.default_rng(0), num_train=5, num_eval=5,
                                num_variance_estimate=20)["eval_accuracy"] == 0.0


def test_scores_report_counts_and_seed_and_repeat_with_the_seed():
    data = FactorsAsImages()
    kwargs = dict(seed=3, num_train=300, num_test=150, num_points=40, batch_size=16)
    first, second = dis.scores(lambda x: x, data, **kwargs), dis.scores(lambda x: x, data, **kwargs)
    assert first == second
    assert first["seed"] == 3 and first["samples"]["mig_sap_dci_train"] == 300
    assert first["factor_names"] == ["a", "b", "c"] and np.shape(first["mutual_information"]) == (3, 3)
    assert dis.most_informative_factors(first["mutual_information"], first["factor_names"]) == ["a", "b", "c"]


def test_labelled_images_condition_on_the_data():
    factors = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [1, 1]])
    data = dis.LabelledImages(np.arange(5.0)[:, None], factors, ["p", "q"])
    rng = np.random.default_rng(0)
    drawn, images = data.sample_given(1, [1, 1, 0, 1], rng)
    assert drawn[:, 1].tolist() == [1, 1, 0, 1]
    np.testing.assert_array_equal(factors[images[:, 0].astype(int)], drawn)  # each image carries its factors
    drawn, images = data.sample(5, rng)
    assert sorted(images[:, 0].tolist()) == [0, 1, 2, 3, 4]  # a finite set is drawn without repeats
    scored = dis.scores(lambda x: np.concatenate([x, -x], axis=1), data, num_train=100, num_test=100,
                        num_points=3, batch_size=2)
    assert scored["samples"]["mig_sap_dci_train"] + scored["samples"]["sap_dci_test"] == 5
    with pytest.raises(ValueError, match="No image has q = 2"):
        data.sample_given(1, [2], rng)
    with pytest.raises(ValueError, match="Expected 2 factor names"):
        dis.LabelledImages(np.zeros((5, 1)), factors, ["p"])
    with pytest.raises(ValueError, match="one row of factors per image: 4 images, 5 rows"):
        dis.LabelledImages(np.zeros((4, 1)), factors)
    with pytest.raises(ValueError, match="Expected codes"):
        dis.mig(np.zeros((3, 2)), factors)
