"""model.pretrained: a saved encoder loads exactly (from an .npz or a run's workdir, across input
normalisation, into both towers of separate weights), the head starts fresh, and a wrong file is
a one-line error naming the key and the path. A tiny run that starts from one, frozen, resumes and
reloads (slow)."""

import json

import jax
import numpy as np
import pytest

from experiments import default
from siamese_jax import checkpoints, config_checks, models, train, weights
from tests import helpers

IMAGE_SHAPE = (8, 8, 1)


def small_config(**model_overrides):
  """A tiny BCE model (its abs_diff head has params of its own): 8x8 grey -> 4 dimensions."""
  config = default.get_config()
  config.loss.name = "bce"
  config.model.update({"encoder": "mlp", "features": (16, 4), "dropout_rates": (),
                       "head": "abs_diff", **model_overrides})
  return config


def initial_params(config, seed=0, pretrained=False):
  tx = train.optimizer_from_config(config, 1)
  load = weights.initializer(config.model) if pretrained else None
  return train.create_train_state(jax.random.key(seed), models.build_model(config.model),
                                  IMAGE_SHAPE, tx, load_weights=load).params


def assert_same(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_save_params_round_trip(tmp_path):
  params = initial_params(small_config())
  weights.save_params(tmp_path / "p.npz", params)
  assert_same(weights.unflatten(weights.read_params(tmp_path / "p.npz")), params)
  assert set(weights.read_params(tmp_path / "p.npz")) == {
      "encoder/Dense_0/kernel", "encoder/Dense_0/bias", "encoder/Dense_1/kernel",
      "encoder/Dense_1/bias", "head/Dense_0/kernel", "head/Dense_0/bias"}


@pytest.mark.parametrize("source_norm,target_norm", [("none", "none"), ("per_channel", "none"),
                                                     ("none", "per_channel")])
def test_the_encoder_loads_exactly_and_the_head_starts_fresh(tmp_path, source_norm, target_norm):
  saved = initial_params(small_config(input_normalization=source_norm), seed=1)
  weights.save_params(tmp_path / "p.npz", saved)
  config = small_config(input_normalization=target_norm, pretrained=str(tmp_path / "p.npz"))
  loaded, fresh = initial_params(config, pretrained=True), initial_params(config)
  inner = lambda params: params["encoder"]["encoder"] if "input_mean" in params["encoder"] \
      else params["encoder"]
  assert_same(inner(loaded), inner(saved))
  assert_same(loaded["head"], fresh["head"])
  assert not np.array_equal(loaded["head"]["Dense_0"]["kernel"], saved["head"]["Dense_0"]["kernel"])
  if target_norm == "per_channel":  # statistics come from the run's own data, not the file
    assert_same({k: v for k, v in loaded["encoder"].items() if k != "encoder"},
                {k: v for k, v in fresh["encoder"].items() if k != "encoder"})


def test_both_towers_of_separate_weights_start_from_the_file(tmp_path):
  saved = initial_params(small_config(), seed=1)
  weights.save_params(tmp_path / "p.npz", saved)
  loaded = initial_params(small_config(shared_weights=False, pretrained=str(tmp_path / "p.npz")),
                          pretrained=True)
  assert_same(loaded["encoder"], saved["encoder"])
  assert_same(loaded["encoder_b"], saved["encoder"])


def test_an_encoder_may_bring_its_own_loader(tmp_path, monkeypatch):
  """models.Component.load_weights (e.g. safetensors of another library) replaces the generic
  loader; it sees the encoder's own params, inside the input normalisation."""
  seen = []

  def load_zeros(path, encoder_params):
    seen.append((path, set(encoder_params)))
    return jax.tree.map(np.zeros_like, encoder_params)

  monkeypatch.setitem(models.ENCODERS, "mlp",
                      models.ENCODERS["mlp"]._replace(load_weights=load_zeros))
  (tmp_path / "weights.bin").write_bytes(b"")
  config = small_config(input_normalization="per_channel", pretrained=str(tmp_path / "weights.bin"))
  loaded = initial_params(config, pretrained=True)
  assert seen == [(str(tmp_path / "weights.bin"), {"Dense_0", "Dense_1"})]
  assert all(not np.any(leaf) for leaf in jax.tree.leaves(loaded["encoder"]["encoder"]))
  assert np.all(loaded["encoder"]["input_std"] == 1)


def save_run(workdir, config, params):
  """A run folder (config.json and one end-of-epoch checkpoint of ``params``), untrained."""
  workdir.mkdir()
  (workdir / "config.json").write_text(config.to_json_best_effort())
  state = train.create_train_state(jax.random.key(0), models.build_model(config.model),
                                   IMAGE_SHAPE, train.optimizer_from_config(config, 1))
  manager = checkpoints.make_manager(str(workdir / "checkpoints"))
  checkpoints.save(manager, state.replace(params=params, step=1), {checkpoints.BEST_METRIC: 0.5},
                   {"epoch": 1, "next_call": 0, "history": [], "image_shape": list(IMAGE_SHAPE),
                    "train_seconds": 0.0, "partial": None})
  manager.close()
  return workdir


@pytest.mark.parametrize("freeze", ["none", "backbone"])
def test_a_run_workdir_is_a_params_file_and_old_configs_still_load(tmp_path, freeze):
  source = small_config(freeze=freeze)
  saved = initial_params(source, seed=1)
  workdir = save_run(tmp_path / "run", source, saved)
  if freeze == "none":  # a run saved before the keys were declared: config.json without them
    old = json.loads((workdir / "config.json").read_text())
    for section, key in (("model", "pretrained"), ("model", "freeze"),
                         ("optimizer", "backbone_lr_scale")):
      del old[section][key]
    (workdir / "config.json").write_text(json.dumps(old))
  config, state = checkpoints.load_trained(workdir)
  assert config.model.freeze == freeze and config.model.pretrained is None
  assert_same(state.params, saved)
  for path in (workdir, workdir / "checkpoints"):
    loaded = initial_params(small_config(pretrained=str(path)), pretrained=True)
    assert_same(loaded["encoder"], saved["encoder"])


def one_line_error(config) -> str:
  with pytest.raises(checkpoints.CheckpointError) as error:
    initial_params(config, pretrained=True)
  message = str(error.value)
  assert "\n" not in message and f"model.pretrained={config.model.pretrained!r}" in message
  return message


@pytest.mark.parametrize("features,words", [
    ((16, 8), "param Dense_1/bias is (4,) there, (8,) in the model"),
    ((16, 4, 4), "param Dense_2/bias is absent there, (4,) in the model"),
    ((4,), "param Dense_0/bias is (16,) there, (4,) in the model")])
def test_another_encoder_is_a_one_line_error_naming_the_param(tmp_path, features, words):
  weights.save_params(tmp_path / "p.npz", initial_params(small_config()))
  message = one_line_error(small_config(features=features, pretrained=str(tmp_path / "p.npz")))
  assert words in message and "does not fit this model" in message


def test_an_extra_param_in_the_file_is_named(tmp_path):
  weights.save_params(tmp_path / "p.npz", initial_params(small_config(features=(16, 4, 4))))
  message = one_line_error(small_config(pretrained=str(tmp_path / "p.npz")))
  assert "param Dense_2/bias is (4,) there, absent in the model" in message


def test_files_that_are_not_params_are_one_line_errors(tmp_path):
  (tmp_path / "notes.txt").write_text("not an npz")
  assert "cannot read it as an .npz" in one_line_error(
      small_config(pretrained=str(tmp_path / "notes.txt")))
  np.savez(tmp_path / "head_only.npz", **{"head/Dense_0/kernel": np.zeros((4, 1))})
  assert "no encoder params" in one_line_error(
      small_config(pretrained=str(tmp_path / "head_only.npz")))
  (tmp_path / "folder").mkdir()
  assert "config.json not found" in one_line_error(
      small_config(pretrained=str(tmp_path / "folder")))


def test_the_config_check_names_a_missing_file_and_the_new_keys(tmp_path):
  missing = str(tmp_path / "missing.npz")
  cases = ({"model.pretrained": missing}, {"model.freeze": "stem"},
           {"optimizer.backbone_lr_scale": 0.0})
  for changes, words in zip(cases, (f"model.pretrained={missing!r}: no such file",
                                    "model.freeze='stem' is not known",
                                    "optimizer.backbone_lr_scale=0.0 must be a positive")):
    config = default.override(default.get_config(), changes)
    with pytest.raises(config_checks.ConfigError, match=words):
      config_checks.validate(config)
  config = default.override(default.get_config(), {"model.freeze": "backbone"})
  config_checks.validate(config)
  assert not config_checks.unused_keys(config)


@pytest.mark.slow
def test_a_frozen_run_from_a_params_file_trains_resumes_and_reloads(tmp_path, tfds_dir):
  """A tiny MNIST run starts from another model's encoder with the backbone frozen: its first
  layer is the file's after training, through a resume (the split optimiser state checkpoints)
  and checkpoints.load_trained."""
  from siamese_jax import experiment
  overrides = {"model.encoder": "mlp", "model.features": (32, 8), "model.dropout_rates": (),
               "plots.latent": False}
  source = helpers.tiny_config("contrastive", tfds_dir, **overrides)
  model = models.build_model(source.model)
  saved = train.create_train_state(jax.random.key(5), model, (28, 28, 1),
                                   train.optimizer_from_config(source, 1)).params
  weights.save_params(tmp_path / "p.npz", saved)
  overrides.update({"model.pretrained": str(tmp_path / "p.npz"), "model.freeze": "backbone",
                    "train.epochs": 1})
  workdir = tmp_path / "run"
  experiment.train_and_evaluate(helpers.tiny_config("contrastive", tfds_dir, **overrides), workdir)
  overrides["train.epochs"] = 2
  summary = experiment.train_and_evaluate(helpers.tiny_config("contrastive", tfds_dir, **overrides),
                                          workdir)
  assert summary["epochs"] == 2 and np.isfinite(summary["final"]["train_loss"])
  config, state = checkpoints.load_trained(workdir)
  assert config.model.freeze == "backbone"
  assert_same(state.params["encoder"]["Dense_0"], saved["encoder"]["Dense_0"])
  assert not np.array_equal(state.params["encoder"]["Dense_1"]["kernel"],
                            saved["encoder"]["Dense_1"]["kernel"])
