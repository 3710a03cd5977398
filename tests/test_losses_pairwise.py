"""The pair-based losses (siamese_jax.losses.{multi_similarity, circle, lifted_structure, npairs,
margin, supcon, ntxent, contrastive_batch, xbm}) against pytorch-metric-learning 2.9: values and
gradients on the fixed batches of tests/fixtures/pml_reference_pairs.npz (made by
make_pml_reference_pairs.py; PML in float64, ours in float32), finite gradients at zero distance
and at extreme similarity, and each one trains through main.py."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import default
from siamese_jax import losses, train
from siamese_jax.losses import objective, pairwise, xbm
from tests.helpers import all_finite

REFERENCE = np.load(pathlib.Path(__file__).parent / "fixtures" / "pml_reference_pairs.npz")
CASES = ("b8", "b12_identical", "b6_unique", "b16_clusters")
PAIR_LOSSES = ("multi_similarity", "circle", "lifted_structure", "lifted_structure_original",
               "npairs", "margin", "supcon",
               "ntxent", "contrastive_batch", "xbm")

# fixture variant -> (loss.name, loss.* settings that make ours the PML object the script built)
VARIANTS = {
    "multi_similarity": ("multi_similarity", {}),
    "multi_similarity_unmined": ("multi_similarity", {"miner": "none"}),
    "circle": ("circle", {}),
    "lifted_structure": ("lifted_structure", {}),
    "lifted_structure_snr": ("lifted_structure", {"distance": "snr"}),
    "lifted_structure_original": ("lifted_structure_original", {}),
    "npairs": ("npairs", {}),
    "supcon": ("supcon", {}),
    "ntxent": ("ntxent", {}),
    "ntxent_lp": ("ntxent", {"distance": "lp"}),
    "contrastive_batch": ("contrastive_batch", {}),
    "contrastive_batch_cosine": ("contrastive_batch", {"distance": "cosine_similarity",
                                                       "pos_margin": 1.0, "neg_margin": 0.0}),
    "contrastive_batch_pair_margin": ("contrastive_batch", {"miner": "pair_margin"}),
    "margin_nu0": ("margin", {"margin": 0.2}),
    "margin_nu0.1": ("margin", {"margin": 0.2, "nu": 0.1}),
}


def spec_of(name: str, **settings) -> train.LossSpec:
  """The LossSpec main.py would build for ``loss.name=name`` and ``loss.<key>=value``."""
  config = default.get_config()
  config.loss.name = name
  config.model.head = losses.OBJECTIVES[name].heads[0]
  config.loss.update(settings)
  return train.loss_spec_from_config(config)


def pair_loss_of(name: str):
  return xbm.PAIR_LOSSES.get(name) or getattr(losses, name).PAIR_LOSS


def batch_loss(name: str, spec, embeddings, labels, loss_params=None):
  """Our loss of a batch of embeddings [B, D] (no model): what ``compute`` does after embedding."""
  pair_loss = pair_loss_of(name)
  read = pairwise.reader(spec, pair_loss.defaults)
  pairs = pairwise.batch_pairs(read, embeddings, labels, None)
  return pairwise.loss_of_pairs(pair_loss, loss_params or {}, pairs, read, jax.random.key(0))[0]


# Where PML's result hangs on float64 rounding: rows 0 and 7 of b12_identical coincide, so their
# cosine is 1 - 1.1e-16 in float64 and PML's AvgNonZeroReducer counts the positive pair's hinge
# relu(1 - s) = 1.1e-16 as an active pair (one more in the mean's count: 4.8 % lower); float32
# rounds the cosine to 1 and the pair to 0, which is what the loss means.
ROUNDING = {("contrastive_batch_cosine", "b12_identical")}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_value_and_gradient_match_pml(case, variant):
  if (variant, case) in ROUNDING:
    pytest.skip("PML counts a 1e-16 rounding residue as an active pair (see ROUNDING)")
  name, settings = VARIANTS[variant]
  spec = spec_of(name, **settings)
  emb, labels = REFERENCE[f"{case}/emb"], jnp.asarray(REFERENCE[f"{case}/labels"], jnp.int32)
  params = {"beta_offset": jnp.zeros(())} if name == "margin" else {}
  value, (grad, loss_grad) = jax.value_and_grad(
      lambda e, p: batch_loss(name, spec, e, labels, p), argnums=(0, 1))(jnp.asarray(emb), params)
  want = REFERENCE[f"{case}/loss/{variant}"]
  np.testing.assert_allclose(value, want, rtol=2e-5, atol=2e-5)
  scale = max(1.0, float(np.abs(REFERENCE[f"{case}/grad/{variant}"]).max()))
  np.testing.assert_allclose(grad, REFERENCE[f"{case}/grad/{variant}"], rtol=1e-4,
                             atol=2e-5 * scale)
  if name == "margin":  # d loss / d beta (PML learn_beta=True)
    np.testing.assert_allclose(loss_grad["beta_offset"], REFERENCE[f"{case}/beta_grad/{variant}"][0],
                               atol=1e-5)


@pytest.mark.parametrize("variant", ["contrastive_batch", "multi_similarity", "ntxent"])
def test_xbm_matches_pml_cross_batch_memory_over_steps(variant):
  spec = spec_of("xbm", memory_loss=variant, memory_size=20, miner="none")  # PML's: no miner
  pair_loss = xbm.PAIR_LOSSES[variant]
  read = pairwise.reader(spec, pair_loss.defaults)
  memory = xbm.init_memory(spec, objective.ParamDims(None, REFERENCE["xbm/emb"].shape[-1]))

  def loss_fn(emb, labels, memory):
    loss, _, memory = xbm.loss_against_memory(pair_loss, {}, emb, labels,
                                              jnp.ones(labels.shape, bool), memory, read,
                                              jax.random.key(0))
    return loss, memory

  step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  for i, (emb, labels) in enumerate(zip(REFERENCE["xbm/emb"], REFERENCE["xbm/labels"])):
    (value, memory), grad = step(jnp.asarray(emb), jnp.asarray(labels, jnp.int32), memory)
    np.testing.assert_allclose(value, REFERENCE[f"xbm/{variant}/loss"][i], rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(grad, REFERENCE[f"xbm/{variant}/grad"][i], rtol=1e-4, atol=2e-5)
  assert int(memory["next"]) == (4 * 8) % 20 and bool(jnp.all(memory["filled"]))


def test_every_pair_loss_is_listed_with_its_defaults():
  for name in PAIR_LOSSES:
    record = losses.OBJECTIVES[name]
    assert record.batch_kind == "pk" and record.heads == ("distance",)
    assert set(record.defaults) <= set(record.reads), name
  # PML 2.9's defaults reach the spec where the config leaves the key None.
  assert spec_of("ntxent")["temperature"] == 0.07 and spec_of("supcon")["temperature"] == 0.1
  assert spec_of("multi_similarity")["beta"] == 50.0 and spec_of("margin")["beta"] == 1.2
  assert spec_of("multi_similarity")["miner"] == "multi_similarity"
  assert spec_of("circle")["distance"] == "cosine_similarity"
  assert spec_of("npairs")["distance"] == "dot_product"
  assert spec_of("ntxent", temperature=0.5)["temperature"] == 0.5


# Gradients of every loss where rows coincide (zero distance, also across classes) and where the
# similarities are extreme (rows scaled by 1e4, and unnormalized dot products of such rows).
EXTREME = [
    ("identical", lambda e: jnp.tile(e[:1], (e.shape[0], 1)), {}),
    ("zero_rows", lambda e: jnp.zeros_like(e), {}),
    ("scaled", lambda e: 1e4 * e, {}),
    ("raw_dot", lambda e: 30.0 * e, {"distance": "dot_product", "normalize_embeddings": False}),
    ("raw_lp", lambda e: jnp.tile(e[:2], (e.shape[0] // 2, 1)), {"normalize_embeddings": False,
                                                                 "distance": "lp"}),
]


@pytest.mark.parametrize("name", [n for n in PAIR_LOSSES if n != "xbm"])
@pytest.mark.parametrize("label,make,settings", EXTREME, ids=[e[0] for e in EXTREME])
def test_gradients_finite_at_zero_distance_and_extreme_similarity(name, label, make, settings):
  if name == "circle" and "distance" in settings:
    pytest.skip("circle takes cosine similarities only")
  spec = spec_of(name, **settings)
  emb = make(jax.random.normal(jax.random.key(1), (8, 5)))
  labels = jnp.array([0, 0, 1, 1, 2, 2, 3, 3], jnp.int32)
  params = {"beta_offset": jnp.zeros(())} if name == "margin" else {}
  value, grads = jax.value_and_grad(lambda e, p: batch_loss(name, spec, e, labels, p),
                                    argnums=(0, 1))(emb, params)
  assert np.isfinite(value) and all_finite(grads), (label, value)


def test_margin_learns_beta_as_a_loss_parameter():
  record = losses.OBJECTIVES["margin"]
  assert [p.name for p in record.params] == ["beta_offset"]
  spec = spec_of("margin")
  params = objective.init_params(record, spec, jax.random.key(0), objective.ParamDims(3, 4))
  assert params["beta_offset"].shape == () and float(params["beta_offset"]) == 0.0
  emb = jax.random.normal(jax.random.key(2), (8, 4))
  labels = jnp.array([0, 0, 1, 1, 2, 2, 0, 1], jnp.int32)
  grad = jax.grad(lambda p: batch_loss("margin", spec, emb, labels, p))(params)
  assert float(grad["beta_offset"]) != 0.0
  frozen = spec_of("margin", learn_beta=False)
  grad = jax.grad(lambda p: batch_loss("margin", frozen, emb, labels, p))(params)
  assert float(grad["beta_offset"]) == 0.0


def test_distance_weighted_miner_feeds_margin_and_pair_losses():
  emb = jax.random.normal(jax.random.key(3), (8, 16))
  labels = jnp.array([0, 0, 1, 1, 2, 2, 3, 3], jnp.int32)
  params = {"beta_offset": jnp.zeros(())}
  spec = spec_of("margin", miner="distance_weighted")
  values = [batch_loss("margin", spec, emb, labels, params) for _ in range(2)]
  assert np.isfinite(values[0]) and values[0] == values[1]  # deterministic for a fixed key
  assert values[0] != batch_loss("margin", spec_of("margin"), emb, labels, params)
  # A pair loss takes the drawn triplets' pairs (PML's (a, p, a, n)): each anchor keeps its
  # positives and at most one drawn negative per positive.
  spec = spec_of("contrastive_batch", miner="distance_weighted")
  read = pairwise.reader(spec, losses.contrastive_batch.DEFAULTS)
  pairs = pairwise.batch_pairs(read, emb, labels, None)
  mined = pairwise.mine(read, pairs, jax.random.key(0))
  assert bool(jnp.all(mined.negatives <= pairs.negatives))
  assert bool(jnp.all(mined.positives <= pairs.positives))
  assert bool(jnp.all(jnp.sum(mined.negatives, 1) <= jnp.sum(mined.positives, 1)))
  assert int(jnp.sum(mined.negatives)) > 0
  assert np.isfinite(batch_loss("contrastive_batch", spec, emb, labels))


def test_xbm_memory_is_carried_in_the_train_state():
  config = default.get_config()
  config.update_from_flattened_dict({"loss.name": "xbm", "loss.memory_size": 24})
  spec = train.loss_spec_from_config(config)
  model_config = default.get_config().model
  model_config.update({"encoder": "mlp", "features": (16, 4), "dropout_rates": (0.0, 0.0)})
  from siamese_jax import models
  state = train.create_train_state(jax.random.key(0), models.build_model(model_config), (6, 6, 1),
                                   train.make_optimizer(config.optimizer, 10), spec, 3)
  assert state.loss_state["embeddings"].shape == (24, 4)
  assert not bool(jnp.any(state.loss_state["filled"]))
  rng = np.random.default_rng(0)
  batch = {"x": rng.integers(0, 256, (8, 6, 6, 1)).astype(np.uint8),
           "label": np.repeat(np.arange(4), 2).astype(np.int32),
           "mask": np.array([1] * 7 + [0], np.float32)}
  step = jax.jit(lambda state, key: train.train_step(state, batch, key, spec))
  state, metrics = step(state, jax.random.key(1))
  assert np.isfinite(float(metrics["loss"]))
  assert int(state.loss_state["next"]) == 8 and int(jnp.sum(state.loss_state["filled"])) == 7
  state, _ = step(state, jax.random.key(2))
  assert int(state.loss_state["next"]) == 16 and int(jnp.sum(state.loss_state["filled"])) == 14
  # Outside the train step (no memory) the loss is the inner loss on the batch alone.
  loss, _ = train.compute_loss(state.params, state.apply_fn, batch, jax.random.key(0), spec)
  assert np.isfinite(float(loss))


# ------------------------------------------------------------------ end to end (slow)

@pytest.mark.slow
@pytest.mark.parametrize("name", PAIR_LOSSES)
def test_each_pair_loss_trains_from_its_name_alone(name, tmp_path, tfds_dir):
  from siamese_jax import experiment
  from tests.helpers import tiny_config
  config = tiny_config("triplet", tfds_dir, **{"loss.name": name, "train.epochs": 1,
                                               "plots.latent": False, "eval.pairs": 100})
  summary = experiment.train_and_evaluate(config, str(tmp_path / name))
  assert summary["steps"] == 6 and np.isfinite(summary["final"]["train_loss"]), summary["final"]
  if losses.OBJECTIVES[name].params:  # a run with learned loss parameters loads for inference
    from siamese_jax import checkpoints
    _, state = checkpoints.load_trained(tmp_path / name)
    assert set(state.params[objective.LOSS_PARAMS]) == {"beta_offset"}


@pytest.mark.slow
def test_main_py_trains_xbm(tmp_path, tfds_dir):
  import subprocess
  from tests.helpers import REPO_ROOT, main_command, repo_env
  command = main_command(tmp_path / "xbm", tfds_dir, "--config.loss.name=xbm",
                         "--config.loss.memory_size=64", "--config.train.epochs=1",
                         "--config.train.steps_per_epoch=4", "--config.train.steps_per_call=2",
                         "--config.train.classes_per_batch=4", "--config.train.samples_per_class=4")
  done = subprocess.run(command, cwd=REPO_ROOT, env=repo_env(), capture_output=True, text=True,
                        timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  assert (tmp_path / "xbm" / "summary.json").is_file()


def test_config_checks_accept_none_and_name_the_key():
  from siamese_jax import config_checks
  config = default.override(default.get_config(), {"loss.name": "ntxent"})
  config_checks.validate(config)  # loss.distance, loss.miner, loss.temperature left None
  config.loss.distance = "l2"
  with pytest.raises(config_checks.ConfigError, match=r"^loss.distance='l2' is not known; "
                     r"choose one of cosine_similarity, dot_product, lp, snr$"):
    config_checks.validate(config)
  config.loss.distance = None
  config.loss.temperature = -1.0
  with pytest.raises(config_checks.ConfigError, match=r"^loss.temperature=-1.0 must be a positive"):
    config_checks.validate(config)
  config = default.override(default.get_config(), {"loss.name": "circle", "loss.distance": "lp"})
  with pytest.raises(config_checks.ConfigError, match=r"^loss.distance='lp' must be "
                     r"cosine_similarity \(or None\) for loss.name='circle'$"):
    config_checks.validate(config)


def test_help_lists_the_pair_loss_keys():
  import main
  text = main._config_help()
  assert "loss.distance" in text and "one of cosine_similarity, dot_product, lp, snr" in text
  assert "one of none, multi_similarity, pair_margin, distance_weighted" in text
