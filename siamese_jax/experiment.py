"""``train_and_evaluate(config, workdir)``: the run a user sees, shaped like the flax examples'.

It loads the data (holding a validation part out of the training split), builds the state, then
loops over compiled calls of ``train.make_train_epoch``. Between calls (never inside them) it shows
progress; after each epoch it scores the fixed validation pairs, writes metrics (metrics.jsonl and
TensorBoard through ``siamese_jax.summary_writer``, which needs no TensorFlow), starts an
asynchronous checkpoint ranked by the validation ROC AUC, and keeps the test embeddings of the
latent-space plot. At the end it scores the test pairs (the test split only reports: the tuned
threshold comes from the validation pairs) and writes ``summary.json``, while a worker thread draws
every epoch's latent plot in one projection (``plots.latent_frames``) and their GIF.

A SIGTERM (spot VM, TPU preemption, ``kill``) checkpoints at the next call boundary and raises
``Preempted``; rerunning the command resumes and ends bit-identical to an uninterrupted run.
"""

import concurrent.futures
import contextlib
import dataclasses
import functools
import json
import pathlib
import platform
import signal
import threading
import time
from typing import NamedTuple

import jax
import numpy as np
import tqdm
from clu import metrics as clu_metrics  # (clu.metric_writers would import TensorFlow)

from siamese_jax import (batches, checkpoints, config_checks, data, evaluate, models,
                         normalization, plots, scoring, sharding, splits, streaming,
                         summary_writer, train, workdir as workdir_lib)
from siamese_jax import weights  # model.pretrained


class TrainingDiverged(RuntimeError):
  """The loss became NaN or inf; the last good checkpoint is kept."""


class Preempted(RuntimeError):
  """A SIGTERM arrived; the run was checkpointed and can be resumed by rerunning it."""


class Datasets(NamedTuple):
  """train (what the steps draw from), validation (held out of the train split: what is chosen
  is chosen on it), test (the test split: reported only); ``split`` records how validation was
  held out."""
  train: data.LabelledImages
  validation: data.LabelledImages
  test: data.LabelledImages
  split: dict


def _say(message: str) -> None:
  print(message, flush=True)


def _versions() -> dict:
  import flax
  import optax
  return {"python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__,
          "optax": optax.__version__, "numpy": np.__version__}


def _unseen(train_set, test_set) -> bool:
  """Whether every test class is one never trained on (classes compared by name)."""
  return (train_set.class_names is not None and test_set.class_names is not None
          and not set(train_set.class_names) & set(test_set.class_names))


def _split_by_classes(config, train_split, test_split):
  """(train, test, record): the dataset's two splits pooled and whole classes held out as test
  (data.test_fraction of them, drawn from the seed): the protocol of CUB-200, Cars196, SOP."""
  pooled = splits.pool(train_split, test_split, f" + {config.data.test_split}")
  kept, held = splits.split_by_classes(pooled.labels, config.data.test_fraction, config.seed)
  names = pooled.class_names
  record = {"by": "classes", "fraction": config.data.test_fraction, "seed": config.seed,
            "test_classes": [names[c] for c in np.unique(pooled.labels[held])]}
  note = f"; classes held out as test: {', '.join(record['test_classes'][:20])}"
  return (splits.take(pooled, kept, "; trained classes"), splits.take(pooled, held, note), record)


