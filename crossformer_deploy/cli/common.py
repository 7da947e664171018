"""What every command shares: the error boundary, size parsing, progress."""
from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence

from tqdm import tqdm

from crossformer_deploy.base.errors import CrossFormerError, UsageError
from crossformer_deploy.base.fileio import remove_temp_files
from crossformer_deploy.base.interrupt import signals_as_exceptions
from crossformer_deploy.base.model_info import ModelInfo
from crossformer_deploy.model.factory import build_model, weights_label


def run_main(prog: str, body: Callable[[argparse.Namespace], int | None], parser: argparse.ArgumentParser,
             argv: Sequence[str] | None = None) -> int:
    """Parse, run, and turn every user error into one line on stderr and exit code 2; SIGINT / SIGTERM
    unwind (temp files removed) and exit 130 / 143 with one line."""
    args = parser.parse_args(argv)
    with signals_as_exceptions():
        try:
            return body(args) or 0
        except CrossFormerError as e:
            print(f"{prog}: error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as e:  # Interrupted, or a KeyboardInterrupt raised by someone else
            remove_temp_files()  # what unwinding missed (a temp file made outside a ``with``)
            signum = getattr(e, "signum", signal.SIGINT)
            print(f"{prog}: interrupted by {signal.Signals(signum).name}; temporary files removed", file=sys.stderr)
            return 128 + signum


def default_variant(variant: str | None, weights: str | None) -> str | None:
    """--variant, else None to read it off --weights, else (neither given) an untrained S."""
    return variant or (None if weights else "s")


def classifier_from_args(variant: str | None, weights: str | None, label: str | None = None) -> tuple:
    """(CrossFormer, ModelInfo) of the classifier --variant / --weights name; ``label``: the checkpoint's
    ``weights_label`` if the caller already hashed it."""

    variant = default_variant(variant, weights)
    model = build_model(variant, weights)
    info = ModelInfo(variant=variant or model.cfg.name, mode="classifier", num_classes=model.num_classes,
                     weights=label or weights_label(weights))
    return model, info


def parse_list(text: str, conv: Callable[[str], object], what: str) -> list:
    items = [t for t in text.split(",") if t.strip()]
    if not items:
        raise UsageError(f"empty {what} list")
    try:
        return [conv(t.strip()) for t in items]
    except CrossFormerError:
        raise  # already says what is wrong with which item (e.g. a size that is not a multiple of 32)
    except ValueError:
        raise UsageError(f"bad {what} list {text!r}") from None


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"{v} must be at least {minimum}")
        return v

    return parse


positive_int = _int_at_least(1)
non_negative_int = _int_at_least(0)


def add_openvino_shapes(p: argparse.ArgumentParser, default: int) -> None:
    p.add_argument("--openvino-shapes", type=non_negative_int, default=default, metavar="N",
                   help="--provider openvino: compile a dynamic graph once per input shape, keeping the N most recent "
                   f"(default {default}; far less memory and faster runs for a compile at each new shape); 0: one "
                   "dynamic compile")


class Steps:
    """A progress bar over named steps on stderr (silent when stderr is not a terminal)."""

    def __init__(self, total: int, desc: str):
        self.bar = tqdm(total=total, desc=desc, file=sys.stderr, disable=None, leave=False,
                        bar_format="{desc}: {n_fmt}/{total_fmt} {postfix} [{elapsed}]")
        self.started = False

    def __call__(self, name: str) -> None:
        if self.started:
            self.bar.update(1)
        self.started = True
        self.bar.set_postfix_str(name)

    def close(self) -> None:
        self.bar.close()
