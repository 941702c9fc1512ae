"""The ``cgan`` command line. Torch and the plugins load only inside commands that need them."""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import click

from cgan_kit import __version__
from cgan_kit.errors import CganError

SET_HELP = "Override a recipe value, e.g. --set train.steps=100 (repeatable)."


class CganGroup(click.Group):
    """A group that reports user errors as one line (exit 2) and finds plugin commands on demand."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """The built-in commands and those packages add by entry point, found without loading
        the plugins (and torch), so that `cgan --help` lists every command and stays fast."""
        return sorted({*super().list_commands(ctx), *command_entry_points()})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None and name in command_entry_points():
            command = load_command(name, command_entry_points()[name])
        if command is None:
            # Loading plugins imports their modules (and torch), so do it only for a name we
            # do not know: `cgan --help` and the built-in commands stay fast.
            command = self.plugin_commands().get(name)
        return command

    def plugin_commands(self) -> dict[str, click.Command]:
        """The commands the loaded plugins add, found again whenever the plugins are reloaded."""
        from cgan_kit.plugin_api import plugins

        loaded = plugins.load()
        if getattr(self, "_commands_of", None) is not loaded:
            found = {}
            for commands in commands_by_plugin(loaded).values():
                found.update(commands)
            self._commands_of, self._plugin_commands = loaded, found
        return self._plugin_commands

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (CganError, OSError) as error:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            if isinstance(error, OSError):  # the commands name what they write; this is the net for the rest
                error = CganError(os_error(error))
            if not report_to_launcher(str(error)):
                for line in str(error).splitlines() or ["error"]:
                    click.echo(f"error: {line}", err=True)
            ctx.exit(error.exit_code)


RANK_ERRORS = "CGAN_RANK_ERRORS"  # set by `cgan run --nproc`: where its processes leave their errors


def report_to_launcher(message: str) -> bool:
    """In a process started by `cgan run --nproc`, leave the error for the launcher, which prints
    each different one once (every rank usually fails alike); False elsewhere, or where it
    cannot be written."""
    folder, rank = os.environ.get(RANK_ERRORS), os.environ.get("RANK")
    if not folder or rank is None or not rank.isdigit():
        return False
    try:
        (Path(folder) / f"rank{rank}.txt").write_text(message, encoding="utf-8")
    except OSError:
        return False
    return True


def echo_lines(lines: list[str]) -> None:
    for line in lines:
        click.echo(line, err=True)


def launcher_errors(folder: Path) -> list[str]:
    """The error lines the processes left in ``folder``: rank 0's, then each other rank's that
    says something else, named by its rank."""
    messages = {int(path.stem[4:]): path.read_text(encoding="utf-8", errors="replace")
                for path in folder.glob("rank*.txt") if path.stem[4:].isdigit()}
    lines, seen = [], set()
    for rank in sorted(messages):
        if messages[rank] not in seen:
            seen.add(messages[rank])
            prefix = "" if not lines else f"rank {rank}: "
            lines += [f"error: {prefix}{line}" for line in messages[rank].splitlines() or ["error"]]
    return lines


COMMANDS_GROUP = "cgan_kit.commands"


def command_entry_points() -> dict[str, Any]:
    """The ``cgan_kit.commands`` entry points by command name (nothing is imported)."""
    from importlib import metadata

    return {point.name: point for point in metadata.entry_points(group=COMMANDS_GROUP)}


def load_command(name: str, point: Any) -> click.Command | None:
    """A command an entry point names; one that fails to load is a warning, never the CLI's end."""
    try:
        command = point.load()
        if not isinstance(command, click.Command):
            raise TypeError(f"{point.value} is a {type(command).__name__}, not a click command")
    except Exception as error:  # noqa: BLE001 - a package's bug, reported and contained
        dist = point.dist.metadata["Name"] if point.dist else "?"
        print(f"warning: command {name} of {dist} failed to load and was skipped: "
              f"{' '.join(f'{type(error).__name__}: {error}'.split())[:300]}", file=sys.stderr)
        return None
    return command


def os_error(error: OSError) -> str:
    """An OS error the commands did not foresee (a name too long, a full disk, a folder that is a
    file) as one line: the file and the reason."""
    names = " -> ".join(str(name) for name in (error.filename, error.filename2) if name is not None)
    reason = error.strerror or type(error).__name__
    return f"{names}: {reason}" if names else f"{reason} ({error})"


