"""``train_and_evaluate(config, workdir)``: the run a user sees, shaped like the flax examples'.

It loads the data (holding a validation part out of the training split), builds the state, then
loops over compiled calls of ``train.make_train_epoch``. Between calls (never inside them) it shows
progress; after each epoch it scores the fixed validation pairs, writes metrics (metrics.jsonl and
TensorBoard through ``siamese_jax.summary_writer``, which needs no TensorFlow), starts an
asynchronous checkpoint ranked by the validation ROC AUC, and keeps the test embeddings of the
latent-space plot. At the end ``siamese_jax.evaluators`` measure the final state (the test split
only reports: thresholds are tuned on the validation pairs) into ``summary.json`` and
``calibration.json``, while a worker thread draws every epoch's latent plot in one projection
(``run_plots``) and their GIF.

A SIGTERM (spot VM, TPU preemption, ``kill``) checkpoints at the next call boundary and raises
``Preempted``; rerunning the command resumes and ends bit-identical to an uninterrupted run.
"""

import concurrent.futures
import json
import pathlib
import platform
import time

import jax
import numpy as np
import tqdm

from siamese_jax import (batches, call_schedule, checkpoints, config_checks, config_keys,
                         evaluators, memory, metric_averages, models, normalization, preemption,
                         program_memory, run_keys, run_plots, sharding, streaming, summary_writer,
                         train, weights, workdir as workdir_lib)
from siamese_jax.data import protocol


class TrainingDiverged(RuntimeError):
  """The loss became NaN or inf; the last good checkpoint is kept."""


Preempted = preemption.Preempted  # SIGTERM or SIGINT: checkpointed, rerun to resume
# What to lower when evaluation runs out of memory (siamese_jax.memory.answers_exhaustion).
EVAL_KEYS = "eval.pairs or model.test_time_shift (or eval.plot_points)"


def _say(message: str) -> None:
  print(message, flush=True)


def _versions() -> dict:
  import flax
  import optax
  return {"python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__,
          "optax": optax.__version__, "numpy": np.__version__}


def _describe_devices() -> str:
  devices = jax.devices()
  kinds = sorted({d.device_kind for d in devices})
  return (f"backend {jax.default_backend()}: {len(devices)} device(s) ({', '.join(kinds)}), "
          f"{jax.process_count()} process(es)")


def train_and_evaluate(config, workdir: str) -> dict | None:
  """Trains ``config`` into ``workdir`` and returns the summary (also in summary.json).

  In a multi-process run (``jax.distributed``) every process calls it; process 0 writes the
  files and returns the summary, the others return None. SIGTERM and SIGINT anywhere in it raise
  ``Preempted`` (see siamese_jax.preemption); rerunning resumes."""
  workdir = pathlib.Path(workdir)
  with preemption.stop_requests(str(workdir / "checkpoints")) as stops:
    return _train_and_evaluate(config, workdir, stops)


