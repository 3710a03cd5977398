"""The device image's Python packages, simulated: the dry run makes every module unimportable
whose distribution the image lacks (``image_packages.txt``) and the run does not carry as a
wheel (``wheels.txt``), so an import of TensorFlow or tfds on the device's path fails here too.

``block_absent_modules()`` hides them in this process (call it before anything imports them):
``import`` and ``importlib.util.find_spec`` answer as for a package not installed. TensorFlow and
tfds are hidden even where the package lists cannot be read.
"""

import importlib.metadata
import pathlib
import re
import sys
import tomllib

HERE = pathlib.Path(__file__).resolve().parent
ALWAYS_ABSENT = ("tensorflow", "tensorflow_datasets")


def normalized(name: str) -> str:
  """A distribution name as pip compares them: "ml_collections" -> "ml-collections"."""
  return re.sub(r"[-_.]+", "-", name).lower()


def listed(path: pathlib.Path) -> set[str]:
  """The normalized names of a list file: one a line, "name==version" or "name", # comments."""
  lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
  return {normalized(re.split(r"[=<>~! \[]", line)[0]) for line in lines if line}


def absent() -> tuple[set[str], set[str]]:
  """(top-level modules, distributions) installed here that are neither on the image nor
  carried; TensorFlow and tfds always among them."""
  present = listed(HERE / "image_packages.txt") | listed(HERE / "wheels.txt")
  modules, distributions = set(ALWAYS_ABSENT), {normalized(m) for m in ALWAYS_ABSENT}
  # This project itself (``pip install -e .``) travels with the working tree, not as a package.
  with open(HERE.parents[1] / "pyproject.toml", "rb") as pyproject:
    present.add(normalized(tomllib.load(pyproject)["project"]["name"]))
  for module, names in importlib.metadata.packages_distributions().items():
    if not any(normalized(d) in present for d in names):
      modules.add(module)
      distributions.update(normalized(d) for d in names)
  return modules, distributions


class _Hiding:
  """A meta-path finder wrapped so that it finds neither the absent modules (find_spec answers
  None, as for a module not installed: ``import`` raises ModuleNotFoundError and
  ``importlib.util.find_spec`` says None) nor the absent distributions' metadata."""

  def __init__(self, finder, modules, distributions):
    self.finder, self.modules, self.distributions = finder, modules, distributions

  def find_spec(self, name, path=None, target=None):
    if name.partition(".")[0] in self.modules:
      return None
    return self.finder.find_spec(name, path, target)

  def find_distributions(self, *args, **kwargs):
    found = getattr(self.finder, "find_distributions", lambda *a, **k: ())(*args, **kwargs)
    return (d for d in found if normalized(d.metadata["Name"] or "") not in self.distributions)

  def __getattr__(self, name):
    return getattr(self.finder, name)


def block_absent_modules() -> list[str]:
  """Makes the modules the device image lacks unimportable here; returns their sorted names."""
  try:
    modules, distributions = absent()
  except OSError:  # the lists are missing: hide what is known to be absent
    modules, distributions = set(ALWAYS_ABSENT), {normalized(m) for m in ALWAYS_ABSENT}
  sys.meta_path[:] = [_Hiding(finder, frozenset(modules), frozenset(distributions))
                      for finder in sys.meta_path]
  return sorted(modules)