@click.group(cls=CganGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="Plugins can add commands; `cgan plugins` lists them.")
@click.version_option(__version__, prog_name="cgan-kit")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """cgan-kit: conditional GANs composed from plugins and TOML recipes."""
    ctx.ensure_object(dict)["debug"] = debug


def _registry():
    from cgan_kit.plugin_api import plugins

    return plugins.registry()


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _console():
    from rich.console import Console

    return Console()


def _default_text(param) -> str:
    if param.required:
        return "required"
    value = param.default
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    return json.dumps(value)


def _param_json(param) -> dict[str, Any]:
    return {
        "name": param.name,
        "type": param.type_name,
        "required": param.required,
        "default": None if param.required else (list(param.default) if isinstance(param.default, tuple)
                                                else param.default),
        "doc": param.doc,
        "bounds": param.bounds or None,
    }


def _entry_json(entry) -> dict[str, Any]:
    return {
        "name": entry.name,
        "summary": entry.summary,
        "distribution": entry.provider.distribution,
        "version": entry.provider.version,
        "plugin": entry.provider.plugin,
        "parameters": [_param_json(p) for p in entry.params],
        "context": [p.name for p in entry.context],
    }


@cli.command()
@click.argument("name")
@click.argument("dest", required=False, type=click.Path(dir_okay=True))
def init(name: str, dest: str | None) -> None:
    """Copy the ready recipe NAME (`cgan list recipes`) to DEST (default: ./NAME.toml) to edit."""

    from cgan_kit.config.recipe import shipped
    from cgan_kit.safe_output import check_target, replace

    source = shipped(name)
    target = Path(dest) if dest else Path(f"{name}.toml")
    if target.is_dir():
        target = target / f"{name}.toml"
    if target.exists():
        raise CganError(f"{target} exists already; give another DEST (cgan init {name} DEST) or remove it")
    check_target(target, [source], "DEST")
    text = source.read_text(encoding="utf-8")
    try:
        replace(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    except OSError as error:
        raise CganError(f"cannot write {target}: {error.strerror or error}") from None
    click.echo(f"wrote {target}; run it with `cgan run {target}`")


@cli.command("list")
@click.argument("kind", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def list_command(kind: str | None, as_json: bool) -> None:
    """List registered components (all kinds, or one KIND such as norms) and the ready recipes
    (`cgan list recipes`)."""
    from cgan_kit.plugin_api import plugins
    from cgan_kit.plugin_api.registry import KINDS, kind_named

    with_recipes = kind in (None, "recipes", "recipe")
    kinds = [] if kind in ("recipes", "recipe") else [kind_named(kind)] if kind else list(KINDS.values())
    registry = _registry()
    recipes = plugins.load().recipes.values() if with_recipes else []
    if as_json:
        _echo_json({**{k.plural: [_entry_json(registry.get(k.name, n)) for n in registry.names(k.name)]
                       for k in kinds},
                    **({"recipes": [{"name": r.name, "summary": r.purpose, "plugin": r.provider.plugin,
                                     "distribution": r.provider.distribution, "version": r.provider.version}
                                    for r in recipes]} if with_recipes else {})})
        return
    from rich.table import Table

    console = _console()
    if with_recipes:
        table = Table(title="recipes", title_justify="left", expand=False)
        for column, style in (("name", "bold cyan"), ("purpose", ""), ("package", "dim")):
            table.add_column(column, style=style or None, no_wrap=column != "purpose")
        for r in recipes:
            table.add_row(r.name, r.purpose, f"{r.provider.distribution} {r.provider.version}")
        console.print(table)
        console.print("[dim]Run one: cgan run NAME; copy one to edit: cgan init NAME[/dim]")
    for k in kinds:
        table = Table(title=k.plural, title_justify="left", expand=False)
        table.add_column("name", style="bold cyan", no_wrap=True)
        table.add_column("summary")
        table.add_column("package", style="dim", no_wrap=True)
        for name in registry.names(k.name):
            entry = registry.get(k.name, name)
            table.add_row(name, entry.summary, f"{entry.provider.distribution} {entry.provider.version}")
        console.print(table)
    console.print("[dim]Details: cgan describe KIND NAME[/dim]")


@cli.command()
@click.argument("kind")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def describe(kind: str, name: str | None, as_json: bool) -> None:
    """Show a component's parameters, defaults and docs: KIND NAME, or `train` / `optim` alone."""
    from cgan_kit.plugin_api.params import params_of, parse_docstring
    from cgan_kit.config.recipe import SETTINGS_TABLES
    from cgan_kit.plugin_api.registry import kind_named

    is_loss = False
    if kind in SETTINGS_TABLES:
        cls = SETTINGS_TABLES[kind]
        summary, description, _ = parse_docstring(cls.__doc__)
        params, context, provider = params_of(cls), [], f"cgan-kit {__version__} (engine)"
        title = f"[{kind}]"
    else:
        kind_ = kind_named(kind)
        if name is None:
            raise CganError(f"cgan describe {kind} needs a NAME (see `cgan list {kind_.plural}`)")
        entry = _registry().get(kind_.name, name)
        summary, description = entry.summary, entry.description
        params, context, provider = list(entry.params), list(entry.context), str(entry.provider)
        title = f"{entry.kind} {entry.name}"
        is_loss = entry.kind == "loss"
        if as_json:
            _echo_json({"kind": entry.kind, **_entry_json(entry), "description": description})
            return
    if as_json:
        _echo_json({"kind": "settings", "name": kind, "summary": summary, "description": description,
                    "parameters": [_param_json(p) for p in params]})
        return
    from rich.table import Table

    from rich.markup import escape

    console = _console()
    console.print(f"[bold]{escape(title)}[/bold]: {escape(summary)}")
    if description:
        console.print(description, markup=False)
    console.print(f"[dim]from {provider}[/dim]")
    table = Table(expand=False)
    for column in ("parameter", "type", "default", "description"):
        table.add_column(column)
    for param in params:
        shown = f"{param.type_name} ({param.bounds})" if param.bounds else param.type_name
        table.add_row(param.name, shown, _default_text(param), param.doc)
    if is_loss:  # the recipe's [[losses]] weight, which every loss takes besides its own parameters
        table.add_row("weight", "float (>= 0)", "1.0",
                      escape("Set in [[losses]] for every loss: its weight in the sum"))
    console.print(table)
    if context:
        console.print(f"[dim]Set by cgan-kit: {', '.join(p.name for p in context)}[/dim]")


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def plugins_command(as_json: bool) -> None:
    """List loaded plugins with their versions and hooks, and those that failed to load."""
    from cgan_kit.plugin_api import plugins

    loaded = plugins.load()
    commands = _plugin_commands(loaded)
    data = {
        "loaded": [{**_info_json(p), "hooks": list(p.hooks), "commands": commands.get(p.name, [])}
                   for p in loaded.loaded],
        "failed": [{**_info_json(p), "error": p.error} for p in loaded.failed],
        "disabled": loaded.disabled,
        "commands": [{"name": name, "value": point.value,
                      "distribution": point.dist.metadata["Name"] if point.dist else "?",
                      "version": point.dist.version if point.dist else "?"}
                     for name, point in sorted(command_entry_points().items())],
        "recipes": [{"name": r.name, "purpose": r.purpose, "path": str(r.path), "plugin": r.provider.plugin}
                    for r in loaded.recipes.values()],
    }
    if as_json:
        _echo_json(data)
        return
    from rich.table import Table

    console = _console()
    table = Table(title="plugins", title_justify="left")
    for column in ("plugin", "package", "module", "hooks"):
        table.add_column(column)
    for p in data["loaded"]:
        hooks = ", ".join(p["hooks"] + [f"command {c}" for c in p["commands"]])
        table.add_row(p["name"], f"{p['distribution']} {p['version']}", p["module"], hooks)
    console.print(table)
    for c in data["commands"]:
        console.print(f"command {c['name']}: {c['value']} ({c['distribution']} {c['version']})", markup=False)
    for p in data["failed"]:
        console.print(f"[red]failed[/red] {p['name']} ({p['distribution']} {p['version']}): {p['error']}",
                      markup=True, highlight=False)
    for name in data["disabled"]:
        console.print(f"[yellow]disabled[/yellow] {name} (CGAN_DISABLE_PLUGINS)")


def _info_json(p) -> dict[str, Any]:
    return {"name": p.name, "distribution": p.distribution, "version": p.version, "module": p.module}


def commands_by_plugin(loaded: Any) -> dict[str, dict[str, click.Command]]:
    """The subcommands each plugin adds: each register_commands hook runs on a scratch group of its
    own. A hook that raises, or adds something that is not a click command, costs its plugin its
    commands (with a warning naming it), never the CLI."""
    found: dict[str, dict[str, click.Command]] = {}
    for impl in reversed(loaded.manager.hook.register_commands.get_hookimpls()):  # registration order
        scratch = click.Group()
        try:
            impl.function(cli=scratch)
            bad = [name for name, command in scratch.commands.items() if not isinstance(command, click.Command)]
            if bad:
                raise TypeError(f"added {bad[0]!r} as a {type(scratch.commands[bad[0]]).__name__}, not a click "
                                "command")
        except Exception as error:  # noqa: BLE001 - a plugin's bug, reported and contained
            reason = " ".join(f"{type(error).__name__}: {error}".split())[:300]
            print(f"warning: plugin {impl.plugin_name} failed in register_commands and its commands were skipped: "
                  f"{reason}", file=sys.stderr)
            continue
        found[impl.plugin_name] = dict(scratch.commands)
    return found


def _plugin_commands(loaded) -> dict[str, list[str]]:
    """Which plugin added which subcommand."""
    return {plugin: sorted(commands) for plugin, commands in commands_by_plugin(loaded).items()}


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--size", type=int, default=None,
              help="Image side for the critic's output size (default: the dataset's crop_size or size, else 256).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def check(recipe: str, overrides: tuple[str, ...], size: int | None, as_json: bool) -> None:
    """Validate RECIPE and build every model without training."""
    from cgan_kit.cli.check import summarize

    report = summarize(recipe, list(overrides), size)
    size = report["size"]
    if as_json:
        _echo_json(report)
        return
    console = _console()
    console.print(f"[green]ok[/green] {recipe} (method {report['method']})")
    for role in report["roles"]:
        part = report[role]
        extra = ""
        if part["kind"] == "critic":
            if part.get("receptive_field") is not None:
                extra += f", receptive field {part['receptive_field']} px"
            extra += f", output {part['output_shape'][-2]}x{part['output_shape'][-1]} on {size}x{size}"
        console.print(f"  {role:<10} {part['type']:<12} {part['parameters']:>12,} parameters{extra}")
    for loss in report["losses"]:
        console.print(f"  loss       {loss['type']:<12} weight {loss['weight']:g} ({loss['role']})")
    for stabilizer in report["stabilizers"]:
        console.print(f"  stabilizer {stabilizer['type']}")
    console.print(f"  loggers    {', '.join(report['loggers'])}")
    data = report["data"]
    splits = ", ".join(f"{count} {split}" for split, count in data["splits"].items())
    console.print(f"  data       {data['type']:<12} {splits or 'not readable'}", markup=False)
    evaluation = report["evaluation"]
    console.print(f"  evaluation {evaluation['images']} {evaluation['split']} images"
                  f"{', FID and KID' if evaluation['fid'] else ''}; best checkpoint by {evaluation['best_metric']}",
                  markup=False)
    for problem in [*data["problems"], *report["warnings"]]:  # the data can still be fetched later
        click.echo(f"warning: {problem}", err=True)


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False), required=False)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--resume", "resume", type=click.Path(file_okay=False), help="Continue the run in this folder.")
@click.option("--until", type=click.IntRange(min=1), default=None, metavar="STEP",
              help="Stop after STEP (with a checkpoint) without changing the schedules, which still span "
                   "train.steps; continue later with --resume. For time-limited jobs.")
