"""``unified-rl``: demo | train | eval | experiment.

    unified-rl demo [--out runs/demo] [--quick]
    unified-rl train --method grpo [--config cfg.toml] [--model DIR] [--data FILE --format gsm8k] [--out DIR] [--resume]
    unified-rl eval [--model DIR] [--data FILE --format gsm8k] [--k 1,4,16]
    unified-rl experiment figure5-lr | figure5 | process-vs-outcome | figure6 | figure7 | rl-vs-sft | rl-vs-sft-long | grpo-vs-ppo-cost [--quick]
"""

import argparse
import dataclasses
import functools
import json
import os
import re
import sys
import typing
from typing import Optional, Sequence

from ..config import TrainConfig
from ..names import METHOD_NAMES


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


def _out_folder(out: Optional[str]) -> None:
    """``--out`` must be a folder (or not exist yet); checked before any work."""
    if out and os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out!r} is a file, not a folder")


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(TrainConfig):
        if f.name not in ("method", "out_dir"):
            p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=_flag_type(f.type), default=None,
                           help=f"{f.metadata['help']} (default {f.default!r})".replace("%", "%%"))


COLUMN_FLAGS = ("prompt", "completion", "answer", "chosen", "rejected")


def _rename(args) -> dict[str, str]:
    """``--prompt-column text`` ... : the file's column names -> this library's."""
    out = {getattr(args, f"{c}_column"): c for c in COLUMN_FLAGS if getattr(args, f"{c}_column", None)}
    return {k: v for k, v in out.items() if k != v}


@functools.lru_cache(maxsize=4)
def _table(path: str, split: Optional[str], rename: tuple[tuple[str, str], ...]):
    """A data file or folder read through ``datasets`` once per command (the format is inferred from
    it, then its rows are checked)."""
    from ..data.files import load_table

    return load_table(path, split=split, rename=dict(rename))


def _via_datasets(path: str, args) -> bool:
    """JSON Lines files without renames or a split keep the line-exact reader; the rest go through ``datasets``."""
    return os.path.isdir(path) or not path.endswith(".jsonl") or bool(_rename(args)) or getattr(args, "split", None) is not None


def _rows(path: Optional[str], fmt: str, args, max_prompt_chars: Optional[int] = None, answers: bool = False):
    """Rows of a data file or folder, checked when loaded; ``answers``: every row needs a non-empty
    ``answer`` (rewards and accuracy read it; a missing or null answer is never scored as 0)."""
    from ..data.rows import SCHEMAS, gsm8k_rows, read_jsonl, validate_row

    if fmt not in SCHEMAS:
        raise ValueError(f"--format must be one of {sorted(SCHEMAS)}, got {fmt!r}")
    columns = SCHEMAS[fmt] + (("answer",) if answers and "answer" not in SCHEMAS[fmt] else ())
    nonempty = ("answer",) if answers else ()
    if not _via_datasets(path, args):
        if fmt == "gsm8k":
            return gsm8k_rows(path)
        return read_jsonl(path, columns, max_prompt_chars=max_prompt_chars, nonempty=nonempty)
    if fmt == "gsm8k":
        raise ValueError("--format gsm8k reads GSM8K's own JSONL files; for other files map the columns (--prompt-column, --answer-column)")
    from ..data.chat import normalize

    rows = [normalize(r) for r in _table(path, getattr(args, "split", None), tuple(sorted(_rename(args).items())))]
    for row in rows:
        validate_row(row, columns, where=row.origin, max_prompt_chars=max_prompt_chars, nonempty=nonempty)
    return rows


def infer_format(path: str, args=None) -> str:
    """The ``--format`` a data file's first row shows by its columns (after ``--*-column`` renames):
    chosen + rejected -> preference; question (no prompt) -> gsm8k; completion -> prompt_completion;
    prompt -> prompts. A file that cannot be read this way gets prompt_completion, whose reader then
    names the problem."""
    try:
        if args is not None and _via_datasets(path, args):
            keys = set(_table(path, getattr(args, "split", None), tuple(sorted(_rename(args).items())))[0])
        else:
            with open(path, encoding="utf-8") as f:
                first = next((line for line in f if line.strip()), "")
            keys = set(json.loads(first)) if first else set()
    except (OSError, UnicodeDecodeError, ValueError, TypeError):
        return "prompt_completion"
    if {"chosen", "rejected"} <= keys:
        return "preference"
    if "question" in keys and "prompt" not in keys:
        return "gsm8k"
    if "completion" in keys or "messages" in keys or "prompt" not in keys:
        return "prompt_completion"
    return "prompts"