def _train_and_evaluate(config, workdir: pathlib.Path, stops: preemption.StopRequests):
  started = time.time()
  config_checks.validate(config)
  for warning in config_checks.unused_keys(config):
    print(f"warning: {warning}", flush=True)
  _say(_describe_devices())
  with memory.answers_exhaustion("data.image_size (or data.channels)", "reading the data"):
    datasets = protocol.load_datasets(config)
  _say(f"data: {config.data.name} {config.data.train_split} {datasets.train.images.shape} "
       f"(+ {len(datasets.validation.labels)} validation) / {config.data.test_split} "
       f"{datasets.test.images.shape}; from {datasets.train.source}")
  _say("\n".join(protocol.counts_lines(datasets)))  # classes and images of each part
  loss_spec = train.loss_spec_from_config(config)
  batch_spec = batches.batch_spec_from_config(config, loss_spec.batch_kind)
  config_checks.validate_against_data(config, datasets, batch_spec)
  if train.needs_num_classes(config) and not config.model.num_classes:
    config.model.num_classes = datasets.train.num_classes  # saved in config.json: restores read it
  resume = workdir_lib.prepare(config, workdir)  # writes config.json, the whole config
  _say(_config_line(config, workdir))

  mesh = sharding.make_mesh()
  model = models.build_model(config.model)
  unroll = train.unroll_steps(config.train.unroll, config.model.encoder,
                             conv_impl=config.model.conv_impl)
  schedule = _make_schedule(config, datasets, loss_spec, batch_spec, model, mesh, unroll)
  init_key, train_key, _ = run_keys.run_keys(config.seed)
  tx = train.optimizer_from_config(config, schedule.total_steps)
  image_shape = list(datasets.train.images.shape[1:])  # [H, W, C], saved with every checkpoint
  state = train.create_train_state(init_key, model, image_shape, tx, loss_spec,
                                   config.model.num_classes or datasets.train.num_classes,
                                   weights.initializer(config.model))
  state = sharding.put_replicated(state, mesh)

  if resume and workdir_lib.is_primary():  # before orbax lists them: one line for each
    for line in checkpoints.set_aside_damaged(workdir / "checkpoints",
                                              workdir / "damaged_checkpoints"):
      _say(f"warning: {line}")
  manager = checkpoints.make_manager(str(workdir / "checkpoints"), config.train.checkpoints_to_keep,
                                     asynchronous=True)
  progress = {"epoch": 0, "next_call": 0, "history": [], "train_seconds": 0.0, "partial": None}
  restored = checkpoints.restore_latest_good(manager, state, workdir / "damaged_checkpoints",
                                             say=_say) if resume else None
  if restored is not None:
    state, progress = restored
    state = sharding.put_replicated(state, mesh)
    progress = {"next_call": 0, "partial": None, **progress}
    if workdir_lib.is_primary():  # epochs after the checkpoint run again: drop their lines
      workdir_lib.write_metrics(workdir, progress["history"])
    _say(f"resuming from {workdir / 'checkpoints'} at epoch {progress['epoch']}, call "
         f"{progress['next_call']} (step {int(state.step)})")

  # ---- input side (issue 14; siamese_jax.normalization, siamese_jax.streaming) -------------
  # The training part's per-channel stats into the params (model.input_normalization; the same
  # values again on resume). The training part on every device while it fits
  # data.device_budget_mb (train.make_train_epoch), else streamed from host memory by a
  # prefetching StreamedTrainCall that trains on the same batches.
  state = sharding.put_replicated(state.replace(params=normalization.adapt(
      state.params, config.model.input_normalization, datasets.train.images)), mesh)
  train_input = streaming.make_train_input(
      datasets.train, loss_spec, batch_spec, schedule, mesh,
      unroll, train_key,
      start=(progress["epoch"], progress["next_call"]), budget_mb=config.data.device_budget_mb)
  train_data, run_call = train_input.data, train_input.run_call
  _say(train_input.description)
  # ---- end of the input side ----------------------------------------------------------------
  # Validation and test go on every device at their first scoring (siamese_jax.evaluators).
  evaluation = evaluators.for_run(config, state.params, state.apply_fn, datasets, mesh=mesh,
                                  unseen_test_classes=protocol.unseen(datasets.train, datasets.test))
  writer = summary_writer.SummaryWriter(workdir if workdir_lib.is_primary() else None)
  report_progress = summary_writer.ReportProgress(writer)  # steps/s to TensorBoard at epoch ends
  latent = run_plots.LatentFrames(config, workdir, datasets.test, state.apply_fn, progress["epoch"])
  history, train_seconds = progress["history"], progress["train_seconds"]

  # disable=None: no bar where stderr is not a terminal (a log file); the epoch lines remain.
  bar = tqdm.tqdm(total=schedule.total_steps, initial=int(state.step), unit="step",
                  dynamic_ncols=True, desc="train",
                  disable=None if workdir_lib.is_primary() else True)
  stops.phase = "training"
  with stops.deferred() as stop_requested:
    for epoch in range(progress["epoch"], config.train.epochs):
      epoch_key = jax.random.fold_in(train_key, epoch)
      first_call = progress["next_call"] if epoch == progress["epoch"] else 0
      averages = (metric_averages.from_json(progress["partial"])
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
        call_average = metric_averages.average(metrics)
        bar.set_postfix(epoch=f"{epoch + 1}/{config.train.epochs}",
                        loss=f"{float(np.mean(metrics['loss'])):.4f}")
        bar.update(schedule.steps_per_call)
        return call_average if averages is None else averages.merge(call_average)

      for call in range(first_call, schedule.calls_per_epoch):
        state, metrics = run_call(state, train_data, jax.random.fold_in(epoch_key, call))
        if pending is not None:
          averages = take_metrics(*pending, averages)
        pending = (call, metrics)
        if stop_requested.is_set() and call + 1 < schedule.calls_per_epoch:
          averages = take_metrics(*pending, averages)
          train_seconds += time.time() - epoch_start
          checkpoints.save(manager, state, None, {
              "epoch": epoch, "next_call": call + 1, "history": history, "image_shape": image_shape,
              "train_seconds": train_seconds, "partial": metric_averages.to_json(averages)})
          manager.wait_until_finished()
          bar.close()
          raise Preempted(f"stopped by {stops.signal_name} at step {int(state.step)} (epoch "
                          f"{epoch + 1}) and checkpointed in {workdir / 'checkpoints'}; rerun the same command to "
                          "resume")
      averages = take_metrics(*pending, averages)
      jax.block_until_ready(state)
      epoch_seconds = time.time() - epoch_start
      train_seconds += epoch_seconds
      report_progress(int(state.step))
      with memory.answers_exhaustion(EVAL_KEYS, "scoring the validation pairs"):
        validation = evaluators.run(  # without test-time views, which cost (2s+1)^2
            "validation_pairs", evaluation.replace(params=state.params, views=False))
      calls_run = schedule.calls_per_epoch - first_call
      record = {"epoch": epoch + 1, "step": int(state.step), "epoch_seconds": epoch_seconds,
                "examples_per_second": (calls_run * schedule.steps_per_call
                                        * batch_spec.examples / epoch_seconds),
                **{f"train_{k}": float(v) for k, v in averages.compute().items()},
                **{f"val_{k}": v for k, v in validation.items()}}
      history.append(record)
      if workdir_lib.is_primary():
        workdir_lib.append_metrics(workdir, record)
      writer.write_scalars(record["step"], {k: v for k, v in record.items() if k != "epoch"})
      writer.flush()
      latent.record(epoch + 1, state.params)  # drawn at the end, all epochs in one projection
      checkpoints.save(manager, state, {checkpoints.BEST_METRIC: record[checkpoints.BEST_METRIC]},
                       {"epoch": epoch + 1, "next_call": 0, "history": history,
                        "image_shape": image_shape, "train_seconds": train_seconds,
                        "partial": None}, wait=False)
      bar.write(f"epoch {epoch + 1}: train loss {record['train_loss']:.4f}, validation pair "
                f"accuracy {record['val_accuracy']:.4f}, ROC AUC {record['val_roc_auc']:.4f}")
      if stop_requested.is_set() and epoch + 1 < config.train.epochs:
        manager.wait_until_finished()
        bar.close()
        raise Preempted(f"stopped by {stops.signal_name} after epoch {epoch + 1}, checkpointed in "
                        f"{workdir / 'checkpoints'}; rerun the same command to resume")
  bar.close()
  writer.close()
  if stop_requested.is_set():  # during the last epoch: its checkpoint is what a rerun evaluates
    manager.wait_until_finished()
    raise Preempted(f"stopped by {stops.signal_name} after the last epoch, checkpointed in "
                    f"{workdir / 'checkpoints'}; rerun the same command to evaluate it")
  stops.phase = "the final evaluation"
  # The plots are drawn on one worker thread while this one scores, calibrates and summarises.
  plotter = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="plots")
  plot_jobs = [latent.start_drawing(plotter)]
  manager.wait_until_finished()  # the last checkpoint written before it is read
  # The final state's validation and test pairs, scored once for calibration, plots and summary.
  final = evaluation.replace(params=state.params)
  with memory.answers_exhaustion(EVAL_KEYS, "scoring the evaluation pairs"):
    final.pairs("validation")  # on every process: one program over all devices
    test_pairs = final.pairs("test")
  if workdir_lib.is_primary():
    plot_jobs.append(plotter.submit(run_plots.final_plots, workdir / "plots", history, test_pairs,
                                    final.pair_scoring))
  plotter.shutdown(wait=False)
  contexts = {int(state.step): final}  # calibration.json: the latest and the best checkpoint's
  best = manager.best_step()
  if best is not None and best not in contexts:
    contexts[best] = final.replace(params=checkpoints.restore(manager, state, best)[0].params)
  calibration = evaluators.calibration.file_contents(contexts, int(state.step), best)
  summary = _summarise(config, workdir, state, datasets, final, history, manager,
                       [job for job in plot_jobs if job is not None])
  if summary is not None:
    workdir_lib.write_json(workdir / workdir_lib.CALIBRATION_FILE, calibration)
    summary["calibration"] = calibration["checkpoints"][str(int(state.step))]
    summary["predict_uses"] = _say_what_predict_uses(calibration, history)
    summary.update(train_seconds=train_seconds, wall_seconds=time.time() - started)
    workdir_lib.write_json(workdir / workdir_lib.SUMMARY_FILE, summary)
  # Release this run's compiled programs. XLA:CPU maps their code into memory regions that JAX's
  # caches keep alive (~1,000 more for each Omniglot run); ~60 such runs in one process (a sweep,
  # the report) reach the kernel's vm.max_map_count (65,530) and the next program load segfaults.
  # Later runs of the same shapes reload them from the persistent compilation cache where it is on
  # (main.py turns it on).
  jax.clear_caches()
  return summary


