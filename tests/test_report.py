"""The HTML run report: self-contained, every section present, built from what the cross-fitting
engine writes (metrics schema 2), graceful without optional files, still readable for schema-1
folders, and rendering cleanly in headless Chromium (made-up texts; no EMit data)."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from emitlab.data.stats import DatasetStats, compute_stats
from emitlab.errors import RunFolderError
from emitlab.labels import TASK_A_LABELS
from emitlab.report import RunData, load_run, pr_curve, section_titles, stacker_weights, write_report

from synthetic import make_rows
from test_report_helpers import HOSTILE_ESCAPED, baseline_split_run, make_schema1_folder, schema2_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: candidates, distribution, per-label, average weights, stacker, thresholds, PR, co-occurrence, training
FULL_FIGURES = 9


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


def alts(html: str) -> list[str]:
    return re.findall(r'<img\b[^>]*alt="([^"]+)"', html)


def check_sections(html: str, run_dir: Path) -> None:
    titles = section_titles(load_run(run_dir))
    for sid, title in titles.items():
        assert f'<section id="{sid}"><h2>{title}</h2>' in html, sid
        assert f'<a href="#{sid}">{title}</a>' in html


def section(html: str, sid: str) -> str:
    return re.search(rf'<section id="{sid}">(.*?)</section>', html, re.S).group(1)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, tiny_model) -> Path:
    return schema2_run(tmp_path_factory, tiny_model)


@pytest.fixture(scope="module")
def full_report(full_run) -> Path:
    return write_report(full_run)


def test_full_report_is_self_contained_with_every_section(full_report, full_run):
    html = full_report.read_text(encoding="utf-8")
    metrics = json.loads((full_run / "metrics.json").read_text())
    best, models = metrics["best_model"], metrics["models"]
    assert len(check_self_contained(html)) == FULL_FIGURES
    check_sections(html, full_run)
    assert html.count("<figcaption>") == FULL_FIGURES
    assert 'class="note"' not in html  # nothing missing
    # summary: every candidate with its nested out-of-fold score; the chosen one marked
    summary = section(html, "summary")
    for name, m in models.items():
        assert f"<td>{name}" in summary and f"{m['nested_macro_f1']:.4f}" in summary
    assert f"<td>{best} ★ chosen</td>" in summary and "nested out-of-fold macro-F1" in summary
    assert f"chosen: {best}, nested OOF macro-F1 {models[best]['nested_macro_f1']:.4f}" in html
    assert f"the {metrics['selection']['n']} out-of-fold rows" in summary
    # the choice, the members side by side, the combiners' weights
    got = alts(html)
    assert "nested out-of-fold macro-F1 of every candidate with per-fold scores" in got
    assert "per-label F1 of every member and of the chosen combination, raw and calibrated" in got
    assert "member weights of the averaging combiners" in got and "stacker coefficients per label and member" in got
    per_label = section(html, "per-label")
    assert "Calibrated F1 of every candidate on out-of-fold" in per_label and "on test" in per_label
    # curves on the out-of-fold predictions, named so
    assert "out-of-fold F1 against the decision threshold, per label" in got
    assert "precision-recall curves per label on the out-of-fold rows" in got
    assert "F1 against threshold (out-of-fold)" in html and "Precision-recall curves (out-of-fold)" in html
    # fold timings of every member, as metrics.json records them
    members = section(html, "members")
    for name, info in metrics["members"].items():
        assert f"<td>{name}</td>" in members
        for s in info["fold_seconds"]:
            assert f'<td class="num">{s:.1f}</td>' in members
    assert "transformer (K=2)" in members and "default (K=3)" in members and "transformer: training per fold" in members
    # training curves, error examples (escaped), configuration
    assert "training loss and validation macro-F1 or learning rate per step" in got
    errors = section(html, "errors")
    assert errors.count("<h3>") == 3 and HOSTILE_ESCAPED in errors
    assert "<details><summary>config.json</summary>" in html and "<h3>Versions</h3>" in html


def test_one_colour_per_name_from_a_palette_not_fixed_names():
    def run(models: list[str], members: list[str]) -> RunData:
        return RunData(path=Path("."), config={}, metrics={}, label_names=[], models={m: {} for m in models},
                       best=models[0], members=members)

    a = run(["zeta", "alpha", "mix", "stack"], ["zeta", "alpha"])
    assert len(set(a.colors.values())) == 4 and list(a.colors) == ["zeta", "alpha", "mix", "stack"]
    b = run(["zeta", "alpha", "mix", "stack"], ["zeta", "alpha"])
    assert a.colors == b.colors  # stable: the same names give the same colours
    assert run(["tfidf", "transformer"], ["tfidf", "transformer"]).colors["tfidf"] == a.colors["zeta"]
    late = a.color("late-comer")
    assert late not in list(a.colors.values())[:4] and a.color("late-comer") == late
    many = run([f"m{i}" for i in range(20)], [])
    assert len(set(many.colors.values())) == 20


def test_stacker_weights_pick_each_members_own_label_logit():
    k, m = 3, 2
    W = np.arange(k * k * m, dtype=float).reshape(k, k * m) - 7  # W[j, m*k + i]
    own, total = stacker_weights(W, k, m)
    assert own.shape == total.shape == (k, m)
    for j in range(k):
        for mm in range(m):
            assert own[j, mm] == W[j, mm * k + j]
            assert total[j, mm] == np.abs(W[j, mm * k:(mm + 1) * k]).sum()


def test_pr_curve_matches_sklearn():
    from sklearn.metrics import average_precision_score, precision_recall_curve

    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(5, 60))
        y = rng.random(n) < 0.3
        y[0] = True
        p = np.round(rng.random(n), int(rng.integers(1, 3)))  # with ties
        prec, rec, ap = pr_curve(y, p)
        ref_p, ref_r, _ = precision_recall_curve(y, p)
        np.testing.assert_allclose(prec, ref_p[::-1])
        np.testing.assert_allclose(rec, ref_r[::-1])
        assert ap == pytest.approx(average_precision_score(y, p), abs=1e-12)


def test_single_member_on_a_validation_split(tmp_path_factory, tmp_path):
    """``emitlab baseline --folds 1``: one member, a validation split, no trainer log or data stats;
    then the same folder without predictions.npz and validation_texts.json."""
    import matplotlib.pyplot as plt

    run = shutil.copytree(baseline_split_run(tmp_path_factory), tmp_path / "baseline")
    before = plt.get_fignums()
    html = write_report(run).read_text(encoding="utf-8")
    assert plt.get_fignums() == before  # Figure objects only, no pyplot state
    got = alts(html)
    # candidates, per-label, thresholds, PR, co-occurrence
    assert len(check_self_contained(html)) == 5 and len(got) == 5
    check_sections(html, run)
    assert "a single member (tfidf): nothing is combined." in html
    assert "trainer_log.json is missing" in html and "data_stats.json is missing" in html
    assert "out-of-fold" not in html
    assert "F1 against threshold (validation)" in html and "Candidates: nested validation macro-F1" in html
    assert "validation F1 against the decision threshold, per label" in got
    assert "rows of the validation split" in html and "<td>tfidf ★ chosen</td>" in html

    for name in ("predictions.npz", "validation_texts.json"):
        (run / name).unlink()
    html = write_report(run).read_text(encoding="utf-8")
    assert len(check_self_contained(html)) == 2  # candidates and per-label F1 need metrics.json only
    check_sections(html, run)
    assert "no threshold curves" in html and "no precision-recall curves" in html
    assert "no co-occurrence comparison" in html and "no error examples" in html


def test_schema1_folders_still_render(tmp_path):
    run = make_schema1_folder(tmp_path / "run-old")
    html = write_report(run).read_text(encoding="utf-8")
    got = alts(html)
    # per-label, ensemble weights, weight search, thresholds, PR, co-occurrence, training
    assert len(check_self_contained(html)) == 7, got
    check_sections(html, run)
    assert "Schema-1 run folder" in html and "no candidate chart" in html and "no fold timings" in html
    assert "<td>ensemble ★ chosen (w=0.70)</td>" in html and "validation macro-F1 against ensemble weight" in got
    assert "Chosen: ensemble — average of probabilities; weights baseline 0.30, transformer 0.70" in html
    assert "F1 against threshold (validation)" in html

    # the single-model metrics.json of the old `emitlab baseline` / `train`
    single = tmp_path / "baseline-old"
    single.mkdir()
    metrics = json.loads((run / "metrics.json").read_text())["models"]["baseline"]
    (single / "metrics.json").write_text(json.dumps(metrics | {"task": "A", "timings_s": {"fit": 3.0, "total": 4.0}}))
    html = write_report(single).read_text(encoding="utf-8")
    assert len(check_self_contained(html)) == 1  # per-label F1 bars only
    assert html.count('class="note"') >= 6 and "<td>tfidf-logreg ★ chosen</td>" in html


def test_dataset_stats_round_trip_through_json():
    _, texts, y, _ = make_rows(40, 3, "x")
    st = compute_stats(texts, y, list(TASK_A_LABELS), "train")
    back = DatasetStats.from_dict(json.loads(json.dumps(st.to_dict())))
    assert back.to_dict() == st.to_dict() and back.word_lengths.size == 0
    with_lengths = DatasetStats.from_dict(st.to_dict() | {"word_lengths": st.word_lengths.tolist()})
    np.testing.assert_array_equal(with_lengths.word_lengths, st.word_lengths)


def test_missing_metrics_is_a_clear_error(tmp_path):
    with pytest.raises(RunFolderError, match="metrics.json"):
        write_report(tmp_path)


def test_report_renders_in_headless_chromium(full_report, browser_page, tmp_path):
    errors: list[str] = []
    requests: list[str] = []
    page = browser_page(viewport={"width": 1360, "height": 900})
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(full_report.resolve().as_uri(), wait_until="load")
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
    widths = page.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
    # nothing wider than the window: tables scroll inside their section, the navigation wraps
    page_width = page.evaluate("document.documentElement.scrollWidth")
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert errors == []
    assert len(widths) == FULL_FIGURES and all(w > 0 for w in widths), widths
    assert page_width <= 1360
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
    assert shot.stat().st_size > 50_000 and shot.read_bytes().startswith(PNG_MAGIC)