def _model_and_data(args, cfg: TrainConfig, need_train: bool = True, answers: bool = True):
    """Validate data first (before any model is loaded), then load or build the model. ``answers``:
    the training rows are scored, so each needs an ``answer`` (held-out rows always do)."""
    from ..hf import load_model, load_tokenizer, tiny_llama
    from .tasks import ArithmeticTask, char_tokenizer

    if args.model and not os.path.isdir(args.model):  # cheap, so before building or reading any data
        raise FileNotFoundError(f"model path {args.model!r} is not a local folder (nothing is downloaded)")
    if args.data:
        rows = _rows(args.data, args.format, args, answers=answers)
        eval_rows = _rows(args.eval_data, args.format, args, answers=True) if getattr(args, "eval_data", None) else None
    else:
        task = ArithmeticTask(seed=cfg.seed)
        eval_rows = task.eval_rows(cfg.eval_size)
        rows = task.train_rows(20_000, eval_size=cfg.eval_size) if need_train else eval_rows
    if args.model:
        model = load_model(args.model, trust_remote_code=args.trust_remote_code)  # first: it refuses pickled weights
        tok = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code, pad_token=args.pad_token)
    else:
        tok = char_tokenizer()
        model = tiny_llama(len(tok), seed=cfg.seed)
    return model, tok, rows, eval_rows


def _extract(args):
    """How answers are read: after the last ``--answer-marker`` (GSM8K: '####'; default '#')."""
    from ..rewards import AfterMarker

    return AfterMarker(args.answer_marker or ("####" if args.format == "gsm8k" else "#"))


def _reward(args, method, tok):
    """The run's reward: none for supervised data; the arithmetic task's exact rewards on the
    embedded task; else the answer column compared with the extracted answer."""
    from ..data.recipes import Supervised
    from ..rewards import OutcomeReward
    from .tasks import task_reward

    if isinstance(method.data_source, Supervised):
        return None
    if getattr(args, "reward", None) == "math":
        from ..rewards import math_reward

        return math_reward("answer")
    return task_reward(method, tok) if not args.data else OutcomeReward(_extract(args))


TRUST_REMOTE_CODE = "let --model run the Python code its folder ships (off: only transformers' own architectures load)"


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    """The options of every command that trains: the progress bar and the thread policy."""
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--adapt-threads", action="store_true",
                   help="refit torch's CPU threads to the free cores before every step (faster on a shared machine; "
                        "the numbers then depend on the load, so two runs are no longer bitwise equal)")


def _threads(args) -> None:
    """A training command's CPU threads: capped once at the cores this process may use (the same
    count for the whole run, so its numbers do not depend on the machine's load); with
    ``--adapt-threads``, refitted to the free cores before every step (``threads.per_step``)."""
    from .. import threads

    if args.adapt_threads:
        os.environ["UNIFIED_RL_ADAPT_THREADS"] = "1"
    threads.fit_threads()


def cmd_demo(args) -> int:
    """``unified-rl demo``: from the shipped SFT start, GRPO on longer answers-only questions beside the
    SFT-continuation control; prints their accuracies and GRPO's gain with its interval."""
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
    acc = summary["accuracy"]
    for sp in ("eval_in", "eval_hard"):
        g, lo, hi = summary["grpo_minus_control_points"][sp]
        print(f"held-out greedy accuracy, {summary['splits'][sp]} ({summary['eval_problems'][sp]} fresh problems): SFT start "
              f"{acc['start'][sp]:.1%}, SFT continuation {acc['control'][sp]:.1%}, GRPO {acc['grpo'][sp]:.1%}; "
              f"GRPO - control {g:+.1f} points [95% CI {lo:+.1f}, {hi:+.1f}]")
    print(f"{summary['seconds_total']:.0f} s; one run: the interval is over problems only (`unified-rl experiment figure5` pairs seeds)")
    print(f"metrics: {args.out}/metrics.jsonl, {args.out}/metrics.csv; plot: {args.out}/plot.png; model (GRPO): {args.out}/model")
    return 0