@click.option("--nproc", type=click.IntRange(min=1), default=None, metavar="N",
              help="Train with N processes on this machine through torchrun's own launcher (one per GPU; "
                   "gloo on CPUs); the same as `torchrun --standalone --nproc-per-node N -m cgan_kit run ...`. "
                   "train.batch_size is per process.")
@click.option("--smoke", is_flag=True,
              help="A smoke run: the whole recipe (data, models, evaluation, samples, checkpoints, report) in "
                   "minutes, to catch mistakes before a long run: at most 10 steps, 8 evaluation images and "
                   "128 px crops, in the folder NAME-smoke.")
def run(recipe: str | None, overrides: tuple[str, ...], resume: str | None, until: int | None,
        nproc: int | None, smoke: bool) -> None:
    """Train RECIPE (or continue a run with --resume RUN_DIR)."""
    if recipe is None and resume is None:
        raise CganError("cgan run needs a RECIPE or --resume RUN_DIR (try recipes/quickstart.toml)")
    if smoke:
        if resume is not None:
            raise CganError("--smoke starts a new run from a RECIPE; it does not go with --resume")
        from cgan_kit.config.recipe import load, smoke_overrides

        # After the user's values, capping them: a smoke run is short whatever the recipe asks.
        overrides = (*overrides, *smoke_overrides(load(recipe, list(overrides))))
    if nproc is not None and nproc > 1 and "WORLD_SIZE" not in os.environ:
        from torch.distributed.run import main as torchrun

        args = [*([recipe] if recipe else []), *(a for o in overrides for a in ("--set", o)),
                *(["--resume", resume] if resume else []), *(["--until", str(until)] if until else [])]
        from torch.distributed.elastic.multiprocessing.api import SignalException
        from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

        from cgan_kit.training.loop import Interrupted

        # torchrun passes a Ctrl-C on to every process (and kills them 30 s later): each finishes its
        # step, rank 0 saves and they print where; the launcher only says so, in one line.
        interrupted = Interrupted(f"interrupted: the {nproc} processes stopped after their step (their messages "
                                  "above say where rank 0 saved); continue with `cgan run --resume RUN_DIR`")
        debug = bool(click.get_current_context().find_root().params.get("debug"))
        with tempfile.TemporaryDirectory(prefix="cgan-ranks-") as folder:
            if not debug:  # each process leaves its error for us; torchrun's own long report is left out
                os.environ[RANK_ERRORS] = folder  # the processes inherit it
                logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
            try:
                torchrun(["--standalone", "--nproc-per-node", str(nproc), "-m", "cgan_kit",
                          *(["--debug"] if debug else []), "run", *args])
            except SignalException:
                echo_lines(launcher_errors(Path(folder)))
                raise interrupted from None
            except ChildFailedError as error:
                codes = {rank: failure.exitcode for rank, failure in error.failures.items()}
                if all(code == Interrupted.exit_code for code in codes.values()):
                    echo_lines(launcher_errors(Path(folder)))
                    raise interrupted from None
                lines = launcher_errors(Path(folder))
                if not lines:  # killed, not failed: nothing was left to say why
                    text = ", ".join(f"rank {rank} exit code {code}" for rank, code in codes.items())
                    raise CganError(f"distributed training with {nproc} processes failed ({text}), with no error "
                                    "message; rerun with --debug to see everything") from None
                echo_lines(lines)
                sys.exit(next(iter(codes.values())))
            finally:
                os.environ.pop(RANK_ERRORS, None)
        return
    from cgan_kit.training.loop import train

    train(recipe, list(overrides), resume, until)


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--steps", type=click.IntRange(min=1), default=20, show_default=True,
              help="Timed steps (after as many warm-up steps) for each loop.")
