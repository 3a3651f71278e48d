"""``unified-rl``: demo | train | eval | experiment.

    unified-rl demo [--out runs/demo] [--quick]
    unified-rl train --method grpo [--config cfg.toml] [--model DIR] [--data FILE --format gsm8k] [--out DIR] [--resume]
    unified-rl eval [--model DIR] [--data FILE --format gsm8k] [--k 1,4,16]
    unified-rl experiment figure5-lr | figure5 | process-vs-outcome | figure6 | figure7 | rl-vs-sft | rl-vs-sft-long | grpo-vs-ppo-cost [--quick]
"""

import argparse
import dataclasses
import json
import os
import re
import sys
import typing
from typing import Optional, Sequence

from ..worker_error import RolloutWorkerError
from ..config import PARTS, TrainConfig, all_fields
from .experiments import EXPERIMENTS
from .data_flags import COLUMN_FLAGS, _extract, _model_and_data, _table, infer_format
from .run_flags import _add_run_flags, _out_folder, _threads
from .train_command import cmd_train
from ..names import METHODS


def _boolean(text: str) -> bool:
    """true/false (also yes/no, 1/0); anything else is a usage error, never a silent False."""
    value = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(text.strip().lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value


def _flag_type(annotation):
    """int / float / bool / str for a TrainConfig field (Optional[X] -> X)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if args else annotation
    return _boolean if base is bool else base


_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _join_negative_numbers(argv: Sequence[str]) -> list[str]:
    """``--lr -1e-3`` -> ``--lr=-1e-3``: argparse takes a negative number in exponent form for an option."""
    out: list[str] = []
    for token in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and _NUMBER.match(token):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    """A flag per method setting and per TrainConfig field (but out_dir: --out)."""
    from .recipe import METHOD_SETTINGS

    for name, (kind, _, help) in METHOD_SETTINGS.items():
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=_flag_type(kind), default=None, help=help.replace("%", "%%"))
    hints = {f.name: t for part in PARTS.values() for f, t in zip(dataclasses.fields(part), typing.get_type_hints(part).values())}
    for f in all_fields():
        if f.name != "out_dir":
            kind = hints[f.name]
            choices = typing.get_args(kind) if typing.get_origin(kind) is typing.Literal else ()  # checked by the config: one message
            p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=str if choices else _flag_type(kind), default=None,
                           help=f"{f.metadata['help']}{': ' + ', '.join(choices) if choices else ''} (default {f.default!r})".replace("%", "%%"))



TRUST_REMOTE_CODE = "let --model run the Python code its folder ships (off: only transformers' own architectures load)"


def cmd_demo(args) -> int:
    """``unified-rl demo``: from the shipped SFT start (a flawed teacher's student), GRPO on answers-only
    questions beside SFT on fresh teacher data; prints accuracies on problems the teacher gets wrong
    and right, and GRPO's gain with its interval."""
    from .demo import DemoSettings, run_demo

    _out_folder(args.out)
    _threads(args)
    s = DemoSettings.quick() if args.quick else DemoSettings()
    s.rl_seed = args.seed
    summary = run_demo(args.out, s, progress=not args.no_progress, from_scratch=args.sft_from_scratch)
    if "interrupted" in summary:
        print(f"interrupted during {summary['interrupted']}: metrics, plot and model so far in {args.out} "
              "(the demo starts over when run again; `unified-rl train ... --resume` continues a train run)")
        return 130
    print(f"SFT start: {summary['sft_start']}")
    acc, err = summary["accuracy"], summary["affected_step_error"]
    for sp, name in summary["splits"].items():
        for k in ("affected", "unaffected"):
            g, lo, hi = summary["grpo_minus_control_points"][sp][k]
            print(f"{name}, {k} ({summary['eval_problems'][sp][k]} fresh problems): SFT start {acc['start'][sp][k]:.1f}%, "
                  f"SFT on fresh teacher data {acc['control'][sp][k]:.1f}%, GRPO {acc['grpo'][sp][k]:.1f}%; "
                  f"GRPO - control {g:+.1f} points [95% CI {lo:+.1f}, {hi:+.1f}]")
        print(f"{name}, the teacher's error on affected steps reached: SFT start {err['start'][sp]:.1f}%, "
              f"SFT on fresh teacher data {err['control'][sp]:.1f}%, GRPO {err['grpo'][sp]:.1f}%")
    print(f"{summary['seconds_total']:.0f} s; one run: the intervals are over problems only "
          "(`unified-rl experiment flawed-teacher-full` pairs seeds)")
    print(f"metrics: {args.out}/metrics.jsonl, {args.out}/metrics.csv; plot: {args.out}/plot.png; model (GRPO): {args.out}/model")
    return 0


def cmd_eval(args) -> int:
    """``unified-rl eval``: greedy accuracy, Pass@K and Maj@K of a model folder."""
    from ..data.chat import render_rows
    from ..data.sources import Encoder
    from ..evaluate import greedy_accuracy, judged, pass_and_majority
    from ..hf import make_sampler

    ks = []
    for k in (k.strip() for k in args.k.split(",") if k.strip()):
        if not k.isdigit() or int(k) < 1:
            raise ValueError(f"--k: each K must be an integer >= 1, got {k!r}")
        ks.append(int(k))
    if args.n < 1:
        raise ValueError(f"--n: must be >= 1, got {args.n}")
    if args.data is None and (args.format is not None or args.answer_marker is not None or args.reward is not None):
        raise ValueError("--format, --answer-marker and --reward have no effect without --data (the embedded task is scored exactly)")
    if args.reward == "math" and args.answer_marker is not None:
        raise ValueError("--answer-marker has no effect with --reward math (math-verify reads the whole completion)")
    args.format = args.format or (infer_format(args.data, args) if args.data else "prompt_completion")
    cfg = TrainConfig(eval_size=args.n, max_new_tokens=args.max_new_tokens)
    args.eval_data = None
    model, tok, rows, eval_rows = _model_and_data(args, cfg, need_train=False)
    rows = render_rows((eval_rows or rows)[: args.n], tok)  # conversational rows through the chat template
    enc = Encoder(tok, max_completion_tokens=args.max_new_tokens + 1)
    sampler = make_sampler(args.sampler, tok)
    if args.reward == "math":  # math-verify's equivalence of each completion with the answer column
        result = {**judged(model, enc, rows, ks, sampler=sampler, judge=_math_judge, temperature=args.temperature,
                           max_new_tokens=args.max_new_tokens), "n": len(rows)}
    else:
        how = dict(sampler=sampler, extract=_extract(args), max_new_tokens=args.max_new_tokens)
        result = {"greedy_accuracy": greedy_accuracy(model, enc, rows, **how), "n": len(rows)}
        if ks:
            result["at_k"] = pass_and_majority(model, enc, rows, ks, temperature=args.temperature, **how)
    print(json.dumps(result, indent=2))
    return 0




def _math_judge(completions, rows):
    """math-verify's verdict on each completion against its row's ``answer`` (None: unverifiable)."""
    from ..rewards.math import verify_answer

    return verify_answer([r.get("prompt") for r in rows], list(completions), answer=[r["answer"] for r in rows])


def cmd_experiment(args) -> int:
    """``unified-rl experiment NAME``: run a named experiment into a results folder."""
    from .experiments import run_experiment

    out = args.out or os.path.join("runs", "experiments", args.name)
    _out_folder(out)
    _threads(args)
    print(run_experiment(args.name, out, quick=args.quick, progress=not args.no_progress))
    print(f"results: {out}/results.md, plots and metrics.jsonl in {out}")
    return 0


def _parser() -> argparse.ArgumentParser:
    """The command line: demo, train, eval and experiment, each with its flags."""
    parser = argparse.ArgumentParser(prog="unified-rl", description="SFT, RFT, Online RFT, DPO, PPO and GRPO through one gradient engine.")
    sub = parser.add_subparsers(dest="command", required=True)
    _demo_and_train_parsers(sub)
    _eval_and_experiment_parsers(sub)
    return parser


def _demo_and_train_parsers(sub) -> None:
    p = sub.add_parser("demo", help="from a converged SFT start, GRPO on longer answers-only problems vs more SFT (embedded tiny model and task)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--quick", action="store_true", help="a seconds-long version (no accuracy claim)")
    p.add_argument("--sft-from-scratch", action="store_true",
                   help="train the SFT start here (1,000 steps, several minutes) instead of loading the shipped one (results then vary with the CPU)")
    p.add_argument("--seed", type=int, default=None, help="the RL phase's seed (GRPO's sampling, both arms' data order); the task and the SFT start stay")
    _add_run_flags(p)
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("train", help="train with one method")
    p.add_argument("--method", help=f"one of {', '.join(METHODS)} (or a name your script registered); may come from --config")
    p.add_argument("--config", help="TOML, YAML or JSON file of the method's settings, TrainConfig fields and train options (a recipe: recipes/); flags override it")
    p.add_argument("--model", help="a local transformers model folder (safetensors); default: the tiny embedded model")
    p.add_argument("--trust-remote-code", action="store_true", help=TRUST_REMOTE_CODE)
    p.add_argument("--pad-token", help="an existing token to pad with, for a tokenizer that has none (e.g. its eos token)")
    p.add_argument("--data", help="a local JSONL, JSON, CSV or Parquet file, or a folder of them; default: the embedded arithmetic task")
    p.add_argument("--split", help="a data folder's split (train, validation, test: named by its files); default train")
    for column in COLUMN_FLAGS:
        p.add_argument(f"--{column}-column", help=f"the data's column that holds the {column} (default {column!r})")
    p.add_argument("--eval-data", help="held-out JSONL file (same format)")
    p.add_argument("--format", help="prompt_completion | preference | gsm8k | prompts (default: read from the first row's columns; "
                                    "docs/training.md#data-formats)")
    p.add_argument("--answer-marker", help="final answers follow the last occurrence of this text (default '#'; '####' for gsm8k)")
    p.add_argument("--reward", choices=("answer", "math"), help="answer: the text after --answer-marker equals the answer column "
                   "(default); math: math-verify's equivalence (boxed, fractions, LaTeX; needs unified_rl[math])")
    p.add_argument("--out", help="output folder (default runs/train)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--merge", action="store_true", help="with --lora-r: also save the adapters merged into the model (--out/model)")
    p.add_argument("--teacher", help="a local model folder (safetensors) whose distribution distillation follows (--method gkd, distill); "
                                     "it must share the student's tokenizer")
    p.add_argument("--env", help="module:Factory -- train on multi-turn episodes with the environment this makes (one per episode; "
                                 "docs/environments.md); its rewards replace --reward")
    _add_run_flags(p)
    _add_config_flags(p)
    p.set_defaults(fn=cmd_train)


def _eval_and_experiment_parsers(sub) -> None:
    p = sub.add_parser("eval", help="greedy accuracy, Pass@K and Maj@K")
    p.add_argument("--model")
    p.add_argument("--trust-remote-code", action="store_true", help=TRUST_REMOTE_CODE)
    p.add_argument("--pad-token", help="an existing token to pad with, for a tokenizer that has none (e.g. its eos token)")
    p.add_argument("--data")
    p.add_argument("--format", help="prompt_completion | preference | gsm8k | prompts (default: read from the first row's columns)")
    p.add_argument("--answer-marker", help="final answers follow the last occurrence of this text (default '#'; '####' for gsm8k)")
    p.add_argument("--sampler", default="static", help="static | hf | vllm")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--k", default="1,4,16", help="comma-separated K for Pass@K / Maj@K ('' for none)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--reward", choices=("answer", "math"), help="answer: the text after --answer-marker equals the answer column "
                   "(default); math: math-verify's equivalence (boxed, fractions, LaTeX; needs unified_rl[math]): greedy accuracy "
                   "and Pass@K, with the completions it could not verify counted")
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("experiment", help="reproduce a paper finding in miniature (writes a results folder)")
    p.add_argument("name", help=" | ".join(EXPERIMENTS))
    p.add_argument("--out")
    p.add_argument("--quick", action="store_true", help="a small size for CI (no claim)")
    _add_run_flags(p)
    p.set_defaults(fn=cmd_experiment)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``unified-rl`` command; returns the exit status (2 for a usage or input error)."""
    parser = _parser()
    _table.cache_clear()  # a table is read once per command, never reused by the next one
    argv = _join_negative_numbers(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = list(argv)
    status = _run(args)
    if "torch.distributed" in sys.modules:  # (help and usage errors never load torch)
        from ..hf.distributed import leave_process_group

        leave_process_group()  # under torchrun: every rank that returns ends its part of the job cleanly
    return status


def _run(args) -> int:
    """The subcommand; a user's mistake is one line and status 2, a second Ctrl-C status 130."""
    try:
        return args.fn(args)
    except (ValueError, TypeError, OSError) as e:  # a user's mistake: one line, no traceback
        print(f"unified-rl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:  # the numbers broke (NaN / inf): say where, without a traceback
        print(f"unified-rl {args.command}: stopped: {e} (a smaller --lr or --grad-clip may help; the last checkpoint, "
              "if any, is in --out)", file=sys.stderr)
        return 1
    except RolloutWorkerError as e:  # the sampling process died or hung: one line (the learner's checkpoint is saved)
        print(f"unified-rl {args.command}: stopped: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once, without a traceback
        print(f"unified-rl {args.command}: stopped (a second Ctrl-C); the last checkpoint, if any, is in --out", file=sys.stderr)
        return 130


def console() -> None:
    """The ``unified-rl`` executable: :func:`main`, then the exit. Under torchrun a rank ends with
    ``os._exit`` once its outputs are flushed and the process group is left: objects that still
    hold gloo's process group (FSDP2's device mesh) would otherwise be destroyed during interpreter
    finalisation, where a gloo worker thread taking the GIL aborts the rank (SIGABRT, "terminate
    called without an active exception") after its work is done, and torchrun then fails the job."""
    status = main()
    if "torch.distributed" in sys.modules:
        from ..hf.distributed import exit_rank

        exit_rank(status)
    sys.exit(status)


if __name__ == "__main__":
    console()
