"""What every evaluator reads (``Context``) and what an evaluator is (``Evaluator``).

A Context is one trained model (``params`` and ``apply_fn``) with the run's parts (``datasets``:
train, validation held out of the training split, test), the config, how its verification pairs
are drawn (``num_pairs`` of each part, each part's key in ``pair_keys``) and scored
(siamese_jax.scoring's rule), and the key of everything else an evaluator draws (``key``: each
evaluator folds in constants of its own). It embeds each part and scores each part's pairs once,
on first use, for every evaluator that asks.

Two protocols make one:

- ``for_run``: the training run's (``experiment.train_and_evaluate``, ``inference.recalibrate``):
  config.eval.pairs pairs of each part drawn with ``run_keys(seed).evaluation``, each pair's images
  embedded by one jitted scorer (``evaluate.make_pair_scorer``).
- ``for_report``: ``scripts/make_report.py``'s: its own pair count, episodes and key
  (``run_keys.report_key``, folded with 0 for the validation pairs and 1 for the test pairs); a
  split with fewer images than its pairs hold is scored from each image's embedding (the same
  scores up to float rounding, for about half the work).

Both calibrate on every distinct validation pair instead (``distinct_pairs``, each kind capped
at half their pair count): pairs drawn with repetition count a few validation classes' pairs
many times over and hide how few there are.

A third, ``for_folder``, is one held-out folder as the test part (``predict evaluate``): no pairs
are drawn with repetition there, ``distinct_pairs`` scores every distinct pair of a part instead
(each kind capped at ``max_pairs``, sampled with ``pair_seed``).
"""

import dataclasses
import types
from typing import Any, Callable, Mapping, NamedTuple

import jax
import numpy as np

from siamese_jax import evaluate, run_keys, scoring, sharding


class Evaluator(NamedTuple):
  """An evaluation of a trained model: ``run(context) -> dict`` of JSON-able figures.

  ``summary``: the part of a training run's summary.json ("test" or "validation") its figures are
  added to at the end of training, where ``applies(context)``; None: run on demand only (by the
  report, by inference). ``constraints``: what it needs of a run's config and data
  (``siamese_jax.constraints``), walked before training by ``config_checks``."""
  name: str
  run: Callable[["Context"], dict]
  summary: str | None = None
  applies: Callable[["Context"], bool] = lambda context: True
  constraints: tuple = ()


# Changes to a Context that keep the embeddings and scores computed so far (keyed by views).
_KEEPS_CACHE = frozenset({"views", "far", "episodes"})


