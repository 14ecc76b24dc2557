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


#: MultiEmotions-It's header (the real file's columns; its texts are never in this repository).
MEI_HEADER = ["type", "title", "URL", "comment", "UNRELATED", "NEUT", "POS", "NEG", "GIOIA", "FIDUCIA", "TRISTEZZA",
              "RABBIA", "PAURA", "DISGUSTO", "SORPRESA", "TREPIDAZIONE", "SARCASM", "EMOTIONS"]
MEI_LABELS = {"GIOIA": "Joy", "FIDUCIA": "Trust", "TRISTEZZA": "Sadness", "RABBIA": "Anger", "PAURA": "Fear",
              "DISGUSTO": "Disgust", "SORPRESA": "Surprise", "TREPIDAZIONE": "Anticipation"}


def mei_row(text: str, emotions: list[str], columns: set[str]) -> list[str]:
    """One MultiEmotions-It-shaped row: ``columns`` are the basic-emotion columns set to 1."""
    basic = [str(int(c in columns)) for c in MEI_HEADER[8:16]]
    return ["YouTube Ad", "t", "http://x", text, "0", "0", "0", "0", *basic, "0", " - ".join(emotions)]


def write_extra_folder(folder: Path, n: int = 90, seed: int = 5, emit: Path | None = None) -> Path:
    """``multiemotions_it/`` and ``xed/`` shaped like the real corpora, with the synthetic cues; with
    ``emit``, the first 3 MultiEmotions-It rows repeat texts of that folder's out-of-domain file
    and the next 2 its test file (with other spacing and case: equal after normalisation)."""
    import csv

    _, texts, y, _ = make_rows(n, seed, "x")
    code = {v: k for k, v in MEI_LABELS.items()}
    rows = []
    for text, labels in zip(texts, y):
        names = [TASK_A_LABELS[k] for k in np.flatnonzero(labels)]
        cols = {code[x] for x in names if x in code}
        emotions = [x.upper() for x in names if x != "Neutral"]
        if "Love" in names:  # the corpus' dyad convention: LOVE sets Joy and Trust too
            cols |= {"GIOIA", "FIDUCIA"}
        rows.append(mei_row(text, emotions, cols))
    if emit is not None:
        import pandas as pd

        ood = pd.read_csv(emit / "emit_test_nolabel_out_of_domain.csv")["text"].tolist()
        test = pd.read_csv(emit / "emit_test.csv")["text"].tolist()
        for i, text in enumerate(ood[:3] + test[:2]):
            rows[i][3] = "  " + text.upper() + " "
    (folder / "multiemotions_it").mkdir(parents=True, exist_ok=True)
    with open(folder / "multiemotions_it" / "MultiEmotions-It.tsv", "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t")
        writer.writerow(MEI_HEADER)
        writer.writerows(rows)
    (folder / "xed").mkdir(parents=True, exist_ok=True)
    codes = {"Anger": 1, "Anticipation": 2, "Disgust": 3, "Fear": 4, "Joy": 5, "Sadness": 6, "Surprise": 7, "Trust": 8}
    _, texts, y, _ = make_rows(n, seed + 1, "xed")
    lines, neutral = [], []
    for text, labels in zip(texts, y):
        cs = [str(codes[TASK_A_LABELS[k]]) for k in np.flatnonzero(labels) if TASK_A_LABELS[k] in codes]
        (lines.append(f"{text}\t{', '.join(cs)}") if cs else neutral.append(f"9\t{text}"))
    lines.insert(3, "a\tb\tc\td\te\tf")  # the alignment metadata lines of the real file: skipped
    (folder / "xed" / "it-projections.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "xed" / "en-annotated.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "xed" / "neu_en.txt").write_text("\n".join(neutral) + "\n", encoding="utf-8")
    return folder
