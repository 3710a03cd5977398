"""The class-weight and proxy losses (cosface, arcface, subcenter_arcface, normalized_softmax,
sphereface, proxy_nca, proxy_anchor, soft_triple) against pytorch-metric-learning 2.9: values and gradients
(with respect to the embeddings and the learned weights) of each record's ``compute`` on the fixed
batches of tests/fixtures/pml_reference_proxies.npz (made by make_pml_reference_proxies.py with
torch; these tests need only the file). Then what PML does not check: finite gradients with an
embedding on its own class weight and at extreme scales, padding that changes nothing, and the
records' defaults."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import default
from siamese_jax import losses, scoring, train
from siamese_jax.losses import arcface, objective, proxy_anchor
from tests.helpers import REPO_ROOT, all_finite

FIXTURE = np.load(REPO_ROOT / "tests" / "fixtures" / "pml_reference_proxies.npz")
SETTINGS = json.loads(str(FIXTURE["settings"]))
CASES = sorted({key.split("/")[0] for key in FIXTURE.files if "/" in key})
# fixture entry -> our loss.name (two entries check a second setting of the same loss)
OURS = {"arcface_wide": "arcface", "proxy_nca_sharp": "proxy_nca"}
NEW_LOSSES = ("cosface", "arcface", "subcenter_arcface", "normalized_softmax", "proxy_nca",
              "proxy_anchor", "soft_triple", "sphereface")
PAIR_SCORING = scoring.PairScoring("distance", "euclidean", 0.5)


def identity_model(variables, x, train=False, rngs=None, method=None):
  """An 'encoder' whose embeddings are its inputs, so ``compute`` sees the fixture's batch."""
  del variables, train, rngs, method
  return x


def loss_of(name: str, settings: dict, mask=None):
  """(embeddings [B, D], labels [B], weights) -> the record's loss [], float32."""
  record = losses.OBJECTIVES[name]
  spec = train.make_loss_spec(name, PAIR_SCORING, **settings)

  def loss(embeddings, labels, weights):
    params = {objective.LOSS_PARAMS: {record.params[0].name: weights}}
    batch = {"x": embeddings, "label": labels, **({} if mask is None else {"mask": mask})}
    return record.compute(params, identity_model, batch, None, spec, train=False)[0]
  return loss


def test_fixture_is_pml_2_9_and_covers_every_new_loss():
  assert str(FIXTURE["version"]).startswith("2.9")
  assert {OURS.get(name, name) for name in SETTINGS} == set(NEW_LOSSES)
  assert CASES == ["b1", "b12_repeated", "b4_unique", "b6_degenerate"]


@pytest.mark.parametrize("entry", sorted(SETTINGS))
@pytest.mark.parametrize("case", CASES)
def test_value_and_gradients_equal_pml(case, entry):
  embeddings = jnp.asarray(FIXTURE[f"{case}/embeddings"], jnp.float32)
  labels = jnp.asarray(FIXTURE[f"{case}/labels"], jnp.int32)
  weights = jnp.asarray(FIXTURE[f"{case}/{entry}/weights"], jnp.float32)
  loss = jax.jit(jax.value_and_grad(loss_of(OURS.get(entry, entry), SETTINGS[entry]),
                                    argnums=(0, 2)))
  value, (grad_embeddings, grad_weights) = loss(embeddings, labels, weights)
  np.testing.assert_allclose(value, FIXTURE[f"{case}/{entry}/loss"], rtol=1e-5, atol=1e-6)
  for got, key in ((grad_embeddings, "grad_embeddings"), (grad_weights, "grad_weights")):
    want = FIXTURE[f"{case}/{entry}/{key}"]
    # A zero embedding's gradient is x / 1e-12's (PML's F.normalize), ~1e13: relative there.
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(want).max()),
                               err_msg=f"{entry} {case} {key}")


@pytest.mark.parametrize("name", NEW_LOSSES)
@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_gradients_finite_on_own_weight_zero_embedding_and_extreme_scale(name, scale):
  """An embedding exactly on its class's weight (cosine 1: PML's ArcFace gradient is NaN
  there), a zero embedding, two identical embeddings, and a scale of 1e4 (logits of 1e4)."""
  record = losses.OBJECTIVES[name]
  settings = {key: record.defaults[key] for key in record.reads}
  settings["scale"] = scale
  rng = np.random.default_rng(0)
  k = settings.get("num_centers")
  weights = rng.normal(size=(4, 5) if k is None else (4, k, 5)).astype(np.float32)
  first = weights[1] if k is None else weights[1, 0]
  embeddings = np.stack([first, np.zeros(5), first * 3, rng.normal(size=5)]).astype(np.float32)
  labels = jnp.array([1, 0, 2, 2])
  value, grads = jax.value_and_grad(loss_of(name, settings), argnums=(0, 2))(
      jnp.asarray(embeddings), labels, jnp.asarray(weights))
  assert all_finite(value) and all_finite(grads)