def _check_combination(args) -> None:
    """Flags that would have no effect in this combination are errors, not silently ignored."""
    if args.data is None:
        for flag, value in (("--eval-data", args.eval_data), ("--answer-marker", args.answer_marker), ("--format", args.format),
                            ("--split", args.split), ("--reward", args.reward),
                            *((f"--{c}-column", getattr(args, f"{c}_column")) for c in COLUMN_FLAGS)):
            if value is not None:
                raise ValueError(f"{flag} has no effect without --data (the embedded task is used)")
    if args.trust_remote_code and not args.model:
        raise ValueError("--trust-remote-code has no effect without --model")
    if getattr(args, "merge", False) and args.lora_r is None:
        raise ValueError("--merge merges LoRA adapters into the model; it has no effect without --lora-r")
    if args.pad_token is not None and not args.model:
        raise ValueError("--pad-token has no effect without --model (the embedded tokenizer has a pad token)")
    args.format = args.format or (infer_format(args.data, args) if args.data else "prompt_completion")


# Options of ``train`` that a recipe file may set besides TrainConfig fields (flags win).
RECIPE_OPTIONS = ("model", "data", "eval_data", "split", "format", "answer_marker", "reward", "merge", "pad_token", "out",
                  *(f"{c}_column" for c in COLUMN_FLAGS))


def _recipe(args) -> dict:
    """The config file's TrainConfig fields; its ``train`` options (model, data, reward ...) fill
    the flags the command line left unset. An unknown key is an error naming the file."""
    from ..config import read_table

    if not args.config:
        return {}
    table, fields = read_table(args.config), {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(k for k in table if k not in fields and k not in RECIPE_OPTIONS)
    if unknown:
        raise ValueError(f"config file {args.config!r}: unknown field(s) {unknown}; it takes TrainConfig fields "
                         f"({', '.join(sorted(fields))}) and the train options {', '.join(RECIPE_OPTIONS)}")
    for key, value in table.items():
        if key in fields:
            continue
        if not isinstance(value, bool if key == "merge" else str):
            raise ValueError(f"config file {args.config!r}: {key} = {value!r} must be {'true/false' if key == 'merge' else 'text (a path or a name)'}, "
                             f"not {type(value).__name__}")
        if getattr(args, key) in (None, False):  # a flag on the command line wins
            setattr(args, key, value)
    return {k: v for k, v in table.items() if k in fields}


def cmd_train(args) -> int:
    """``unified-rl train``: one method through the loop, from a config file (TOML, YAML or JSON:
    TrainConfig fields and the command's options) and flags."""
    file_fields = _recipe(args)
    if not (args.method or file_fields.get("method")):  # before any heavy import: a usage error answers at once
        raise ValueError("--method is required (or a method key in the --config file)")
    args.out = args.out or "runs/train"
    _out_folder(args.out)
    _check_combination(args)
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if getattr(args, f.name, None) is not None}
    overrides["method"] = args.method or file_fields.get("method")
    overrides["out_dir"] = args.out
    try:  # every field checked before torch and transformers are imported: a mistake answers at once
        cfg = TrainConfig.from_dict({**file_fields, **overrides})
    except ValueError as e:
        raise ValueError(f"config file {args.config!r}: {e}" if args.config else str(e)) from None
    from .. import checkpoint, methods, threads
    from ..data.recipes import Pairs, Preferences, Supervised
    from ..hf import full_state, sharded
    from ..loop import Trainer
    first = os.environ.get("RANK", "0") == "0"  # under torchrun rank 0 alone looks: the others may start after it wrote
    if first and not args.resume and (checkpoint.latest(args.out) or os.path.exists(os.path.join(args.out, "metrics.jsonl"))):
        raise ValueError(f"--out {args.out!r} holds a run already; pass --resume to continue it, or choose another --out")
    method = methods.from_config(cfg)
    preference = args.format == "preference"
    if preference and not isinstance(method.data_source, Pairs):
        raise ValueError(f"--format preference does not fit --method {method.name}: chosen/rejected pairs train a preference method (dpo)")
    if isinstance(method.data_source, Supervised) and args.format == "prompts":
        raise ValueError(f"--method {method.name} trains on completions: --format prompts has none (use prompt_completion or gsm8k)")
    answers = not isinstance(method.data_source, Supervised) and not preference
    model, tok, rows, eval_rows = _model_and_data(args, cfg, answers=answers)
    if preference:  # the file's own pairs instead of sampled ones
        method = dataclasses.replace(method, data_source=Preferences())
    reward = None if preference else _reward(args, method, tok)
    _threads(args)
    trainer = Trainer(model, tok, method, rows, cfg, eval_rows=eval_rows, reward=reward, extract=_extract(args),
                      adapt_threads=threads.per_step())
    if args.merge and sharded(trainer.train_model):
        raise ValueError("--merge: the adapters of an FSDP2-sharded policy are merged in one process; train with "
                         "--parallel ddp, or load --out/adapter with peft and merge_and_unload() after the run")
    if args.resume:
        found = checkpoint.latest(args.out)
        if found is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {args.out!r}")
        trainer.resume(found)
        if trainer.rank == 0:
            print(f"resumed from {found} at step {trainer.step_count}")
    trainer.run(progress=not args.no_progress)
    acc = None
    if eval_rows and not trainer.interrupted:
        with trainer.full_weights():  # FSDP2: every rank gathers the weights (a collective); rank 0 evaluates
            acc = trainer.evaluate() if trainer.rank == 0 else None
    weights = full_state(trainer.policy)  # whole tensors on rank 0 (under FSDP2 every rank takes part)
    if trainer.rank > 0:  # under torchrun, rank 0 writes the outputs
        return 130 if trainer.interrupted else 0
    return _finish(trainer, tok, args, cfg, acc, weights)