def load_datasets(config) -> Datasets:
  """The three parts as the config asks (see Datasets)."""
  kwargs = {"data_dir": config.data.tfds_data_dir, "image_size": config.data.image_size,
            "source_dir": config.data.dir, "channels": config.data.channels, "seed": config.seed}
  if config.data.name == data.FOLDER:
    kwargs.update(skip_bad_images=config.data.skip_bad_images, split_by=config.data.split_by,
                  test_fraction=config.data.test_fraction)
  elif config.data.name not in data.NAMES:
    kwargs.update(image_key=config.data.image_key, label_key=config.data.label_key)
  full_train = data.load(config.data.name, config.data.train_split, **kwargs)
  test_set = data.load(config.data.name, config.data.test_split, **kwargs)
  test_split = {"split": config.data.test_split}
  if config.data.source_b is not None:  # pairs across two datasets: data/two_sources.py
    second = {"data_dir": config.data.tfds_data_dir, "image_size": config.data.image_size,
              "channels": config.data.channels}
    full_train, test_set = (data.two_sources.combine(
        part, data.load(config.data.source_b, split, **second), config.data.name,
        config.data.source_b) for part, split in ((full_train, config.data.train_split),
                                                  (test_set, config.data.test_split)))
  if config.data.train_classes is not None:  # the test split keeps classes never trained on
    full_train = splits.take(full_train, np.flatnonzero(np.isin(
        full_train.labels, config.data.train_classes)), f"; classes {config.data.train_classes}")
  if test_set.alphabet_names is not None and config.data.train_split != config.data.test_split:
    # Omniglot: evaluate on alphabets never trained on (small2 shares Greek, Latin with small1).
    test_set = data.without_alphabets(test_set, full_train.alphabet_names)
  elif config.data.split_by == "classes" and config.data.name != data.FOLDER:
    full_train, test_set, test_split = _split_by_classes(config, full_train, test_set)
  if config.data.validation_by != "auto":
    by = config.data.validation_by
  else:
    by = "classes" if _unseen(full_train, test_set) else "images"
  kept, held_out = splits.split(full_train.labels, config.data.validation_fraction, by,
                                config.seed, groups=full_train.alphabets)
  note = f"; {config.data.validation_fraction:g} of its {by} held out for validation (seed {config.seed})"
  split = {"by": by, "fraction": config.data.validation_fraction, "seed": config.seed,
           "validation_indices": held_out.tolist()}
  if by in ("classes", "alphabets"):
    names = full_train.class_names or [str(c) for c in range(full_train.num_classes)]
    split["validation_classes"] = [names[c] for c in np.unique(full_train.labels[held_out])]
  train_part = splits.take(full_train, kept, note)
  if config.data.rotation_classes or config.data.mirror_classes:  # after the split:
    train_part = splits.with_rotated_classes(  # validation classes stay as drawn
        train_part, turns=(1, 2, 3) if config.data.rotation_classes else (),
        mirror=config.data.mirror_classes)
  return Datasets(train_part, splits.take(full_train, held_out, " (validation part)"), test_set,
                  {**split, "test": test_split})


def _describe_devices() -> str:
  devices = jax.devices()
  kinds = sorted({d.device_kind for d in devices})
  return (f"backend {jax.default_backend()}: {len(devices)} device(s) ({', '.join(kinds)}), "
          f"{jax.process_count()} process(es)")


class Schedule(NamedTuple):
  """How the run's steps are cut: ``calls_per_epoch`` calls of ``steps_per_call`` steps."""
  steps_per_call: int
  calls_per_epoch: int
  epochs: int

  @property
  def steps_per_epoch(self) -> int:
    return self.steps_per_call * self.calls_per_epoch

  @property
  def total_steps(self) -> int:
    return self.steps_per_epoch * self.epochs


