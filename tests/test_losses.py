"""Losses: NumPy references, finite gradients at zero distance, stability, masks, vmap; each
check that takes ``variant`` (conftest) runs under jax.jit and eagerly."""

import functools

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.special
from hypothesis import given, strategies as st

from siamese_jax import distances, losses

DTYPES = [jnp.float32, jnp.bfloat16]
MINED = sorted(losses.MINED_TRIPLET_LOSSES)


def all_finite(tree):
  return all(bool(jnp.all(jnp.isfinite(leaf.astype(jnp.float32))))
             for leaf in jax.tree_util.tree_leaves(tree))


def numpy_contrastive(d, same, margin):
  return same * d ** 2 + (1 - same) * np.maximum(margin - d, 0) ** 2


# ------------------------------------------------------------------------------ values

@given(d=hnp.arrays(np.float32, (6,), elements=st.floats(0, 5, width=32)),
       same=hnp.arrays(np.float32, (6,), elements=st.sampled_from([0.0, 1.0])),
       margin=st.floats(0.1, 5.0))
def test_contrastive_matches_numpy(d, same, margin, variant):
  got = variant(losses.batch_contrastive_loss)(d, same, margin)
  np.testing.assert_allclose(got, numpy_contrastive(d, same, margin).mean(), rtol=1e-5, atol=1e-6)


def test_contrastive_default_margin_is_one():
  assert float(losses.contrastive_loss(jnp.float32(0.25), jnp.float32(0.0))) == pytest.approx(0.5625)


@given(logit=hnp.arrays(np.float32, (5,), elements=st.floats(-30, 30, width=32)),
       same=hnp.arrays(np.float32, (5,), elements=st.sampled_from([0.0, 1.0])))
def test_pair_bce_matches_numpy(logit, same, variant):
  x = logit.astype(np.float64)
  want = np.mean(np.maximum(x, 0) - x * same + np.log1p(np.exp(-np.abs(x))))
  got = variant(losses.batch_pair_bce_loss)(logit, same)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


PAIR_BCE_VALUE_AND_GRAD = jax.value_and_grad(losses.pair_bce_loss)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("logit", [1e4, -1e4, 88.0, -88.0, 0.0])
@pytest.mark.parametrize("same", [0.0, 1.0])
def test_pair_bce_stable_for_extreme_logits(dtype, logit, same, variant):
  x = jnp.asarray(logit, dtype)
  value, grad = variant(PAIR_BCE_VALUE_AND_GRAD)(x, jnp.asarray(same, dtype))
  assert all_finite((value, grad))
  want = max(logit, 0) - logit * same + np.log1p(np.exp(-abs(logit)))
  assert float(value) == pytest.approx(want, rel=1e-2, abs=1e-2)
  assert float(grad) == pytest.approx(scipy.special.expit(logit) - same, abs=1e-2)


@given(t=st.sampled_from([1, 8]).flatmap(lambda d: hnp.arrays(
    np.float32, (3, 4, d), elements=st.floats(-3, 3, width=32))), margin=st.floats(0.1, 3.0))
def test_triplet_matches_numpy_and_optax(t, margin, variant):
  a, p, n = t
  got = variant(losses.batch_triplet_margin_loss)(a, p, n, margin)
  dp = np.linalg.norm(a.astype(np.float64) - p, axis=-1)
  dn = np.linalg.norm(a.astype(np.float64) - n, axis=-1)
  np.testing.assert_allclose(got, np.maximum(dp - dn + margin, 0).mean(), rtol=1e-5, atol=1e-5)
  # optax's version adds eps=1e-6 under the root: same to within sqrt(eps) per distance.
  from_optax = optax.losses.triplet_margin_loss(a, p, n, margin=margin).mean()
  np.testing.assert_allclose(got, from_optax, atol=2.1e-3)


@given(logits=hnp.arrays(np.float32, (4, 5), elements=st.floats(-50, 50, width=32)),
       labels=hnp.arrays(np.int32, (4,), elements=st.integers(0, 4)))
