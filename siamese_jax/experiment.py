"""``train_and_evaluate(config, workdir)``: the run a user sees.

Between compiled calls (never inside them) it shows progress, evaluates, writes metrics
(``metrics.jsonl``, TensorBoard through ``clu.metric_writers``), checkpoints (orbax), plots
(``plots/``) and finally ``summary.json``. Rerunning into the same workdir resumes.
"""

import json
import logging
import os
import pathlib
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from clu import metric_writers

from siamese_jax import checkpoints, config_checks, data, distances, models, plots, train


class TrainingDiverged(RuntimeError):
  """The loss became NaN or inf; the last good checkpoint is kept."""


def _say(message: str) -> None:
  print(message, flush=True)


def _write_json_atomically(path: pathlib.Path, obj) -> None:
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
  os.replace(tmp, path)


def _write_lines_atomically(path: pathlib.Path, lines: list[str]) -> None:
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text("".join(line + "\n" for line in lines))
  os.replace(tmp, path)


def _versions() -> dict:
  import flax
  import optax
  return {"python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__,
          "optax": optax.__version__, "numpy": np.__version__}


def load_datasets(config):
  """(train, test) LabelledImages as the config asks."""
  kwargs = {"data_dir": config.data.tfds_data_dir, "image_size": config.data.image_size,
            "source_dir": config.data.dir}
  train_set = data.load(config.data.name, config.data.train_split, **kwargs)
  test_set = data.load(config.data.name, config.data.test_split, **kwargs)
  if test_set.alphabet_names is not None and config.data.train_split != config.data.test_split:
    # Omniglot: evaluate on alphabets never trained on (small2 shares Greek, Latin with small1).
    test_set = data.without_alphabets(test_set, train_set.alphabet_names)
  return train_set, test_set


def batch_spec_from_config(config, loss_spec: train.LossSpec) -> train.BatchSpec:
  kind = {"pairs": "pairs", "labelled": "pk"}[loss_spec.batch_kind]
  if loss_spec.name == "cross_entropy":
    kind = "uniform"
  return train.BatchSpec(kind=kind, batch_size=config.train.batch_size,
                         classes_per_batch=config.train.classes_per_batch,
                         samples_per_class=config.train.samples_per_class,
                         pair_source=config.train.pair_source, augment=config.train.augment)


def make_embed_fn(state: train.TrainState, batch_size: int = 1000):
  """``embed(images uint8 [N, H, W, C]) -> np.ndarray [N, D]`` in eval mode, in batches."""
  @jax.jit
  def embed_batch(params, images):
    return state.apply_fn({"params": params}, train.to_float_images(images), method="embed")

  def embed(params, images):
    parts = [np.asarray(embed_batch(params, images[i:i + batch_size]))
             for i in range(0, len(images), batch_size)]
    return np.concatenate(parts)
  return embed


def pair_scores(state, test_data: train.DeviceData, key, loss_spec: train.LossSpec,
                num_pairs: int, pair_source: str = "balanced"):
  """Scores of ``num_pairs`` fixed test pairs: (scores [M], same [M], higher_means_same)."""
  batch = train.sample_batch(key, test_data, train.BatchSpec(kind="pairs", batch_size=num_pairs,
                                                             pair_source=pair_source))
  variables = {"params": state.params}
  x_a, x_b = train.to_float_images(batch["x_a"]), train.to_float_images(batch["x_b"])
  if loss_spec.batch_kind == "pairs":
    output, _, _ = state.apply_fn(variables, x_a, x_b, train=False)
    higher_means_same = loss_spec.name == "bce"
  else:
    emb_a = state.apply_fn(variables, x_a, method="embed")
    emb_b = state.apply_fn(variables, x_b, method="embed")
    output = distances.get_batch_distance(loss_spec.distance)(emb_a, emb_b)
    higher_means_same = False
  return np.asarray(output), np.asarray(batch["same"]) > 0, higher_means_same


def _describe_devices() -> str:
  devices = jax.devices()
  kinds = sorted({d.device_kind for d in devices})
  return (f"backend {jax.default_backend()}: {len(devices)} device(s) ({', '.join(kinds)}), "
          f"{jax.process_count()} process(es)")


def _is_primary() -> bool:
  """Whether this process writes the run's files: process 0 of a multi-process run (every
  process runs the same computations; checkpoints are written by orbax from all of them)."""
  return jax.process_index() == 0


