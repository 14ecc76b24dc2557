"""The HTML run report: self-contained, every section present, graceful without optional files,
and rendering cleanly in headless Chromium (made-up texts and probabilities; no EMit data)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest

from emitlab.data.loading import TextDataset
from emitlab.data.stats import DatasetStats, compute_stats
from emitlab.labels import TASK_A_LABELS
from emitlab.pipeline import score_model
from emitlab.report import SECTIONS, write_report
from emitlab.settings import CalibrationConfig

from synthetic import make_rows

CHROMIUM = Path("/usr/bin/chromium")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MODEL_STRENGTH = {"baseline": 0.9, "transformer": 1.5}


def _probs(y: np.ndarray, strength: float, seed: int) -> np.ndarray:
    """Plausible probabilities: gold pushes the logit up, prevalence-ish bias pushes it down."""
    rng = np.random.default_rng(seed)
    logits = strength * (2 * y - 1) - 1.0 + rng.normal(0, 1.3, y.shape)
    return 1 / (1 + np.exp(-logits))


def _trainer_log(steps: int = 120) -> list[dict]:
    log = []
    for s in range(10, steps + 1, 10):
        log.append({"loss": round(0.7 * np.exp(-s / 60) + 0.1, 4), "step": s, "epoch": s / 40,
                    "learning_rate": 1e-4 * (1 - s / steps), "grad_norm": 1.0})
        if s % 40 == 0:
            log.append({"eval_macro_f1": 0.3 + s / 600, "eval_loss": 0.5 - s / 1000, "step": s, "epoch": s / 40})
    log.append({"train_runtime": 100.0, "train_loss": 0.3, "step": steps, "epoch": 3.0})
    return log


def make_run_folder(path: Path, *, models=("baseline", "transformer", "ensemble"), test_gold: bool = True,
                    trainer_log: bool = True, data_stats: bool = True, n_val: int = 160, n_test: int = 120) -> Path:
    """A run folder shaped like what ``emitlab run`` writes, built with the real scoring code."""
    path.mkdir(parents=True, exist_ok=True)
    labels = list(TASK_A_LABELS)
    val_ids, val_texts, y_val, _ = make_rows(n_val, 11, "va")
    val_texts = [t + (" <script>alert('x')</script> & «ciao»" if i % 5 == 0 else "") for i, t in enumerate(val_texts)]
    test_ids, test_texts, y_test, _ = make_rows(n_test, 12, "te")
    test = TextDataset(test_ids, test_texts, y_test if test_gold else None, labels)
    ood = TextDataset([f"o{i}" for i in range(30)], ["testo fuori dominio"] * 30, None, labels)
    cal = CalibrationConfig(repeats=4)
    probs: dict[str, dict[str, np.ndarray]] = {}
    for i, m in enumerate(x for x in models if x != "ensemble"):
        probs[m] = {s: _probs(y, MODEL_STRENGTH.get(m, 1.5), 100 * i + k)
                    for k, (s, y) in enumerate((("validation", y_val), ("test", y_test), ("ood", np.zeros((30, 10)))))}
    if "ensemble" in models:
        probs["ensemble"] = {s: 0.7 * probs["transformer"][s] + 0.3 * probs["baseline"][s] for s in probs["baseline"]}
    metrics_models = {}
    for m, p in probs.items():
        scored = score_model({"baseline": "tfidf-logreg", "transformer": "me5-small"}.get(m, m), labels, p["validation"],
                             y_val, {"test": test, "ood": ood}, {"test": p["test"], "ood": p["ood"]}, cal)
        metrics_models[m] = scored.metrics | ({"weight_on_transformer": 0.7} if m == "ensemble" else {})
    best = max(metrics_models, key=lambda m: metrics_models[m]["validation"]["macro_f1"])
    metrics = {"task": "A", "label_names": labels, "models": metrics_models, "best_model": best,
               "timings_s": {"stats": 0.4, "baseline": 30.1, "transformer": 1400.2, "calibration": 2.0,
                             "export": 5.5, "report": 3.0, "total": 1441.2},
               "training": {"train_seconds": 1400.2, "train_examples_per_second": 4.1, "global_steps": 120,
                            "device": "cpu", "precision": "fp32"}}
    config = {"command": ["emitlab", "run", "--data", "emit"], "data": {"task": "A", "seed": 42},
              "cleaning": {"enabled": True}, "baseline": {"C": 1.0},
              "train": {"model": "me5-small", "pooling": "mean", "loss": "bce", "pos_weight": "sqrt",
                        "learning_rate": 1e-4, "epochs": 4.0, "max_length": 96},
              "calibration": {"thresholds": "auto"}, "run": {}, "versions": {"python": "3.11.7", "numpy": "2.x"}}
    arrays = {"y_validation": y_val}
    if test_gold:
        arrays["y_test"] = y_test
    for m, p in probs.items():
        arrays |= {f"{m}_{s}": v for s, v in p.items()}
    np.savez(path / "predictions.npz", **arrays)
    (path / "metrics.json").write_text(json.dumps(metrics))
    (path / "config.json").write_text(json.dumps(config))
    (path / "validation_texts.json").write_text(
        json.dumps([{"id": i, "text": t} for i, t in zip(val_ids, val_texts)], ensure_ascii=False))
    if trainer_log:
        (path / "trainer_log.json").write_text(json.dumps(_trainer_log()))
    if data_stats:
        stats = [compute_stats(val_texts, y_val, labels, "train")]
        if test_gold:
            stats.append(compute_stats(test_texts, y_test, labels, "test"))
        # the per-text word lengths (for the length histogram) ride along with to_dict()
        (path / "data_stats.json").write_text(json.dumps([s.to_dict() | {"word_lengths": s.word_lengths.tolist()}
                                                          for s in stats]))
    if "ensemble" in models:
        w = [0.0, 0.25, 0.5, 0.75, 1.0]
        (path / "ensemble_weights.json").write_text(json.dumps({"weights": w, "validation_heldout_macro_f1": [0.4, 0.5, 0.55, 0.56, 0.52]}))
    return path


def check_self_contained(html: str) -> list[bytes]:
    """No external references; every <img> an inline PNG. Returns the decoded images."""
    assert not re.search(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:|//)""", html, re.I)
    assert not re.search(r"url\(\s*['\"]?(?:https?:|//)", html, re.I)
    assert "<script" not in html.lower() and "@import" not in html
    imgs = re.findall(r"<img\b[^>]*>", html)
    pngs = []
    for tag in imgs:
        src = re.search(r'src="([^"]+)"', tag).group(1)
        assert src.startswith("data:image/png;base64,"), src[:60]
        assert re.search(r'alt="[^"]+"', tag)
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG_MAGIC) and len(data) > 1000
        pngs.append(data)
    return pngs