def _finish(trainer, tok, args, cfg, acc: Optional[float], weights: dict) -> int:
    """After training, on rank 0: the held-out accuracy, metrics, plot and model; the exit status."""
    from .demo import write_metrics
    from .plots import plot_training

    if trainer.interrupted:  # Ctrl-C: the step finished and a checkpoint was saved; keep the outputs too
        write_metrics(trainer.history, args.out)
        plot_training(trainer.history, os.path.join(args.out, "plot.png"), title=f"{cfg.method} (interrupted)")
        saved = _save_policy(trainer, tok, args, weights, merge=args.merge)
        total = cfg.steps * cfg.iterations
        print(f"interrupted after step {trainer.step_count} of {total}: checkpoint {os.path.join(args.out, 'checkpoint')}, "
              f"metrics and plot in {args.out}; the policy so far in {saved}")
        print(f"continue with: unified-rl train {' '.join(_resume_argv(args))}")
        return 130
    if acc is not None:
        final = {"phase": cfg.method, "step": trainer.step_count, "eval/accuracy": acc}
        trainer.history.append(final)
        trainer.log_metrics(final)
        print(f"held-out greedy accuracy: {acc:.1%}")
    write_metrics(trainer.history, args.out)
    plot_training(trainer.history, os.path.join(args.out, "plot.png"), title=cfg.method)
    print(f"saved {_save_policy(trainer, tok, args, weights, merge=args.merge)}")
    return 0


def _save_policy(trainer, tok, args, weights: dict, merge: bool) -> str:
    """The trained policy as safetensors: ``--out/model`` (a transformers folder), or for LoRA
    ``--out/adapter`` (PEFT's adapter folder) and, with ``--merge``, the merged ``--out/model``.
    ``weights``: its whole state dict (:func:`~unified_rl.hf.full_state`)."""
    from ..hf import is_peft, merged, save_model

    if not is_peft(trainer.policy):
        return save_model(trainer.policy, tok, os.path.join(args.out, "model"), state_dict=weights)
    where = save_model(trainer.policy, tok, os.path.join(args.out, "adapter"), state_dict=weights)
    if merge:
        where += " and " + save_model(merged(trainer.policy), tok, os.path.join(args.out, "model"))
    return where


