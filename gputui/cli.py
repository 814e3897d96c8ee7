"""Command line: argument parsing only; every command calls the front door (`gputui.api`) and prints what it
returns through `gputui.views`."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sqlite3
import sys
from pathlib import Path

from gputui import __version__
from gputui.tui.serve_args import interval_arg, port_number

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # now, not at exit, where a reader that has gone could only be complained about
        return code
    except BrokenPipeError:  # e.g. `gputui status --json | head -1`: the reader has all it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not complain
        return EXIT_OK


def _main(argv: list[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        try:
            return args.func(args)
        except Exception as e:
            from gputui.api.errors import REFUSALS  # only now: it imports the engine, which `status` never needs

            if not isinstance(e, REFUSALS):
                raise  # to the handlers below
            print(f"gputui: error: {e}", file=sys.stderr)
            return EXIT_USAGE
    except ValueError as e:  # e.g. a bad --simulate spec
        print(f"gputui: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except sqlite3.DatabaseError as e:  # found while reading or writing, after the checks on open
        print(f"gputui: error: {_state_error(_state_db(args), e)}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        if e.errno not in _ACCESS_ERRORS:
            raise
        print(f"gputui: error: {_access_error(e)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


_ACCESS_ERRORS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)


def _state_db(args) -> Path | None:
    """The state database the command works on, where it is known."""
    run_dir = getattr(args, "resolved_run_dir", None) or getattr(args, "run_dir", None)
    return None if run_dir is None else Path(run_dir).resolve() / "state.db"


def _state_error(db: Path | None, e: sqlite3.DatabaseError) -> str:
    """An SQLite error met after the checks on open, said plainly; damage keeps the refusal's wording."""
    from gputui.api.errors import state_unreadable

    text, where = str(e)[:160], str(db or "the run's state database")
    low = text.lower()
    if "locked" in low or "busy" in low:
        return (
            f"state database {where} is held locked by another process; nothing was changed.\n"
            f"  Run the same command again in a moment."
        )
    if "readonly" in low or "read-only" in low:
        return f"cannot write to {where}: read-only (the file or its folder); nothing was changed."
    if "full" in low:
        return f"cannot write to {where}: no space left on the device; nothing was changed."
    if "disk i/o error" in low:
        return (
            f"state database {where}: disk I/O error; nothing more was written.\n"
            f"  Check the disk (e.g. `dmesg`), then run the same command again."
        )
    if db is None:
        return f"the run's state database cannot be read ({text}); it was left untouched."
    return str(state_unreadable(db, f"cannot be read ({text})"))