def _flat(tree: dict, prefix: str = "") -> dict:
  """A nested dict as {"section.key": value}."""
  flat = {}
  for name, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flat(value, f"{prefix}{name}."))
    else:
      flat[f"{prefix}{name}"] = value
  return flat


def _config_line(config, workdir: pathlib.Path) -> str:
  """One line for the run's config: where the whole of it is and the keys that differ from the
  declared defaults (config_keys)."""
  current = _flat(json.loads(config.to_json_best_effort()))
  defaults = _flat(json.loads(config_keys.get_config().to_json_best_effort()))
  changed = [f"{key}={value}" for key, value in current.items() if defaults.get(key) != value]
  return (f"config: {workdir / workdir_lib.CONFIG_FILE}; differs from the defaults in "
          f"{', '.join(changed) if changed else 'nothing'}")


def _make_schedule(config, datasets, loss_spec, batch_spec, model, mesh, unroll: bool):
  """The run's call_schedule.Schedule: unrolled calls get no more steps than the estimate of
  their program's memory fits in train.program_budget_mb (siamese_jax.program_memory); one line
  says so when that cuts train.steps_per_call."""
  train_size = len(datasets.train.labels)
  note = call_schedule.few_steps_note(config, train_size, batch_spec.examples)
  if note:
    _say(f"warning: {note}")
  asked = call_schedule.make_schedule(config, train_size, batch_spec.examples)
  if not unroll or asked.steps_per_call == 1:
    return asked
  step_peak = program_memory.step_peak_bytes(
      model, list(datasets.train.images.shape[1:]), train.optimizer_from_config(config, 1),
      loss_spec, datasets.train.num_classes, batch_spec, datasets.train, mesh)
  budget = program_memory.budget_bytes(config.train.program_budget_mb)
  schedule = call_schedule.make_schedule(
      config, train_size, batch_spec.examples,
      program_memory.max_steps_per_call(step_peak, budget, unroll))
  if schedule.steps_per_call < asked.steps_per_call:
    gib = lambda steps: program_memory.call_bytes(step_peak, steps, unroll) / 2 ** 30
    height, width = datasets.train.images.shape[1:3]
    _say(f"steps per compiled call: {schedule.steps_per_call}, not {asked.steps_per_call}: "
         f"{asked.steps_per_call} unrolled steps of {config.model.encoder} at {height}x{width} "
         f"need ~{gib(asked.steps_per_call):.1f} GiB, {schedule.steps_per_call} "
         f"~{gib(schedule.steps_per_call):.1f} GiB of the {budget / 2 ** 30:.1f} GiB budget "
         "(train.program_budget_mb)")
  return schedule


