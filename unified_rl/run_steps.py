"""The loop's outer part, ``Trainer.run``: steps until the run is done, with a progress bar, a
checkpoint at the end, Ctrl-C that finishes the step and saves, and a rollout worker's failure that
saves the learner's state before it stops the run."""

import os
from typing import Any

from tqdm import tqdm

from .asynchronous import RolloutWorkerError
from .interrupt import StopAfterStep


def run_steps(trainer: Any, progress: bool = True) -> list[dict]:
    """See :meth:`unified_rl.loop.Trainer.run`."""
    total, r = trainer.cfg.optim.steps * trainer.cfg.optim.iterations, trainer.cfg.run
    trainer.interrupted = False
    bar = tqdm(total=total, initial=trainer.step_count, desc=trainer.phase, disable=not progress or trainer.rank > 0, dynamic_ncols=True)
    try:
        with StopAfterStep(f"{trainer.phase} step {trainer.step_count + 1}") as stop:
            while trainer.step_count < total and not trainer.interrupted:
                stop.what = f"{trainer.phase} step {trainer.step_count + 1}"
                m = trainer.train_step()
                bar.update(1)
                bar.set_postfix({k: f"{m[k]:.3g}" for k in ("reward/mean", "loss", "kl/k3", "eval/accuracy") if k in m})
                trainer.interrupted = stop.requested
            bar.close()
            if r.out_dir and (trainer.interrupted or (r.checkpoint_every and trainer.step_count % r.checkpoint_every)):  # always resumable
                trainer.save(os.path.join(r.out_dir, "checkpoint"))
    except RolloutWorkerError as e:  # the learner's state is whole: keep it, then stop
        if r.out_dir:
            trainer.save(os.path.join(r.out_dir, "checkpoint"))
        where = f"the checkpoint after step {trainer.step_count} is in {r.out_dir}" if r.out_dir else "no out_dir, so no checkpoint"
        raise RolloutWorkerError(f"{e}; {where}") from None
    finally:
        getattr(trainer.producer, "close", lambda: None)()
        trainer.logger.close()
    return trainer.history