def _access_error(e: OSError) -> str:
    """EROFS, EACCES, ENOSPC and the like, named with the file or folder that could not be written."""
    why = {errno.EROFS: "read-only file system", errno.ENOSPC: "no space left on the device"}.get(
        e.errno, "disk quota exceeded" if e.errno == errno.EDQUOT else "permission denied"
    )
    if not e.filename:
        return f"cannot write: {why}; nothing was left half-written."
    target = Path(os.fsdecode(e.filename))
    if not target.exists():  # it was being created: the folder is what cannot be written
        target = target.parent
    elif e.errno in (errno.EACCES, errno.EPERM) and not os.access(target, os.R_OK):
        return f"cannot read {target}: permission denied."
    return f"cannot write to {target}: {why}; nothing was left half-written."


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gputui", description="Watch GPUs; launch and control the GPU jobs gputui owns."
    )
    p.add_argument("--version", action="version", version=f"gputui {__version__}")
    # Without a command: the app. `gputui` watches GPUs; with --jobs it also launches and controls the job.
    p.add_argument("--jobs", type=Path, help="app: monitor and launch this job file")
    p.add_argument("--run-dir", type=Path, help="app: the run directory (re-attach to a run)")
    _simulate_arg(p)
    p.add_argument("--theme", default="dark", choices=["dark", "light", "high-contrast"])
    interval_arg(p)
    p.add_argument("--readonly", action="store_true", help="app: a view that can never signal anything")
    _monitor_args(p)
    p.set_defaults(func=_cmd_app)
    sub = p.add_subparsers(metavar="COMMAND")

    run = sub.add_parser("run", help="run a job headless until every task is done or failed for good")
    run.add_argument("--jobs", type=Path, help="job file (TOML); optional when --run-dir names an existing run")
    run.add_argument("--run-dir", type=Path, help="run directory (default: runs/<name> beside the job file)")
    _simulate_arg(run)
    quiet = run.add_mutually_exclusive_group()
    quiet.add_argument("--quiet", action="store_true", help="hide worker output (it is still in the log files)")
    quiet.add_argument("--show-worker-output", action="store_true", help="stream worker output (the default)")
    run.add_argument("--progress-every", type=float, default=30.0, metavar="S", help="progress line period")
    run.add_argument(
        "--rebuild-state",
        action="store_true",
        help="move a damaged state.db aside and rebuild the run's state from its journal and done-manifests "
        "(running workers are re-adopted, never started twice)",
    )
    run.add_argument(
        "--only-pending",
        action="store_true",
        help="run only pending tasks (e.g. the ones retried); tasks that failed for good stay failed "
        "(by default starting a run again gives them a fresh set of attempts)",
    )
    run.set_defaults(func=_cmd_run)
    _ls_parser(sub)

    st = sub.add_parser(
        "status",
        help="tasks of a run, their status and failure reasons",
        description="Tasks of a run: status, attempts, exit codes, failure reasons, log paths, GPU-hours and "
        "peak GPU memory; whether the run's scheduler is live. Reads only: works on a read-only run.",
        epilog="exit status: 0 every task is done; 1 some task is not done (pending, running, paused, "
        "retrying, failed or killed); 2 error (no such run, unreadable state)",
    )
    st.add_argument("--run-dir", type=Path, required=True)
    st.add_argument("--json", action="store_true", help="machine-readable, with every task's latest log path")
    st.add_argument(
        "--all",
        action="store_true",
        help="list every task (a run of more than 100 lists those running or needing a look, and counts the rest)",
    )
    st.set_defaults(func=_cmd_status)

    lg = sub.add_parser(
        "log",
        help="a task's log (its latest attempt); -f follows it as it grows until the task ends",
        description="Print a task's log, its latest attempt's unless --attempt says which. With -f, follow it as "
        "it grows (like `tail -f`), onto the next attempt's log when the task is retried, until the task ends "
        "for good. A worker's escape sequences are made harmless (colours at most). Reads only.",
        epilog="exit status: 0 printed (-f: the task is done); 1 the task has not started (-f: it failed, was "
        "killed or skipped, or its scheduler is not running); 2 error (no such run, task or attempt); 130 Ctrl-C",
    )
    lg.add_argument("--run-dir", type=Path, required=True)
    lg.add_argument("task_id", metavar="TASK")
    lg.add_argument("-f", "--follow", action="store_true", help="follow the log until the task ends for good")
    lg.add_argument("--attempt", type=int, metavar="N", help="this attempt's log (1 is the first)")
    lg.set_defaults(func=_cmd_log)

    wt = sub.add_parser(
        "wait",
        help="wait until tasks (default: every task) have ended: done, failed, killed or skipped",
        description="Wait until the named tasks (default: every task of the run) are final, printing a line "
        "for each as it ends. Stops early, exit 1, when the run's scheduler is not running with a task "
        "unfinished. Reads only.",
        epilog="exit status: 0 every task waited for is done; 1 some is not (failed, killed, skipped, or cannot "
        "end: the scheduler is not running); 2 error (no such run or task); 124 --timeout; 130 Ctrl-C",
    )
    wt.add_argument("--run-dir", type=Path, required=True)
    wt.add_argument("task_ids", nargs="*", metavar="TASK")
    wt.add_argument("--timeout", type=float, metavar="S", help="give up after S seconds (exit 124)")
    wt.add_argument("--quiet", action="store_true", help="print nothing; the exit status says how it ended")
    wt.set_defaults(func=_cmd_wait)

    pl = sub.add_parser(
        "plan",
        help="what a job would run, without running or writing anything: its tasks, and for a [resources].mode "
        "the GPUs per worker, workers and gpu_memory_utilization chosen, with the arithmetic",
    )
    pl.add_argument("--jobs", type=Path, required=True)
    _simulate_arg(pl)
    pl.set_defaults(func=_cmd_plan)

    g = sub.add_parser("gpus", help="a one-shot GPU table, like nvidia-smi")
    g.add_argument("--json", action="store_true")
    _simulate_arg(g)
    g.set_defaults(func=_cmd_gpus)

    m = sub.add_parser("merge", help="merge shard outputs (coverage-checked) and write merge_summary.json")
    m.add_argument("--run-dir", type=Path, required=True)
    m.add_argument(
        "--verify",
        action="store_true",
        help="hash every shard output again (else one whose size, modification time and inode match its "
        "done-manifest is trusted)",
    )
    m.set_defaults(func=lambda a: _cmd_verb(a, "merge"))

    s = sub.add_parser("summary", help="write summary.json and report.md for a run")
    s.add_argument("--run-dir", type=Path, required=True)
    s.set_defaults(func=_cmd_summary)

    for verb, text in (
        ("pause", "pause tasks (SIGSTOP their process trees)"),
        ("resume", "resume paused tasks (SIGCONT)"),
        ("kill", "kill tasks (SIGTERM, grace period, SIGKILL); they stay killed until retried"),
        ("retry", "queue failed or killed tasks again"),
    ):
        v = sub.add_parser(verb, help=text)
        v.add_argument("--run-dir", type=Path, required=True)
        v.add_argument("task_ids", nargs="*", metavar="TASK_ID")
        v.add_argument("--all", action="store_true", help="every task of this run the verb applies to")
        if verb == "retry":
            v.add_argument("--force", action="store_true", help="also run done tasks again (named ones only)")
        if verb == "pause":
            v.add_argument(
                "--free-memory",
                action="store_true",
                help="first checkpoint the task's CUDA process (NVIDIA's cuda-checkpoint, driver 550+, one CUDA "
                "process): its GPU memory is freed until resume, its GPUs stay reserved for it; refused, saying "
                "why, where it cannot be",
            )
        v.set_defaults(func=lambda a, verb=verb: _cmd_verb(a, verb))
    _set_parser(sub)
    _metrics_parser(sub)
    from gputui.tui.serve_args import register as register_serve  # the server's modules only to serve

    register_serve(sub)
    return p


