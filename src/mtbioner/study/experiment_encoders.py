"""Encoders a study pre-trains itself: the ``encoders`` section of a study file.

A run that trains on a domain-adapted encoder (``encoder: ../runs/enc-tapt``) cannot start until that
folder exists, and a folder lost between sessions used to stop a long study until someone remembered
the ``mtbioner pretrain`` command. Declaring how the folder is made::

    encoders:
      ../runs/enc-tapt:                # the folder, relative to the study file (as a run's ``encoder``)
        sources: [BC2GM, BC5CDR, NCBI-disease, JNLPBA]
        splits: [train]                # any other ``mtbioner pretrain`` option; the rest keep its defaults

lets ``mtbioner experiment run`` pre-train it (resumably) before the first run that needs it, so one
command runs the whole study. A folder already there is used or resumed only when its
``pretraining.json`` records the declared sources and settings; anything else stops the study with the
differences, since an encoder from other settings would silently stand for the declared one.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..data.corpus import split_names
from ..errors import MtbionerError

# Options of ``mtbioner pretrain`` an encoder recipe may set, with the flag each becomes.
PRETRAIN_OPTIONS = {
    "encoder": "--encoder",
    "splits": "--splits",
    "epochs": "--epochs",
    "lr": "--lr",
    "warmup": "--warmup",
    "batch_size": "--batch-size",
    "max_length": "--max-length",
    "mlm_probability": "--mlm-probability",
    "heldout": "--heldout",
    "save_every": "--save-every",
    "seed": "--seed",
    "limit": "--limit",
}
# A boolean option with a flag for each value.
PRETRAIN_SWITCHES = {"whole_word_mask": ("--whole-word-mask", "--token-mask")}
# Settings that do not change the encoder a run produces (so a folder may differ in them).
IRRELEVANT = ("save_every",)


@dataclass
class EncoderRecipe:
    """How a study makes one encoder folder: the text it reads and its ``mtbioner pretrain`` options."""

    path: Path
    sources: list[str]
    options: dict[str, Any] = field(default_factory=dict)


def resolve(base: Path, value: str | Path) -> Path:
    """A path from a study file: environment variables expanded, relative ones against the file's folder."""
    path = Path(os.path.expandvars(str(value)))
    return path if path.is_absolute() else (base / path).resolve()


def parse_encoders(file: Path, section: Any) -> dict[Path, EncoderRecipe]:
    """The ``encoders`` section of a study file, keyed by resolved folder.

    Raises:
        MtbionerError: The section is not a mapping of folders to recipes, a recipe has no
            ``sources``, or names an option ``mtbioner pretrain`` does not have.
    """
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise MtbionerError(f"{file}: 'encoders' must map encoder folders to their pre-training (sources, options)")
    recipes = {}
    for folder, spec in section.items():
        where = f"{file}: encoder {folder!r}"
        if not isinstance(spec, dict) or not isinstance(spec.get("sources"), list) or not spec["sources"]:
            raise MtbionerError(f"{where} needs a 'sources' list (corpora or text files to pre-train on)")
        options = {key: value for key, value in spec.items() if key != "sources"}
        unknown = sorted(set(options) - set(PRETRAIN_OPTIONS) - set(PRETRAIN_SWITCHES))
        if unknown:
            known = ", ".join(sorted({"sources", *PRETRAIN_OPTIONS, *PRETRAIN_SWITCHES}))
            raise MtbionerError(f"{where}: unknown option(s) {', '.join(unknown)}; known: {known}")
        if options.get("encoder"):
            options["encoder"] = str(resolve(file.parent, options["encoder"]))
        path = resolve(file.parent, folder)
        recipes[path] = EncoderRecipe(path, [str(s) for s in spec["sources"]], options)
    return recipes


def pretrain_command(recipe: EncoderRecipe, data_dir: Path) -> list[str]:
    """The ``mtbioner pretrain`` arguments that make a recipe's folder from scratch."""
    args = ["pretrain", *recipe.sources, "--data-dir", str(data_dir), "--output", str(recipe.path)]
    for key, value in recipe.options.items():
        if key in PRETRAIN_SWITCHES:
            args.append(PRETRAIN_SWITCHES[key][0 if value else 1])
        elif isinstance(value, list):
            args += [PRETRAIN_OPTIONS[key], ",".join(map(str, value))]
        else:
            args += [PRETRAIN_OPTIONS[key], str(value)]
    return [*args, "--no-progress"]


def settings(options: dict[str, Any]) -> dict[str, Any]:
    """Every pre-training setting a recipe's options give (``mtbioner pretrain``'s defaults for the rest).

    Raises:
        MtbionerError: A value ``mtbioner pretrain`` would refuse.
    """
    from ..learn.pretraining import PretrainConfig  # torch: only once a study runs, not to parse or report it

    return asdict(PretrainConfig(**{k: v for k, v in options.items() if k not in ("splits", "limit")}))


def _same_encoder(recorded: str | None, wanted: str | None) -> bool:
    """``mtbioner pretrain`` records the encoder it loaded, the default encoder's folder when none was named."""
    from ..model.model_config import default_encoder

    if recorded is None or recorded == wanted:
        return recorded == wanted
    return Path(recorded).resolve() == Path(wanted or default_encoder()).resolve()


def recipe_mismatch(recipe: EncoderRecipe, info: dict[str, Any]) -> list[str]:
    """How the run recorded in a folder's ``pretraining.json`` differs from the recipe (empty: it is the recipe's).

    Settings the recipe leaves out must be ``mtbioner pretrain``'s defaults there (those of
    :class:`~mtbioner.learn.pretraining.PretrainConfig`, which the command line shares); sources are compared
    by name, since the command records a corpus found as a folder by its absolute path.
    """
    expected = settings(recipe.options)
    recorded = dict(info.get("config", {}))
    if _same_encoder(recorded.get("encoder"), expected["encoder"]):
        recorded["encoder"] = expected["encoder"]
    wrong = [
        f"{key}: {recorded.get(key)!r} (the recipe wants {value!r})"
        for key, value in expected.items()
        if key not in IRRELEVANT and recorded.get(key) != value
    ]
    inputs = info.get("inputs", {})
    names = [Path(s).name for s in inputs.get("sources", [])]
    if names != [Path(s).name for s in recipe.sources]:
        wrong.append(f"sources: {names} (the recipe wants {recipe.sources})")
    splits = split_names(recipe.options.get("splits", ["train", "devel"]))
    if inputs.get("splits") != splits:
        wrong.append(f"splits: {inputs.get('splits')} (the recipe wants {splits})")
    if inputs.get("limit") != recipe.options.get("limit"):
        wrong.append(f"limit: {inputs.get('limit')} (the recipe wants {recipe.options.get('limit')})")
    return wrong