@dataclasses.dataclass(frozen=True, eq=False)
class Context:
  """See the module docstring. ``datasets``: .train, .validation, .test (data.LabelledImages)
  and .split (how validation was held out: {"by": ...}); ``far``: the false-accept rate the
  calibration aims at (None: best accuracy); ``views``: False embeds without the model's
  test-time views; ``unseen_test_classes``: whether no test class was trained on."""
  config: Any
  params: Any
  apply_fn: Callable
  datasets: Any
  key: jax.Array
  pair_keys: Mapping[str, jax.Array]
  num_pairs: int
  episodes: int = 400
  far: float | None = None
  views: bool = True
  pairs_from_embeddings: bool = False
  unseen_test_classes: bool = False
  max_pairs: int = 100_000
  folds: int = 10
  pair_seed: int = 0
  mesh: Any = None
  shared: dict = dataclasses.field(default_factory=dict)  # device data, compiled pair scorers
  cache: dict = dataclasses.field(default_factory=dict)  # these params' embeddings and scores

  def replace(self, **changes) -> "Context":
    """This context with ``changes`` (e.g. ``params``, ``views``, ``far``); its device data and
    compiled scorers are shared, its embeddings and scores kept unless the model or data changed."""
    cache = self.cache if set(changes) <= _KEEPS_CACHE else {}
    return dataclasses.replace(self, **changes, cache=cache)

  @property
  def pair_scoring(self) -> scoring.PairScoring:
    return scoring.pair_scoring_from_config(self.config)

  @property
  def _views(self) -> bool:
    """``views`` as ``scoring.embed`` takes it: a model without test-time views has only one."""
    return self.views or not self.config.model.test_time_shift

  def _once(self, key, compute):
    if key not in self.cache:
      self.cache[key] = compute()
    return self.cache[key]

  def embed(self, images, tower: int = 0) -> np.ndarray:
    """Host embeddings [N, D] of images [N, H, W, C] through ``tower`` (0, or 1: the second input's
    tower of a model with separate weights)."""
    return scoring.embed_in_batches(self.apply_fn, self.params, images, tower=tower,
                                    views=self._views)

  def embeddings(self, part: str, tower: int = 0) -> np.ndarray:
    """The embeddings [N, D] of a part's images ("train", "validation", "test"), computed once."""
    return self._once(("embeddings", part, tower, self._views),
                      lambda: self.embed(getattr(self.datasets, part).images, tower))

  def similarity(self, a, b):
    """Higher = more alike, of embedding pairs a, b [B, D] -> [B], as a pair is scored."""
    sign = 1.0 if self.pair_scoring.higher_means_same else -1.0
    return sign * scoring.score_embeddings(self.apply_fn, self.params, a, b, self.pair_scoring)

  def device_data(self, part: str) -> sharding.DeviceData:
    """A part's images and class index on the devices of ``mesh``, put there once."""
    if ("device_data", part) not in self.shared:
      dataset = getattr(self.datasets, part)
      self.shared[("device_data", part)] = sharding.device_data(
          dataset.images, dataset.labels, dataset.num_classes, self.mesh)
    return self.shared[("device_data", part)]

  def pairs(self, part: str) -> tuple[np.ndarray, np.ndarray]:
    """(scores [M], same [M] bool) of a part's verification pairs, scored once."""
    return self._once(("pairs", part, self._views), lambda: self.score_pairs(
        getattr(self.datasets, part), self.pair_keys[part], self.config.train.pair_source, part))

  def score_pairs(self, dataset, key, pair_source: str, part: str | None = None):
    """(scores [M], same [M] bool) of the ``num_pairs`` pairs ``evaluate.make_pair_scorer`` draws
    from ``dataset`` (a data.LabelledImages; ``part``: its name, to reuse what is computed)."""
    data = (self.device_data(part) if part else sharding.device_data(
        dataset.images, dataset.labels, dataset.num_classes, self.mesh))
    spec, num_batches = evaluate.pair_batches(self.num_pairs, pair_source)
    small = pair_source == "balanced" and len(dataset.images) < 2 * spec.batch_size * num_batches
    if not (self.pairs_from_embeddings and small):
      return jax.device_get(self._scorer(pair_source)(self.params, data, key))
    drawn = jax.device_get(evaluate.draw_pairs(key, data.index, len(dataset.images),
                                               self.num_pairs, pair_source))
    embed = lambda tower: (self.embeddings(part, tower) if part else
                           self.embed(dataset.images, tower))
    emb_a = embed(0)
    emb_b = emb_a if self.config.model.shared_weights else embed(1)
    scores = scoring.score_embeddings(self.apply_fn, self.params, emb_a[drawn["idx_a"]],
                                      emb_b[drawn["idx_b"]], self.pair_scoring)
    return np.asarray(scores), drawn["same"]

  def distinct_pairs(self, part: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """(scores [M], same [M] bool, the drawn pairs of ``evaluate.distinct_pairs``) of every
    distinct pair of a part's images (each kind capped at ``max_pairs``), scored from the
    embeddings, once."""
    def compute():
      drawn = evaluate.distinct_pairs(getattr(self.datasets, part).labels, self.max_pairs,
                                      self.pair_seed)
      emb_a = self.embeddings(part, 0)
      emb_b = emb_a if self.config.model.shared_weights else self.embeddings(part, 1)
      scores = scoring.score_embeddings(self.apply_fn, self.params, emb_a[drawn["idx_a"]],
                                        emb_b[drawn["idx_b"]], self.pair_scoring)
      return np.asarray(scores), drawn["same"], drawn
    return self._once(("distinct_pairs", part, self._views), compute)

  def _scorer(self, pair_source: str):
    key = ("scorer", pair_source, self.num_pairs, self._views)
    if key not in self.shared:
      self.shared[key] = evaluate.make_pair_scorer(self.apply_fn, self.pair_scoring,
                                                   self.num_pairs, pair_source, views=self._views)
    return self.shared[key]


def for_run(config, params, apply_fn, datasets, *, unseen_test_classes: bool = False,
            device_sets: Mapping[str, sharding.DeviceData] | None = None, mesh=None) -> Context:
  """The training run's context (see the module docstring); ``device_sets``: parts already on
  the devices of ``mesh`` (default: every device)."""
  key = run_keys.run_keys(config.seed).evaluation
  return Context(config, params, apply_fn, datasets, key, {"validation": key, "test": key},
                 config.eval.pairs, far=config.eval.far, unseen_test_classes=unseen_test_classes,
                 max_pairs=max(config.eval.pairs // 2, 1), mesh=mesh or sharding.make_mesh(),
                 shared={("device_data", part): data for part, data in (device_sets or {}).items()})


def for_report(config, params, apply_fn, datasets, num_pairs: int, episodes: int) -> Context:
  """The report's context (see the module docstring), on one device."""
  key = run_keys.report_key(config.seed)
  return Context(config, params, apply_fn, datasets, key,
                 {"validation": jax.random.fold_in(key, 0), "test": jax.random.fold_in(key, 1)},
                 num_pairs, episodes, far=config.eval.far, pairs_from_embeddings=True,
                 max_pairs=max(num_pairs // 2, 1),
                 mesh=sharding.make_mesh(jax.devices()[:1]))


def for_folder(config, params, apply_fn, dataset, *, max_pairs: int = 100_000, folds: int = 10,
               seed: int = 0) -> Context:
  """A held-out folder's context (see the module docstring): ``dataset`` (a data.LabelledImages
  of classes never trained on) as the test part, on one device."""
  return Context(config, params, apply_fn, types.SimpleNamespace(test=dataset),
                 jax.random.PRNGKey(seed), {}, 0, unseen_test_classes=True, max_pairs=max_pairs,
                 folds=folds, pair_seed=seed, mesh=sharding.make_mesh(jax.devices()[:1]))