def _prepare_workdir(config, workdir: pathlib.Path) -> bool:
  """Creates the workdir; returns True if it already holds a run of this config to resume."""
  try:
    workdir.mkdir(parents=True, exist_ok=True)
  except OSError as error:
    raise config_checks.ConfigError(f"cannot create --workdir {workdir} ({error.strerror}); "
                                    "choose a writable folder") from None
  if _is_primary():
    config_checks.check_writable(workdir)
  saved = workdir / "config.json"
  current = json.loads(config.to_json_best_effort())
  if saved.exists():
    previous = json.loads(saved.read_text())
    ignored = ("train",)  # resume/overwrite/epochs may change between a run and its resumption
    differs = {k for k in set(previous) | set(current) if k not in ignored
               and previous.get(k) != current.get(k)}
    if differs and not config.train.overwrite:
      raise config_checks.ConfigError(
          f"{workdir} holds a run of another config (differs in: {', '.join(sorted(differs))}); "
          "choose another --workdir or pass --config.train.overwrite=True")
    if differs and _is_primary():
      import shutil
      shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
      for name in ("metrics.jsonl", "summary.json"):
        (workdir / name).unlink(missing_ok=True)
  if _is_primary():
    _write_json_atomically(saved, current)
  return (workdir / "checkpoints").exists() and config.train.resume


