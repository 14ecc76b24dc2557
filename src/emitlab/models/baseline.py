"""TF-IDF (word + character n-grams) with one-vs-rest balanced logistic regression."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.feature_extraction.text import TfidfVectorizer

from ..settings import BaselineConfig


class TfidfBaseline:
    """Word + char TF-IDF features, one balanced logistic regression per label."""

    def __init__(self, config: BaselineConfig | None = None):
        self.config = config or BaselineConfig()
        c = self.config
        features = FeatureUnion(
            [
                ("word", TfidfVectorizer(analyzer="word", ngram_range=(1, c.word_ngram_max), min_df=c.min_df,
                                         max_features=c.max_features, sublinear_tf=True, lowercase=True)),
                ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(c.char_ngram_min, c.char_ngram_max),
                                         min_df=c.min_df, max_features=c.max_features, sublinear_tf=True,
                                         lowercase=True)),
            ]
        )
        clf = OneVsRestClassifier(
            LogisticRegression(C=c.C, class_weight=None if c.class_weight == "none" else c.class_weight,
                               max_iter=2000, solver="liblinear"),
            n_jobs=1,
        )
        self.pipeline = Pipeline([("tfidf", features), ("clf", clf)])

    def fit(self, texts: Sequence[str], labels: np.ndarray) -> "TfidfBaseline":
        self.pipeline.fit(list(texts), np.asarray(labels))
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.pipeline.predict_proba(list(texts)), dtype=np.float64)

    def save(self, path: Path) -> None:
        joblib.dump({"config": asdict(self.config), "pipeline": self.pipeline}, path)

    @classmethod
    def load(cls, path: Path) -> "TfidfBaseline":
        state = joblib.load(path)
        obj = cls(BaselineConfig(**state["config"]))
        obj.pipeline = state["pipeline"]
        return obj
