"""The fine-tuning options of issue 8 on the tiny BERT: settings checks, layer-wise learning
rates, multi-sample dropout, R-Drop and the weight average (EMA), alone and in a whole run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from emitlab.errors import SettingsError
from emitlab.settings import TrainConfig

# --------------------------------------------------------------------------------------
# Settings


@pytest.mark.parametrize("values", [
    {"layer_decay": 0.0}, {"layer_decay": 1.2}, {"ema_decay": 1.0}, {"ema_decay": -0.1}, {"loss": "hinge"},
    {"asl_gamma_neg": -1.0}, {"asl_gamma_pos": float("nan")}, {"asl_clip": 1.0}, {"multi_sample_dropout": 0},
    {"multi_sample_dropout": 2.5}, {"multi_sample_dropout": "3"}, {"multi_sample_dropout": 4, "dropout": 0.0},
    {"rdrop_alpha": -1.0}, {"rdrop_alpha": float("nan")},
])
def test_bad_values_are_refused(values):
    with pytest.raises(SettingsError, match=list(values)[0].replace("_", "-")):
        TrainConfig(**values)


def test_defaults_keep_todays_training_and_flags_exist():
    cfg = TrainConfig()
    assert (cfg.layer_decay, cfg.ema_decay, cfg.loss, cfg.multi_sample_dropout, cfg.rdrop_alpha) == (
        1.0, 0.0, "bce", 1, 0.0)
    from emitlab.cli import build_parser

    args = build_parser().parse_args(
        ["train", "--layer-decay", "0.9", "--ema-decay", "0.999", "--loss", "asl", "--asl-gamma-neg", "3",
         "--asl-gamma-pos", "1", "--asl-clip", "0.1", "--multi-sample-dropout", "5", "--rdrop-alpha", "1.0"])
    given = {k.split(".", 1)[1]: v for k, v in vars(args).items() if k.startswith("train.")}
    assert given == {"layer_decay": 0.9, "ema_decay": 0.999, "loss": "asl", "asl_gamma_neg": 3.0, "asl_gamma_pos": 1.0,
                     "asl_clip": 0.1, "multi_sample_dropout": 5, "rdrop_alpha": 1.0}
    TrainConfig(**given)


def test_cli_reports_a_bad_value_as_a_user_error(tmp_path, capsys):
    from emitlab.cli import main

    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--layer-decay", "1.5"]) == 2
    assert "--layer-decay (train.layer_decay) must be in (0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------
# Helpers


def _trainer(model, tmp_path, **kwargs):
    from transformers import TrainingArguments

    from emitlab.members.transformer.losses import WeightedBCELoss
    from emitlab.members.transformer.training import EmotionTrainer

    args = TrainingArguments(output_dir=str(tmp_path / "out"), learning_rate=1e-3, weight_decay=0.01, use_cpu=True,
                             report_to=[], label_names=["labels"])
    return EmotionTrainer(model=model, args=args, loss_fn=WeightedBCELoss(), **kwargs)


def _batch(tiny_model, n=4):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    enc = tok(["felice evviva oggi", "che paura terrore", "amore cuore", "rabbia"][:n], padding=True,
              return_tensors="pt")
    return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


# --------------------------------------------------------------------------------------
# Layer-wise learning-rate decay


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_layer_decay_learning_rates(tiny_model, tmp_path, pooling):
    from emitlab.members.transformer.model import build_model

    model = build_model(tiny_model, 3, TrainConfig(pooling=pooling, freeze_word_embeddings=False), None)
    n = model.config.num_hidden_layers
    assert n == 2
    optimizer = _trainer(model, tmp_path, head_learning_rate=1e-2, layer_decay=0.5).create_optimizer()
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    head = {id(p) for p in model.head_parameters()}
    seen = set()
    for name, p in model.named_parameters():
        g = group_of[id(p)]
        if id(p) in head:
            expected, kind = 1e-2, "head"
        elif name.startswith("encoder.embeddings."):
            expected, kind = 1e-3 * 0.5 ** (n + 1), "embeddings"
        else:
            layer = int(name.split("encoder.encoder.layer.")[1].split(".")[0])
            expected, kind = 1e-3 * 0.5 ** (n - layer), f"layer {layer}"
        assert g["lr"] == pytest.approx(expected), name
        # weight decay stays off for biases and LayerNorms
        assert g["weight_decay"] == (0.0 if ("bias" in name or "LayerNorm" in name) else 0.01), name
        seen.add(kind)
    assert seen == {"head", "embeddings", "layer 0", "layer 1"}
    # the default (no decay) keeps today's two rates
    model = build_model(tiny_model, 3, TrainConfig(pooling=pooling, freeze_word_embeddings=False), None)
    optimizer = _trainer(model, tmp_path, head_learning_rate=1e-2).create_optimizer()
    assert {g["lr"] for g in optimizer.param_groups} == {1e-3, 1e-2}


@pytest.mark.parametrize("arch", ["xlm-roberta", "distilbert"])
def test_layer_decay_places_other_architectures(arch):
    from transformers import DistilBertConfig, DistilBertModel, XLMRobertaConfig, XLMRobertaModel

    from emitlab.members.transformer.model import EmotionModel
    from emitlab.members.transformer.training import layer_lr_scales

    if arch == "xlm-roberta":
        encoder = XLMRobertaModel(XLMRobertaConfig(vocab_size=40, hidden_size=16, num_hidden_layers=3,
                                                   num_attention_heads=2, intermediate_size=32,
                                                   max_position_embeddings=40),
                                  add_pooling_layer=False)
    else:
        encoder = DistilBertModel(DistilBertConfig(vocab_size=40, dim=16, n_layers=3, n_heads=2, hidden_dim=32,
                                                   max_position_embeddings=40))
    model = EmotionModel(encoder, 2)
    scales = layer_lr_scales(model, 0.8)
    names = [n for n, _ in model.named_parameters()]
    assert {n for n in names if n.startswith("classifier.")}.isdisjoint(scales)
    for name in names:
        if ".embeddings." in name:
            assert scales[name] == pytest.approx(0.8 ** 4), name
        elif ".layer." in name:
            layer = int(name.split(".layer.")[1].split(".")[0])
            assert scales[name] == pytest.approx(0.8 ** (3 - layer)), name
    assert sum(".layer." in n for n in scales) > 0


# --------------------------------------------------------------------------------------
# Multi-sample dropout and R-Drop


def test_multi_sample_dropout_averages_masks_in_training_only(tiny_model):
    from emitlab.members.transformer.model import build_model

    model = build_model(tiny_model, 3, TrainConfig(dropout=0.5, multi_sample_dropout=4), None)
    batch = _batch(tiny_model)
    model.train()
    model.encoder.eval()  # encoder dropout off: only the head's masks draw random numbers
    torch.manual_seed(0)
    logits = model(**batch)["logits"]
    assert logits.shape == (4, 3)
    with torch.no_grad():
        hidden = model.encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        torch.manual_seed(0)
        expected = torch.stack([model.classifier(model.dropout(pooled)) for _ in range(4)]).mean(0)
        single = model.classifier(model.dropout(pooled))
    torch.testing.assert_close(logits.detach(), expected)
    assert not torch.allclose(expected, single)
    # evaluation: no dropout, one pass, the same as a model without extra samples
    model.eval()
    plain = build_model(tiny_model, 3, TrainConfig(dropout=0.5), None)
    plain.load_state_dict(model.state_dict())
    plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**batch)["logits"], plain(**batch)["logits"])
        torch.testing.assert_close(model(**batch)["logits"], model.classifier(pooled))


def test_rdrop_adds_a_non_negative_consistency_term(tiny_model, tmp_path):
    from emitlab.members.transformer.losses import WeightedBCELoss, bernoulli_symmetric_kl
    from emitlab.members.transformer.model import build_model

    model = build_model(tiny_model, 3, TrainConfig(dropout=0.3), None)
    trainer = _trainer(model, tmp_path, rdrop_alpha=2.0)
    batch = _batch(tiny_model)
    labels = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1]], dtype=torch.float32)
    model.train()
    torch.manual_seed(1)
    loss, outputs = trainer.compute_loss(model, {**batch, "labels": labels}, return_outputs=True)
    assert outputs["logits"].shape == (4, 3)
    torch.manual_seed(1)  # the same dropout masks, by hand: one forward over the batch stacked on itself
    a, b = model(**{k: torch.cat([v, v]) for k, v in batch.items()})["logits"].chunk(2)
    bce = WeightedBCELoss()
    task = 0.5 * (bce(a, labels) + bce(b, labels))
    kl = bernoulli_symmetric_kl(a, b)
    assert kl.item() > 0 and not torch.allclose(a, b)
    assert loss.item() == pytest.approx((task + 2.0 * kl).item(), rel=1e-6)
    assert loss.item() > task.item()
    loss.backward()
    assert model.classifier.weight.grad is not None and torch.isfinite(model.classifier.weight.grad).all()
    # evaluation: one pass, the task loss alone
    model.eval()
    with torch.no_grad():
        eval_loss = trainer.compute_loss(model, {**batch, "labels": labels})
        assert eval_loss.item() == pytest.approx(bce(model(**batch)["logits"], labels).item(), rel=1e-6)


# --------------------------------------------------------------------------------------
# Weight average (EMA)


def test_weight_average_by_hand(tmp_path):
    from emitlab.members.transformer.training import WeightAverage

    net = torch.nn.Linear(2, 1)
    net.bias.requires_grad_(False)  # frozen weights are not averaged
    avg = WeightAverage(0.5)
    seen = []
    for value in (1.0, 3.0, 7.0):
        with torch.no_grad():
            net.weight.fill_(value)
        seen.append(value)
        avg.update(net)
    # weights after steps 1..3 weighted 0.25, 0.5, 1 (times 1 - decay), bias-corrected by 1 - 0.5**3
    expected = (0.5 * (0.25 * 1 + 0.5 * 3 + 1 * 7)) / (1 - 0.5 ** 3)
    assert set(avg.shadow) == {"weight"}
    assert avg.average()["weight"].tolist() == [[pytest.approx(expected)] * 2]
    with avg.applied(net):
        assert net.weight.tolist() == [[pytest.approx(expected)] * 2]
    assert net.weight.tolist() == [[7.0, 7.0]]  # the raw weights are back
    avg.save(tmp_path)
    again = WeightAverage(0.5)
    assert again.load(tmp_path) and again.updates == 3
    torch.testing.assert_close(again.average()["weight"], avg.average()["weight"])
    assert not WeightAverage(0.5).load(tmp_path / "nothing")


def test_weight_average_at_the_end_of_training(tmp_path):
    """on_train_end: the last step's average, or (when the Trainer loaded the best checkpoint) the
    average saved in that checkpoint; a best checkpoint without one keeps its raw weights."""
    from types import SimpleNamespace

    from emitlab.members.transformer.training import WeightAverage

    net = torch.nn.Linear(1, 1, bias=False)
    avg = WeightAverage(0.5)
    best = tmp_path / "checkpoint-1"
    best.mkdir()
    with torch.no_grad():
        net.weight.fill_(2.0)
    avg.update(net)
    avg.save(best)  # the best checkpoint's average: 2
    with torch.no_grad():
        net.weight.fill_(8.0)
    avg.update(net)  # the last step's average: (0.25 * 2 + 0.5 * 8) / 0.75 = 6
    state = SimpleNamespace(best_model_checkpoint=str(best), global_step=2)
    avg.on_train_end(SimpleNamespace(load_best_model_at_end=False), state, None, model=net)
    assert net.weight.item() == pytest.approx(6.0) and avg.source == "last step"
    avg.on_train_end(SimpleNamespace(load_best_model_at_end=True), state, None, model=net)
    assert net.weight.item() == pytest.approx(2.0) and avg.source == "checkpoint-1" and avg.updates == 1
    (best / WeightAverage.FILE).unlink()
    with torch.no_grad():
        net.weight.fill_(5.0)
    avg.on_train_end(SimpleNamespace(load_best_model_at_end=True), state, None, model=net)
    assert net.weight.item() == 5.0 and avg.source.startswith("none")


def _small_config(tiny_model, **overrides) -> TrainConfig:
    """A config the tiny BERT learns with in seconds; fp32 on any CPU, so that a Trainer evaluation
    and the kept model's predictions agree exactly (bf16 autocast evaluates in bf16)."""
    values = dict(model=str(tiny_model), max_length=48, batch_size=16, learning_rate=3e-3, head_learning_rate=1e-2,
                  epochs=2, report_to="none", freeze_word_embeddings=False, logging_steps=5, device="cpu", threads=1,
                  early_stopping_patience=0, precision="fp32")
    values.update(overrides)
    return TrainConfig(**values)


