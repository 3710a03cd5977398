"""siamese_jax.similarities: PML 2.9's four distances (CosineSimilarity, DotProductSimilarity,
LpDistance, SNRDistance) on the batches of tests/fixtures/pml_reference_pairs.npz, and finite
gradients at zero distance and for zero rows."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from siamese_jax import similarities
from tests.helpers import all_finite

PML = np.load(pathlib.Path(__file__).parent / "fixtures" / "pml_reference_pairs.npz")
CASES = ("b8", "b12_identical", "b6_unique", "b16_clusters")

# fixture name -> (our name, p, normalize)
MATRICES = {
    "cosine_similarity": ("cosine_similarity", 2.0, True),
    "dot_product": ("dot_product", 2.0, True),
    "dot_product_raw": ("dot_product", 2.0, False),
    "lp": ("lp", 2.0, True),
    "lp_raw": ("lp", 2.0, False),
    "lp1": ("lp", 1.0, True),
    "lp3_raw": ("lp", 3.0, False),
    "snr": ("snr", 2.0, True),
    "snr_raw": ("snr", 2.0, False),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("fixture", sorted(MATRICES))
def test_matrices_match_pml(case, fixture):
  name, p, normalize = MATRICES[fixture]
  emb = jnp.asarray(PML[f"{case}/emb"])
  got = jax.jit(similarities.matrix, static_argnums=(0, 3, 4))(name, emb, emb, p, normalize)
  want = PML[f"{case}/dist/{fixture}"]
  scale = max(1.0, float(np.abs(want).max()))
  # PML's LpDistance(p=2) is torch.cdist's matmul form: ~1e-8 where float64 rows coincide; ours
  # is exactly 0 there (distances.pairwise_squared_euclidean's tolerance).
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * scale)


def test_directions_and_margin():
  assert similarities.higher_means_closer("cosine_similarity")
  assert similarities.higher_means_closer("dot_product")
  assert not similarities.higher_means_closer("lp") and not similarities.higher_means_closer("snr")
  assert similarities.margin("lp", 3.0, 1.0) == 2.0
  assert similarities.margin("cosine_similarity", 3.0, 1.0) == -2.0
  with pytest.raises(ValueError, match=r"^loss.distance='l2' is not known; choose one of"):
    similarities.matrix("l2", jnp.ones((2, 3)), jnp.ones((2, 3)))


@pytest.mark.parametrize("name,p,normalize", sorted(set(MATRICES.values())))
def test_gradients_finite_at_zero_distance_and_zero_rows(name, p, normalize):
  rows = jax.random.normal(jax.random.key(0), (3, 5))
  for emb in (jnp.concatenate([rows, rows]), jnp.zeros((4, 5)), rows.at[1].set(0.0)):
    grad = jax.grad(lambda e: jnp.sum(similarities.matrix(name, e, e, p, normalize)))(emb)
    assert all_finite(grad), (name, p, normalize)
  identical = similarities.matrix(name, jnp.concatenate([rows, rows]),
                                  jnp.concatenate([rows, rows]), p, normalize)
  if not similarities.higher_means_closer(name):
    np.testing.assert_array_equal(jnp.diagonal(identical[:3, 3:]), 0.0)
