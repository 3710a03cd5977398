"""CosFace (Wang et al. 2018): softmax over ``scale`` times the cosines between an embedding and
learned class weights, the true class's lowered by ``margin``, as pytorch-metric-learning's
``CosFaceLoss`` (its defaults: margin 0.35, scale 64). The per-example loss is
``cosine_softmax``'s; there the class weights are the ``cosine_classifier`` head's (the model is
a classifier), here they are the objective's own (``params["loss"]["class_weights"]``), so the
trained model is the plain embedding model, compared by distance."""

from siamese_jax.losses import arcface, base, cosine_softmax, objective


def compute(params, apply_fn, batch: dict, key, spec, train: bool = True):
  """(loss, {loss, accuracy}) of a labelled batch {x, label, mask}: the encoder's embeddings
  against the learned class weights (PML's MeanReducer: the mean over the batch)."""
  embeddings = base.embeddings(params, apply_fn, batch, key, train)
  cosines = base.cosines(embeddings, base.learned(params, "class_weights"))
  loss = cosine_softmax.batch_cosine_margin_softmax_loss(cosines, batch["label"], spec["scale"],
                                                         spec["margin"], batch.get("mask"))
  return loss, {"loss": loss,
                "accuracy": base.class_accuracy(cosines, batch["label"], batch.get("mask"))}


OBJECTIVE = objective.Objective(
    name="cosface", batch_kind="uniform", heads=("distance",), reads=("margin", "scale"),
    compute=compute, params=(arcface.class_weights_param(),),
    defaults={"margin": 0.35, "scale": 64.0},
    checks=(objective.within("loss.margin", 0, 2, "0.35 (a cosine margin; 0 is NormFace)"),
            objective.positive("loss.scale")))