def train_and_evaluate(config, workdir: str) -> dict | None:
  """Trains ``config`` into ``workdir`` and returns the summary (also in summary.json).

  In a multi-process run (``jax.distributed``) every process calls it; process 0 writes the
  files and returns the summary, the others return None."""
  workdir = pathlib.Path(workdir)
  config_checks.validate(config)
  resume = _prepare_workdir(config, workdir)
  started = time.time()
  _say(_describe_devices())

  train_set, test_set = load_datasets(config)
  _say(f"data: {config.data.name} {config.data.train_split} {train_set.images.shape} / "
       f"{config.data.test_split} {test_set.images.shape}; from {train_set.source}")
  loss_spec = train.loss_spec_from_config(config)
  batch_spec = batch_spec_from_config(config, loss_spec)
  config_checks.validate_against_data(config, train_set, batch_spec)
  if config.model.head == "classifier" and not config.model.num_classes:
    config.model.num_classes = train_set.num_classes
  _say("config:\n" + str(config))

  mesh = train.make_mesh()
  train_data = train.device_data(train_set.images, train_set.labels, train_set.num_classes, mesh)
  test_data = train.device_data(test_set.images, test_set.labels, test_set.num_classes, mesh)
  steps_per_epoch = config.train.steps_per_epoch or max(len(train_set.labels) //
                                                        batch_spec.examples, 1)
  steps_per_call = min(config.train.steps_per_call, steps_per_epoch)
  calls_per_epoch = -(-steps_per_epoch // steps_per_call)
  steps_per_epoch = calls_per_epoch * steps_per_call
  total_steps = steps_per_epoch * config.train.epochs

  key = jax.random.key(config.seed)
  init_key, train_key, eval_key = jax.random.split(key, 3)
  model = models.build_model(config.model)
  tx = train.make_optimizer(config.optimizer, total_steps)
  state = train.create_train_state(init_key, model, train_set.images.shape[1:], tx)
  state = train.put_replicated(state, mesh)

  manager = checkpoints.make_manager(str(workdir / "checkpoints"),
                                     config.train.checkpoints_to_keep)
  history, start_epoch, elapsed_before = [], 0, 0.0
  if resume and manager.latest_step() is not None:
    state, progress = checkpoints.restore(manager, state)
    state = train.put_replicated(state, mesh)
    history, start_epoch = progress["history"], progress["epoch"]
    elapsed_before = progress["train_seconds"]
    # Epochs after the checkpoint will run again: drop any lines they had already written.
    if _is_primary():
      _write_lines_atomically(workdir / "metrics.jsonl", [json.dumps(h) for h in history])
    _say(f"resuming from {workdir / 'checkpoints'} at epoch {start_epoch} (step {int(state.step)})")

  run_chunk = train.make_train_epoch(
      loss_spec, batch_spec, steps_per_call, mesh,
      unroll=train.unroll_steps(config.train.unroll, config.model.encoder))
  embed = make_embed_fn(state)
  plot_images = test_set.images[:config.eval.plot_points]
  plot_labels = test_set.labels[:config.eval.plot_points]
  plots_dir = workdir / "plots"
  writer = metric_writers.create_default_writer(str(workdir), just_logging=jax.process_index() > 0)
  metrics_path = workdir / "metrics.jsonl"
  examples_per_step = batch_spec.examples
  train_seconds = elapsed_before

  bar = tqdm.tqdm(total=total_steps, initial=start_epoch * steps_per_epoch, unit="step",
                  dynamic_ncols=True, desc="train", disable=not _is_primary())
  for epoch in range(start_epoch, config.train.epochs):
    epoch_key = jax.random.fold_in(train_key, epoch)
    chunk_metrics = []
    epoch_start = time.time()
    for call in range(calls_per_epoch):
      state, metrics = run_chunk(state, train_data, jax.random.fold_in(epoch_key, call))
      metrics = jax.device_get(metrics)
      if not np.all(np.isfinite(metrics["loss"])):
        bad = int(np.argmin(np.isfinite(metrics["loss"])))
        step = epoch * steps_per_epoch + call * steps_per_call + bad + 1
        raise TrainingDiverged(
            f"the {loss_spec.name} loss became {metrics['loss'][bad]} at step {step} (epoch "
            f"{epoch + 1}); the last good checkpoint is kept in {workdir / 'checkpoints'}; lower "
            "--config.optimizer.learning_rate and rerun with --config.train.overwrite=True")
      chunk_metrics.append(metrics)
      seconds = time.time() - epoch_start
      done = (call + 1) * steps_per_call
      bar.set_postfix(epoch=f"{epoch + 1}/{config.train.epochs}",
                      loss=f"{float(metrics['loss'].mean()):.4f}",
                      ex_per_s=f"{done * examples_per_step / max(seconds, 1e-9):.0f}")
      bar.update(steps_per_call)
    epoch_seconds = time.time() - epoch_start
    train_seconds += epoch_seconds
    train_means = {name: float(np.mean(np.concatenate([m[name] for m in chunk_metrics])))
                   for name in chunk_metrics[0]}
    test_metrics = train.evaluate_pairs(state, test_data, eval_key, loss_spec,
                                        num_pairs=config.eval.pairs,
                                        batch_size=min(500, config.eval.pairs),
                                        pair_source=config.train.pair_source)
    record = {"epoch": epoch + 1, "step": int(state.step), "epoch_seconds": epoch_seconds,
              "examples_per_second": steps_per_epoch * examples_per_step / epoch_seconds,
              **{f"train_{k}": v for k, v in train_means.items()},
              **{f"test_{k}": v for k, v in test_metrics.items()}}
    history.append(record)
    if _is_primary():
      with open(metrics_path, "a") as f:
        f.write(json.dumps(record) + "\n")
    writer.write_scalars(int(state.step), {k: v for k, v in record.items() if k != "epoch"})
    writer.flush()
    if config.plots.latent:
      embeddings = embed(state.params, plot_images)
    if config.plots.latent and _is_primary():
      plots.latent_space(embeddings, plot_labels, str(plots_dir / f"latent_epoch{epoch + 1:03d}.png"),
                         title=f"{config.data.name} test, epoch {epoch + 1}",
                         class_names=_short_class_names(test_set))
    checkpoints.save(manager, state, epoch + 1, {"test_accuracy": record["test_accuracy"]},
                     {"epoch": epoch + 1, "history": history, "train_seconds": train_seconds})
    bar.write(f"epoch {epoch + 1}: train loss {record['train_loss']:.4f}, test loss "
              f"{record['test_loss']:.4f}, test pair accuracy {record['test_accuracy']:.4f}")
  bar.close()
  writer.close()
  return _finish(config, workdir, state, test_data, eval_key, loss_spec, history, train_seconds,
                 started, train_set, test_set, manager)


def _short_class_names(dataset):
  if dataset.class_names is None or len(dataset.class_names) > 10:
    return None
  return list(dataset.class_names)


def _finish(config, workdir, state, test_data, eval_key, loss_spec, history, train_seconds,
            started, train_set, test_set, manager) -> dict | None:
  scores, same, higher_means_same = pair_scores(state, test_data, eval_key, loss_spec,
                                                config.eval.pairs, config.train.pair_source)
  if not _is_primary():
    return None
  plots_dir = workdir / "plots"
  outputs = {}
  if history:
    outputs["curves"] = plots.training_curves(history, str(plots_dir / "curves.png"))
  if config.plots.latent and config.plots.animation:
    frames = sorted(str(p) for p in plots_dir.glob("latent_epoch*.png"))
    if frames:
      outputs["animation"] = plots.latent_animation(frames, str(plots_dir / "latent.gif"))
  histogram_values = scores if not higher_means_same else -scores
  outputs["distances"] = plots.distance_histograms(
      histogram_values, same, str(plots_dir / "distances.png"),
      threshold=None if higher_means_same else loss_spec.threshold)
  outputs["roc"], auc = plots.roc_curve(scores, same, str(plots_dir / "roc.png"),
                                        higher_means_same=higher_means_same)
  final = history[-1] if history else {}
  summary = {
      "final": final, "test_roc_auc": float(auc),
      "best_epoch": manager.best_step(), "epochs": len(history),
      "steps": int(state.step), "train_seconds": train_seconds,
      "wall_seconds": time.time() - started,
      "examples_per_second": (sum(h["examples_per_second"] for h in history) / len(history)
                              if history else None),
      "seed": config.seed, "config": json.loads(config.to_json_best_effort()),
      "data": {"train": train_set.source, "test": test_set.source,
               "train_shape": list(train_set.images.shape),
               "test_shape": list(test_set.images.shape)},
      "devices": _describe_devices(), "versions": _versions(), "plots": outputs,
  }
  _write_json_atomically(workdir / "summary.json", summary)
  if final:
    _say(f"test pair accuracy {final['test_accuracy']:.4f} (threshold {loss_spec.threshold} on "
         f"the distance)" if not higher_means_same else
         f"test pair accuracy {final['test_accuracy']:.4f} (logit > 0)")
  _say(f"ROC AUC {auc:.4f}; outputs in {workdir}")
  logging.info("summary: %s", summary["final"])
  return summary