def _simulate_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--simulate",
        metavar="SPEC",
        help="simulated GPUs: N or NxGB (e.g. 4, 8x24), private to the run; 'shared:NxGB' makes them "
        "the machine's, claimed by every run of every user (demos of sharing); 'auto' or 'auto:NxGB' "
        "simulates only when no real GPU can be probed",
    )


def _monitor_args(p: argparse.ArgumentParser) -> None:
    """The app's glyphs, and the monitor's filters (as nvitop's --only, --user, --pid)."""
    p.add_argument("--ascii", action="store_true", help="app: ASCII characters only (also GPUTUI_ASCII=1)")
    p.add_argument("--only", type=_indices, metavar="N,N", help="app: show only these GPUs (and their processes)")
    p.add_argument("--user", action="append", metavar="NAME", help="monitor: only this user's GPU processes")
    p.add_argument("--pid", type=_indices, action="append", metavar="N", help="monitor: only these processes")


def _indices(text: str) -> list[int]:
    try:
        numbers = [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, not {text!r}") from None
    if not numbers or any(n < 0 for n in numbers):
        raise argparse.ArgumentTypeError(f"expected numbers of 0 or more, not {text!r}")
    return numbers


def _process_filter(args):
    """The monitor's process filter at start, from --user and --pid (`esc` in the app clears it)."""
    from gputui.views.processes import ProcessFilter

    users = frozenset(u for names in args.user or () for u in names.split(",") if u)
    pids = frozenset(n for numbers in args.pid or () for n in numbers)
    return ProcessFilter(users=users, pids=pids)


def _cmd_app(args) -> int:
    from gputui.api import check_app_target
    from gputui.tui.app import GpuTuiApp

    run_dir = args.resolved_run_dir = check_app_target(args.jobs, args.run_dir, args.simulate)
    app = GpuTuiApp(
        job_path=args.jobs,
        run_dir=run_dir,
        simulate=args.simulate,
        theme=args.theme,
        interval=args.interval,
        readonly=args.readonly,
        ascii=args.ascii,
        only=frozenset(args.only or ()),
        process_filter=_process_filter(args),
    )
    said = app.run()  # what the app leaves to say on the terminal (detached: how to re-attach)
    if said:
        print(said, file=sys.stderr)
    return EXIT_OK


def _cmd_run(args) -> int:
    from gputui import api

    api.start_keeper()  # its start-up overlaps ours (a run on Ray or one refused lets it go)

    job = api.load_job(args.jobs, args.run_dir)
    args.resolved_run_dir = job.run_dir
    return api.run_job(
        job,
        simulate=args.simulate,
        show_output=not args.quiet,
        progress_every=args.progress_every,
        rebuild_state=args.rebuild_state,
        only_pending=args.only_pending,
    )


def _ls_parser(sub) -> None:
    ls = sub.add_parser(
        "ls",
        help="the runs of this user on this machine, live or finished, wherever they are",
        description="One line per run started on this machine (by `gputui run` or the app), most recently active "
        "first: its state (running: its scheduler is live; detached: tasks run on without one; finished; "
        "failed; stopped: work left, no scheduler), job, progress, last activity and run directory. A run whose "
        "directory is gone is dropped. Reads only.",
        epilog="exit status: 0 (also when there are no runs); runs are recorded under ~/.cache/gputui/<host>/runs "
        "(GPUTUI_REGISTRY_DIR to move it)",
    )
    ls.add_argument("--json", action="store_true", help="machine-readable: every run, with its task counts")
    ls.add_argument(
        "--all",
        action="store_true",
        help=f"list every run (else the live ones, then the most recently active others: {LS_LISTED} in all)",
    )
    ls.set_defaults(func=_cmd_ls)


LS_LISTED = 20  # the runs `gputui ls` lists without --all (live ones are always listed)


def _cmd_ls(args) -> int:
    import time

    from gputui.api.runs import list_runs
    from gputui.views.run_list import concise, left_out_line, table_lines

    rows = list_runs()
    if args.json:
        print(json.dumps({"runs": [r.as_dict() for r in rows]}, indent=2))
        return EXIT_OK
    if not rows:
        print("no runs yet; `gputui run --jobs FILE` starts one")
        return EXIT_OK
    listed, left = (rows, []) if args.all else concise(rows, LS_LISTED)
    print("\n".join(table_lines(listed, time.time())))
    if left:
        print(left_out_line(left))
    return EXIT_OK


def _cmd_status(args) -> int:
    from gputui.api.status import read_status, write_json

    if args.json:
        return EXIT_OK if write_json(args.run_dir, sys.stdout) else EXIT_FAILED
    status = read_status(args.run_dir)
    code = EXIT_OK if status.all_done else EXIT_FAILED
    from gputui.views.printer import progress_line
    from gputui.views.status_view import totals_line, unlisted_line

    console = _console()
    live, pid = status.scheduler_live, status.scheduler_pid
    who = f"live, pid {pid}" if live and pid is not None else ("live" if live else "not running")
    console.print(f"[b]{status.job_name}[/b]  scheduler {(status.scheduler_id or '')[:8]} ({who})")
    console.print(str(status.run_dir), style="dim", soft_wrap=True, markup=False, highlight=False)
    if status.max_parallel:  # changed by `gputui set`
        console.print(f"max_parallel {status.max_parallel}", markup=False, highlight=False)
    if status.memory:  # a job that measures GPU memory or shares GPUs
        console.print(f"memory: {status.memory}", markup=False, highlight=False)
    placed = status.placed()
    if args.all:
        for n, (tasks, latest) in enumerate(status.pages()):
            _print_tasks(console, status, tasks, latest, placed, header=n == 0)
    else:
        _print_tasks(console, status, status.listed, status.latest, placed, header=True)
        if status.unlisted:
            console.print(unlisted_line(status.unlisted, len(status.listed)), markup=False, highlight=False)
    console.print(progress_line(status.counts, status.spent()))
    if totals := totals_line(status.gpu_totals()):
        console.print(totals, markup=False, highlight=False)
    return code


def _print_tasks(console, status, tasks, latest, placed, *, header: bool) -> None:
    """A table of these tasks, then the log of each that needs a look, whole however narrow the terminal (to be
    copied)."""
    from gputui.views.status_view import log_lines, status_table

    if not tasks:
        return
    attempts = list(latest.values())
    now, metric = status.taken_at, status.metric
    live = status.scheduler_live
    console.print(status_table(tasks, attempts, now=now, metric=metric, placed=placed, header=header, live=live))
    for line in log_lines(tasks, attempts):
        console.print(line, soft_wrap=True, markup=False, highlight=False)


def _console():
    """A rich console that lets a broken pipe reach `main` (rich's own handling exits with status 1)."""
    from rich.console import Console

    class PipeConsole(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    console = PipeConsole()
    if not console.is_terminal:  # piped or redirected: whole lines, never wrapped at 80 columns mid-word
        console.width = 1 << 20
    return console


def _cmd_log(args) -> int:
    from gputui import api

    colour = _is_terminal(sys.stdout)
    try:
        for event in api.follow_log(args.run_dir, args.task_id, attempt=args.attempt, follow=args.follow):
            if event.kind == "line":
                sys.stdout.write(event.shown(colour=colour) + "\n")
                if args.follow:
                    sys.stdout.flush()
                continue
            sys.stdout.flush()
            print(f"gputui: {event.shown(colour=False)}", file=sys.stderr, flush=True)
            if event.kind == "end":
                return EXIT_OK if event.status == "done" else EXIT_FAILED
    except api.NotStarted as e:
        print(f"gputui: {e}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _cmd_wait(args) -> int:
    from gputui import api

    def said(end) -> None:
        print(end.line(), flush=True)

    if args.timeout is not None and args.timeout < 0:
        raise ValueError(f"--timeout {args.timeout:g}: expected seconds, 0 or more")

    def started(text: str) -> None:
        print(f"gputui wait: {text}", file=sys.stderr, flush=True)

    on_end, on_start = (None, None) if args.quiet else (said, started)
    outcome = api.wait(args.run_dir, args.task_ids or None, timeout=args.timeout, on_end=on_end, on_start=on_start)
    if not args.quiet:
        out = sys.stderr if outcome.code else sys.stdout
        print(f"gputui wait: {outcome.message}", file=out)
    return outcome.code


def _is_terminal(out) -> bool:
    try:
        return out.isatty()
    except (OSError, ValueError, AttributeError):
        return False


def _cmd_plan(args) -> int:
    from gputui import api

    plan = api.plan(args.jobs)
    print(plan.headline)
    if plan.mode is None:
        per_worker = plan.job.resources.gpus_per_worker
        print(f"GPUs per worker: {per_worker} ([resources].gpus_per_worker; set mode to size them)")
        return EXIT_OK
    here = api.read_gpus(args.simulate)
    print(f"mode {plan.mode!r} for {plan.job.model.path} on {here.source}:")
    try:
        decision = plan.size(here.gpus)
    except api.NoFit as e:
        print(f"gputui: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    for line in decision.arithmetic:
        print(f"  {line}")
    print(f"decision: {decision.summary}")
    return EXIT_OK


def _cmd_gpus(args) -> int:
    from gputui.api import read_gpus

    here = read_gpus(args.simulate)
    if args.json:
        print(json.dumps(here.to_json(), indent=2))
    else:
        _console().print(here.table())
    return EXIT_OK


def _cmd_verb(args, verb: str) -> int:
    from gputui import api

    run = api.open_run(args.run_dir)  # no such run: said before anything else
    ids = None
    if verb != "merge":
        if not args.task_ids and not args.all:
            print(f"gputui {verb}: name TASK_IDs or pass --all", file=sys.stderr)
            return EXIT_USAGE
        ids = None if args.all else args.task_ids
    force = getattr(args, "force", False) or getattr(args, "verify", False)  # retry --force, merge --verify
    sent = api.verb_named(verb, ids, force=force)
    if getattr(args, "free_memory", False):
        sent = api.Pause(sent.ids, free_memory=True)
    outcome = run.send(sent)
    print(outcome.report)
    return EXIT_OK if outcome.ok else EXIT_FAILED


def _cmd_summary(args) -> int:
    from gputui.api import open_run

    summary, report = open_run(args.run_dir).summary()
    print(f"wrote {summary} and {report}")
    print(report.read_text())
    return EXIT_OK


# -- gputui set ----------------------------------------------------------------------------------------------
def _set_parser(sub) -> None:
    st = sub.add_parser(
        "set",
        help="change a setting of a run while it goes: max_parallel=N",
        description="Change a run's setting, kept in its state. max_parallel=N: tasks at once, from the live "
        "scheduler's next turn (lowering it stops no running task: new ones wait until fewer run); +N / -N: "
        "relative to now; job: back to the job file's. With no scheduler running, the run's next start uses it.",
        epilog="exit status: 0 changed; 1 refused by the run; 2 error (bad KEY=VALUE, no such run)",
    )
    st.add_argument("--run-dir", type=Path, required=True)
    st.add_argument("settings", nargs="+", metavar="KEY=VALUE", help="max_parallel=N, +N, -N or job")
    st.set_defaults(func=_cmd_set)


def _cmd_set(args) -> int:
    from gputui import api

    changes = [api.setting(text) for text in args.settings]  # a bad one: exit 2 before anything is sent
    run = api.open_run(args.run_dir)
    code = EXIT_OK
    for change in changes:
        outcome = run.send(change)
        print(outcome.report, file=sys.stdout if outcome.ok else sys.stderr)
        code = code if outcome.ok else EXIT_FAILED
    return code


# -- gputui metrics ------------------------------------------------------------------------------------------
def _metrics_parser(sub) -> None:
    mt = sub.add_parser(
        "metrics",
        help="GPUs and runs for Prometheus: printed, served over HTTP (--serve) or written for node_exporter",
        description="This machine's GPUs (memory, utilisation, power, temperature, energy) and gputui runs (tasks "
        "by status, queue, GPU time, scheduler live, max_parallel) in the Prometheus text format, read afresh "
        "each time. Runs: those named by --run-dir, else the live ones `gputui ls` knows (--all-runs: every "
        "one). Reads only; imports neither the app nor the scheduler.",
        epilog="exit status: 0 printed, written, or served until Ctrl-C (or SIGTERM); 2 error (no such run, a bad "
        "--simulate, a port that cannot be listened on)",
    )
    mt.add_argument(
        "--run-dir", dest="run_dirs", type=Path, action="append", metavar="DIR", help="this run (repeat for more)"
    )
    mt.add_argument("--all-runs", action="store_true", help="every run `gputui ls` knows, not only the live ones")
    _simulate_arg(mt)
    mt.add_argument(
        "--openmetrics",
        action="store_true",
        help="OpenMetrics 1.0 (ends with # EOF) instead of the Prometheus 0.0.4 text format node_exporter reads; "
        "--serve answers each scraper in the format it asks for",
    )
    out = mt.add_mutually_exclusive_group()
    out.add_argument("--serve", action="store_true", help="serve http://HOST:PORT/metrics until Ctrl-C")
    out.add_argument(
        "--textfile",
        type=Path,
        metavar="PATH",
        help="write the metrics to PATH atomically (temp file and rename beside it), for node_exporter's "
        "--collector.textfile.directory (PATH should end in .prom)",
    )
    any_port = lambda text: port_number(text, lowest=0)  # noqa: E731 - 0: any free one
    mt.add_argument("--port", type=any_port, metavar="P", help="--serve: the port (0: any free one)")
    mt.add_argument("--host", metavar="HOST", help="--serve: the address to listen on (default: 127.0.0.1)")
    mt.add_argument("--every", type=_seconds, metavar="S", help="--textfile: write it again every S seconds")
    mt.set_defaults(func=_cmd_metrics)


def _seconds(text: str) -> float:
    try:
        s = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < s < float("inf"):  # also NaN
        raise argparse.ArgumentTypeError(f"must be more than 0 s, not {text}")
    return s


def _cmd_metrics(args) -> int:
    from gputui.api.metrics import MetricsReader

    def refuse(text: str) -> int:
        print(f"gputui metrics: error: {text}", file=sys.stderr)
        return EXIT_USAGE

    if args.run_dirs and args.all_runs:
        return refuse("--all-runs lists every run `gputui ls` knows; with --run-dir, name only those")
    if args.serve and args.port is None:
        return refuse("--serve needs --port P (0: any free port)")
    if not args.serve and (args.port is not None or args.host is not None):
        return refuse("--port and --host are for --serve")
    if args.every is not None and args.textfile is None:
        return refuse("--every is for --textfile")

    def warn(text: str) -> None:
        print(f"gputui metrics: warning: {text}", file=sys.stderr, flush=True)

    reader = MetricsReader(args.run_dirs, all_runs=args.all_runs, simulate=args.simulate, say=warn)
    with reader:
        if args.serve:
            return _serve_metrics(reader, args.host or "127.0.0.1", args.port, warn)
        if args.textfile is None:
            sys.stdout.write(reader.text(openmetrics=args.openmetrics))
            return EXIT_OK
        return _write_metrics(reader, args.textfile, args.every, args.openmetrics, warn)


def _write_metrics(reader, path: Path, every: float | None, openmetrics: bool, warn) -> int:
    import time

    from gputui.api.metrics import write_textfile

    if path.suffix != ".prom":
        warn(f"{path}: node_exporter's textfile collector reads only files named *.prom")
    with _ended_by_sigterm():
        try:
            while True:
                write_textfile(reader, path, openmetrics=openmetrics)
                if every is None:
                    return EXIT_OK
                time.sleep(every)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the file holds the last whole write
            return EXIT_OK


def _serve_metrics(reader, host: str, port: int, warn) -> int:
    import signal

    from gputui.api.metrics import start_server
    from gputui.tui.serve import is_loopback

    loopback = is_loopback(host)
    if not loopback:
        warn(f"listening on {host}: anyone who can reach this address can read these metrics (plain HTTP)")
    try:
        server = start_server(reader, host, port, loopback_names=loopback)
    except OSError as e:
        return _refuse_listen(host, port, e)
    bound = server.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"gputui metrics: serving http://{shown}:{bound}/metrics (Ctrl-C ends)", flush=True)
    with _ended_by_sigterm():
        try:
            while True:
                signal.pause()
        except KeyboardInterrupt:
            return EXIT_OK
        finally:
            server.shutdown()
            server.server_close()


def _refuse_listen(host: str, port: int, e: OSError) -> int:
    """Any error binding (in use, no such address, a name that does not resolve, a port below 1024): exit 2."""
    print(f"gputui metrics: error: cannot listen on {host}:{port}: {e.strerror or e}", file=sys.stderr)
    return EXIT_USAGE


def _ended_by_sigterm():
    """While inside: SIGTERM (systemd's stop) ends the loop as Ctrl-C does."""
    import contextlib
    import signal

    @contextlib.contextmanager
    def scope():
        def stop(signum, frame):
            raise KeyboardInterrupt

        before = signal.signal(signal.SIGTERM, stop)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, before)

    return scope()


if __name__ == "__main__":
    raise SystemExit(main())
