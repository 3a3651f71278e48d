"""``unified-rl train``: a recipe file and flags -> the method and the run's configuration (checked
before torch is imported) -> the Trainer -> the outputs (metrics, plot, model or adapters)."""

import dataclasses
import os
from typing import Optional

from .data_flags import COLUMN_FLAGS, _extract, _model_and_data, _reward, infer_format
from .recipe import build_method, split
from .run_flags import _out_folder, _threads

def _check_combination(args) -> None:
    """Flags that would have no effect in this combination are errors, not silently ignored."""
    if args.data is None:
        for flag, value in (("--eval-data", args.eval_data), ("--answer-marker", args.answer_marker), ("--format", args.format),
                            ("--split", args.split), ("--reward", args.reward),
                            *((f"--{c}-column", getattr(args, f"{c}_column")) for c in COLUMN_FLAGS)):
            if value is not None:
                raise ValueError(f"{flag} has no effect without --data (the embedded task is used)")
    if args.env and args.reward:
        raise ValueError("--reward has no effect with --env (the environment's rewards train the episodes)")
    if args.trust_remote_code and not args.model:
        raise ValueError("--trust-remote-code has no effect without --model")
    if getattr(args, "merge", False) and args.lora_r is None:
        raise ValueError("--merge merges LoRA adapters into the model; it has no effect without --lora-r")
    if args.pad_token is not None and not args.model:
        raise ValueError("--pad-token has no effect without --model (the embedded tokenizer has a pad token)")
    args.format = args.format or (infer_format(args.data, args) if args.data else "prompt_completion")


# Options of ``train`` that a recipe file may set besides the method's settings and TrainConfig fields (flags win).
RECIPE_OPTIONS = ("model", "data", "eval_data", "split", "format", "answer_marker", "reward", "merge", "pad_token", "out", "teacher", "env",
                  *(f"{c}_column" for c in COLUMN_FLAGS))


def _recipe(args) -> dict:
    """The config file's method settings and TrainConfig fields; its ``train`` options (model, data,
    reward ...) fill the flags the command line left unset. An unknown key is an error naming the file."""
    from ..config import METHOD_KEYS, all_fields, read_table

    if not args.config:
        return {}
    table, fields = read_table(args.config), set(METHOD_KEYS) | {f.name for f in all_fields()}
    unknown = sorted(k for k in table if k not in fields and k not in RECIPE_OPTIONS)
    if unknown:
        raise ValueError(f"config file {args.config!r}: unknown field(s) {unknown}; it takes the method's settings and TrainConfig "
                         f"fields ({', '.join(sorted(fields))}) and the train options {', '.join(RECIPE_OPTIONS)}")
    for key, value in table.items():
        if key in fields:
            continue
        if not isinstance(value, bool if key == "merge" else str):
            raise ValueError(f"config file {args.config!r}: {key} = {value!r} must be {'true/false' if key == 'merge' else 'text (a path or a name)'}, "
                             f"not {type(value).__name__}")
        if getattr(args, key) in (None, False):  # a flag on the command line wins
            setattr(args, key, value)
    return {k: v for k, v in table.items() if k in fields}


def _configure(args):
    """The method's settings and the run's configuration from the recipe file and the flags (flags
    win), every field checked before torch and transformers are imported: a mistake answers at once."""
    from ..config import METHOD_KEYS, all_fields

    table = _recipe(args)
    names = [*METHOD_KEYS, *(f.name for f in all_fields())]
    table.update({k: getattr(args, k) for k in names if getattr(args, k, None) is not None})
    table["out_dir"] = args.out = args.out or "runs/train"
    try:
        return split(table)
    except ValueError as e:
        raise ValueError(f"config file {args.config!r}: {e}" if args.config and "--method" not in str(e) else str(e)) from None


def _teacher(path: str, student, tok, trust_remote_code: bool):
    """The teacher model folder, loaded like a model (safetensors only) and checked against the student."""
    from ..hf import check_teacher, load_model, load_tokenizer

    teacher = load_model(path, trust_remote_code=trust_remote_code)
    check_teacher(student, tok, teacher, load_tokenizer(path, trust_remote_code=trust_remote_code, pad_token=tok.pad_token))
    return teacher.to(next(student.parameters()).dtype)