@pytest.mark.parametrize("name", NEW_LOSSES)
def test_padding_changes_neither_loss_nor_gradients(name):
  """Padded examples (mask 0) leave the loss and the gradients of the real ones and of the
  weights as the real batch alone has them, and get no gradient themselves."""
  case = "b12_repeated"
  entry = name
  embeddings = jnp.asarray(FIXTURE[f"{case}/embeddings"], jnp.float32)
  labels = jnp.asarray(FIXTURE[f"{case}/labels"], jnp.int32)
  weights = jnp.asarray(FIXTURE[f"{case}/{entry}/weights"], jnp.float32)
  padded_embeddings = jnp.concatenate([embeddings, 5 * jax.random.normal(
      jax.random.key(0), (3, embeddings.shape[1]))])
  padded_labels = jnp.concatenate([labels, jnp.array([4, 4, 4])])
  mask = jnp.arange(15) < 12
  real = jax.value_and_grad(loss_of(name, SETTINGS[entry]), argnums=(0, 2))(
      embeddings, labels, weights)
  padded = jax.value_and_grad(loss_of(name, SETTINGS[entry], mask), argnums=(0, 2))(
      padded_embeddings, padded_labels, weights)
  np.testing.assert_allclose(padded[0], real[0], rtol=1e-6)
  np.testing.assert_allclose(padded[1][0][:12], real[1][0], rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(padded[1][0][12:], 0.0)
  np.testing.assert_allclose(padded[1][1], real[1][1], rtol=1e-5, atol=1e-7)


def test_proxy_anchor_averages_positives_over_the_classes_in_the_batch():
  """PML's divisor: the positive terms over the proxies with a positive (2 here), the negative
  terms over all proxies (4)."""
  cosines = jnp.array([[0.5, -0.2, 0.1, 0.0], [0.3, 0.4, -0.1, 0.2], [0.9, 0.0, 0.0, -0.5]])
  labels = jnp.array([0, 1, 0])
  pos, neg = jax.vmap(proxy_anchor.proxy_anchor_terms, in_axes=(1, 1, None, None, None))(
      cosines, labels[:, None] == jnp.arange(4), jnp.ones(3, bool), 32.0, 0.1)
  assert float(pos[2]) == 0.0 and float(pos[3]) == 0.0  # classes 2 and 3 have no positive
  want = (pos.sum() / 2) + neg.sum() / 4
  np.testing.assert_allclose(proxy_anchor.batch_proxy_anchor_loss(cosines, labels), want,
                             rtol=1e-6)


def test_arcface_margin_is_in_degrees_and_agrees_with_cos_of_the_widened_angle():
  theta = jnp.linspace(0.0, jnp.pi, 50)
  m = jnp.radians(28.6)
  got = jax.vmap(arcface.additive_angular_margin, in_axes=(0, None))(jnp.cos(theta), m)
  want = jnp.where(theta <= jnp.pi - m, jnp.cos(theta + m), jnp.cos(theta) - m * jnp.sin(m))
  np.testing.assert_allclose(got, want, atol=2e-6)


@pytest.mark.parametrize("name", NEW_LOSSES)
def test_loss_name_alone_gives_pml_defaults_the_distance_head_and_passes_checks(name):
  from siamese_jax import config_checks
  config = default.get_config()
  config.loss.name = name
  record = losses.OBJECTIVES[name]
  assert config.model.head == "distance" and record.batch_kind == "uniform"
  for key, value in record.defaults.items():
    assert config.loss[key] == value, key
  config_checks.validate(config)
  assert config_checks.unused_keys(config) == []
  config.loss.margin = 0.2  # a value set stays, whatever loss.name becomes
  config.loss.name = "contrastive"
  assert config.loss.margin == 0.2 and config.model.head == "distance"


@pytest.mark.parametrize("experiment", ["contrastive", "bce", "triplet", "embedding_ce", "omniglot",
                                        "omniglot_full", "cars196", "retrieval"])
@pytest.mark.parametrize("name", ["arcface", "proxy_anchor", "contrastive", "cross_entropy"])
def test_loss_name_alone_from_any_experiment_config_passes_the_checks(experiment, name):
  """No experiment pins model.head for its loss any more, so setting loss.name alone (as
  ``--config.loss.name=NAME`` does) gives a config the checks accept, with the loss's head."""
  import importlib
  from siamese_jax import config_checks
  config = importlib.import_module(f"experiments.{experiment}").get_config()
  config.loss.name = name
  assert config.model.head == losses.OBJECTIVES[name].heads[0]
  config_checks.validate(config)
