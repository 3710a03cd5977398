"""export.py: the jax.export artefacts (symbolic batch) and model.json in this process, and (slow)
the command line's artefacts and SavedModel reloaded in a fresh process where siamese_jax and flax
cannot be imported, matching inference.Model.embed and score to 1e-5."""

import json
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from siamese_jax import export, inference
from tests.helpers import REPO_ROOT, repo_env
from tests.test_inference import initial_state, save_run, small_config

CALIBRATED = {"threshold": 0.7, "target": "accuracy", "higher_means_same": False}


def saved_model_run(tmp_path, head="distance", shared=True):
  config = small_config(head, shared)
  calibration = dict(CALIBRATED, higher_means_same=head != "distance",
                     threshold=0.1 if head != "distance" else 0.7)
  return save_run(tmp_path / f"run_{head}", config, initial_state(config), calibration)


def inputs(count: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).random((count, 28, 28, 1), dtype=np.float32)


def test_jax_artefacts_take_any_batch_and_match_embed(tmp_path):
  model = inference.load(saved_model_run(tmp_path))
  info = export.export(model, tmp_path / "out", saved_model=False)
  assert info["files"] == {"embed": "embed.jax", "score": "score.jax"}
  embed = jax.export.deserialize(bytearray((tmp_path / "out" / "embed.jax").read_bytes()))
  score = jax.export.deserialize(bytearray((tmp_path / "out" / "score.jax").read_bytes()))
  assert set(embed.platforms) == set(export.PLATFORMS)
  for count in (1, 5, 300):
    x = inputs(count)
    np.testing.assert_allclose(embed.call(x), model.embed(x), atol=1e-5)
  a, b = model.embed(inputs(6, 1)), model.embed(inputs(6, 2))
  np.testing.assert_allclose(score.call(a, b), model.score_embeddings(a, b), atol=1e-5)


def test_model_json_says_how_to_prepare_images_and_call_a_pair(tmp_path):
  model = inference.load(saved_model_run(tmp_path))
  export.export(model, tmp_path / "out", saved_model=False)
  info = json.loads((tmp_path / "out" / "model.json").read_text())
  assert info["input"] == {"shape": ["batch", 28, 28, 1], "dtype": "float32", "range": [0.0, 1.0]}
  assert info["preprocessing"]["image_size"] == [28, 28]
  assert info["preprocessing"]["channels"] == 1
  assert any("/ 255" in step for step in info["preprocessing"]["steps"])
  assert info["score"]["threshold"] == 0.7 and info["score"]["same_when"] == "score < threshold"
  assert info["embedding_dim"] == 8 and info["source"]["fingerprint"] == model.fingerprint


def test_cli_errors_in_one_line(tmp_path, capsys):
  assert export.main(["--workdir", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and err.count("\n") == 1 and "no such folder" in err


RELOAD = textwrap.dedent("""
    import json, sys
    class Refuse:  # prove that neither siamese_jax nor flax is needed
      def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("siamese_jax", "flax"):
          raise ImportError("refused: " + name)
    sys.meta_path.insert(0, Refuse())
    import numpy as np
    out, x = sys.argv[1], np.load(sys.argv[2])
    info = json.load(open(out + "/model.json"))
    import jax
    load = lambda name: jax.export.deserialize(bytearray(open(out + "/" + name, "rb").read()))
    result = {"jax_embed": load("embed.jax").call(x)}
    emb = result["jax_embed"]
    result["jax_score"] = load("score.jax").call(emb[:-1], emb[1:])
    if "embed_b" in info["files"]:
      result["jax_embed_b"] = load("embed_b.jax").call(x)
    import tensorflow as tf
    saved = tf.saved_model.load(out + "/saved_model")
    result["tf_embed"] = saved.embed(tf.constant(x)).numpy()
    result["tf_score"] = saved.score(tf.constant(emb[:-1]), tf.constant(emb[1:])).numpy()
    if "embed_b" in info["files"]:
      result["tf_embed_b"] = saved.embed_b(tf.constant(x)).numpy()
    result["tf_default"] = saved.signatures["serving_default"](tf.constant(x))
    result["tf_default"] = next(iter(result["tf_default"].values())).numpy()
    np.savez(out + "/reloaded.npz", **{k: np.asarray(v) for k, v in result.items()})
    print(sorted(m for m in sys.modules if m.split(".")[0] in ("siamese_jax", "flax")))
""")


@pytest.mark.slow
@pytest.mark.parametrize("head, shared", [("distance", True), ("abs_diff", False)])
def test_artefacts_reload_without_siamese_jax(tmp_path, head, shared):
  workdir = saved_model_run(tmp_path, head, shared)
  out = tmp_path / "exported"
  made = subprocess.run([sys.executable, "-m", "siamese_jax.export", "--workdir", str(workdir),
                         "--out", str(out)], cwd=REPO_ROOT, env=repo_env(), capture_output=True,
                        text=True, timeout=300)
  assert made.returncode == 0, made.stderr
  x = inputs(7)
  np.save(tmp_path / "x.npy", x)
  (tmp_path / "reload.py").write_text(RELOAD)
  env = {k: v for k, v in repo_env().items() if k != "PYTHONPATH"}
  reloaded = subprocess.run([sys.executable, str(tmp_path / "reload.py"), str(out),
                             str(tmp_path / "x.npy")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
  assert reloaded.returncode == 0, reloaded.stderr[-2000:]
  assert reloaded.stdout.strip().splitlines()[-1] == "[]"
  model = inference.load(workdir)
  emb, emb_b = model.embed(x), model.embed(x, tower=1)
  expected_score = model.score_embeddings(emb[:-1], emb[1:])
  with np.load(out / "reloaded.npz") as got:
    for name in ("jax_embed", "tf_embed", "tf_default"):
      np.testing.assert_allclose(got[name], emb, atol=1e-5, err_msg=name)
    for name in ("jax_score", "tf_score"):
      np.testing.assert_allclose(got[name], expected_score, atol=1e-5, err_msg=name)
    if not shared:
      for name in ("jax_embed_b", "tf_embed_b"):
        np.testing.assert_allclose(got[name], emb_b, atol=1e-5, err_msg=name)
  info = json.loads((out / "model.json").read_text())
  assert info["score"]["higher_means_same"] == (head != "distance")


@pytest.mark.bad_input
def test_out_into_a_non_empty_folder_is_refused_unless_overwrite(tmp_path, capsys):
  out = tmp_path / "out"
  out.mkdir()
  (out / "keep.txt").write_text("mine")
  assert export.main(["--workdir", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "--out" in err and "not empty" in err and "--overwrite" in err
  assert (out / "keep.txt").read_text() == "mine"
  # with --overwrite the folder is accepted: the next problem is the missing run
  assert export.main(["--workdir", str(tmp_path / "nowhere"), "--out", str(out),
                      "--overwrite"]) == 2
  assert "no such folder" in capsys.readouterr().err
  (tmp_path / "file").write_text("x")
  assert export.main(["--workdir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "file")]) == 2
  assert "is a file" in capsys.readouterr().err
