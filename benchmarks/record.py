"""Run an emitlab command and keep its result as JSON under benchmarks/results/.

    python benchmarks/record.py NAME -- emitlab baseline --data ../shared/data/emit --out runs/x
    python benchmarks/record.py NAME -- emitlab distill runs/x      # the student of a finished run

The JSON holds the command, the machine (CPU model, cores, memory, GPU), the date, library
versions, the git commit of the code and whether its tree had uncommitted changes (other records
under results/ do not count), the wall time,
the run's settings (its config.json) and its metrics.json (the run folder is read from the
command's --out). Every record, ``benchmarks/inference.py``'s too, is written by
:func:`write_result`.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "memory_gib": None, "cpu_model": platform.processor() or None}
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (AttributeError, ValueError, OSError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def write_result(name: str, payload: dict, results_dir: Path | None = None) -> Path:
    """Write ``results/<name>.json`` (or ``results_dir/<name>.json``, e.g. for a smoke run): date,
    machine, versions, git and the command line (this process's own unless ``payload`` names the
    command it measured), then ``payload``."""
    from emitlab.io import atomic_write_json
    from emitlab.runs import git_info, versions

    payload = {"name": name, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "command": shlex.join([sys.executable, *sys.argv]), "machine": machine(), "versions": versions(),
               "git": git_info(exclude=("benchmarks/results",)), **payload}
    return atomic_write_json(Path(results_dir or RESULTS) / f"{name}.json", payload)


def eval_history(run_dir: Path) -> list[dict]:
    """Validation macro-F1 (at 0.5) per evaluation, from the run's trainer_log.json."""
    path = run_dir / "trainer_log.json"
    if not path.is_file():
        return []
    return [{"epoch": h.get("epoch"), "step": h.get("step"), "eval_macro_f1": h["eval_macro_f1"]}
            for h in json.loads(path.read_text()) if "eval_macro_f1" in h]


def main() -> int:
    if "--" not in sys.argv or sys.argv.index("--") != 2:
        print(__doc__)
        return 2
    name, command = sys.argv[1], sys.argv[3:]
    distill = "distill" in command
    out = Path(command[command.index("distill") + 1] if distill else command[command.index("--out") + 1])
    t0 = time.time()
    proc = subprocess.run(command)
    wall = time.time() - t0
    if proc.returncode != 0:
        print(f"command failed with status {proc.returncode}", file=sys.stderr)
        return proc.returncode
    if distill:  # the student's record (distill.json) and the teacher run's settings
        config = json.loads((out / "config.json").read_text())
        config.pop("versions", None)
        path = write_result(name, {"command": shlex.join(command), "wall_seconds": round(wall, 1),
                                   "teacher_run": {"path": str(out), "git": config.pop("git", None),
                                                   "settings": config},
                                   "distill": json.loads((out / "distill.json").read_text())})
        print(f"result written to {path}")
        return 0
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    config.pop("versions", None)
    run_git = config.pop("git", None)  # the run's own record of the code it ran
    path = write_result(name, {"command": shlex.join(command), "wall_seconds": round(wall, 1),
                               **({"git": run_git} if run_git else {}), "settings": config,
                               "eval_history": eval_history(out), "metrics": metrics})
    print(f"result written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
