"""The ``wandb`` logger (extra ``cgan-kit[wandb]``): a Weights & Biases run per cgan-kit run, offline by
default, written under the run folder (``<run>/wandb/``) to upload later with ``wandb sync``;
``mode = "online"`` logs live (after ``wandb login``). Scalars and sample grids are logged against
the run's step (the ``step`` key), the resolved recipe is the run's config, and a resumed run
continues the same W&B run (its id is kept in the run folder's ``loggers.json``)."""

from __future__ import annotations

from typing import Any, Literal

from cgan_kit import CganError, Logger, RunInfo, hookimpl
from cgan_kit.loggers import pixels, require


class WandbLogger(Logger):
    def __init__(self, project: str, entity: str, mode: str, tags: list[str], images: bool):
        self.project, self.entity, self.mode, self.tags, self.images = project, entity, mode, tags, images

    def start(self, run: RunInfo) -> dict[str, Any]:
        import wandb

        resume_id = run.saved.get("id")
        # console "off": W&B must not wrap the terminal the progress bar draws on; silent: no banners.
        settings = wandb.Settings(console="off", silent=True, reinit="create_new")
        try:
            self.run = wandb.init(project=self.project, entity=self.entity or None, name=run.name,
                                  dir=str(run.folder), config=run.recipe, tags=self.tags or None, mode=self.mode,
                                  settings=settings, id=str(resume_id) if resume_id else None,
                                  resume="allow" if resume_id else None)
        except Exception as error:
            if self.mode != "online":
                raise
            raise CganError(f'logger "wandb" could not start online ({" ".join(str(error).split())}); log in with '
                            '`wandb login` (or WANDB_API_KEY), or log offline: loggers.wandb.mode = "offline"') \
                from error
        try:
            self.run.define_metric("step")
            self.run.define_metric("*", step_metric="step")  # charts against the run's step, resumed runs included
        except BaseException:  # the engine closes only loggers that started: end this run and its service here
            self.run.finish(exit_code=1)
            if wandb.run is None:
                wandb.teardown()
            raise
        self.message = run.message
        return {"id": self.run.id}

    def scalars(self, step: int, values: dict[str, float], epoch: int) -> None:
        self.run.log({"step": step, "epoch": epoch, **values})

    def image(self, tag: str, image: Any, step: int) -> None:
        if self.images:
            import wandb

            self.run.log({"step": step, tag: wandb.Image(pixels(image), caption=f"step {step}")})

    def close(self, outcome: str) -> None:
        import wandb

        folder = self.run.settings.sync_dir
        self.run.finish(exit_code=1 if outcome == "failed" else 0)
        if wandb.run is None:  # no run of the host's left: end W&B's service process now, not at exit
            wandb.teardown()
        if self.mode == "offline":
            self.message(f"W&B run written offline to {folder}; upload it with `wandb sync {folder}`")


def wandb_logger(project: str = "cgan-kit", entity: str = "", mode: Literal["offline", "online"] = "offline",
                 tags: tuple[str, ...] = (), images: bool = True) -> Logger:
    """Weights & Biases: scalars, sample grids and the recipe as the run's config; offline by default.

    Needs `pip install 'cgan-kit[wandb]'`. Offline, the run is written under the run folder's wandb/
    and uploaded later with `wandb sync`; a resumed run continues the same W&B run (offline, each
    session is a folder of its own there, all with the run's id). Steps after the last checkpoint
    of a killed run are logged twice.

    Args:
        project: The W&B project.
        entity: The W&B user or team; empty: your default entity.
        mode: "offline" (no network, no login; `wandb sync` uploads later) or "online" (needs `wandb login`).
        tags: Tags of the W&B run.
        images: Log the sample grids too.
    """
    require("wandb", "wandb", "wandb")
    return WandbLogger(project, entity, mode, list(tags), images)


@hookimpl
def register_loggers(register: Any) -> None:
    register("wandb", wandb_logger)
