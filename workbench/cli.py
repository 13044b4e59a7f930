"""The command line: `python -m workbench <command> key=value ...`, which the justfile recipes call. It parses the
words, checks them against the command's configuration and the track's defaults, and dispatches
(workbench.commands, workbench.demo).

Every command prints what it will do, shows progress on long work and ends with a short table.
Exit status: 0 on success, 2 on a usage or input error, 3 when extraction finished but some media failed.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.markup import escape

from ensembles.export import SubmissionError
from features.cache import CacheError
from features.extract import group_leader
from tracks import LayoutError, Track, get_track, list_tracks
from workbench import commands
from workbench.config import ConfigError, TrackConfig, build, check_keys, known_keys, parse_words
from workbench.console import EXIT_USAGE, announce, console, errors
from workbench.demo import cmd_demo, cmd_demo_student
from workbench.fold import quiet_lightning


@dataclass(frozen=True)
class Command:
    run: Callable
    help: str

    @property
    def config(self) -> type | None:
        """The configuration dataclass the command takes, as its function declares it (None: the demos, which take
        the words themselves)."""
        parameter = next(iter(inspect.signature(self.run).parameters))
        kind = typing.get_type_hints(self.run)[parameter]
        return kind if dataclasses.is_dataclass(kind) else None


COMMANDS: dict[str, Command] = {
    "synth": Command(commands.cmd_synth, "write a synthetic dataset in the track's organiser layout"),
    "extract": Command(commands.cmd_extract, "fill the feature cache"),
    "train-fold": Command(commands.cmd_train_fold, "train one fold of a run"),
    "train": Command(commands.cmd_train, "train every fold of a run"),
    "submit": Command(commands.cmd_submit, "blend runs and write the leaderboard zip, with a report"),
    "export": Command(commands.cmd_export, "pack the runs a submit would submit as a runnable predictor"),
    "pseudo-label": Command(commands.cmd_pseudo_label, "label unlabelled media with teacher runs' blend"),
    "score": Command(commands.cmd_score, "score predictions with the track's official scorer"),
    "runs": Command(commands.cmd_runs, "the runs of a track: scores with intervals, settings that differ, submissions"),
    "compare": Command(commands.cmd_compare, "two runs on the same items: a paired bootstrap of the score difference"),
    "lb": Command(commands.cmd_lb, "record a submission's leaderboard score; local against leaderboard"),
    "zero-shot": Command(commands.cmd_zero_shot, "an LMM's own answers scored against the labels, nothing trained"),
    "check": Command(commands.cmd_check, "read an organiser's folder and report what later commands would meet"),
    "weights": Command(commands.cmd_weights, "every pretrained component a configuration needs: fetch=, bundle="),
    "profile": Command(commands.cmd_profile, "parameters and GMACs per item of the pipeline, against the budget"),
    "cache": Command(commands.cmd_cache, "the feature caches: settings, items, versions, size, last read"),
    "cache prune": Command(commands.cmd_cache_prune, "remove versions: keep=<data folders> older=<days> size=<GB>"),
    "demo": Command(cmd_demo, "synth, extract, train, control, submit and score on demo data"),
    "demo-student": Command(cmd_demo_student, "teacher, student alone and distilled student, labels withheld"),
    "sweep": Command(commands.cmd_sweep, "an Optuna study over heads, losses, optimiser and feature sets"),
    "sweep-best": Command(commands.cmd_sweep_best, "train the best trial of a sweep into a run for submit"),
}


CONFIG_KEYS = known_keys(*(command.config for command in COMMANDS.values() if command.config))


def load_track(name: str) -> Track:
    """The track, its `defaults` checked against the keys the commands take: a typo there would be dropped
    silently by every command."""
    track = get_track(name)
    unknown = sorted(set(track.defaults) - CONFIG_KEYS)
    if unknown:
        raise ConfigError(f"track {track.name}: its defaults name unknown key(s) {', '.join(unknown)}")
    return track


def usage() -> str:
    lines = ["usage: python -m workbench <command> key=value ...", ""]
    lines += [f"  {name:<11} {command.help}" for name, command in COMMANDS.items()]
    lines += ["", f"tracks: {', '.join(list_tracks())}"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        console.print(usage())
        return 0 if argv else EXIT_USAGE
    name, words = argv[0], argv[1:]
    if words and f"{name} {words[0]}" in COMMANDS:  # a command of two words: `cache prune`
        name, words = f"{name} {words[0]}", words[1:]
    if name not in COMMANDS:
        errors.print(f"[red]unknown command {name!r}[/]\n{usage()}")
        return EXIT_USAGE
    command = COMMANDS[name]
    console.quiet = not group_leader()  # the ranks a DDP launcher starts re-run this command: rank 0 alone speaks
    quiet_lightning()
    try:
        values = parse_words(words)
        track = load_track(values.get("track", TrackConfig.track))
        if command.config is None:  # the demos check their own words
            return command.run(values)
        check_keys(values, known_keys(command.config), name)
        defaults = track.defaults if issubclass(command.config, TrackConfig) else {}  # `cache` is of no one track
        config = build(command.config, values, defaults)
        announce(name, config)
        return command.run(config)
    except (ConfigError, LayoutError, CacheError, SubmissionError, FileNotFoundError, ValueError) as error:
        errors.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        return EXIT_USAGE