def make_schedule(config, train_size: int, examples_per_step: int) -> Schedule:
  """train.steps_per_epoch (None: train_size // examples per step), rounded up to whole calls."""
  steps = config.train.steps_per_epoch or max(train_size // examples_per_step, 1)
  per_call = min(config.train.steps_per_call, steps)
  return Schedule(per_call, -(-steps // per_call), config.train.epochs)


@contextlib.contextmanager
def sigterm_requests_stop():
  """Yields an Event set by SIGTERM while the block runs (the old handler back afterwards); off
  the main thread, where signals cannot be caught, the Event is never set."""
  requested = threading.Event()
  if threading.current_thread() is not threading.main_thread():
    yield requested
    return
  previous = signal.signal(signal.SIGTERM, lambda signum, frame: requested.set())
  try:
    yield requested
  finally:
    signal.signal(signal.SIGTERM, previous)


def _average(metrics: dict) -> clu_metrics.Collection:
  """A clu Collection averaging each named metric of a call ({name: [steps]})."""
  return _averaging_collection(tuple(sorted(metrics))).single_from_model_output(**metrics)


@functools.cache
def _averaging_collection(names: tuple[str, ...]):
  """The Collection class averaging ``names``, made once (making one builds a dataclass)."""
  return clu_metrics.Collection.create(
      **{name: clu_metrics.Average.from_output(name) for name in names})


def _averages_to_json(collection) -> dict:
  """{name: [total, count]} of an averaging Collection (exact: float32 totals survive JSON)."""
  return {name: [float(average.total), int(average.count)]
          for name, average in _named_averages(collection).items()}


def _named_averages(collection) -> dict:
  return {field.name: getattr(collection, field.name) for field in dataclasses.fields(collection)
          if isinstance(getattr(collection, field.name), clu_metrics.Average)}


def _averages_from_json(saved: dict) -> clu_metrics.Collection:
  """The Collection that ``_averages_to_json`` wrote."""
  collection = _average({name: np.zeros(0, np.float32) for name in saved})
  return collection.replace(**{name: clu_metrics.Average(total=np.float32(total),
                                                         count=np.int32(count))
                               for name, (total, count) in saved.items()})


def train_and_evaluate(config, workdir: str) -> dict | None:
  """Trains ``config`` into ``workdir`` and returns the summary (also in summary.json).

  In a multi-process run (``jax.distributed``) every process calls it; process 0 writes the
  files and returns the summary, the others return None."""
  workdir = pathlib.Path(workdir)
  started = time.time()
  config_checks.validate(config)
  for warning in config_checks.unused_keys(config):
    print(f"warning: {warning}", flush=True)
  _say(_describe_devices())
  datasets = load_datasets(config)
  _say(f"data: {config.data.name} {config.data.train_split} {datasets.train.images.shape} "
       f"(+ {len(datasets.validation.labels)} validation) / {config.data.test_split} "
       f"{datasets.test.images.shape}; from {datasets.train.source}")
  loss_spec = train.loss_spec_from_config(config)
  batch_spec = batches.batch_spec_from_config(config, loss_spec.batch_kind)
  config_checks.validate_against_data(config, datasets, batch_spec)
  if config.model.head in models.CLASSIFIER_HEADS and not config.model.num_classes:
    config.model.num_classes = datasets.train.num_classes
  resume = workdir_lib.prepare(config, workdir)
  _say("config:\n" + str(config))

  mesh = sharding.make_mesh()
  schedule = make_schedule(config, len(datasets.train.labels), batch_spec.examples)
  init_key, train_key, eval_key = jax.random.split(jax.random.key(config.seed), 3)
  model = models.build_model(config.model)
  tx = train.optimizer_from_config(config, schedule.total_steps)
  image_shape = list(datasets.train.images.shape[1:])  # [H, W, C], saved with every checkpoint
  state = train.create_train_state(init_key, model, image_shape, tx,
                                   weights.initializer(config.model))
  state = sharding.put_replicated(state, mesh)

  manager = checkpoints.make_manager(str(workdir / "checkpoints"), config.train.checkpoints_to_keep,
                                     asynchronous=True)
  progress = {"epoch": 0, "next_call": 0, "history": [], "train_seconds": 0.0, "partial": None}
  if resume and manager.latest_step() is not None:
    state, progress = checkpoints.restore(manager, state)
    state = sharding.put_replicated(state, mesh)
    progress = {"next_call": 0, "partial": None, **progress}
    if workdir_lib.is_primary():  # epochs after the checkpoint run again: drop their lines
      workdir_lib.write_metrics(workdir, progress["history"])
    _say(f"resuming from {workdir / 'checkpoints'} at epoch {progress['epoch']}, call "
         f"{progress['next_call']} (step {int(state.step)})")

  # ---- input side (issue 14; siamese_jax.normalization, siamese_jax.streaming) -------------
  # The training part's per-channel stats into the params (model.input_normalization; the same
  # values again on resume). Validation and test on every device; the training part too while it
  # fits data.device_budget_mb (train.make_train_epoch), else streamed from host memory by a
  # prefetching StreamedTrainCall that trains on the same batches.
  state = sharding.put_replicated(state.replace(params=normalization.adapt(
      state.params, config.model.input_normalization, datasets.train.images)), mesh)
  device_sets = {name: sharding.device_data(part.images, part.labels, part.num_classes, mesh)
                 for name, part in (("validation", datasets.validation), ("test", datasets.test))}
  train_input = streaming.make_train_input(
      datasets.train, loss_spec, batch_spec, schedule, mesh,
      train.unroll_steps(config.train.unroll, config.model.encoder), train_key,
      start=(progress["epoch"], progress["next_call"]), budget_mb=config.data.device_budget_mb)
  device_sets["train"], run_call = train_input.data, train_input.run_call
  _say(train_input.description)
  # ---- end of the input side ----------------------------------------------------------------
  pair_scoring = scoring.pair_scoring_from_config(config)
  score_pairs = evaluate.make_pair_scorer(state.apply_fn, pair_scoring, config.eval.pairs,
                                          config.train.pair_source)
  monitor_pairs = score_pairs if not config.model.test_time_shift else evaluate.make_pair_scorer(
      state.apply_fn, pair_scoring, config.eval.pairs, config.train.pair_source, views=False)
  writer = summary_writer.SummaryWriter(workdir if workdir_lib.is_primary() else None)
  report_progress = summary_writer.ReportProgress(writer)  # steps/s to TensorBoard at epoch ends
  plot_set = (datasets.test.images[:config.eval.plot_points],
              datasets.test.labels[:config.eval.plot_points])
  latent = _saved_latent_embeddings(workdir, progress["epoch"]) if config.plots.latent else {}
  embed = jax.jit(lambda params, x: scoring.embed(state.apply_fn, params, x, views=False))
  history, train_seconds = progress["history"], progress["train_seconds"]

  bar = tqdm.tqdm(total=schedule.total_steps, initial=int(state.step), unit="step",
                  dynamic_ncols=True, desc="train", disable=not workdir_lib.is_primary())
  with sigterm_requests_stop() as stop_requested:
    for epoch in range(progress["epoch"], config.train.epochs):
      epoch_key = jax.random.fold_in(train_key, epoch)
      first_call = progress["next_call"] if epoch == progress["epoch"] else 0
      averages = (_averages_from_json(progress["partial"])
                  if first_call and progress["partial"] else None)
      epoch_start, pending = time.time(), None

      def take_metrics(call, metrics, averages):
        """Fetches a finished call's metrics (after the next call was dispatched)."""
        metrics = jax.device_get(metrics)
        if not np.all(np.isfinite(metrics["loss"])):
          bad = int(np.argmin(np.isfinite(metrics["loss"])))
          step = epoch * schedule.steps_per_epoch + call * schedule.steps_per_call + bad + 1
          raise TrainingDiverged(
              f"the {loss_spec.name} loss became {metrics['loss'][bad]} at step {step} (epoch "
              f"{epoch + 1}); the last good checkpoint is kept in {workdir / 'checkpoints'}; "
              "lower --config.optimizer.learning_rate and rerun with "
              "--config.train.overwrite=True")
        call_average = _average(metrics)
        bar.set_postfix(epoch=f"{epoch + 1}/{config.train.epochs}",
                        loss=f"{float(np.mean(metrics['loss'])):.4f}")
        bar.update(schedule.steps_per_call)
        return call_average if averages is None else averages.merge(call_average)

      for call in range(first_call, schedule.calls_per_epoch):
        state, metrics = run_call(state, device_sets["train"], jax.random.fold_in(epoch_key, call))
        if pending is not None:
          averages = take_metrics(*pending, averages)
        pending = (call, metrics)
        if stop_requested.is_set() and call + 1 < schedule.calls_per_epoch:
          averages = take_metrics(*pending, averages)
          train_seconds += time.time() - epoch_start
          checkpoints.save(manager, state, None, {
              "epoch": epoch, "next_call": call + 1, "history": history, "image_shape": image_shape,
              "train_seconds": train_seconds, "partial": _averages_to_json(averages)})
          manager.wait_until_finished()
          bar.close()
          raise Preempted(f"stopped by SIGTERM at step {int(state.step)} (epoch {epoch + 1}) and "
                          f"checkpointed in {workdir / 'checkpoints'}; rerun the same command to "
                          "resume")
      averages = take_metrics(*pending, averages)
      jax.block_until_ready(state)
      epoch_seconds = time.time() - epoch_start
      train_seconds += epoch_seconds
      report_progress(int(state.step))
      val_scores, val_same = jax.device_get(  # without test-time views, which cost (2s+1)^2
          monitor_pairs(state.params, device_sets["validation"], eval_key))
      calls_run = schedule.calls_per_epoch - first_call
      record = {"epoch": epoch + 1, "step": int(state.step), "epoch_seconds": epoch_seconds,
                "examples_per_second": (calls_run * schedule.steps_per_call
                                        * batch_spec.examples / epoch_seconds),
                **{f"train_{k}": float(v) for k, v in averages.compute().items()},
                **{f"val_{k}": v for k, v in _pair_metrics(val_scores, val_same,
                                                           pair_scoring).items()}}
      history.append(record)
      if workdir_lib.is_primary():
        workdir_lib.append_metrics(workdir, record)
      writer.write_scalars(record["step"], {k: v for k, v in record.items() if k != "epoch"})
      writer.flush()
      if config.plots.latent:  # drawn at the end, all epochs in one projection
        latent[epoch + 1] = np.asarray(embed(state.params, plot_set[0]))
        if workdir_lib.is_primary():  # for a resumed run's frames
          _save_latent_embeddings(workdir, epoch + 1, latent[epoch + 1])
      checkpoints.save(manager, state, {checkpoints.BEST_METRIC: record[checkpoints.BEST_METRIC]},
                       {"epoch": epoch + 1, "next_call": 0, "history": history,
                        "image_shape": image_shape, "train_seconds": train_seconds,
                        "partial": None}, wait=False)
      bar.write(f"epoch {epoch + 1}: train loss {record['train_loss']:.4f}, validation pair "
                f"accuracy {record['val_accuracy']:.4f}, ROC AUC {record['val_roc_auc']:.4f}")
      if stop_requested.is_set() and epoch + 1 < config.train.epochs:
        manager.wait_until_finished()
        bar.close()
        raise Preempted(f"stopped by SIGTERM after epoch {epoch + 1}, checkpointed in "
                        f"{workdir / 'checkpoints'}; rerun the same command to resume")
  bar.close()
  writer.close()
  # The plots are drawn on one worker thread while this one scores, calibrates and summarises.
  plotter = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="plots")
  plot_jobs = [_start_latent_frames(plotter, config, workdir, datasets.test, plot_set[1], latent)]
  manager.wait_until_finished()  # the last checkpoint written before it is read
  # The final state's validation and test pairs, scored once for calibration and summary.
  final_pairs = {part: jax.device_get(score_pairs(state.params, device_sets[part], eval_key))
                 for part in ("validation", "test")}
  if workdir_lib.is_primary():
    plot_jobs.append(plotter.submit(_final_plots, workdir / "plots", history, final_pairs["test"],
                                    pair_scoring))
  plotter.shutdown(wait=False)
  calibration = _calibrate(config, state, manager, device_sets, score_pairs, eval_key,
                           pair_scoring, final_pairs)
  summary = _summarise(config, workdir, state, datasets, final_pairs, eval_key, pair_scoring,
                       history, manager, [job for job in plot_jobs if job is not None])
  if summary is not None:
    workdir_lib.write_json(workdir / CALIBRATION_FILE, calibration)
    summary["calibration"] = calibration["checkpoints"][str(int(state.step))]
  if summary is not None:
    summary.update(train_seconds=train_seconds, wall_seconds=time.time() - started)
    workdir_lib.write_json(workdir / workdir_lib.SUMMARY_FILE, summary)
  # Release this run's compiled programs. XLA:CPU maps their code into memory regions that JAX's
  # caches keep alive (~1,000 more for each Omniglot run); ~60 such runs in one process (a sweep,
  # the report) reach the kernel's vm.max_map_count (65,530) and the next program load segfaults.
  # Later runs of the same shapes reload them from the persistent compilation cache where it is on
  # (main.py turns it on).
  jax.clear_caches()
  return summary


CALIBRATION_FILE = "calibration.json"
# Every epoch's plot embeddings (~1 MB an epoch by default), kept so that a resumed or extended
# run draws all its epochs in one projection again.
LATENT_EMBEDDINGS_DIR = ".latent_embeddings"


def _save_latent_embeddings(workdir, epoch: int, embeddings: np.ndarray) -> None:
  folder = workdir / LATENT_EMBEDDINGS_DIR
  folder.mkdir(exist_ok=True)
  np.save(folder / f"epoch{epoch:03d}.npy", embeddings)


def _saved_latent_embeddings(workdir, epochs: int) -> dict:
  """{epoch: embeddings} saved by the epochs 1..``epochs`` a resumed run already trained."""
  found = {}
  for epoch in range(1, epochs + 1):
    path = workdir / LATENT_EMBEDDINGS_DIR / f"epoch{epoch:03d}.npy"
    if path.is_file():
      found[epoch] = np.load(path)
  return found


def _start_latent_frames(pool, config, workdir, test_set, labels, latent: dict):
  """A Future (of ``pool``) drawing every epoch's latent plot (plots/latent_epochNNN.png) and, if
  asked, their GIF; None where there is nothing to draw. Its result: {"animation": path} (or {})."""
  if not (config.plots.latent and latent and workdir_lib.is_primary()):
    return None
  epochs = sorted(latent)
  plots_dir = workdir / "plots"

  def draw():
    drawn = plots.latent_frames(
        [latent[e] for e in epochs], labels,
        [plots_dir / f"latent_epoch{e:03d}.png" for e in epochs],
        [f"{config.data.name} test, epoch {e}" for e in epochs],
        class_names=_short_class_names(test_set),
        gif_path=plots_dir / "latent.gif" if config.plots.animation else None)
    return {} if drawn["animation"] is None else {"animation": drawn["animation"]}

  return pool.submit(draw)


def _final_plots(plots_dir, history, test_pairs, pair_scoring) -> dict:
  """{"curves", "distances", "roc": path} of the run's curves and its final test pairs."""
  test_scores, test_same = test_pairs
  higher = pair_scoring.higher_means_same
  outputs = {}
  if history:
    outputs["curves"] = plots.training_curves(history, str(plots_dir / "curves.png"))
  outputs["distances"] = plots.distance_histograms(
      -test_scores if higher else test_scores, test_same, str(plots_dir / "distances.png"),
      threshold=None if higher else pair_scoring.threshold)
  outputs["roc"], _ = plots.roc_curve(test_scores, test_same, str(plots_dir / "roc.png"),
                                      higher_means_same=higher)
  return outputs


def _calibrate(config, state, manager, device_sets, score_pairs, eval_key, pair_scoring,
               final_pairs: dict) -> dict:
  """The verification threshold of the latest and of the best checkpoint, chosen on the
  validation pairs for eval.far (None: best accuracy), each with its FAR/FRR on the validation
  and on the test pairs: what ``calibration.json`` holds for inference. ``final_pairs``: the
  latest state's {"validation", "test": (scores, same)}, already scored."""
  higher = pair_scoring.higher_means_same
  steps = {int(state.step): state.params}
  best = manager.best_step()
  if best is not None and best not in steps:
    steps[best] = checkpoints.restore(manager, state, best)[0].params
  found = {}
  for step, params in steps.items():
    if step == int(state.step):
      (val_scores, val_same), (test_scores, test_same) = (final_pairs["validation"],
                                                          final_pairs["test"])
    else:
      val_scores, val_same = jax.device_get(score_pairs(params, device_sets["validation"],
                                                        eval_key))
      test_scores, test_same = jax.device_get(score_pairs(params, device_sets["test"], eval_key))
    chosen = evaluate.calibrate(val_scores, val_same, higher, config.eval.far)
    chosen["test"] = {**evaluate.error_rates(test_scores, test_same, chosen["threshold"], higher),
                      "accuracy": evaluate.accuracy_at_threshold(test_scores, test_same,
                                                                 chosen["threshold"], higher)}
    found[str(step)] = chosen
  return {"checkpoints": found, "latest_step": int(state.step), "best_step": best,
          "scoring": {"head": pair_scoring.head, "distance": pair_scoring.distance,
                      "higher_means_same": higher},
          "pairs": {"validation": "held out of the training split", "test": "test split"}}


def _pair_metrics(scores, same, pair_scoring: scoring.PairScoring) -> dict:
  """accuracy (at the untuned threshold) and roc_auc of scored pairs [M]."""
  from sklearn import metrics as sk_metrics
  similarity = scores if pair_scoring.higher_means_same else -scores
  return {"accuracy": evaluate.accuracy_at_threshold(scores, same, pair_scoring.threshold,
                                                     pair_scoring.higher_means_same),
          "roc_auc": float(sk_metrics.roc_auc_score(same, similarity))}


def _has_unseen_classes(datasets) -> bool:
  """Whether the test split holds classes never trained on (named, and none shared)."""
  return _unseen(datasets.train, datasets.test)


def _one_shot(state, dataset, embeddings, pair_scoring, key, ways, within_alphabet) -> dict:
  """{"<n>_way": accuracy} of 400 N-way one-shot episodes over ``dataset``'s classes (within an
  alphabet if asked and the data has alphabets); a way with too few classes is left out."""
  sign = 1.0 if pair_scoring.higher_means_same else -1.0
  similarity = lambda a, b: sign * scoring.score_embeddings(state.apply_fn, state.params, a, b,
                                                            pair_scoring)
  alphabet_of_class = None
  if within_alphabet and dataset.alphabets is not None:
    alphabet_of_class = np.zeros(dataset.num_classes, np.int32)
    alphabet_of_class[dataset.labels] = dataset.alphabets
  found = {}
  for n_way in ways:
    try:
      found[f"{n_way}_way"] = evaluate.one_shot_accuracy(
          jax.random.fold_in(key, n_way), embeddings, dataset.labels, n_way, episodes=400,
          similarity=similarity, alphabet_of_class=alphabet_of_class,
          within_alphabet=alphabet_of_class is not None)
    except ValueError:  # too few classes (in an alphabet) for n_way
      continue
  return found


def _unseen_class_metrics(state, test_set, pair_scoring, key) -> dict:
  """Retrieval (P@1, R-precision, MAP@R, k-NN) over the test embeddings and N-way one-shot
  accuracy (within an alphabet where the data has alphabets), for test classes never trained on."""
  embeddings = scoring.embed_in_batches(state.apply_fn, state.params, test_set.images)
  return {"retrieval": evaluate.retrieval_metrics(embeddings, test_set.labels,
                                                  distance=pair_scoring.distance),
          "one_shot": _one_shot(state, test_set, embeddings, pair_scoring, key, (5, 20), True)}


VALIDATION_WAYS = (5, 10)  # the validation part holds ~10 % of the classes, across alphabets


def _validation_one_shot(state, validation, pair_scoring, key, within_alphabet: bool) -> dict:
  """One-shot accuracy over the validation classes, the figure to tune on: {"5_way", "10_way"}
  across alphabets (held out by classes), or {"5_way", "20_way"} within each held-out alphabet
  (held out by alphabets, the shape of Omniglot's test)."""
  embeddings = scoring.embed_in_batches(state.apply_fn, state.params, validation.images)
  ways = (5, 20) if within_alphabet else VALIDATION_WAYS
  return _one_shot(state, validation, embeddings, pair_scoring, key, ways, within_alphabet)


def _steady_examples_per_second(history) -> float | None:
  """Mean training examples/s over the epochs after the first: the first epoch's call also
  compiles the program (or loads it from the compilation cache)."""
  rates = [h["examples_per_second"] for h in history]
  return float(np.mean(rates[1:] if len(rates) > 1 else rates)) if rates else None


def _short_class_names(dataset):
  if dataset.class_names is None or len(dataset.class_names) > 10:
    return None
  return list(dataset.class_names)


def _summarise(config, workdir, state, datasets, final_pairs, eval_key, pair_scoring, history,
               manager, plot_jobs=()) -> dict | None:
  """Test-pair verification of the final state (threshold tuned on validation pairs), the
  plots of the whole run, and the summary; None on processes other than 0. ``plot_jobs``: the
  Futures of the plots being drawn ({name: path} each; waited for here)."""
  (val_scores, val_same), (test_scores, test_same) = final_pairs["validation"], final_pairs["test"]
  if not workdir_lib.is_primary():
    return None
  higher = pair_scoring.higher_means_same
  test = evaluate.pair_verification(test_scores, test_same, val_scores, val_same, higher,
                                    fixed_threshold=pair_scoring.threshold)
  validation = _pair_metrics(val_scores, val_same, pair_scoring)
  if _has_unseen_classes(datasets):
    test.update(_unseen_class_metrics(state, datasets.test, pair_scoring, eval_key))
  if datasets.split["by"] in ("classes", "alphabets"):
    validation["one_shot"] = _validation_one_shot(state, datasets.validation, pair_scoring,
                                                  eval_key, datasets.split["by"] == "alphabets")
  plots_dir = workdir / "plots"
  outputs = {}
  for job in plot_jobs:
    outputs.update(job.result())
  if "animation" not in outputs and config.plots.latent and config.plots.animation:
    frames = sorted(str(p) for p in plots_dir.glob("latent_epoch*.png"))  # a finished run rerun
    if frames:
      outputs["animation"] = plots.latent_animation(frames, str(plots_dir / "latent.gif"))
  best_step = manager.best_step()
  best_epoch = next((h["epoch"] for h in history if h["step"] == best_step), None)
  summary = {
      "final": history[-1] if history else {},
      "test": {**test, "pairs": int(len(test_scores)),
               "note": "final state; threshold_tuned chosen on the validation pairs"},
      "validation": {**validation, "pairs": int(len(val_scores))},
      "best": {"epoch": best_epoch, "step": best_step, "metric": checkpoints.BEST_METRIC,
               "value": next((h[checkpoints.BEST_METRIC] for h in history
                              if h["step"] == best_step), None)},
      "splits": {"train": {"split": config.data.train_split, "shape": list(datasets.train.images.shape),
                           "source": datasets.train.source},
                 "validation": {"held_out_of": config.data.train_split,
                                "shape": list(datasets.validation.images.shape),
                                **{k: v for k, v in datasets.split.items() if k != "test"}},
                 "test": {**datasets.split["test"], "shape": list(datasets.test.images.shape),
                          "source": datasets.test.source}},
      "metric_splits": {"train_*": "training split (less validation), averaged over the epoch",
                        "val_*": "validation pairs, fixed every epoch",
                        "test": "test split pairs, final state"},
      "epochs": len(history), "steps": int(state.step),
      "examples_per_second": _steady_examples_per_second(history),
      "seed": config.seed, "config": json.loads(config.to_json_best_effort()),
      "devices": _describe_devices(), "versions": _versions(), "plots": outputs,
  }
  threshold_words = ("logit > 0" if higher else
                     f"threshold {pair_scoring.threshold:g} on the {pair_scoring.distance} distance")
  _say(f"test pair accuracy {test['accuracy_fixed']:.4f} ({threshold_words}), "
       f"{test['accuracy_tuned']:.4f} at the threshold tuned on validation pairs "
       f"({test['threshold_tuned']:.4g}); ROC AUC {test['roc_auc']:.4f}; outputs in {workdir}")
  return summary