@click.option("--rounds", type=click.IntRange(min=1), default=2, show_default=True,
              help="Alternate the two loops this many times; each loop's figure is its fastest round.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def bench(recipe: str, overrides: tuple[str, ...], steps: int, rounds: int, as_json: bool) -> None:
    """Time `cgan run` on RECIPE against a bare PyTorch loop on the same nets and data."""
    from cgan_kit.training.bench import bench as measure

    report = measure(recipe, list(overrides), steps, rounds)
    if as_json:
        _echo_json(report)
        return
    from rich.table import Table

    table = Table(title=f"{recipe} on {report['device']} ({report['device_name']}, {report['threads']} threads, "
                        f"{report['precision']}, batch {report['batch_size']})")
    for column in ("loop", "ms per step", "images/s"):
        table.add_column(column)
    table.add_row("bare PyTorch", f"{report['bare_ms_per_step']:.1f}", f"{report['bare_images_per_s']:.2f}")
    table.add_row("cgan run", f"{report['ms_per_step']:.1f}", f"{report['images_per_s']:.2f}")
    _console().print(table)
    click.echo(f"cgan run / bare: {report['bare_ratio']:.3f}; peak memory {report['peak_memory_mb']:.0f} MB")


TRANSLATE_MODE_HELP = (
    "eval: batch norm uses the running statistics learnt in training, dropout is off; an image's output does "
    "not depend on the other inputs. paper: the pix2pix paper's test-time behaviour (Isola et al. 2017, sec. "
    "3.3): each image is normalized by its own batch statistics and dropout stays on (seeded by --seed, so "
    "repeatable); the running statistics are neither used nor modified; one image at a time.")
EMA_HELP = ("Use the moving average of the generator's weights (the recipe's [[stabilizers]] type = \"ema\"); "
            "--no-ema uses the trained weights. Default: the EMA weights when the checkpoint has them.")
RUN_OR_CHECKPOINT = click.Path(exists=False)
CHECKPOINT_HELP = ("Which of the run folder's checkpoints: latest, best (the best held-out evaluation, "
                   "train.best_metric) or a step number.")
which_checkpoint = click.option("--checkpoint", "which", default="latest", show_default=True,
                                metavar="latest|best|STEP", help=CHECKPOINT_HELP)
THREADS_HELP = ("CPU threads: auto (the CPUs free of other work) or a number; OMP_NUM_THREADS, MKL_NUM_THREADS "
                "or CGAN_THREADS in the environment win.")
threads_option = click.option("--threads", default="auto", show_default=True, metavar="auto|N", help=THREADS_HELP)


def _threads(value: str) -> None:
    """Choose and set the thread count a command computes with."""
    from cgan_kit.threads import apply, choose

    if value != "auto" and not (value.isdigit() and int(value) > 0):
        raise CganError(f'--threads {value}: expected "auto" or a positive number')
    apply(choose(value if value == "auto" else int(value)))


which_direction = click.option("--direction", default=None, metavar="NAME",
                               help="Which of the method's directions to translate in (pix2pix: AtoB, its only "
                                    "one). Default: the method's first.")


def _weights(loaded) -> str:
    return "EMA weights" if loaded.ema else "trained weights"


@cli.command()
@click.argument("run_or_checkpoint", metavar="RUN_OR_CHECKPOINT", type=RUN_OR_CHECKPOINT)
@click.argument("inputs", metavar="INPUT...", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for the outputs (created): one PNG per input, named after it (photo.jpg -> photo.png).")
@click.option("--ema/--no-ema", default=None, help=EMA_HELP)
@click.option("--mode", type=click.Choice(["eval", "paper"]), default="eval", show_default=True,
              help=TRANSLATE_MODE_HELP)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images of equal size translated together (eval mode).")
@click.option("--half", type=click.Choice(["left", "right"]), default=None,
              help="Translate only the left or right half of each image: the A|B files of the pix2pix releases "
                   "(A on the left).")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True,
              help="Seed of the dropout masks in --mode paper.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@which_checkpoint
@which_direction
@threads_option
def translate(run_or_checkpoint: str, inputs: tuple[str, ...], out: str, ema: bool | None, mode: str,
              batch_size: int, half: str | None, seed: int, device: str, which: str, direction: str | None,
              threads: str) -> None:
    """Translate images with a trained generator.

    RUN_OR_CHECKPOINT is a run folder (its newest checkpoint, or the one --checkpoint names), a
    .safetensors checkpoint or a model folder (`cgan export --format safetensors`); the generator and
    its channels come from the recipe saved inside it (a model folder: its config.json).
    INPUT is image files or folders (every image directly inside, in natural order). Images of any size are translated
    at their own size; they are converted to the channels the generator takes, and the outputs
    are 8-bit PNGs, or 16-bit PNGs for 16-bit inputs.
    """
    from pathlib import Path

    from cgan_kit.inference.translate import find_images, load_generator
    from cgan_kit.inference.translate import translate as run_translate

    _threads(threads)
    files = find_images([Path(i) for i in inputs])
    loaded = load_generator(run_or_checkpoint, ema=ema, device=device, which=which, direction=direction)
    from cgan_kit.progress import Progress

    with Progress("translating", len(files), quiet=len(files) < 2) as progress:
        written = run_translate(loaded, files, Path(out), mode, batch_size, seed, half=half,
                                report=lambda item: progress.advance())
    click.echo(f"translated {len(written)} image{'s' if len(written) != 1 else ''} into {out} with "
               f"{loaded.path} (step {loaded.step}, {_weights(loaded)}, {mode} mode)")


@cli.command("eval")
@click.argument("run_or_checkpoint", metavar="RUN_OR_CHECKPOINT", type=RUN_OR_CHECKPOINT)
@click.option("--data", "data_root", metavar="ROOT", default=None,
              help="Dataset folder instead of the recipe's data.root.")
@click.option("--split", default="test", show_default=True, help="Which split of the recipe's data to measure.")
@click.option("--fid/--no-fid", default=None,
              help="Also FID and KID against the split's real targets (Inception-v3 features; needs "
                   "pip install 'cgan-kit[fid]'). Default: when that is installed.")
@click.option("--ema/--no-ema", default=None, help=EMA_HELP)
@click.option("--images", "limit", type=click.IntRange(min=1), default=None, metavar="N",
              help="Only the first N examples of the split.")
@click.option("--mode", type=click.Choice(["eval", "paper"]), default="eval", show_default=True,
              help=TRANSLATE_MODE_HELP + " mmagic's published pix2pix FIDs were measured in paper mode.")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True,
              help="Seed of the dropout masks in --mode paper (the same images as cgan translate --mode paper "
                   "--seed writes).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images of equal size generated together (eval mode).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@which_checkpoint
@which_direction
@threads_option
def eval_command(run_or_checkpoint: str, data_root: str | None, split: str, fid: bool | None, ema: bool | None,
                 limit: int | None, mode: str, seed: int, batch_size: int, device: str, as_json: bool, which: str,
                 direction: str | None, threads: str) -> None:
    """Measure a trained generator on a split of its recipe's data.

    RUN_OR_CHECKPOINT is a run folder, a checkpoint or a model folder (which keeps the recipe's
    [data] table; --data points it at another dataset folder).

    The generator (EMA weights when present) in eval mode, or with --mode paper in the pix2pix
    paper's test-time mode, on the data as the recipe evaluates it. L1 is in
    the [-1, 1] units of the models; PSNR (dB) and SSIM (11x11 Gaussian window, sigma 1.5) are on
    [0, 1] images; each is averaged over images. FID and KID compare Inception features of the
    outputs with those of the real targets (both biased on small sets: compare like with like).
    """
    from cgan_kit.outputs.evaluation import evaluate_checkpoint

    _threads(threads)
    report = evaluate_checkpoint(run_or_checkpoint, data_root=data_root, split=split, fid=fid, ema=ema,
                                 batch_size=batch_size, limit=limit, device=device, which=which, direction=direction,
                                 mode=mode, seed=seed)
    if as_json:
        click.echo(json.dumps(report))
        return
    weights = "EMA weights" if report["ema"] else "trained weights"
    how = "eval mode" if mode == "eval" else f"paper mode, seed {seed}"
    click.echo(f"{report['checkpoint']} (step {report['step']}, {weights}, {how}, {report['direction']}): "
               f"{report['split']} split, {report['images']} images")
    if "l1" in report:
        click.echo(f"  L1    {report['l1']:.4f}  (in [-1, 1] units)")
        click.echo(f"  PSNR  {report['psnr']:.2f} dB")
        click.echo(f"  SSIM  {report['ssim']:.4f}")
    if "cycle_l1" in report:
        click.echo(f"  cycle L1 {report['cycle_l1']:.4f}  (the round trip back to the input)")
    if "fid" in report:
        click.echo(f"  FID   {report['fid']:.2f}")
        spread = "" if report.get("kid_std") is None else f" +- {report['kid_std']:.5f}"
        click.echo(f"  KID   {report['kid']:.5f}{spread}  (+- : the spread over random subsets)")


@cli.command()
@click.argument("run_or_checkpoint", metavar="RUN_OR_CHECKPOINT", type=RUN_OR_CHECKPOINT)
@click.option("--format", "fmt", required=True, metavar="safetensors|pt2|onnx",
              help="safetensors: a model folder to share (model.safetensors, config.json, README.md) that "
                   "translate, eval, export and cgan_kit.load take without the run folder. pt2: the generator as a "
                   "torch.export program (torch.export.load). onnx: the same as ONNX (needs "
                   "pip install 'cgan-kit[export]').")
@click.option("--out", required=True, type=click.Path(),
              help="The file to write (pt2, onnx), or the folder (safetensors: new or empty).")
@click.option("--size", type=(click.IntRange(min=1), click.IntRange(min=1)), default=None, metavar="H W",
              help="pt2 and onnx: the input size the graph is checked at (default: the size the model was trained "
                   "at); a multiple of the generator's stride keeps other sizes open, another size fixes the graph "
                   "to it.")
@click.option("--dynamic/--fixed-size", default=True, show_default=True,
              help="pt2 and onnx: any batch and any multiple of the generator's stride, or one fixed (1, C, H, W).")
@click.option("--ema/--no-ema", default=None, help=EMA_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@which_checkpoint
@click.option("--direction", default=None, metavar="NAME",
              help="Which of the method's directions to export (pt2, onnx: default the method's first; "
                   "safetensors: default every direction).")
def export(run_or_checkpoint: str, fmt: str, out: str, size: tuple[int, int] | None, dynamic: bool,
           ema: bool | None, as_json: bool, which: str, direction: str | None) -> None:
    """Export a trained model to share, or its generator alone for use without cgan-kit.

    RUN_OR_CHECKPOINT is a run folder, a checkpoint or a model folder. The eval-mode generator (EMA
    weights when present) maps images in [-1, 1] to [-1, 1]. Every file is loaded back and compared
    with PyTorch on random inputs; a largest difference above 1e-4 is an error and nothing is written.
    """
    from cgan_kit.inference.export import export as run_export

    report = run_export(run_or_checkpoint, fmt, out, size, ema, which, direction, dynamic)
    if as_json:
        click.echo(json.dumps(report))
        return
    weights = f"{'EMA weights' if report['ema'] else 'trained weights'} of step {report['step']}"
    if fmt == "safetensors":
        click.echo(f"wrote {report['out']}/ ({', '.join(report['files'])}; {', '.join(report['directions'])}, "
                   f"{weights}); checked with cgan_kit.load: max abs diff {report['max_abs_diff']:.2e}")
        click.echo(f"use it: cgan translate {report['out']} INPUT... --out OUT, or cgan_kit.load({report['out']!r})")
        for note in report["notes"]:
            click.echo(f"note: {note}", err=True)
        return
    click.echo(f"wrote {report['out']} ({fmt}, {report['direction']}, {weights}); checked with "
               f"{report['checked_with']} at {', '.join('x'.join(map(str, s)) for s in report['checked_shapes'])}: "
               f"max abs diff {report['max_abs_diff']:.2e}")
    fixed = f" ({report['fixed_because']})" if report["fixed_because"] else ""
    click.echo(f"it takes {report['accepts']}{fixed}")


@cli.command("report")
@click.argument("run_dir", metavar="RUN_DIR", type=click.Path(file_okay=False))
@click.option("--samples/--no-samples", default=True, show_default=True,
              help="Draw the sample grids of checkpoints that have none (needs the run's data and plugins).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
def report_command(run_dir: str, samples: bool, device: str) -> None:
    """Rebuild a run's HTML report, RUN_DIR/report/index.html.

    Loss and evaluation curves as plots, the table of held-out evaluations with the best marked,
    sample grids (input | output | target | the critic's per-patch judgement) per step and an
    animated GIF of them across training. Training refreshes the report by itself; this rebuilds
    it for any run, and draws the grids of checkpoints that have none.
    """
    from pathlib import Path

    from cgan_kit.outputs.report import draw_missing_samples, write

    drawn = draw_missing_samples(Path(run_dir), device) if samples else []
    page = write(Path(run_dir))
    added = f" (drew the samples of step{'s' if len(drawn) > 1 else ''} {', '.join(map(str, drawn))})" if drawn else ""
    click.echo(f"wrote {page}{added}")


from cgan_kit.cli.env import env_command  # noqa: E402 - cgan env (loads torch only when run)

cli.add_command(env_command)


def main() -> None:
    """Entry point of the ``cgan`` console script."""
    try:
        cli(prog_name="cgan")
    except CganError as error:  # only reached with --debug: the traceback has been asked for
        traceback.print_exc()
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception:  # a bug, not a user error: show everything so it can be reported
        traceback.print_exc()
        sys.exit(1)
