"""The training objectives, one module each, and ``OBJECTIVES``: every ``loss.name`` with its
record (``objective.Objective``), which the train step, the config checks and ``--help`` read.

Each module holds its per-example losses (what the property tests check), their vmapped batch
means over a padding ``mask`` [B] (1 = real example), and its record. ``base`` holds what they
share; where optax already has a loss (binary and softmax cross-entropy), they call it. To add a
loss, write one module with its functions and ``OBJECTIVE``, and list it below.
"""

from siamese_jax.losses import (arcface, bce, circle, contrastive, contrastive_batch, cosface,
                                cosine_softmax, cross_entropy, lifted_structure,
                                lifted_structure_original, margin, multi_similarity,
                                normalized_softmax, npairs, ntxent, proxy_anchor, proxy_nca,
                                soft_triple, sphereface, subcenter_arcface, supcon, triplet,
                                xbm)
from siamese_jax.losses.objective import Objective

OBJECTIVES: dict[str, Objective] = {objective.name: objective for objective in (
    contrastive.OBJECTIVE, bce.OBJECTIVE, triplet.OBJECTIVE, cross_entropy.OBJECTIVE,
    cosine_softmax.OBJECTIVE, cosface.OBJECTIVE, arcface.OBJECTIVE, subcenter_arcface.OBJECTIVE,
    normalized_softmax.OBJECTIVE, proxy_nca.OBJECTIVE, proxy_anchor.OBJECTIVE,
    soft_triple.OBJECTIVE, sphereface.OBJECTIVE, multi_similarity.OBJECTIVE, circle.OBJECTIVE,
    lifted_structure.OBJECTIVE, lifted_structure_original.OBJECTIVE, npairs.OBJECTIVE,
    margin.OBJECTIVE, supcon.OBJECTIVE, ntxent.OBJECTIVE, contrastive_batch.OBJECTIVE,
    xbm.OBJECTIVE)}


def choices() -> dict[str, tuple[str, ...]]:
  """Every ``loss.*`` key whose value is a name, with the names it accepts: ``loss.name`` and the
  keys the objectives declare with ``objective.one_of``."""
  found = {"loss.name": tuple(OBJECTIVES)}
  for record in OBJECTIVES.values():
    found.update({check.path: check.choices for check in record.checks if check.choices})
  return found


def readers() -> dict[str, tuple[str, ...]]:
  """Every ``loss.*`` key some objective reads, with the ``loss.name``s that read it (--help)."""
  found: dict[str, tuple[str, ...]] = {}
  for record in OBJECTIVES.values():
    for key in record.reads:
      found[f"loss.{key}"] = found.get(f"loss.{key}", ()) + (record.name,)
  return found


def own_defaults() -> dict[str, dict[str, object]]:
  """Every ``loss.*`` key some objective declares its own default for, with {loss.name: that
  default} (``config_keys.get_config`` makes the key follow ``loss.name``; --help lists them)."""
  found: dict[str, dict[str, object]] = {}
  for record in OBJECTIVES.values():
    for key, value in record.defaults.items():
      found.setdefault(f"loss.{key}", {})[record.name] = value
  return found


def default_head(name: str, fallback: str) -> str:
  """The ``model.head`` that ``loss.name`` ``name`` trains first (its record's ``heads[0]``);
  ``fallback`` for a name that is not a loss (config_checks then names the fix)."""
  return OBJECTIVES[name].heads[0] if name in OBJECTIVES else fallback


def default_setting(name: str, key: str, fallback):
  """The default of ``loss.<key>`` under ``loss.name`` ``name``: the record's own if it declares
  one, else ``fallback`` (the declared default)."""
  record = OBJECTIVES.get(name)
  return record.defaults.get(key, fallback) if record is not None else fallback