def test_softmax_cross_entropy_matches_numpy(logits, labels, variant):
  x = logits.astype(np.float64)
  log_softmax = x - x.max(1, keepdims=True)
  log_softmax -= np.log(np.exp(log_softmax).sum(1, keepdims=True))
  want = -log_softmax[np.arange(4), labels].mean()
  got = variant(losses.batch_softmax_cross_entropy_loss)(logits, labels)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def numpy_cosface(cosines, labels, scale, margin):
  logits = scale * (cosines.astype(np.float64) - margin * np.eye(cosines.shape[1])[labels])
  return -scipy.special.log_softmax(logits, axis=1)[np.arange(len(labels)), labels]


@given(cosines=hnp.arrays(np.float32, (4, 5), elements=st.floats(-1, 1, width=32)),
       labels=hnp.arrays(np.int32, (4,), elements=st.integers(0, 4)),
       scale=st.floats(1.0, 64.0), margin=st.floats(0.0, 0.5))
def test_cosine_margin_softmax_matches_numpy(cosines, labels, scale, margin, variant):
  got = variant(losses.batch_cosine_margin_softmax_loss)(cosines, labels, scale, margin)
  want = numpy_cosface(cosines, labels, scale, margin).mean()
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_cosine_margin_softmax_margin_raises_the_loss_and_zero_is_normface():
  cosines = jnp.array([[0.9, 0.1, -0.3], [0.2, 0.4, 0.0]])
  labels = jnp.array([0, 1])
  normface = losses.batch_cosine_margin_softmax_loss(cosines, labels, 10.0, 0.0)
  np.testing.assert_allclose(normface, losses.batch_softmax_cross_entropy_loss(10 * cosines,
                                                                               labels), rtol=1e-6)
  assert float(losses.batch_cosine_margin_softmax_loss(cosines, labels, 10.0, 0.2)) > float(normface)


def numpy_mined_loss(kind, emb, labels, real, margin):
  # Distances come from the library (checked against NumPy in test_distances); in float64 a
  # 1e-27 offset would order differently from float32, where it underflows to a tie.
  dist = np.asarray(distances.pairwise_euclidean(emb, emb), np.float64)
  n = len(labels)
  hinges = []
  for i in range(n):
    pos = [j for j in range(n) if j != i and labels[j] == labels[i] and real[i] and real[j]]
    neg = [k for k in range(n) if labels[k] != labels[i] and real[i] and real[k]]
    if not (pos and neg):
      continue
    if kind == "batch_hard":
      hinges.append(max(dist[i, max(pos, key=lambda j: dist[i, j])]
                        - dist[i, min(neg, key=lambda k: dist[i, k])] + margin, 0))
    for j in pos:
      if kind == "batch_all":
        hinges += [max(dist[i, j] - dist[i, k] + margin, 0) for k in neg]
      elif kind == "semi_hard":
        farther = [dist[i, k] for k in neg if dist[i, k] > dist[i, j]]
        dn = min(farther) if farther else max(dist[i, k] for k in neg)
        hinges.append(max(dist[i, j] - dn + margin, 0))
  hinges = np.asarray(hinges)
  if kind == "batch_all":
    active = hinges[hinges > 0]
    return active.mean() if active.size else 0.0
  return hinges.mean() if hinges.size else 0.0


@pytest.mark.parametrize("kind", MINED)
@given(batch=st.tuples(  # one shape (one compile); the mask makes the smaller batches
    hnp.arrays(np.float32, (10, 3), elements=st.floats(-2, 2, width=32)),
    hnp.arrays(np.int32, (10,), elements=st.integers(0, 2)),
    hnp.arrays(np.bool_, (10,), elements=st.booleans())), margin=st.floats(0.1, 2.0))
def test_mined_losses_match_numpy(kind, batch, margin, variant):
  emb, labels, real = batch
  loss, _ = variant(losses.MINED_TRIPLET_LOSSES[kind])(emb, labels, margin, mask=real)
  want = numpy_mined_loss(kind, emb, labels, real, margin)
  np.testing.assert_allclose(loss, want, rtol=1e-3, atol=2e-3)


# --------------------------------------------- gradients at zero distance (the property)