def _trainer(args, settings: dict, cfg):
    """The method built from its settings, the data and model loaded, the Trainer (resumed with ``--resume``)."""
    from .. import checkpoint, threads
    from ..coefficients import reads_of
    from ..data.recipes import Pairs, Preferences, Supervised, Unpaired, UnpairedPreferences
    from ..hf import sharded
    from ..loop import Trainer

    first = os.environ.get("RANK", "0") == "0"  # under torchrun rank 0 alone looks: the others may start after it wrote
    if first and not args.resume and (checkpoint.latest(args.out) or os.path.exists(os.path.join(args.out, "metrics.jsonl"))):
        raise ValueError(f"--out {args.out!r} holds a run already; pass --resume to continue it, or choose another --out")
    method = build_method(settings, cfg)
    teacher_reads = "teacher" in reads_of(method.coefficient.vocabulary) or "teacher_logprobs" in method.coefficient.needs
    if args.teacher and not teacher_reads:
        raise ValueError(f"--teacher: --method {method.name} follows no teacher (distillation does: gkd, distill, opd)")
    if args.teacher and not os.path.isdir(args.teacher):
        raise FileNotFoundError(f"--teacher {args.teacher!r} is not a local model folder (nothing is downloaded)")
    preference = args.format == "preference"
    if preference and not isinstance(method.data_source, (Pairs, Unpaired)):
        raise ValueError(f"--format preference does not fit --method {method.name}: chosen/rejected pairs train a preference method "
                         "(dpo, ipo, hinge, simpo, orpo, kto)")
    if isinstance(method.data_source, Supervised) and args.format == "prompts":
        raise ValueError(f"--method {method.name} trains on completions: --format prompts has none (use prompt_completion or gsm8k)")
    model, tok, rows, eval_rows = _model_and_data(args, cfg, answers=not isinstance(method.data_source, Supervised) and not preference)
    if preference:  # the file's own pairs instead of sampled ones
        method = dataclasses.replace(method, data_source=UnpairedPreferences() if isinstance(method.data_source, Unpaired) else Preferences())
    teacher = _teacher(args.teacher, model, tok, args.trust_remote_code) if args.teacher else None
    if args.env:
        from ..environments import with_environment
        from .env_flag import load_factory

        method = with_environment(method, load_factory(args.env), cfg.sampling.episode_limits())
    _threads(args)
    trainer = Trainer(model, tok, method, rows, cfg, eval_rows=eval_rows, reward=None if preference or args.env else _reward(args, method, tok),
                      extract=_extract(args), adapt_threads=threads.per_step(), teacher=teacher)
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
    return trainer, tok, eval_rows


def cmd_train(args) -> int:
    """``unified-rl train``: one method through the loop, from a config file (TOML, YAML or JSON: the
    method's settings, TrainConfig fields and the command's options) and flags."""
    settings, cfg = _configure(args)
    _out_folder(args.out)
    _check_combination(args)
    trainer, tok, eval_rows = _trainer(args, settings, cfg)
    trainer.run(progress=not args.no_progress)
    acc = None
    if eval_rows and not trainer.interrupted:
        with trainer.full_weights():  # FSDP2: every rank gathers the weights (a collective); rank 0 evaluates
            acc = trainer.evaluate() if trainer.rank == 0 else None
    from ..hf import full_state

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
        plot_training(trainer.history, os.path.join(args.out, "plot.png"), title=f"{trainer.method.name} (interrupted)")
        saved = _save_policy(trainer, tok, args, weights, merge=args.merge)
        total = cfg.optim.steps * cfg.optim.iterations
        print(f"interrupted after step {trainer.step_count} of {total}: checkpoint {os.path.join(args.out, 'checkpoint')}, "
              f"metrics and plot in {args.out}; the policy so far in {saved}")
        print(f"continue with: unified-rl train {' '.join(_resume_argv(args))}")
        return 130
    if acc is not None:
        final = {"phase": trainer.phase, "step": trainer.step_count, "eval/accuracy": acc}
        trainer.history.append(final)
        trainer.logger.log(final, trainer.step_count)
        print(f"held-out greedy accuracy: {acc:.1%}")
    write_metrics(trainer.history, args.out)
    plot_training(trainer.history, os.path.join(args.out, "plot.png"), title=trainer.method.name)
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


