"""``prism export hf`` and ``prism hub push|pull`` (pluggy hook implementations; torch-free at import)."""

from __future__ import annotations

import argparse
import sys

from prism_core.hooks import hookimpl


def _export_hf(args: argparse.Namespace) -> int:
    from prism_plugin_prismatic.export_hf import ExportError, export_llava

    try:
        out = export_llava(args.model, args.out, hf_token=args.hf_token, allow_letterbox=args.allow_letterbox)
    except ExportError as exc:
        print(f"prism export hf: {exc}", file=sys.stderr)
        return 2
    print(f"wrote LlavaForConditionalGeneration + processor to {out}\n"
          f"load the processor with LlavaProcessor.from_pretrained(..., backend=\"pil\") for prism's exact pixels")
    return 0


def _hub_push(args: argparse.Namespace) -> int:
    from prism_plugin_prismatic.hub import push_to_hub

    try:
        url = push_to_hub(args.model, args.repo_id, token=args.hf_token, revision=args.revision,
                          private=args.private, training_spec=args.training_spec)
    except (FileNotFoundError, ValueError) as exc:  # not a saved model, or a broken eval*.json: nothing was pushed
        print(f"prism hub push: {exc}", file=sys.stderr)
        return 2
    print(url)
    return 0


def _hub_pull(args: argparse.Namespace) -> int:
    from prism_plugin_prismatic.hub import HubError, pull_from_hub

    try:
        print(pull_from_hub(args.repo_id, revision=args.revision, token=args.hf_token, cache_dir=args.cache_dir,
                            local_dir=args.local_dir))
    except HubError as exc:
        print(f"prism hub pull: {exc}", file=sys.stderr)
        return 2
    return 0


@hookimpl
def prism_add_cli_commands(subparsers: argparse._SubParsersAction) -> None:
    from prism_core.cli.export import export_formats

    hf = export_formats(subparsers).add_parser(
        "hf", help="write a transformers LlavaForConditionalGeneration checkpoint + processor")
    hf.add_argument("model", help="a saved prism model directory, an original Prismatic run directory or model id")
    hf.add_argument("out", help="output directory")
    hf.add_argument("--hf-token", default=None, help="token for gated weights (else HF_TOKEN / the stored login)")
    hf.add_argument("--allow-letterbox", action="store_true",
                    help="export letterbox models anyway: the HF image processor cannot pad, so pad images yourself")
    hf.set_defaults(func=_export_hf)

    hub = subparsers.add_parser("hub", help="push prism models to / pull them from the Hugging Face Hub")
    actions = hub.add_subparsers(dest="action", required=True)
    push = actions.add_parser("push", help="upload a saved prism model (safetensors, spec, model card)")
    push.add_argument("model", help="a saved prism model directory, or a run directory (its final model, with its "
                                    "evaluation and training curves in the model card)")
    push.add_argument("repo_id", help="e.g. my-org/my-vlm")
    push.add_argument("--revision", default=None, help="branch to push to (created if missing)")
    push.add_argument("--private", action="store_true")
    push.add_argument("--hf-token", default=None)
    push.add_argument("--training-spec", default=None,
                      help="the run spec (TOML) that trained the model, for the card's training-data section "
                           "(default for a run directory: its spec.toml)")
    push.set_defaults(func=_hub_push)
    pull = actions.add_parser("pull", help="download a prism model into the Hub cache and print its directory")
    pull.add_argument("repo_id")
    pull.add_argument("--revision", default=None)
    pull.add_argument("--hf-token", default=None)
    pull.add_argument("--cache-dir", default=None)
    pull.add_argument("--local-dir", default=None, help="copy the files into this folder instead of the cache")
    pull.set_defaults(func=_hub_pull)