pair_losses = {
    "contrastive_euclidean": lambda ea, eb, same, m: losses.batch_contrastive_loss(
        distances.batch_euclidean(ea, eb), same, m),
    "contrastive_cosine": lambda ea, eb, same, m: losses.batch_contrastive_loss(
        distances.batch_cosine(ea, eb), same, m),
    "contrastive_l1": lambda ea, eb, same, m: losses.batch_contrastive_loss(
        distances.batch_l1(ea, eb), same, m),
    "bce_l1_logit": lambda ea, eb, same, m: losses.batch_pair_bce_loss(
        m - distances.batch_l1(ea, eb), same),
    "triplet": lambda ea, eb, same, m: losses.batch_triplet_margin_loss(ea, eb, ea, m),
}


# The gradient properties below run jitted only, as training runs them (the eager variant
# about doubled their time in the fast loop); eager and jitted values are both checked against
# NumPy above.

@functools.cache
def jitted_pair_loss_grad(name):
  """One function object per loss, so jax.jit compiles it once per shape and dtype."""
  return jax.jit(jax.grad(pair_losses[name], argnums=(0, 1)))


@pytest.mark.parametrize("name", sorted(pair_losses))
@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=st.sampled_from([(1, 1), (5, 8)]), margin=st.floats(0.01, 10.0),
       seed=st.integers(0, 2 ** 16))
def test_pair_loss_gradient_finite_for_identical_inputs(name, dtype, shape, margin, seed):
  key_e, key_s = jax.random.split(jax.random.key(seed))
  embeddings = jax.random.normal(key_e, shape, dtype)
  same = jax.random.bernoulli(key_s, 0.5, shape[:1]).astype(dtype)
  grads = jitted_pair_loss_grad(name)(embeddings, embeddings, same, jnp.asarray(margin, dtype))
  assert all_finite(grads), name


@functools.cache
def jitted_mined_loss_grad(kind, distance):
  fn = losses.MINED_TRIPLET_LOSSES[kind]
  return jax.jit(jax.grad(lambda e, labels, margin, mask: fn(e, labels, margin, distance,
                                                             mask=mask)[0]))


@pytest.mark.parametrize("kind", MINED)
@pytest.mark.parametrize("distance", sorted(distances.PAIR_DISTANCES))
@pytest.mark.parametrize("dtype", DTYPES)
@given(real=st.sampled_from([2, 8]), labels_seed=st.integers(0, 1000),
       margin=st.floats(0.01, 10.0), scale=st.sampled_from([0.0, 1.0, 1e3]))
def test_mined_loss_gradient_finite_when_embeddings_coincide(kind, distance, dtype, real,
                                                             labels_seed, margin, scale):
  labels = jax.random.randint(jax.random.key(labels_seed), (8,), 0, 3)
  collapsed = jnp.full((8, 4), scale, dtype)  # every pairwise distance is exactly 0
  mask = jnp.arange(8) < real  # a batch of 2 as padding of one shape: one compile per case
  grad = jitted_mined_loss_grad(kind, distance)(collapsed, labels, jnp.asarray(margin, dtype),
                                                mask)
  assert all_finite(grad)


# ---------------------------------------------------------------------- masks, vmap

def test_mask_drops_padding_even_when_it_is_nan(variant):
  d = jnp.asarray([0.5, jnp.nan, 0.2])
  same = jnp.asarray([1.0, 1.0, 0.0])
  mask = jnp.asarray([1, 0, 1])
  got = variant(losses.batch_contrastive_loss)(d, same, 1.0, mask)
  assert float(got) == pytest.approx((0.25 + 0.64) / 2)
  assert float(variant(losses.masked_mean)(jnp.ones(3), jnp.zeros(3))) == 0.0


def test_vmapped_equals_per_pair_loop(variant):
  key = jax.random.key(3)
  d = jax.random.uniform(key, (9,)) * 2
  same = (jnp.arange(9) % 2).astype(jnp.float32)
  loop = np.mean([losses.contrastive_loss(d[i], same[i], 1.0) for i in range(9)])
  np.testing.assert_allclose(variant(losses.batch_contrastive_loss)(d, same), loop, rtol=1e-6)
  logits = jax.random.normal(key, (9,)) * 10
  loop = np.mean([losses.pair_bce_loss(logits[i], same[i]) for i in range(9)])
  np.testing.assert_allclose(variant(losses.batch_pair_bce_loss)(logits, same), loop, rtol=1e-5)
