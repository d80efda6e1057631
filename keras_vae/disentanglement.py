"""Disentanglement metrics: how well codes line up with known factors of variation.

Each metric is a small function, following the definitions of
google-research/disentanglement_lib (and its estimators: scikit-learn
classifiers, mutual information of histogram-binned codes):

- `mig(codes, factors)`: the Mutual Information Gap (Chen et al. 2018):
  mean over factors of (I(v_k; z_a) - I(v_k; z_b)) / H(v_k), with z_a, z_b
  the two codes most informative about v_k.
- `sap(codes, factors)`: the Separated Attribute Predictability (Kumar et
  al. 2018): mean over factors of the gap between the two codes that
  predict the factor best, each code alone (a linear SVM's test accuracy,
  or R**2 for continuous factors).
- `dci(codes, factors)`: disentanglement, completeness and informativeness
  (Eastwood & Williams 2018) from gradient-boosted trees' feature importances
  R[k, d] (factor k, code d): disentanglement = sum_d rho_d (1 - H_K(R[:, d])),
  completeness = sum_k rho_k (1 - H_D(R[k, :])), informativeness = the
  trees' test accuracy.
- `beta_vae_score(representation, data, rng)`: Higgins et al. 2017: a
  logistic regression predicts which factor a batch of image pairs shared
  from the mean absolute difference of their codes.
- `factor_vae_score(representation, data, rng)`: Kim & Mnih 2018: a
  majority-vote classifier predicts which factor was fixed in a batch from
  the code of least variance (scaled by its variance over the data).

The last two need images with chosen factors, so they take ground-truth
data (`GroundTruthData`: `sample_factors`, `images_of`, as
disentanglement_lib's) and a representation function (e.g. a VAE's
posterior means, `posterior_means(model)`). Matrices are indexed
(factor, code) throughout. `scores` runs them all and says how many samples
and which seed it used.

Example:

>>> factors = np.indices((4, 4)).reshape(2, -1).T  # every combination of two 4-valued factors
>>> mig(factors.astype("float32"), factors)
1.0

References:
    Higgins et al. beta-VAE. ICLR 2017. Kim, Mnih. Disentangling by
    Factorising. ICML 2018, arXiv:1802.05983. Chen et al. Isolating Sources
    of Disentanglement in VAEs. NeurIPS 2018, arXiv:1802.04942. Kumar et al.
    Variational Inference of Disentangled Latent Concepts from Unlabeled
    Observations. ICLR 2018, arXiv:1711.00848. Eastwood, Williams. A
    Framework for the Quantitative Evaluation of Disentangled
    Representations. ICLR 2018. Locatello et al. Challenging Common
    Assumptions in the Unsupervised Learning of Disentangled
    Representations. ICML 2019, arXiv:1811.12359 (disentanglement_lib).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import scipy.stats

from keras_vae.checks import positive_int

# scikit-learn is imported inside the estimators: `import keras_vae` stays fast (about 1 s less).

Representation = Callable[[np.ndarray], np.ndarray]


# ------------------------------------------------------------ ground truth
class GroundTruthData:
    """Data with known factors: draw factor indices, get images of any factors.

    Subclasses give `factor_names`, `factor_sizes`, `sample_factors` and
    `images_of` (`keras_vae.sprites.Sprites` renders them); `sample` and
    `sample_given` follow. `num_images` is the size of a finite set (None
    for a generator that can draw without end).
    """

    factor_names: Sequence[str] = ()
    factor_sizes: Sequence[int] = ()
    num_images: int | None = None

    @property
    def num_factors(self) -> int:
        return len(self.factor_names)

    def sample_factors(self, num: int, rng: np.random.Generator) -> np.ndarray:
        """`num` rows of integer factor indices `(num, num_factors)`."""
        raise NotImplementedError

    def images_of(self, factors, rng: np.random.Generator | None = None) -> np.ndarray:
        """Images `(N, ...)` with the given factor indices `(N, num_factors)`."""
        raise NotImplementedError

    def sample(self, num: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """`(factors, images)` of `num` draws."""
        factors = self.sample_factors(num, rng)
        return factors, self.images_of(factors, rng)

    def sample_given(self, factor: int, values, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """`(factors, images)` of draws whose factor `factor` equals `values` (one draw per value)."""
        values = np.asarray(values)
        factors = self.sample_factors(len(values), rng)
        factors[:, factor] = values
        return factors, self.images_of(factors, rng)


class LabelledImages(GroundTruthData):
    """A finite set of images with factor labels (e.g. an `.npz` file's `factors`) as ground-truth data.

    Draws are rows of the set; `sample_given` draws, for each value, a row
    whose factor has that value, so it conditions on the data's own joint
    distribution of the factors.

    Args:
        images: `(N, ...)` images.
        factors: `(N, K)` integer factor labels.
        factor_names: K names. Defaults to `factor_0`, `factor_1`, ...

    Example:

    >>> data = LabelledImages(np.arange(4.0)[:, None], np.array([[0, 0], [0, 1], [1, 0], [1, 1]]))
    >>> factors, images = data.sample_given(0, [1, 1], np.random.default_rng(0))
    >>> factors[:, 0].tolist(), bool((images[:, 0] >= 2).all())
    ([1, 1], True)
    """

    def __init__(self, images, factors, factor_names: Sequence[str] | None = None):
        self.images = np.asarray(images)
        self.factors = check_factors(factors, len(self.images))
        self.factor_names = tuple(factor_names) if factor_names is not None else tuple(
            f"factor_{k}" for k in range(self.factors.shape[1]))
        if len(self.factor_names) != self.factors.shape[1]:
            raise ValueError(f"Expected {self.factors.shape[1]} factor names. Received {len(self.factor_names)}: "
                             f"{list(self.factor_names)}.")
        self.factor_sizes = tuple(len(np.unique(column)) for column in self.factors.T)
        self.num_images = len(self.images)
        self._rows_of = [{value: np.flatnonzero(column == value) for value in np.unique(column)}
                         for column in self.factors.T]
        self._row_of_combination = {tuple(row): index for index, row in enumerate(self.factors.tolist())}

    def _rows(self, num: int, rng) -> np.ndarray:
        return rng.permutation(self.num_images)[:num] if num <= self.num_images else rng.integers(
            0, self.num_images, num)

    def sample_factors(self, num, rng):
        return self.factors[self._rows(num, rng)].copy()

    def images_of(self, factors, rng=None):
        rows = []
        for row in np.asarray(factors).tolist():
            if tuple(row) not in self._row_of_combination:
                raise ValueError(f"No image has the factors {row}.")
            rows.append(self._row_of_combination[tuple(row)])
        return self.images[rows]

    def sample(self, num, rng):
        rows = self._rows(num, rng)
        return self.factors[rows].copy(), self.images[rows]

    def sample_given(self, factor, values, rng):
        values = np.asarray(values)
        rows = np.empty(len(values), "int64")
        for value in np.unique(values):
            if value not in self._rows_of[factor]:
                raise ValueError(f"No image has {self.factor_names[factor]} = {value}.")
            where = np.flatnonzero(values == value)
            rows[where] = rng.choice(self._rows_of[factor][value], size=len(where))
        return self.factors[rows].copy(), self.images[rows]


def check_factors(factors, num_images: int | None = None, name: str = "factors") -> np.ndarray:
    """Checks integer factor labels `(N, K)` (one row per image) and returns them as int64.

    Example:

    >>> check_factors([[0, 1], [2, 3]]).dtype.name
    'int64'
    >>> check_factors(np.zeros((2, 2)), num_images=3)
    Traceback (most recent call last):
    ...
    ValueError: Expected integer factor labels; factors has dtype float64.
    """
    factors = np.asarray(factors)
    if factors.ndim != 2 or factors.shape[1] == 0:
        raise ValueError(f"Expected {name} of shape (N, K), one row of factor labels per image. "
                         f"Received shape {factors.shape}.")
    if not np.issubdtype(factors.dtype, np.integer):
        raise ValueError(f"Expected integer factor labels; {name} has dtype {factors.dtype}.")
    if num_images is not None and len(factors) != num_images:
        raise ValueError(f"Expected one row of {name} per image: {num_images} images, {len(factors)} rows.")
    return factors.astype("int64")


def _check_codes(codes, factors) -> tuple[np.ndarray, np.ndarray]:
    codes = np.asarray(codes, "float64")
    factors = check_factors(factors)
    if codes.ndim != 2 or len(codes) != len(factors):
        raise ValueError(f"Expected codes (N, D) beside factors (N, K). Received shapes {codes.shape} and "
                         f"{factors.shape}.")
    if not np.isfinite(codes).all():
        raise ValueError("codes has NaN or inf entries.")
    return codes, factors


def _split(codes, factors, codes_test, factors_test, train_fraction: float):
    """Explicit test codes, or the first `train_fraction` of the rows for training and the rest for testing."""
    if codes_test is not None:
        return (*_check_codes(codes, factors), *_check_codes(codes_test, factors_test))
    codes, factors = _check_codes(codes, factors)
    cut = int(np.ceil(len(codes) * train_fraction))
    if not 0 < cut < len(codes):
        raise ValueError(f"train_fraction={train_fraction} leaves no train or no test rows of {len(codes)}.")
    return codes[:cut], factors[:cut], codes[cut:], factors[cut:]


# ----------------------------------------------------- mutual information
def histogram_discretize(codes, num_bins: int = 20) -> np.ndarray:
    """Each code column binned into `num_bins` equal-width bins over its range (disentanglement_lib's).

    Example:

    >>> histogram_discretize(np.array([[0.0], [0.4], [1.0]]), num_bins=2)[:, 0].tolist()
    [1, 1, 2]
    """
    codes = np.asarray(codes, "float64")
    return np.stack([np.digitize(column, np.histogram(column, num_bins)[1][:-1]) for column in codes.T], axis=1)


def mutual_information(codes, factors, num_bins: int = 20) -> np.ndarray:
    """I(v_k; z_d) in nats of each factor k and histogram-binned code d: a `(K, D)` matrix.

    Example:

    >>> f = np.array([[0], [0], [1], [1]])
    >>> (mutual_information(f.astype(float), f, num_bins=2) / np.log(2)).round(3).tolist()
    [[1.0]]
    """
    import sklearn.metrics

    codes, factors = _check_codes(codes, factors)
    binned = histogram_discretize(codes, num_bins)
    return np.array([[sklearn.metrics.mutual_info_score(factor, code) for code in binned.T] for factor in factors.T])


def factor_entropy(factors) -> np.ndarray:
    """H(v_k) in nats of each factor's empirical distribution, `(K,)`."""
    import sklearn.metrics

    factors = check_factors(factors)
    return np.array([sklearn.metrics.mutual_info_score(factor, factor) for factor in factors.T])


def mig(codes, factors, num_bins: int = 20) -> float:
    """The Mutual Information Gap: mean_k (I(v_k; z_a) - I(v_k; z_b)) / H(v_k), a and b the top two codes.

    Args:
        codes: `(N, D)` codes (D >= 2), e.g. posterior means.
        factors: `(N, K)` integer factor labels.
        num_bins: Histogram bins per code. Defaults to 20 (disentanglement_lib's).

    Returns:
        MIG in [0, 1]; a factor that does not vary (H = 0) is left out.
    """
    information = mutual_information(codes, factors, num_bins)
    if information.shape[1] < 2:
        raise ValueError(f"MIG compares the two best codes and needs at least 2. Received {information.shape[1]}.")
    entropy = factor_entropy(factors)
    top = -np.sort(-information, axis=1)
    varying = entropy > 0
    return float(np.mean((top[varying, 0] - top[varying, 1]) / entropy[varying]))


# -------------------------------------------------------------------- SAP
def sap_matrix(codes, factors, codes_test=None, factors_test=None, continuous_factors: bool = False,
               train_fraction: float = 2 / 3) -> np.ndarray:
    """How well each code alone predicts each factor, `(K, D)`.

    Discrete factors (disentanglement_lib's dSprites setting): the test
    accuracy of `LinearSVC(C=0.01, class_weight="balanced")` on the one code.
    Continuous factors: the squared correlation cov(z, v)**2 / (var z var v),
    on the training rows (0 for a constant code).
    """
    import sklearn.svm

    codes, factors, codes_test, factors_test = _split(codes, factors, codes_test, factors_test, train_fraction)
    matrix = np.zeros((factors.shape[1], codes.shape[1]))
    for k, factor in enumerate(factors.T):
        for d, code in enumerate(codes.T):
            if continuous_factors:
                covariance = np.cov(code, factor, ddof=1)
                if covariance[0, 0] > 1e-12 and covariance[1, 1] > 0:
                    matrix[k, d] = covariance[0, 1] ** 2 / (covariance[0, 0] * covariance[1, 1])
            elif len(np.unique(factor)) > 1:
                classifier = sklearn.svm.LinearSVC(C=0.01, class_weight="balanced")
                classifier.fit(code[:, None], factor)
                matrix[k, d] = np.mean(classifier.predict(codes_test[:, d, None]) == factors_test[:, k])
            else:
                matrix[k, d] = 1.0
    return matrix


def sap(codes, factors, codes_test=None, factors_test=None, continuous_factors: bool = False,
        train_fraction: float = 2 / 3) -> float:
    """The SAP score: mean over factors of the gap between the two codes that predict it best.

    Args:
        codes: `(N, D)` codes.
        factors: `(N, K)` integer factor labels.
        codes_test: Test codes for the classifiers. Defaults to the rows after
            the first `train_fraction`.
        factors_test: Their factors.
        continuous_factors: Score by squared correlation instead of a linear
            SVM's accuracy. Defaults to False.
        train_fraction: Share of rows to train on when no test set is given.
            Defaults to 2/3.

    Returns:
        SAP in [0, 1]. With discrete factors the runner-up code still scores
        about chance accuracy, so even codes equal to the factors score at
        most mean_k (1 - 1 / n_k) (n_k values of factor k), and a 1-D linear
        SVM separates few of a many-valued factor's values.
    """
    matrix = np.sort(sap_matrix(codes, factors, codes_test, factors_test, continuous_factors, train_fraction), axis=1)
    return float(np.mean(matrix[:, -1] - matrix[:, -2])) if matrix.shape[1] > 1 else float(np.mean(matrix[:, -1]))


# -------------------------------------------------------------------- DCI
def dci_from_importance(importance) -> tuple[float, float]:
    """Disentanglement and completeness of an importance matrix R `(K factors, D codes)`.

    disentanglement = sum_d rho_d (1 - H_K(R[:, d] / sum_k R[k, d])), rho_d = sum_k R[k, d] / sum R;
    completeness = sum_k rho_k (1 - H_D(R[k, :] / sum_d R[k, d])), rho_k = sum_d R[k, d] / sum R;
    H_n is the entropy in base n (1e-11 is added to R inside the entropies, as in disentanglement_lib).

    Example:

    >>> [round(value, 6) for value in dci_from_importance(np.eye(3))]
    [1.0, 1.0]
    """
    importance = np.abs(np.asarray(importance, "float64"))
    num_factors, num_codes = importance.shape
    per_code = 1.0 - scipy.stats.entropy(importance + 1e-11, base=num_factors, axis=0) if num_factors > 1 \
        else np.ones(num_codes)
    per_factor = 1.0 - scipy.stats.entropy(importance + 1e-11, base=num_codes, axis=1) if num_codes > 1 \
        else np.ones(num_factors)
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    code_weight, factor_weight = weights.sum(axis=0) / weights.sum(), weights.sum(axis=1) / weights.sum()
    return float(per_code @ code_weight), float(per_factor @ factor_weight)


def dci(codes, factors, codes_test=None, factors_test=None, train_fraction: float = 2 / 3,
        seed: int = 0) -> dict:
    """DCI disentanglement, completeness and informativeness from gradient-boosted trees.

    One `sklearn.ensemble.GradientBoostingClassifier` (default settings, as
    disentanglement_lib) per factor predicts it from all codes; its feature
    importances are the factor's row of R.

    Args:
        codes: `(N, D)` codes.
        factors: `(N, K)` integer factor labels.
        codes_test: Test codes. Defaults to the rows after the first `train_fraction`.
        factors_test: Their factors.
        train_fraction: Share of rows to train on when no test set is given.
            Defaults to 2/3.
        seed: The trees' `random_state`. Defaults to 0.

    Returns:
        A dict: `disentanglement`, `completeness`, `informativeness` (mean test
        accuracy over factors), `informativeness_train`, `importance` (K x D list).
    """
    import sklearn.ensemble

    codes, factors, codes_test, factors_test = _split(codes, factors, codes_test, factors_test, train_fraction)
    importance = np.zeros((factors.shape[1], codes.shape[1]))
    train_accuracy, test_accuracy = [], []
    for k, factor in enumerate(factors.T):
        if len(np.unique(factor)) < 2:  # nothing to predict: no importance, perfect accuracy
            train_accuracy.append(1.0)
            test_accuracy.append(float(np.mean(factors_test[:, k] == factor[0])))
            continue
        trees = sklearn.ensemble.GradientBoostingClassifier(random_state=seed).fit(codes, factor)
        importance[k] = np.abs(trees.feature_importances_)
        train_accuracy.append(float(np.mean(trees.predict(codes) == factor)))
        test_accuracy.append(float(np.mean(trees.predict(codes_test) == factors_test[:, k])))
    disentanglement, completeness = dci_from_importance(importance)
    return {
        "disentanglement": disentanglement,
        "completeness": completeness,
        "informativeness": float(np.mean(test_accuracy)),
        "informativeness_train": float(np.mean(train_accuracy)),
        "importance": importance.tolist(),
    }


# ------------------------------------------------- scores that draw images


def _codes(representation: Representation, images) -> np.ndarray:
    codes = np.asarray(representation(images), "float64")
    return codes.reshape(len(codes), -1)


def _chunks(num_points: int, batch_size: int, max_images: int = 8192):
    """Point counts whose images are encoded together (one representation call per chunk, not per point)."""
    per_chunk = max(1, max_images // batch_size)
    return [min(per_chunk, num_points - start) for start in range(0, num_points, per_chunk)]


def _beta_vae_points(representation, data, rng, batch_size: int, num_points: int):
    features, labels = [], rng.integers(0, data.num_factors, num_points)
    for start, count in zip(np.cumsum([0, *_chunks(num_points, batch_size)]), _chunks(num_points, batch_size)):
        firsts, pairs = [], []
        for factor in labels[start : start + count]:
            first, images = data.sample(batch_size, rng)
            firsts.append(images)
            pairs.append(data.sample_given(int(factor), first[:, factor], rng)[1])
        codes, paired_codes = (_codes(representation, np.concatenate(images)) for images in (firsts, pairs))
        difference = np.abs(codes - paired_codes)
        features.append(difference.reshape(count, batch_size, -1).mean(axis=1))
    return np.concatenate(features), labels


def beta_vae_score(representation: Representation, data: GroundTruthData, rng: np.random.Generator,
                   batch_size: int = 64, num_train: int = 10_000, num_eval: int = 5_000) -> dict:
    """The BetaVAE score: accuracy of predicting the shared factor of image pairs from their code differences.

    Each point: a factor k is chosen uniformly; `batch_size` pairs of images
    share the value of factor k (the rest drawn independently); the feature
    is the mean over pairs of |z(x1) - z(x2)|. A logistic regression is
    trained on `num_train` points and scored on `num_eval` new ones.

    Args:
        representation: Images -> codes `(N, D)`.
        data: Ground-truth data.
        rng: The random draws.
        batch_size: Pairs per point. Defaults to 64 (disentanglement_lib's).
        num_train: Training points. Defaults to 10,000 (disentanglement_lib's).
        num_eval: Evaluation points. Defaults to 5,000 (disentanglement_lib's).

    Returns:
        `{"train_accuracy", "eval_accuracy"}`.
    """
    import sklearn.linear_model

    batch_size, num_train, num_eval = (positive_int(name, value) for name, value in (
        ("batch_size", batch_size), ("num_train", num_train), ("num_eval", num_eval)))
    train_points, train_labels = _beta_vae_points(representation, data, rng, batch_size, num_train)
    eval_points, eval_labels = _beta_vae_points(representation, data, rng, batch_size, num_eval)
    if len(np.unique(train_labels)) < 2:  # too few points to see two factors: the one label seen
        return {"train_accuracy": 1.0, "eval_accuracy": float(np.mean(eval_labels == train_labels[0]))}
    classifier = sklearn.linear_model.LogisticRegression(random_state=int(rng.integers(2**31 - 1)), max_iter=1000)
    classifier.fit(train_points, train_labels)
    return {"train_accuracy": float(classifier.score(train_points, train_labels)),
            "eval_accuracy": float(classifier.score(eval_points, eval_labels))}


def _factor_vae_votes(representation, data, rng, batch_size, num_points, scale, active):
    votes = np.zeros((data.num_factors, int(active.sum())), "int64")
    factors = rng.integers(0, data.num_factors, num_points)
    for start, count in zip(np.cumsum([0, *_chunks(num_points, batch_size)]), _chunks(num_points, batch_size)):
        images = []
        for factor in factors[start : start + count]:
            value = data.sample_factors(1, rng)[0, factor]
            images.append(data.sample_given(int(factor), np.full(batch_size, value), rng)[1])
        codes = _codes(representation, np.concatenate(images)).reshape(count, batch_size, -1)
        local = np.var(codes, axis=1, ddof=1)
        for factor, variances in zip(factors[start : start + count], local, strict=True):
            votes[factor, np.argmin(variances[active] / scale[active])] += 1
    return votes


def factor_vae_score(representation: Representation, data: GroundTruthData, rng: np.random.Generator,
                     batch_size: int = 64, num_train: int = 10_000, num_eval: int = 5_000,
                     num_variance_estimate: int = 10_000, prune_threshold: float = 0.05) -> dict:
    """The FactorVAE score: accuracy of a majority vote from the least-varying code to the fixed factor.

    Codes whose standard deviation over `num_variance_estimate` images is
    below `prune_threshold` are left out (collapsed). Each point: a factor
    k is fixed to one value over `batch_size` images; the vote goes to the
    active code d of least variance over the batch, divided by its variance
    over the data. The classifier maps each code to the factor that voted
    for it most on `num_train` points and is scored on `num_eval` new ones.

    Args:
        representation: Images -> codes `(N, D)`.
        data: Ground-truth data.
        rng: The random draws.
        batch_size: Images per point. Defaults to 64.
        num_train: Training points. Defaults to 10,000.
        num_eval: Evaluation points. Defaults to 5,000.
        num_variance_estimate: Images for the codes' variances. Defaults to 10,000.
        prune_threshold: Standard deviation below which a code is inactive.
            Defaults to 0.05 (disentanglement_lib's study).

    Returns:
        `{"train_accuracy", "eval_accuracy", "num_active_dims"}`; accuracies are 0
        when no code is active.
    """
    for name, value in (("batch_size", batch_size), ("num_train", num_train), ("num_eval", num_eval),
                        ("num_variance_estimate", num_variance_estimate)):
        positive_int(name, value)
    _, images = data.sample(num_variance_estimate, rng)
    scale = np.var(_codes(representation, images), axis=0, ddof=1)
    active = np.sqrt(scale) >= prune_threshold
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}
    train_votes = _factor_vae_votes(representation, data, rng, batch_size, num_train, scale, active)
    classifier = np.argmax(train_votes, axis=0)  # code -> factor
    columns = np.arange(train_votes.shape[1])
    eval_votes = _factor_vae_votes(representation, data, rng, batch_size, num_eval, scale, active)
    return {"train_accuracy": float(train_votes[classifier, columns].sum() / train_votes.sum()),
            "eval_accuracy": float(eval_votes[classifier, columns].sum() / eval_votes.sum()),
            "num_active_dims": int(active.sum())}


# ------------------------------------------------------------------ report
def posterior_means(model, batch_size: int = 500) -> Representation:
    """The representation function of a VAE of any family: images -> posterior means `(N, D)` (flattened)."""
    from keras_vae import evaluation

    return lambda images: evaluation.posterior_moments(model, np.asarray(images, "float32"), batch_size)[0]


def scores(representation: Representation, data: GroundTruthData, seed: int = 0, num_train: int = 2000,
           num_test: int = 1000, num_points: int = 500, batch_size: int = 64, num_bins: int = 20) -> dict:
    """Every metric of this module for one representation, with the sample counts and seed it used.

    MIG, SAP and DCI use `num_train` + `num_test` draws (at most the size of
    a finite set; MIG uses the train draws, as disentanglement_lib); the
    BetaVAE and FactorVAE scores train on `num_points` points of `batch_size`
    images and are scored on `num_points // 2` more (disentanglement_lib used
    10,000 and 5,000 points; fewer points give a noisier score).

    Args:
        representation: Images -> codes `(N, D)`, e.g. `posterior_means(vae)`.
        data: Ground-truth data (`keras_vae.sprites.Sprites`, `LabelledImages`).
        seed: Seed of every draw and classifier. Defaults to 0.
        num_train: Draws the MIG, SAP and DCI estimators train on. Defaults to 2,000.
        num_test: Draws SAP and DCI are tested on. Defaults to 1,000.
        num_points: Training points of the BetaVAE and FactorVAE scores. Defaults to 500.
        batch_size: Images per point of those scores. Defaults to 64.
        num_bins: Histogram bins for the mutual information. Defaults to 20.

    Returns:
        A JSON-ready dict of scores (`beta_vae_score`, `factor_vae_score`, `mig`,
        `sap`, `dci_disentanglement`, `dci_completeness`, `dci_informativeness`),
        `mutual_information` (factor x code, nats), `factor_names`, `samples` and `seed`.
    """
    rng = np.random.default_rng(seed)
    total = num_train + num_test
    if data.num_images is not None and total > data.num_images:
        num_train = int(np.ceil(data.num_images * num_train / total))
        num_test, total = data.num_images - num_train, data.num_images
    factors, images = data.sample(total, rng)
    codes = _codes(representation, images)
    train, test = slice(0, num_train), slice(num_train, total)
    information = mutual_information(codes[train], factors[train], num_bins)
    dci_scores = dci(codes[train], factors[train], codes[test], factors[test], seed=seed)
    beta = beta_vae_score(representation, data, rng, batch_size, num_points, max(1, num_points // 2))
    factor = factor_vae_score(representation, data, rng, batch_size, num_points, max(1, num_points // 2),
                              num_variance_estimate=num_train)
    return {
        "beta_vae_score": beta["eval_accuracy"],
        "factor_vae_score": factor["eval_accuracy"],
        "mig": mig(codes[train], factors[train], num_bins) if codes.shape[1] > 1 else 0.0,
        "sap": sap(codes[train], factors[train], codes[test], factors[test]),
        "dci_disentanglement": dci_scores["disentanglement"],
        "dci_completeness": dci_scores["completeness"],
        "dci_informativeness": dci_scores["informativeness"],
        "factor_vae_active_dims": factor["num_active_dims"],
        "mutual_information": information.round(6).tolist(),
        "factor_names": list(data.factor_names),
        "samples": {"mig_sap_dci_train": num_train, "sap_dci_test": num_test, "num_bins": num_bins,
                    "beta_factor_vae_points_train": num_points, "beta_factor_vae_points_eval": max(1, num_points // 2),
                    "beta_factor_vae_batch": batch_size, "factor_vae_variance_images": num_train},
        "seed": seed,
    }


def most_informative_factors(information, factor_names: Sequence[str]) -> list[str]:
    """For each code, the name of the factor it carries most information about (from a factor x code matrix).

    Example:

    >>> most_informative_factors([[0.1, 0.9], [0.5, 0.2]], ["shape", "scale"])
    ['scale', 'shape']
    """
    information = np.asarray(information, "float64")
    if information.shape[0] != len(factor_names):
        raise ValueError(f"Expected {information.shape[0]} factor names. Received {len(factor_names)}.")
    return [factor_names[k] for k in np.argmax(information, axis=0)]


def ground_truth(dataset: str, images, split: str = "test", test_fraction: float = 0.1) -> GroundTruthData | None:
    """The ground-truth data of a factor-labelled dataset split, None for a dataset without factors.

    The `sprites` source renders fresh sprites of the images' size
    (`keras_vae.sprites.Sprites`); an `.npz` with `factors` gives its split's
    images and labels (`LabelledImages`; `images` may be the first rows of
    the split, e.g. after `max_images`).

    Args:
        dataset: A `keras_vae.data.load_arrays` source name.
        images: The split's images (or its first rows).
        split: `"train"`, `"test"` or `"all"`. Defaults to `"test"`.
        test_fraction: As in `load_arrays`. Defaults to 0.1.
    """
    from keras_vae import data
    from keras_vae import sprites as sprites_lib

    labelled = data.factors(dataset, split, test_fraction)
    if labelled is None:
        return None
    images = np.asarray(images)
    if dataset == "sprites" or dataset.startswith("sprites:"):
        return sprites_lib.Sprites(images.shape[1])
    factors, names = labelled
    return LabelledImages(images, check_factors(factors)[: len(images)], names)


def report(model, truth: GroundTruthData, seed: int = 0, num_train: int = 2000, num_test: int = 1000,
           num_points: int = 500, batch_size: int = 500) -> dict:
    """`scores` of a VAE's posterior means (any family with one unconditional q(z|x)), and each code's factor.

    Args:
        model: A VAE.
        truth: Its ground-truth data (`ground_truth`).
        seed: Seed of every draw. Defaults to 0.
        num_train: MIG/SAP/DCI train draws. Defaults to 2,000.
        num_test: SAP/DCI test draws. Defaults to 1,000.
        num_points: BetaVAE/FactorVAE training points. Defaults to 500.
        batch_size: Images per encoder call. Defaults to 500.

    Returns:
        `scores`' dict plus `most_informative_factor` (one factor name per
        latent dimension) and `data` (what the metrics drew from).
    """
    result = scores(posterior_means(model, batch_size), truth, seed=seed, num_train=num_train, num_test=num_test,
                    num_points=num_points)
    result["most_informative_factor"] = most_informative_factors(result["mutual_information"],
                                                                 result["factor_names"])
    result["data"] = (f"{truth.num_images} labelled images of the split" if truth.num_images is not None
                      else f"freshly rendered {type(truth).__name__}")
    return result