def _resume_argv(args) -> list[str]:
    """The command line that continues this run: the user's own flags, plus --resume."""
    argv = [a for a in (args.argv or []) if a != "--resume"][1:]  # drop the subcommand
    return [a if " " not in a else repr(a) for a in argv] + ["--resume"]


def cmd_eval(args) -> int:
    """``unified-rl eval``: greedy accuracy, Pass@K and Maj@K of a model folder."""
    from ..data.chat import render_rows
    from ..data.sources import Encoder
    from ..evaluate import greedy_accuracy, pass_and_majority
    from ..hf import make_sampler

    ks = []
    for k in (k.strip() for k in args.k.split(",") if k.strip()):
        if not k.isdigit() or int(k) < 1:
            raise ValueError(f"--k: each K must be an integer >= 1, got {k!r}")
        ks.append(int(k))
    if args.n < 1:
        raise ValueError(f"--n: must be >= 1, got {args.n}")
    if args.data is None and (args.format is not None or args.answer_marker is not None):
        raise ValueError("--format and --answer-marker have no effect without --data")
    args.format = args.format or (infer_format(args.data, args) if args.data else "prompt_completion")
    cfg = TrainConfig(eval_size=args.n, max_new_tokens=args.max_new_tokens).check()
    args.eval_data = None
    model, tok, rows, eval_rows = _model_and_data(args, cfg, need_train=False)
    rows = render_rows((eval_rows or rows)[: args.n], tok)  # conversational rows through the chat template
    enc = Encoder(tok, max_completion_tokens=args.max_new_tokens + 1)
    how = dict(sampler=make_sampler(args.sampler, tok), extract=_extract(args), max_new_tokens=args.max_new_tokens)
    result = {"greedy_accuracy": greedy_accuracy(model, enc, rows, **how), "n": len(rows)}
    if ks:
        result["at_k"] = pass_and_majority(model, enc, rows, ks, temperature=args.temperature, **how)
    print(json.dumps(result, indent=2))
    return 0


EXPERIMENT_NAMES = ("figure5-lr", "figure5", "process-vs-outcome", "figure6", "figure7", "rl-vs-sft", "rl-vs-sft-long", "grpo-vs-ppo-cost")


def cmd_experiment(args) -> int:
    """``unified-rl experiment NAME``: run a named experiment into a results folder."""
    from .experiments import run_experiment

    out = args.out or os.path.join("runs", "experiments", args.name)
    _out_folder(out)
    _threads(args)
    print(run_experiment(args.name, out, quick=args.quick, progress=not args.no_progress))
    print(f"results: {out}/results.md, plots and metrics.jsonl in {out}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``unified-rl`` command; returns the exit status (2 for a usage or input error)."""
    parser = argparse.ArgumentParser(prog="unified-rl", description="SFT, RFT, Online RFT, DPO, PPO and GRPO through one gradient engine.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="from a converged SFT start, GRPO on longer answers-only problems vs more SFT (embedded tiny model and task)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--quick", action="store_true", help="a seconds-long version (no accuracy claim)")
    p.add_argument("--sft-from-scratch", action="store_true",
                   help="train the SFT start here (1,000 steps, several minutes) instead of loading the shipped one (results then vary with the CPU)")
    p.add_argument("--seed", type=int, default=None, help="the RL phase's seed (GRPO's sampling, both arms' data order); the task and the SFT start stay")
    _add_run_flags(p)
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("train", help="train with one method")
    p.add_argument("--method", help=f"one of {', '.join(METHOD_NAMES)} (or a name your script registered); may come from --config")
    p.add_argument("--config", help="TOML, YAML or JSON file of TrainConfig fields and train options (a recipe: recipes/); flags override it")
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
    _add_run_flags(p)
    _add_config_flags(p)
    p.set_defaults(fn=cmd_train)

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
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("experiment", help="reproduce a paper finding in miniature (writes a results folder)")
    p.add_argument("name", help=" | ".join(EXPERIMENT_NAMES))
    p.add_argument("--out")
    p.add_argument("--quick", action="store_true", help="a small size for CI (no claim)")
    _add_run_flags(p)
    p.set_defaults(fn=cmd_experiment)

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
