"""``gcl-hf push``: publish a saved model (full, LoRA adapter or merged backbone) with a model card."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gcl_hf.cli.common import CLIError, GCLArgumentParser, one_line

#: `gcl_hf.hub.card.FORMS`, spelt out so that `gcl-hf push --help` loads no Hub code (tests/cli/test_push.py
#: checks they agree)
FORMS = ("full", "adapter", "backbone")

if TYPE_CHECKING:  # pragma: no cover
    from huggingface_hub import CommitInfo


def add_push_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``gcl-hf push`` (no token flag on purpose: use ``hf auth login`` or ``HF_TOKEN``)."""
    parser.add_argument("model_dir", nargs="?", help="a saved GCLModel directory (save_pretrained / trainer output); "
                                                     "or give it as --model")
    parser.add_argument("repo_id", nargs="?", help="target Hub repo, e.g. your-name/gcl-clip-vit-b32; or --repo-id")
    parser.add_argument("--model", help="same as the model_dir argument")
    parser.add_argument("--repo-id", dest="repo_id_flag", help="same as the repo_id argument")
    parser.add_argument("--form", choices=FORMS, default="full",
                        help="full GCLModel, LoRA adapter only, or the merged backbone as a plain checkpoint")
    parser.add_argument("--eval-results", help="JSON written by the gcl-hf evaluator; becomes model-index")
    parser.add_argument("--training-info", help="JSON object: datasets, data_description, hyperparameters")
    parser.add_argument("--base-model", help="Hub id of the base model (required for --form adapter when the "
                                             "backbone's name is not a Hub id)")
    parser.add_argument("--base-model-revision", help="revision (commit sha) of the base model")
    parser.add_argument("--revision", help="branch to push to (created from main if missing)")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--commit-message", help="commit message")
    parser.add_argument("--license", help="license id for the card, e.g. apache-2.0 or mit")
    parser.add_argument("--tag", action="append", default=[], help="extra card tag (repeatable)")
    parser.add_argument("--card-template", help="a custom Jinja2 card template (default: the packaged one, "
                                                "model_cards/gcl_model_card.md.j2)")
    parser.add_argument("--allow-pickle", action="store_true", help="allow loading pickle weights from model_dir")
    return parser


def resolve_push_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Fold ``--model`` / ``--repo-id`` into ``model_dir`` / ``repo_id`` (one of each spelling, not both)."""
    for positional, flag, label in (("model_dir", "model", "--model"), ("repo_id", "repo_id_flag", "--repo-id")):
        given, alias = getattr(args, positional), getattr(args, flag, None)
        if given and alias and given != alias:
            parser.error(f"{label} {alias!r} contradicts the positional {positional} {given!r}")
        if given is None and alias is None:
            parser.error(f"the {positional} argument (or {label}) is required")
        setattr(args, positional, given or alias)
    return args


def run_push(args: argparse.Namespace) -> CommitInfo:
    """Run ``gcl-hf push``: load ``model_dir`` (and its processor, if saved there) and :func:`publish` it.

    What can be checked before any upload is, each as one line: the model can be published in ``--form``
    (``--base-model`` for an adapter), a token exists, and the Hub answers with it."""
    from gcl_hf.hub.loading import load
    from gcl_hf.hub.publish import check_publishable, publish

    if not Path(args.model_dir).is_dir():
        raise CLIError(f"model directory not found: {args.model_dir}")
    model = load(args.model_dir, allow_pickle=args.allow_pickle)
    try:
        check_publishable(model, args.form, args.base_model)
    except ValueError as exc:
        raise CLIError(_flag_names(one_line(exc))) from exc
    processor = _local_processor(Path(args.model_dir))
    training_info = json.loads(Path(args.training_info).read_text(encoding="utf-8")) if args.training_info else None
    commit = publish(
        model, args.repo_id, form=args.form, processor=processor, eval_results=args.eval_results,
        training_info=training_info, base_model=args.base_model, base_model_revision=args.base_model_revision,
        revision=args.revision, private=args.private or None, commit_message=args.commit_message,
        license=args.license, tags=args.tag, template_path=args.card_template,
    )
    print(f"pushed {args.form} form to {commit.commit_url} (commit {commit.oid})")
    return commit


def _flag_names(message: str) -> str:
    """`check_publishable`'s advice in terms of this command's flags (``base_model='org/name'`` →
    ``--base-model org/name``)."""
    return (message.replace("base_model='org/name'", "--base-model org/name").replace("form='", "--form '")
            .replace("publish form=", "use --form "))


def _local_processor(model_dir: Path) -> Any | None:
    if not any((model_dir / f).exists() for f in ("processor_config.json", "preprocessor_config.json",
                                                   "tokenizer_config.json")):
        return None
    from gcl_hf.modeling.loading import load_processor

    return load_processor(model_dir)


def main(argv: list[str] | None = None) -> int:
    """``gcl-hf push``."""
    description = __doc__.splitlines()[0].replace("``", "")
    parser = add_push_arguments(GCLArgumentParser(prog="gcl-hf push", description=description))
    run_push(resolve_push_arguments(parser, parser.parse_args(argv)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())


__all__ = ["add_push_arguments", "main", "resolve_push_arguments", "run_push"]
