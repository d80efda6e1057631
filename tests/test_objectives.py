"""elbo_terms: beta and free bits change the loss exactly as defined."""

import numpy as np

from keras_vae.objectives import elbo_terms

LOG_LIK = np.array([-100.0, -120.0], "float32")
KL = np.array([[2.0, 0.1, 0.0], [4.0, 0.3, 0.0]], "float32")  # batch means: 3.0, 0.2, 0.0


def values(**kwargs):
    return {k: float(v) for k, v in elbo_terms(LOG_LIK, KL, **kwargs).items()}


def test_elbo_and_loss_at_beta_one():
    t = values()
    assert t["rec"] == 110.0 and np.isclose(t["kl"], 3.2)
    assert np.isclose(t["elbo"], -113.2) and np.isclose(t["loss"], 113.2)


def test_beta_scales_only_the_kl_in_the_loss():
    t = values(beta=10.0)
    assert np.isclose(t["loss"], 110.0 + 32.0)
    assert np.isclose(t["elbo"], -113.2)  # the ELBO is always at beta = 1


def test_free_bits_floor_each_dimension_in_the_loss_only():
    t = values(beta=2.0, free_bits=0.5)
    assert np.isclose(t["loss"], 110.0 + 2.0 * (3.0 + 0.5 + 0.5))
    assert np.isclose(t["kl"], 3.2) and np.isclose(t["elbo"], -113.2)
