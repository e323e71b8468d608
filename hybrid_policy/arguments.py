"""The command line's argument types (``argparse`` ``type=``: each refuses a bad value
saying what is valid) and the option groups several commands share, for the ``cli``
package and the families' own options and commands. No torch."""

from __future__ import annotations

import argparse


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (1 or more), got {value}")
    return value


def price_ms(text: str) -> float:
    """--price-ms: the ms-equivalent price of one transmission + server operation."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a price in ms (a number >= 0), got "
                                         f"{text!r}") from None
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of ms >= 0 (0 = no price), "
                                         f"got {text}")
    return value


def loss_budget(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a mean TV in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a mean TV distance in [0, 1], got {text}")
    return value


def probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a probability in [0, 1], got {text!r}")
    return value


def add_model_args(p: argparse.ArgumentParser, task_required: bool = True) -> None:
    """Which task, models and link a run uses, and how it is timed."""
    from hybrid_policy.core.link import PROFILES
    from hybrid_policy.defaults import DEFAULT_TEMPERATURE
    from hybrid_policy.families.adahi.calibration_file import DRAFT_KINDS

    p.add_argument("--task", required=task_required,
                   help="task name (see `hybrid-policy tasks`)" + (
                       "" if task_required else "; modes that place tasks take the topology's"))
    p.add_argument("--draft", help="draft checkpoint directory (default: default models)")
    p.add_argument("--draft-kind", choices=DRAFT_KINDS, default=DRAFT_KINDS[0],
                   help="which default draft: trained on the demonstrations, or distilled from "
                   "the target to be accepted more often (made on first use, ~2 min); each "
                   "has its own calibrations (default demonstrations)")
    p.add_argument("--target", help="target checkpoint directory (default: default models)")
    p.add_argument("--models", default="models",
                   help="root of the default models and calibrations (default models/)")
    p.add_argument("--link", default="5g_embb",
                   help=f"link profile: {', '.join(PROFILES)} (default 5g_embb)")
    p.add_argument("--temperature", type=positive_float, default=DEFAULT_TEMPERATURE,
                   help="sampling temperature of both policies' code distributions "
                   f"(default {DEFAULT_TEMPERATURE})")
    p.add_argument("--device-speed", type=positive_float, default=1.0,
                   help="robot CPU speed relative to this machine (default 1)")
    p.add_argument("--server-speed", type=positive_float, default=1.0,
                   help="server speed relative to this machine (default 1)")
    p.add_argument("--draft-ms", type=positive_float,
                   help="pin the draft's compute per step (ms on this machine; the speed "
                   "factors still apply) instead of measuring it: results then do not move "
                   "with the machine's load (default: measured)")
    p.add_argument("--target-ms", type=positive_float,
                   help="pin the target's compute per verification likewise (default: "
                   "measured)")
    p.add_argument("--deadline-ms", type=positive_float, default=100.0,
                   help="give up on a verification after this long and fall back (default 100)")
    p.add_argument("--quality-weight", type=positive_float, default=2.0,
                   help="control periods an uncorrected rejection costs (the wrong move and "
                   "its undoing): w in τ* (default 2)")
    p.add_argument("--calibration", help="calibration JSON to write (calibrate) or read (eval); "
                   "default MODELS/TASK/calibration/LINK.json (distilled draft: "
                   "MODELS/TASK/calibration/distilled/LINK.json)")


def add_clock_args(p: argparse.ArgumentParser) -> None:
    """In process: which clock the world runs on and how a verified step waits."""
    p.add_argument("--eval-clock", dest="eval_clock", choices=("lockstep", "realtime"),
                   default="realtime", help="realtime: the robot ticks at its task's rate "
                   "whatever arrived, holding still where nothing did (core.realtime; every "
                   "family, one robot or a --topology fleet; the default); lockstep: the "
                   "world waits for every answer (debugging, equivalence with ROS lockstep)")
    p.add_argument("--loop", choices=("wait", "period", "draft_first"), default="wait",
                   help="realtime: how a verified step waits (wait: --deadline-ms; period: "
                   "0.7 of the control period; draft_first: the draft acts unless the verdict "
                   "beats the tick; default wait)")
