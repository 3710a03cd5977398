"""siamese_jax.losses: the OBJECTIVES records are complete, the config checks walk them (a wrong
head or a value a record declares impossible is one line naming the key), and an objective's
learned parameters are initialised beside the model's and trained (a toy proxy loss). The losses
themselves are tested in tests/test_losses_<module>.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import default
from siamese_jax import batches, config_checks, config_keys, distances, losses, models, train
from siamese_jax.losses import base, objective
from tests.helpers import all_finite


def config_for(loss: str, head: str, **overrides):
  """The default config with ``loss.name``, ``model.head`` and {"section.key": value}."""
  return default.override(default.get_config(), {"loss.name": loss, "model.head": head,
                                                 **overrides})


def test_every_record_is_complete():
  loss_keys = {path.split(".", 1)[1] for path in config_keys.declared_paths()
               if path.startswith("loss.")}
  assert list(losses.OBJECTIVES)[:5] == ["contrastive", "bce", "triplet", "cross_entropy",
                                         "cosine_softmax"]
  for name, record in losses.OBJECTIVES.items():
    assert record.name == name and record.batch_kind in batches.KINDS
    assert record.heads and set(record.heads) <= set(models.HEADS), name
    assert set(record.reads) <= loss_keys, name
    assert set(record.defaults) <= set(record.reads), name  # a default only for a key it reads
    assert {check.path for check in record.checks} <= set(config_keys.declared_paths()), name
  assert losses.choices()["loss.name"] == tuple(losses.OBJECTIVES)
  assert losses.choices()["loss.mining"] == ("batch_all", "batch_hard", "semi_hard")
  assert {k: v for k, v in config_checks.choices().items() if k.startswith("loss.")} == \
      losses.choices()
  assert {(key, name) for key, names in losses.readers().items() for name in names} == \
      {(f"loss.{key}", name) for name, record in losses.OBJECTIVES.items() for key in record.reads}
  assert losses.readers()["loss.mining"] == ("triplet",)


@pytest.mark.parametrize("loss,head", [(name, record.heads[0])
                                       for name, record in losses.OBJECTIVES.items()])
def test_each_loss_with_its_head_is_valid(loss, head):
  config_checks.validate(config_for(loss, head, **({"loss.margin": 0.1}
                                                   if loss == "cosine_softmax" else {})))


@pytest.mark.parametrize("loss,head,message", [
    ("contrastive", "abs_diff", "loss.name='contrastive' needs model.head='distance' (got "
     "'abs_diff'); for model.head='abs_diff' use loss.name='bce'"),
    ("bce", "distance", "loss.name='bce' needs model.head one of abs_diff, concat, subtract (got "
     "'distance'); for model.head='distance' use loss.name='contrastive' or 'triplet'"),
    ("triplet", "classifier", "loss.name='triplet' needs model.head='distance' (got "
     "'classifier'); for model.head='classifier' use loss.name='cross_entropy'"),
    ("cross_entropy", "cosine_classifier", "loss.name='cross_entropy' needs "
     "model.head='classifier' (got 'cosine_classifier'); for model.head='cosine_classifier' use "
     "loss.name='cosine_softmax'"),
    ("cosine_softmax", "distance", "loss.name='cosine_softmax' needs "
     "model.head='cosine_classifier' (got 'distance'); for model.head='distance' use "
     "loss.name='contrastive' or 'triplet'"),
])
def test_a_wrong_head_is_one_line_from_the_records(loss, head, message):
  with pytest.raises(config_checks.ConfigError) as error:
    config_checks.validate(config_for(loss, head))
  # The losses the message offers for the head are the table's: those listed here come first.
  assert str(error.value).startswith(message) and "\n" not in str(error.value)


@pytest.mark.parametrize("loss,head,overrides,message", [
    ("contrastive", "distance", {"loss.margin": 0.0}, "loss.margin=0.0 must be a positive number"),
    ("triplet", "distance", {"loss.margin": -1.0}, "loss.margin=-1.0 must be a positive number"),
    ("cosine_softmax", "cosine_classifier", {"loss.margin": 2.5},
     "loss.margin=2.5 must be in [0, 2), e.g. 0.1"),
    ("cosine_softmax", "cosine_classifier", {"loss.margin": 0.1, "loss.scale": 0.0},
     "loss.scale=0.0 must be a positive number"),
    ("triplet", "distance", {"train.samples_per_class": 1},
     "train.samples_per_class=1 must be at least 2 for triplet mining"),
    ("triplet", "distance", {"loss.mining": "hardest"},
     "loss.mining='hardest' is not known; choose one of batch_all, batch_hard, semi_hard"),
    ("triplet", "distance", {"train.pair_source": "two_source", "data.source_b": "uci_digits"},
     "train.pair_source='two_source' needs a pair loss (contrastive or bce"),
])
def test_declared_checks_are_walked(loss, head, overrides, message):
  with pytest.raises(config_checks.ConfigError) as error:
    config_checks.validate(config_for(loss, head, **overrides))
  assert message in str(error.value) and "\n" not in str(error.value)


def test_eval_threshold_follows_the_margin_and_must_be_a_number():
  config = config_for("contrastive", "distance", **{"loss.margin": 0.6})
  assert config.eval.threshold == pytest.approx(0.3) and "threshold" not in config.loss
  config.eval.threshold = float("nan")
  with pytest.raises(config_checks.ConfigError, match=r"eval.threshold=nan must be a number"):
    config_checks.validate(config)


def test_unused_keys_come_from_the_records():
  config = config_for("bce", "abs_diff", **{"loss.margin": 2.0, "loss.mining": "semi_hard"})
  found = config_checks.unused_keys(config)
  assert [line.split(" ")[0] for line in found] == ["loss.margin=2.0", "loss.mining='semi_hard'"]
  assert "loss.name='bce' does not read it (it reads loss.name)" in found[0]


def test_the_loss_spec_carries_what_the_objective_reads():
  config = config_for("triplet", "distance", **{"loss.margin": 0.5, "loss.scale": 3.0})
  spec = train.loss_spec_from_config(config)
  assert spec.settings == (("margin", 0.5), ("mining", "batch_hard"))
  assert spec["margin"] == 0.5 and spec.batch_kind == "pk" and spec.distance == "euclidean"
  assert hash(spec) == hash(train.loss_spec_from_config(config))  # static in jit
  assert spec == train.make_loss_spec("triplet", spec.scoring, mining="batch_hard", margin=0.5)


# ------------------------------------------------------ learned parameters: a toy proxy loss

def toy_proxy_compute(params, apply_fn, batch, key, spec, train=True):
  """Softmax over minus the squared distances to one learned proxy per class."""
  embeddings = base.embeddings(params, apply_fn, batch, key, train)
  proxies = params[objective.LOSS_PARAMS]["proxies"]
  logits = -distances.pairwise_squared_euclidean(embeddings, proxies) * spec["scale"]
  per_example = -jnp.take_along_axis(jax.nn.log_softmax(logits), batch["label"][:, None], 1)[:, 0]
  loss = base.masked_mean(per_example, batch.get("mask"))
  return loss, {"loss": loss}


TOY = objective.Objective(
    name="toy_proxy", batch_kind="uniform", heads=("distance",), reads=("scale",),
    compute=toy_proxy_compute, checks=(objective.positive("loss.scale"),),
    params=(objective.LearnedParam(
        "proxies", lambda spec, dims: (dims.num_classes, dims.embedding_dim)),))


@pytest.fixture
def toy(monkeypatch):
  monkeypatch.setitem(losses.OBJECTIVES, TOY.name, TOY)
  return TOY


def test_a_new_record_is_all_the_config_checks_need(toy):
  config = config_for(toy.name, "distance", **{"loss.scale": 2.0, "loss.margin": 3.0})
  config_checks.validate(config)
  assert toy.name in config_checks.choices()["loss.name"]
  assert [line.split(" ")[0] for line in config_checks.unused_keys(config)] == ["loss.margin=3.0"]
  config.loss.scale = -1.0
  with pytest.raises(config_checks.ConfigError, match=r"^loss.scale=-1.0 must be a positive"):
    config_checks.validate(config)


def toy_state(spec, num_classes=3):
  model_config = default.get_config().model
  model_config.update({"encoder": "mlp", "features": (16, 4), "dropout_rates": (0.0, 0.0)})
  tx = train.make_optimizer(default.override(default.get_config(), {
      "optimizer.name": "adam", "optimizer.learning_rate": 3e-2}).optimizer, 40)
  return train.create_train_state(jax.random.key(0), models.build_model(model_config), (6, 6, 1),
                                  tx, spec, num_classes)


def test_learned_loss_params_are_initialised_beside_the_model_and_trained(toy):
  spec = train.loss_spec_from_config(config_for(toy.name, "distance", **{"loss.scale": 1.0}))
  state = toy_state(spec)
  plain = toy_state(None)
  assert set(state.params) == set(plain.params) | {objective.LOSS_PARAMS}
  assert state.params[objective.LOSS_PARAMS]["proxies"].shape == (3, 4)  # [classes, D]
  for got, want in zip(jax.tree_util.tree_leaves(
      {k: v for k, v in state.params.items() if k != objective.LOSS_PARAMS}),
                       jax.tree_util.tree_leaves(plain.params)):
    np.testing.assert_array_equal(got, want)  # the model's init is untouched
  # The model still applies to the whole tree (flax reads its own params).
  x = jnp.zeros((2, 6, 6, 1), jnp.uint8)
  np.testing.assert_array_equal(state.apply_fn({"params": state.params}, x / 255.0, method="embed"),
                                plain.apply_fn({"params": plain.params}, x / 255.0, method="embed"))

  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(3), 4).astype(np.int32)
  images = np.clip(rng.integers(0, 256, (3, 6, 6, 1))[labels] + rng.integers(-20, 20, (12, 6, 6, 1)),
                   0, 255).astype(np.uint8)
  batch = {"x": images, "label": labels, "mask": np.ones(12, np.float32)}
  step = jax.jit(lambda state, key: train.train_step(state, batch, key, spec))
  trained, history = state, []
  for i in range(20):
    trained, metrics = step(trained, jax.random.key(i))
    history.append(float(metrics["loss"]))
  assert all_finite(trained.params) and np.all(np.isfinite(history))
  assert not np.allclose(trained.params[objective.LOSS_PARAMS]["proxies"],
                         state.params[objective.LOSS_PARAMS]["proxies"])
  assert history[-1] < 0.5 * history[0], history


def test_objectives_without_params_leave_the_tree_as_the_model_made_it():
  spec = train.loss_spec_from_config(config_for("triplet", "distance"))
  assert objective.LOSS_PARAMS not in toy_state(spec).params
