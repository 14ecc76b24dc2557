"""Run an emitlab command and keep its result as JSON under benchmarks/results/.

    python benchmarks/record.py NAME -- emitlab baseline --data ../shared/data/emit --out runs/x

The JSON holds the command, the machine, the date, library versions, the wall time, the run's
settings (its config.json) and its metrics.json (the run folder is read from the command's --out).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()}
    try:
        mem = Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
        info["memory_gib"] = round(int(mem) / 2**20, 1)
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


def write_result(name: str, payload: dict) -> Path:
    from emitlab.runs import versions

    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"name": name, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "machine": machine(), "versions": versions(), **payload}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    return path


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
    out = Path(command[command.index("--out") + 1])
    t0 = time.time()
    proc = subprocess.run(command)
    wall = time.time() - t0
    if proc.returncode != 0:
        print(f"command failed with status {proc.returncode}", file=sys.stderr)
        return proc.returncode
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    config.pop("versions", None)
    path = write_result(name, {"command": " ".join(command), "wall_seconds": round(wall, 1), "settings": config,
                               "eval_history": eval_history(out), "metrics": metrics})
    print(f"result written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