@pytest.fixture(scope="module")
def full_report(tmp_path_factory) -> Path:
    return write_report(make_run_folder(tmp_path_factory.mktemp("run") / "run-full"))


def test_full_report_is_self_contained_with_every_section(full_report):
    html = full_report.read_text(encoding="utf-8")
    pngs = check_self_contained(html)
    # summary (ensemble weights), distribution, per-label, thresholds, PR, co-occurrence, training
    assert len(pngs) == 7
    for sid, title, _ in SECTIONS:
        assert f'<section id="{sid}"><h2>{title}</h2>' in html
    assert html.count("<figcaption>") == len(pngs)
    assert 'class="note"' not in html  # nothing missing
    assert "ensemble ★ best" in html or "★ best" in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; «ciao»" in html
    assert "<details><summary>config.json</summary>" in html and "me5-small" in html
    assert html.count("<h3>") >= 4  # 3 weak labels + versions


def test_degraded_folder_notes_missing_parts(tmp_path):
    import matplotlib.pyplot as plt

    run = make_run_folder(tmp_path / "run-min", models=("baseline",), test_gold=False, trainer_log=False,
                          data_stats=False)
    before = plt.get_fignums()
    html = write_report(run).read_text(encoding="utf-8")
    assert plt.get_fignums() == before  # Figure objects only, no pyplot state
    check_self_contained(html)
    for sid, title, _ in SECTIONS:
        assert f'<section id="{sid}"><h2>{title}</h2>' in html
    assert "trainer_log.json is missing" in html and "data_stats.json is missing" in html
    assert "Precision-recall curves on validation (test gold labels are not available)" in html
    assert "test macro-F1" not in html


def test_single_model_folder_without_predictions(tmp_path):
    run = make_run_folder(tmp_path / "baseline", models=("baseline",), trainer_log=False, data_stats=False)
    metrics = json.loads((run / "metrics.json").read_text())["models"]["baseline"]
    (run / "metrics.json").write_text(json.dumps(metrics | {"task": "A", "timings_s": {"fit": 3.0, "total": 4.0}}))
    for name in ("predictions.npz", "validation_texts.json"):
        (run / name).unlink()
    html = write_report(run).read_text(encoding="utf-8")
    assert len(check_self_contained(html)) == 1  # per-label F1 bars only
    assert html.count('class="note"') >= 5
    assert "tfidf-logreg ★ best" in html


def test_dataset_stats_round_trip_through_json():
    _, texts, y, _ = make_rows(40, 3, "x")
    st = compute_stats(texts, y, list(TASK_A_LABELS), "train")
    back = DatasetStats.from_dict(json.loads(json.dumps(st.to_dict())))
    assert back.to_dict() == st.to_dict() and back.word_lengths.size == 0
    with_lengths = DatasetStats.from_dict(st.to_dict() | {"word_lengths": st.word_lengths.tolist()})
    np.testing.assert_array_equal(with_lengths.word_lengths, st.word_lengths)


def test_missing_metrics_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        write_report(tmp_path)


def test_report_renders_in_headless_chromium(full_report, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) not installed")
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(full_report.resolve().as_uri(), wait_until="load")
            widths = page.eval_on_selector_all("img", "els => els.map(e => e.complete ? e.naturalWidth : 0)")
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert len(widths) == 7 and all(w > 0 for w in widths), widths
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
    assert shot.stat().st_size > 50_000 and shot.read_bytes().startswith(PNG_MAGIC)
