"""A small made-up EMit-shaped corpus with learnable signal (no EMit text is used)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emitlab.labels import TASK_A_LABELS

CUES = {
    "Anger": "rabbia furioso", "Anticipation": "domani aspetto", "Disgust": "schifo vergogna",
    "Fear": "paura terrore", "Joy": "felice evviva", "Love": "amore cuore", "Neutral": "oggi notizia",
    "Sadness": "triste lacrime", "Surprise": "incredibile wow", "Trust": "fiducia bravo",
}
FILLER = "il la di che non un per una sono con ma come anche".split()


def make_rows(n: int, seed: int, prefix: str) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids, texts = [], []
    y = np.zeros((n, 10), dtype=int)
    yb = np.zeros((n, 2), dtype=int)
    for i in range(n):
        j = i % 10
        y[i, j] = 1
        if TASK_A_LABELS[j] != "Neutral" and rng.random() < 0.2:
            k = int(rng.choice([x for x in range(10) if x not in (j, 6)]))
            y[i, k] = 1
        words = list(rng.choice(FILLER, 6))
        for k in np.flatnonzero(y[i]):
            words += CUES[TASK_A_LABELS[k]].split()
        rng.shuffle(words)
        yb[i] = [int("fiducia" in words or "rabbia" in words), int(i % 3 != 0)]
        extra = " #Bello @user 😂" if i % 4 == 0 else ""
        ids.append(f"{prefix}{i:04d}")
        texts.append(" ".join(words) + extra)
    return ids, texts, y, yb


def write_csv(path: Path, ids, texts, cols: list[str] | None = None, y=None) -> None:
    import pandas as pd

    frame = pd.DataFrame({"id": ids, "text": texts})
    if cols is not None:
        for j, c in enumerate(cols):
            frame[c] = y[:, j]
    frame.to_csv(path, index=False)


def write_emit_folder(folder: Path, n_train: int = 300, n_test: int = 60) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    ids, texts, y, yb = make_rows(n_train, 0, "tr")
    write_csv(folder / "emit_train_A.csv", ids, texts, TASK_A_LABELS, y)
    write_csv(folder / "emit_train_B.csv", ids, texts, ["Direction", "Topic"], yb)
    ids, texts, y, yb = make_rows(n_test, 1, "te")
    write_csv(folder / "emit_test.csv", ids, texts, TASK_A_LABELS + ["Direction", "Topic"], np.hstack([y, yb]))
    write_csv(folder / "emit_test_nolabel.csv", ids, texts)
    ids, texts, _, _ = make_rows(n_test, 2, "ood-")
    write_csv(folder / "emit_test_nolabel_out_of_domain.csv", ids, texts)
    return folder