def _recorder():
    """A callback keeping the raw trainable weights after every optimizer step."""
    from transformers import TrainerCallback

    class Recorder(TrainerCallback):
        def __init__(self):
            self.steps: list[dict[str, torch.Tensor]] = []

        def on_optimizer_step(self, args, state, control, model=None, **kwargs):
            self.steps.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})

    return Recorder()


def test_member_with_weight_average_keeps_the_average(tiny_model, tmp_path, monkeypatch):
    """Cross-fitting mode (no evaluation): the model ends with the bias-corrected average of the
    weights after every step, recomputed here from the raw weights; it saves and reloads."""
    import emitlab.members.transformer.member as mt

    from synthetic import make_rows

    recorder = _recorder()
    monkeypatch.setattr(mt, "_crash_callback", lambda: recorder)  # the member's test seam for one extra callback
    _, texts, y, _ = make_rows(96, 3, "t")
    decay = 0.8
    member = mt.TransformerMember(_small_config(tiny_model, ema_decay=decay), workdir=tmp_path / "work", seed=5)
    member.fit(texts, y, [f"L{j}" for j in range(y.shape[1])])
    info = member.fit_info["weight_average"]
    assert info == {"decay": decay, "updates": member.fit_info["global_steps"], "source": "last step"}
    assert len(recorder.steps) == info["updates"] > 1
    final = {n: p.detach() for n, p in member.model.named_parameters() if p.requires_grad}
    acc = {n: torch.zeros_like(w) for n, w in recorder.steps[0].items()}
    for weights in recorder.steps:
        acc = {n: decay * acc[n] + (1 - decay) * weights[n] for n in acc}
    for name, s in acc.items():
        torch.testing.assert_close(final[name], s / (1 - decay ** len(recorder.steps)), rtol=1e-5, atol=1e-6)
    last = recorder.steps[-1]
    assert max((final[n] - last[n]).abs().max().item() for n in final) > 1e-4
    # what is saved is the average
    folder = tmp_path / "saved"
    spec = member.save(folder)
    assert spec["config"]["ema_decay"] == decay
    reloaded = mt.TransformerMember.load(folder, spec)
    np.testing.assert_allclose(reloaded.predict_proba(texts[:20]), member.predict_proba(texts[:20]), atol=1e-5)