def _say_what_predict_uses(calibration: dict, history: list) -> dict:
  """Prints (and returns, for summary.json) the checkpoint that predict and export use by default
  (calibration.json's ``best_step``), its threshold and validation FAR/FRR, after the notices
  of why the validation part could not choose it or its threshold, one line each."""
  step = calibration["best_step"]
  step = calibration["latest_step"] if step is None else step
  entry = calibration["checkpoints"][str(step)]
  epoch = next((h["epoch"] for h in history if h["step"] == step), None)
  for notice in (calibration.get("notice"), entry.get("notice")):
    if notice:
      _say(f"notice: {notice}")
  rates = entry["validation"]
  _say(f"predict and export use epoch {epoch} (step {step}): threshold {entry['threshold']:.4g} "
       f"({entry['target']}), validation FAR {rates['far']:.4f}, FRR {rates['frr']:.4f} on "
       f"{rates['different_pairs']} different and {rates['same_pairs']} same distinct pairs; "
       f"test FAR {entry['test']['far']:.4f}, FRR {entry['test']['frr']:.4f}")
  return {"epoch": epoch, "step": step, "threshold": entry["threshold"],
          "validation": rates, "test": entry["test"]}


def _summarise(config, workdir, state, datasets, final, history, manager,
               plot_jobs=()) -> dict | None:
  """The summary of the final state (``final``: its evaluation context): every evaluator of a
  run's summary (test pairs with the threshold tuned on validation pairs, ...) and the plots of
  the whole run; None on processes other than 0. ``plot_jobs``: the Futures of the plots being
  drawn ({name: path} each; waited for here)."""
  if not workdir_lib.is_primary():
    return None
  with memory.answers_exhaustion(EVAL_KEYS, "evaluating the final state"):
    figures = evaluators.summary_figures(final)
  outputs = run_plots.collect(config, workdir / "plots", plot_jobs)
  best_step = manager.best_step()
  best_epoch = next((h["epoch"] for h in history if h["step"] == best_step), None)
  summary = {
      "final": history[-1] if history else {},
      "test": {**figures["test"], "pairs": int(len(final.pairs("test")[0])),
               "note": "final state; threshold_tuned chosen on the validation pairs"},
      "validation": {**figures["validation"], "pairs": int(len(final.pairs("validation")[0]))},
      "best": {"epoch": best_epoch, "step": best_step, "metric": checkpoints.BEST_METRIC,
               "value": next((h[checkpoints.BEST_METRIC] for h in history
                              if h["step"] == best_step), None)},
      "splits": protocol.describe(config, datasets),  # each part's source, shape and classes
      "metric_splits": {"train_*": "training split (less validation), averaged over the epoch",
                        "val_*": "validation pairs, fixed every epoch",
                        "test": "test split pairs, final state"},
      "epochs": len(history), "steps": int(state.step),
      "examples_per_second": metric_averages.steady_examples_per_second(history),
      "seed": config.seed, "config": json.loads(config.to_json_best_effort()),
      "devices": _describe_devices(), "versions": _versions(), "plots": outputs,
  }
  pair_scoring, test = final.pair_scoring, figures["test"]
  threshold_words = ("logit > 0" if pair_scoring.higher_means_same else
                     f"threshold {pair_scoring.threshold:g} on the {pair_scoring.distance} distance")
  _say(f"test pair accuracy {test['accuracy_fixed']:.4f} ({threshold_words}), "
       f"{test['accuracy_tuned']:.4f} at the threshold tuned on validation pairs "
       f"({test['threshold_tuned']:.4g}); ROC AUC {test['roc_auc']:.4f}; outputs in {workdir}")
  return summary
