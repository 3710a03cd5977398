"""scripts/install.sh installs siamese_jax itself (editable), so the API imports in .venv from any
folder (issue 27 problems 4 and 6: `import siamese_jax` failed in .venv)."""

import os
import re
import subprocess
import sys

from tests.helpers import REPO_ROOT


def test_the_install_script_installs_the_package_editable():
  script = (REPO_ROOT / "scripts" / "install.sh").read_text()
  commands = [line for line in script.splitlines() if not line.lstrip().startswith("#")]
  assert any(re.search(r"\.venv/bin/python -m pip install .*-e \.$", line) for line in commands)


def test_an_editable_install_imports_this_checkout_from_another_folder(tmp_path):
  prefix = tmp_path / "prefix"
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                  "--no-build-isolation", "--prefix", str(prefix), "-e", str(REPO_ROOT)],
                 check=True, capture_output=True, timeout=300)
  site_packages = next(prefix.glob("lib/python*/site-packages"))
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  result = subprocess.run(
      [sys.executable, "-c", f"import site; site.addsitedir({str(site_packages)!r}); "
       "import siamese_jax, siamese_jax.losses; print(siamese_jax.__file__)"],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == str(REPO_ROOT / "siamese_jax" / "__init__.py")