def test_weight_average_survives_a_resume(tiny_model, tmp_path):
    """Checkpoints carry the average: resuming from the first epoch's checkpoint ends with the
    same weights as the uninterrupted run."""
    import shutil

    import emitlab.members.transformer.member as mt
    from emitlab.members.transformer.training import WeightAverage

    from synthetic import make_rows

    _, texts, y, _ = make_rows(96, 3, "t")
    names = [f"L{j}" for j in range(y.shape[1])]
    cfg = _small_config(tiny_model, ema_decay=0.8, save_total_limit=5)
    whole = mt.TransformerMember(cfg, workdir=tmp_path / "a", seed=5).fit(texts, y, names)
    checkpoints = sorted((tmp_path / "a" / "checkpoints").iterdir(), key=lambda c: int(c.name.split("-")[1]))
    assert len(checkpoints) == 2 and all((c / WeightAverage.FILE).is_file() for c in checkpoints)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "checkpoints" / checkpoints[-1].name)  # "crashed" during the second epoch
    resumed = mt.TransformerMember(cfg, workdir=tmp_path / "b", seed=5, resume=True).fit(texts, y, names)
    assert resumed.fit_info["weight_average"] == whole.fit_info["weight_average"]
    a, b = dict(whole.model.named_parameters()), dict(resumed.model.named_parameters())
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)


def test_weight_average_with_select_on_eval(tiny_model, tmp_path):
    """The 90/10 mode: evaluation scores the average, the best checkpoint's average is what the
    member keeps, and scoring the kept model at 0.5 reproduces the Trainer's best evaluation."""
    from safetensors.torch import load_file

    import emitlab.members.transformer.member as mt
    from emitlab.engine.evaluation import macro_f1
    from emitlab.members.transformer.training import WeightAverage

    from synthetic import make_rows

    _, texts, y, _ = make_rows(200, 4, "s")
    cfg = _small_config(tiny_model, ema_decay=0.7, epochs=4, batch_size=8, save_total_limit=3)
    member = mt.TransformerMember(cfg, workdir=tmp_path / "work", seed=7, eval_texts=texts[160:], eval_labels=y[160:],
                                  select_on_eval=True)
    member.fit(texts[:160], y[:160], [f"L{j}" for j in range(y.shape[1])])
    assert member.fit_info["best_eval_macro_f1_at_0.5"] > 0.3  # it learned: the comparison below means something
    best = member.fit_info["best_checkpoint"]
    assert best and member.fit_info["weight_average"]["source"] == best.rsplit("/", 1)[-1]
    # the kept weights are the best checkpoint's average, not its raw weights
    avg = WeightAverage(0.7)
    assert avg.load(best)
    raw = load_file(f"{best}/model.safetensors")
    params = dict(member.model.named_parameters())
    for name, value in avg.average().items():
        torch.testing.assert_close(params[name].detach(), value)
    assert any(not torch.allclose(raw[n], params[n].detach()) for n in avg.shadow)
    probs = member.predict_proba(texts[160:])
    assert macro_f1(y[160:], (probs >= 0.5).astype(int)) == pytest.approx(member.fit_info["best_eval_macro_f1_at_0.5"],
                                                                          abs=1e-9)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_every_option_with_select_on_the_device(tiny_model, tmp_path, device):
    """All options at once with the Trainer alone (no datasets package) and best-checkpoint
    selection; on CUDA in bf16: the average's copies live on the GPU in float32, the losses stay
    finite, and the model ends with the best checkpoint's average."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, DataCollatorWithPadding, TrainingArguments

    from emitlab.members.transformer.losses import build_loss
    from emitlab.members.transformer.member import MODEL_INPUTS
    from emitlab.members.transformer.model import build_model
    from emitlab.members.transformer.training import EmotionTrainer, WeightAverage

    from synthetic import make_rows

    _, texts, y, _ = make_rows(80, 2, "c")
    tok = AutoTokenizer.from_pretrained(tiny_model)
    rows = [{**{k: v for k, v in tok(t, truncation=True, max_length=48).items() if k in MODEL_INPUTS},
             "labels": [float(v) for v in y[i]]} for i, t in enumerate(texts)]
    cfg = TrainConfig(model=str(tiny_model), loss="asl", multi_sample_dropout=3, rdrop_alpha=1.0, layer_decay=0.8,
                      ema_decay=0.9, freeze_word_embeddings=False)
    torch.manual_seed(0)
    model = build_model(tiny_model, y.shape[1], cfg, y[:64])
    average = WeightAverage(cfg.ema_decay)
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    args = TrainingArguments(output_dir=str(tmp_path / "ck"), per_device_train_batch_size=16, num_train_epochs=3,
                             learning_rate=3e-3, report_to=[], label_names=["labels"], eval_strategy="epoch",
                             save_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="loss",
                             greater_is_better=False, use_cpu=device == "cpu", bf16=bf16, logging_steps=1, seed=3)
    trainer = EmotionTrainer(model=model, args=args, train_dataset=rows[:64], eval_dataset=rows[64:],
                             data_collator=DataCollatorWithPadding(tok), loss_fn=build_loss("asl", y[:64], "sqrt"),
                             head_learning_rate=1e-2, layer_decay=0.8, rdrop_alpha=1.0, weight_average=average)
    trainer.train()
    assert next(model.parameters()).device.type == device
    assert all(s.device.type == device and s.dtype == torch.float32 for s in average.shadow.values())
    assert len({g["initial_lr"] for g in trainer.optimizer.param_groups}) >= 4  # head, embeddings, two layers
    history = trainer.state.log_history
    assert all(np.isfinite(h[k]) for h in history for k in ("loss", "eval_loss") if k in h)
    best = trainer.state.best_model_checkpoint
    assert best and average.source == best.rsplit("/", 1)[-1]
    saved = WeightAverage(cfg.ema_decay)
    assert saved.load(best)
    params = dict(model.named_parameters())
    for name, value in saved.average().items():
        torch.testing.assert_close(params[name].detach().cpu(), value.cpu())
    raw = load_file(f"{best}/model.safetensors")
    assert any(not torch.allclose(raw[n].float(), params[n].detach().cpu().float()) for n in saved.shadow)
    # the best evaluation scored the average: evaluating the final model gives the best eval loss again
    assert trainer.evaluate()["eval_loss"] == pytest.approx(trainer.state.best_metric, rel=1e-4, abs=1e-5)


# --------------------------------------------------------------------------------------
# Everything at once, through the command line


def test_train_with_every_option(tiny_model, emit_folder, tmp_path):
    from emitlab.cli import main

    from conftest import TINY_TRAIN

    out = tmp_path / "run"
    options = ["--layer-decay", "0.8", "--ema-decay", "0.9", "--loss", "asl", "--multi-sample-dropout", "3",
               "--rdrop-alpha", "1.0", "--epochs", "2", "--threads", "1"]
    assert main(["-q", "train", "--data", str(emit_folder), "--model", str(tiny_model), "--out", str(out)]
                + TINY_TRAIN + options) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    training = metrics["members"]["transformer"]["training"][0]
    assert training["weight_average"]["source"].startswith("checkpoint-")
    train = json.loads((out / "config.json").read_text())["train"]
    assert (train["loss"], train["multi_sample_dropout"], train["layer_decay"]) == ("asl", 3, 0.8)
    assert (out / "model" / "emitlab.json").is_file() and (out / "model.zip").is_file()
    history = json.loads((out / "trainer_log.json").read_text())
    assert all(np.isfinite(h["loss"]) for h in history if "loss" in h)


# --------------------------------------------------------------------------------------
# The ablation runner (benchmarks/ablation.py) on the tiny model


def _ablation_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "ablation.py"
    spec = importlib.util.spec_from_file_location("ablation_runner", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ablation_statistics():
    ab = _ablation_module()
    assert ab.line_name("baseline") == ab.line_name("") == "baseline"
    assert ab.line_name("--layer-decay 0.9") == "layer-decay-0.9"
    assert ab.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert ab.mean_std([4.0]) == (4.0, None)
    assert ab.pooled_std([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]) == pytest.approx(((1.0 + 4.0) / 2) ** 0.5)
    assert ab.pooled_std([1.0], [2.0, 3.0]) is None


def test_ablation_runner_dry_run_and_collect(tiny_model, emit_folder, tmp_path, monkeypatch, capsys):
    ab = _ablation_module()
    import record

    monkeypatch.setattr(record, "RESULTS", tmp_path / "results")
    from conftest import TINY_TRAIN

    extra = " ".join(["--model", str(tiny_model), *TINY_TRAIN, "--epochs", "1", "--threads", "1"])
    common = ["--data", str(emit_folder), "--runs-dir", str(tmp_path / "runs"), "--folds", "2", "--extra", extra,
              "--name", "t"]
    two = ["--line", "baseline", "--line=--dropout 0.3", "--seeds", "1", "2"]
    assert ab.main(common + two + ["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 line(s) x 2 seed(s) = 4 runs, 4 to run" in out
    assert "--members transformer --folds 2 --transformer-folds 2 --seed 2 --no-report --out" in out
    assert "dropout-0.3-s1 --dropout 0.3 --model" in out and not (tmp_path / "runs").exists()
    # a line that says nothing of extra data trains on EMit alone, not on the run profiles' extra data
    assert "--threads 1 --extra-data none\n" in out
    assert ab.no_extra_data(["--domain-marker"]) == [] and ab.no_extra_data(["--extra-data=x.csv"]) == []
    # one real run: the metrics are read from where emitlab run writes them
    one = ["--line", "baseline", "--seeds", "1"]
    assert ab.main(common + one) == 0
    result = json.loads((tmp_path / "results" / "t.json").read_text())
    assert {"date", "machine", "versions", "command", "git", "settings"} <= set(result)
    assert result["reference"] == "baseline" and result["failed"] == []
    row = result["lines"]["baseline"]["seeds"]["1"]
    assert all(isinstance(row[k], float) for k in ab.METRICS if k != "ood_proxy_macro_f1"), row
    assert row["ood_proxy_macro_f1"] is None  # no MultiEmotions-It where the tests run: no proxy column
    assert "| baseline | 1 |" in capsys.readouterr().out
    # resumable: nothing left to run; a folder from another plan is refused rather than mixed in
    assert ab.main(common + one + ["--dry-run"]) == 0
    assert "0 to run" in capsys.readouterr().out
    assert ab.main(common + one + ["--collect"]) == 0
    assert ab.main([a if a != "2" else "3" for a in common] + one) == 2
    assert "from another plan" in capsys.readouterr().err
    # the same command, but the run was made when a default (or a profile) said otherwise
    config = tmp_path / "runs" / "baseline-s1" / "config.json"
    saved = json.loads(config.read_text())
    config.write_text(json.dumps({**saved, "train": {**saved["train"], "epochs": 9.0}}))
    assert ab.main(common + one + ["--collect"]) == 2
    assert "made with other settings: train.epochs 9.0 (now 1.0)" in capsys.readouterr().err
    # a setting added since the run was made, at its default, is the same behaviour; not at its default, it is not
    config.write_text(json.dumps({**saved, "data": {k: v for k, v in saved["data"].items() if k != "extra_data_rows"}}))
    assert ab.main(common + one + ["--collect"]) == 0
    assert not ab.added_since(saved, "data", "extra_data_rows", 0)  # present in the run's config: not added
    assert not ab.added_since({"data": {}}, "data", "extra_data_rows", 6550)
    assert ab.added_since({"data": {}}, "data", "extra_data_rows", 0)
    config.write_text(json.dumps(saved))
    # a run made before the profiles' extra data (its command without --extra-data none, the same settings)
    assert saved["command"][-2:] == ["--extra-data", "none"]
    config.write_text(json.dumps({**saved, "command": saved["command"][:-2]}))
    assert ab.main(common + one + ["--collect"]) == 0
    config.write_text(json.dumps({**saved, "command": saved["command"][:-2] + ["--dropout", "0.3"]}))
    assert ab.main(common + one + ["--collect"]) == 2 and "from another plan" in capsys.readouterr().err
    config.write_text(json.dumps(saved))
    # the statistics, on made-up metrics of 2 lines x 3 seeds
    template = json.loads((tmp_path / "runs" / "baseline-s1" / "metrics.json").read_text())
    scores = {"baseline": [0.50, 0.52, 0.54], "loss-asl": [0.60, 0.61, 0.62]}
    for name, values in scores.items():
        for seed, value in zip((1, 2, 3), values):
            m = json.loads(json.dumps(template))
            m["models"]["transformer"]["nested_macro_f1"] = value
            m["members"]["transformer"]["fold_seconds"] = [10.0, 20.0]
            # the asl line trained in bf16 (say, made after auto became bf16 on this CPU): flagged
            m["members"]["transformer"]["training"] = [
                {"precision": "fp32" if name == "baseline" else {"bf16": True}}]
            folder = tmp_path / "made-up" / f"{name}-s{seed}"
            folder.mkdir(parents=True)
            (folder / "metrics.json").write_text(json.dumps(m))
    args = ab.parse_args(common + ["--runs-dir", str(tmp_path / "made-up"), "--line", "baseline",
                                   "--line", "--loss asl", "--seeds", "1", "2", "3"])
    summary = ab.summarise(ab.plan(args))
    base, asl = summary["lines"]["baseline"], summary["lines"]["loss-asl"]
    assert base["mean"]["nested_macro_f1"] == pytest.approx(0.52)
    assert base["std"]["nested_macro_f1"] == pytest.approx(0.02)
    assert asl["std"]["nested_macro_f1"] == pytest.approx(0.01)
    assert asl["delta"]["nested_macro_f1"] == pytest.approx(0.09)
    assert asl["pooled_std"]["nested_macro_f1"] == pytest.approx(((0.02 ** 2 + 0.01 ** 2) / 2) ** 0.5)
    assert asl["beyond_spread"]["nested_macro_f1"] is True
    assert asl["delta"]["train_seconds"] == 0.0 and asl["beyond_spread"]["train_seconds"] is False
    assert "delta" not in base
    assert base["precisions"] == ["fp32"] and asl["precisions"] == ["bf16"] and asl["seeds"]["1"]["precision"] == "bf16"
    assert summary["precision_differs"] == ["loss-asl"]
    table = ab.markdown_table(summary)
    assert "| loss-asl | 3 | 0.6100 ± 0.0100 (+0.0900*) |" in table


def test_ablation_jobs_run_side_by_side_on_a_share_of_the_cores(tmp_path, monkeypatch):
    """--jobs 2: the runs not done go two at a time, each on cores // 2 threads (OMP_NUM_THREADS) with
    its output in <run folder>.log, in plan order; a done run is skipped; failures are named; the
    summary marks such runs as parallel."""
    import os
    import threading
    from pathlib import Path
    from types import SimpleNamespace

    ab = _ablation_module()
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    entries = []
    for seed, status in ((1, "done"), (2, "todo"), (3, "resume"), (4, "todo")):
        folder = tmp_path / f"baseline-s{seed}"
        entries.append({"line": "baseline", "name": "baseline", "seed": seed, "folder": folder, "status": status,
                        "command": ["python", "-m", "emitlab.cli", "run", "--seed", str(seed)]})
    calls, running, most = [], [0], [0]
    lock = threading.Lock()

    def fake_run(command, cwd=None, env=None, stdout=None, stderr=None):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        stdout.write("training...\n")
        threading.Event().wait(0.2)
        with lock:
            running[0] -= 1
            calls.append((command, env["OMP_NUM_THREADS"], Path(stdout.name).name))
        return SimpleNamespace(returncode=1 if "4" in command else 0)

    monkeypatch.setattr(ab.subprocess, "run", fake_run)
    assert ab.run_all(entries, jobs=2) == ["baseline-s4"]
    assert most[0] == 2 and len(calls) == 3
    assert {c[1] for c in calls} == {"2"}
    assert sorted(c[2] for c in calls) == ["baseline-s2.log", "baseline-s3.log", "baseline-s4.log"]
    assert [c[0] for c in calls if c[2] == "baseline-s3.log"][0][-1] == "--resume"
    assert (tmp_path / "baseline-s2.log").read_text() == "training...\n"
    rows = {"nested_macro_f1": 0.5}
    monkeypatch.setattr(ab, "read_run", lambda folder: dict(rows))
    seeds = ab.summarise(entries)["lines"]["baseline"]["seeds"]
    assert seeds["1"]["parallel"] is False and seeds["2"]["parallel"] is True


def test_ablation_pairs_the_proxy_texts_of_a_line_with_its_reference(tmp_path):
    """The proxy delta on the same texts: a zero-shot line scores all of them like the reference, a
    line that trains on the corpus only its held-out rows (folds.json), one with --extra-data-labels
    its held-out rows among those with one of the labels, then the rows it left out of training (or,
    made before the proxy kept them, neither those nor the gold of the labels it masked: scored
    again on the reference's gold); gold labels that do not match give no pair."""
    from sklearn.metrics import f1_score

    ab = _ablation_module()
    names = ["Anger", "Fear", "Joy"]
    rng = np.random.default_rng(0)
    gold = (rng.random((40, 3)) < 0.4).astype(np.int64)
    probs = rng.random((40, 3))

    def run(name, mode, y, p, score=0.0, extra_labels=(), fold_of_row=None, decoder_threshold=0.5):
        folder = tmp_path / name
        folder.mkdir()
        metrics = {"label_names": names, "ood_proxy": {"mode": mode},
                   "models": {"transformer": {"ood_proxy": {"macro_f1": score}, "calibration": {"decoder": {
                       "label_names": names, "thresholds": [decoder_threshold] * 3, "at_least_one": False,
                       "neutral_exclusive": False}}}}}
        (folder / "metrics.json").write_text(json.dumps(metrics))
        (folder / "config.json").write_text(json.dumps({"data": {"extra_data_labels": list(extra_labels)}}))
        if fold_of_row is not None:
            (folder / "folds.json").write_text(json.dumps({"default": {"extra": {"fold_of_row": fold_of_row}}}))
        np.savez(folder / "predictions.npz", y_ood_proxy=y, transformer_ood_proxy=p)
        return folder

    def ref_on(rows, threshold=0.3, p=probs):
        return f1_score(gold[rows], (p[rows] >= threshold).astype(int), average="macro", zero_division=0)

    ref = run("baseline-s1", "zero-shot", gold, probs, decoder_threshold=0.3)
    zero_shot = run("xed-s1", "zero-shot", gold, probs, score=0.4)
    held_out = np.zeros(40, dtype=int) - 1
    held_out[[3, 7, 11, 20, 33]] = 0
    run_probs = rng.random((40, 3))
    trained = run("mei-s1", "out-of-fold", gold[[3, 7, 11, 20, 33]], run_probs[:5], score=0.6,
                  fold_of_row=held_out.tolist())
    kept = np.flatnonzero(gold[:, [0, 2]].any(1))  # --extra-data-labels Anger Joy: rows with Fear alone left
    left = np.setdiff1d(np.arange(40), kept)
    assert 0 < len(kept) < 40
    folds = np.zeros(len(kept), dtype=int) - 1
    folds[::4] = 0
    masked_rows = np.concatenate([kept[::4], left])
    masked = run("masked-s1", "out-of-fold", gold[masked_rows], run_probs[: len(masked_rows)], score=0.5,
                 extra_labels=["Anger", "Joy"], fold_of_row=folds.tolist())
    zeroed = gold[kept[::4]].copy()
    zeroed[:, 1] = 0  # Fear's gold zeroed, the rows left out not scored: the proxy before it kept them
    assert gold[kept[::4], 1].any()
    before = run("before-s1", "out-of-fold", zeroed, run_probs[: len(kept[::4])], score=0.5,
                 extra_labels=["Anger", "Joy"], fold_of_row=folds.tolist())
    wrong = run("wrong-s1", "out-of-fold", 1 - gold[[3, 7, 11, 20, 33]], probs[:5], fold_of_row=held_out.tolist())

    assert ab.proxy_rows(zero_shot, gold).tolist() == list(range(40))
    assert ab.proxy_rows(trained, gold).tolist() == [3, 7, 11, 20, 33]
    assert ab.proxy_rows(masked, gold).tolist() == masked_rows.tolist()
    assert ab.proxy_rows(before, gold).tolist() == kept[::4].tolist()
    assert ab.proxy_rows(wrong, gold) is None
    assert ab.proxy_rows(tmp_path / "missing", gold) is None
    pair = ab.paired_proxy(trained, ref)
    assert pair["n"] == 5
    rows5 = [3, 7, 11, 20, 33]
    # the run's own probabilities and decoder (0.5) against the reference's gold
    assert pair["macro_f1"] == pytest.approx(f1_score(gold[rows5], (run_probs[:5] >= 0.5).astype(int),
                                                      average="macro", zero_division=0))
    assert pair["reference_macro_f1"] == pytest.approx(ref_on(rows5))  # the reference's own decoder
    assert pair["delta"] == pytest.approx(pair["macro_f1"] - ref_on(rows5))
    assert ab.paired_proxy(zero_shot, ref)["reference_macro_f1"] == pytest.approx(ref_on(np.arange(40)))
    assert ab.paired_proxy(masked, ref)["reference_macro_f1"] == pytest.approx(ref_on(masked_rows))
    old = ab.paired_proxy(before, ref)
    assert old["n"] == len(kept[::4]) and old["macro_f1"] == pytest.approx(f1_score(
        gold[kept[::4]], (run_probs[: len(kept[::4])] >= 0.5).astype(int), average="macro", zero_division=0))
    assert ab.paired_proxy(wrong, ref) is None
    # in the summary and its table: the deltas over the seeds paired
    entries = [{"line": line, "name": ab.line_name(line), "seed": 1, "folder": folder}
               for line, folder in (("baseline", ref), ("--extra-data mei", trained), ("--loss wrong", wrong))]
    summary = ab.summarise(entries)
    mei = summary["lines"]["extra-data-mei"]["ood_proxy_paired"]
    assert mei["delta_mean"] == pytest.approx(pair["delta"]) and mei["delta_std"] is None
    assert list(mei["seeds"]) == ["1"]
    assert summary["lines"]["loss-wrong"]["ood_proxy_paired"]["seeds"] == {}
    table = ab.markdown_table(summary)
    assert "OOD proxy, paired delta" in table.splitlines()[0]
    assert f"| {pair['delta']:+.4f} (1) |" in table


def test_ablation_previous_record_stands_in_for_runs_that_are_gone(tmp_path, monkeypatch, capsys):
    """--previous RECORD: a (line, seed) the record holds and whose folder is gone is not run again and
    its row (and paired proxy delta) comes from the record, marked with where it was recorded; a seed
    the record lacks is run; a record made with other folds is refused."""
    ab = _ablation_module()
    (tmp_path / "emit").mkdir()
    common = ["--data", str(tmp_path / "emit"), "--runs-dir", str(tmp_path / "runs"), "--folds", "1", "--name", "t"]
    lines = ["--line", "baseline", "--line", "--oversample-rare 3", "--seeds", "1", "2"]
    args = ab.parse_args(common + lines)

    def row(value):
        return {"nested_macro_f1": value, "train_seconds": 100.0, "precision": "fp32", "run": "gone"}

    record = {"date": "2026-12-06T14:31:50+00:00", "git": {"commit": "abc123", "dirty": False},
              "settings": {"folds": 1, "task": "A", "data": args.data, "extra": []},
              "lines": {"baseline": {"flags": [], "seeds": {"1": row(0.50), "2": row(0.54)}},
                        "oversample-rare-3": {"flags": ["--oversample-rare", "3"], "seeds": {"1": row(0.60)},
                                              "ood_proxy_paired": {"seeds": {"1": {"n": 9, "delta": 0.1}}}}}}
    previous = tmp_path / "previous.json"
    previous.write_text(json.dumps(record))
    # seed 2 of the oversampling line is not in the record: it is the one run left
    assert ab.main(common + lines + ["--previous", str(previous), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 runs, 1 to run" in out and out.count("[recorded]") == 3
    args.previous = previous
    entries = ab.plan(args)
    assert [e["status"] for e in entries] == ["recorded", "recorded", "recorded", "todo"]
    ran = []
    monkeypatch.setattr(ab, "run_one", lambda e, threads=None: ran.append((e["name"], e["seed"])) or True)
    assert ab.run_all(entries) == [] and ran == [("oversample-rare-3", 2)]
    # once it is done, the table gathers the recorded seeds and the new one
    folder = tmp_path / "runs" / "oversample-rare-3-s2"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text("{}")
    monkeypatch.setattr(ab, "read_run", lambda f: {**row(0.62), "run": str(f)})
    summary = ab.summarise(ab.plan(args))
    line = summary["lines"]["oversample-rare-3"]
    assert line["n"] == 2 and line["mean"]["nested_macro_f1"] == pytest.approx(0.61)
    assert line["seeds"]["1"]["recorded_in"] == {"record": ab.shown(previous), "date": record["date"],
                                                 "commit": "abc123"}
    assert "recorded_in" not in line["seeds"]["2"]
    # carried again by a later record, a row keeps the record it was first made for
    later = {**ab.read_previous(previous, args), "date": "later"}
    later["lines"]["oversample-rare-3"]["seeds"]["1"]["recorded_in"] = {"date": "first"}
    assert ab.recorded(later, "--oversample-rare 3", 1)["row"]["recorded_in"] == {"date": "first"}
    assert ab.recorded(later, "baseline", 1)["row"]["recorded_in"]["date"] == "later"
    assert line["delta"]["nested_macro_f1"] == pytest.approx(0.61 - 0.52)
    assert line["ood_proxy_paired"]["seeds"] == {"1": {"n": 9, "delta": 0.1}}  # seed 2's reference is gone
    # a record of another plan does not stand in
    previous.write_text(json.dumps({**record, "settings": {**record["settings"], "folds": 3}}))
    with pytest.raises(SystemExit, match="other settings: folds 3 \\(here 1\\)"):
        ab.plan(args)


def test_num_layers_keeps_the_lower_pretrained_layers(tiny_model):
    from transformers import AutoModel

    from emitlab.members.transformer.model import build_model

    full = AutoModel.from_pretrained(tiny_model)
    cut = build_model(tiny_model, 3, _small_config(tiny_model, num_layers=1), None)
    assert len(cut.encoder.encoder.layer) == 1 and cut.encoder.config.num_hidden_layers == 1
    for (name, mine), (_, theirs) in zip(cut.encoder.encoder.layer[0].state_dict().items(),
                                         full.encoder.layer[0].state_dict().items()):
        assert torch.equal(mine, theirs), name
    with pytest.raises(SettingsError, match="only 2 layers"):
        build_model(tiny_model, 3, _small_config(tiny_model, num_layers=3), None)
