"""The MLflow pyfunc flavour of the classifier: a DataFrame of texts in, label and score out.

MLflow logs this file as "model from code" (no pickling); the package travels with it.
"""

from __future__ import annotations

import mlflow.models
import mlflow.pyfunc
import pandas as pd

TEXT_COLUMN = "text"


class SentimentModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from mlops.ml.model import TextClassifier

        self.classifier = TextClassifier(context.artifacts["model"])

    def predict(self, model_input, params=None):
        texts = model_input[TEXT_COLUMN].astype(str).tolist()
        probabilities = self.classifier.predict_proba(texts)
        best = probabilities.argmax(axis=1)
        return pd.DataFrame(
            {
                "label": [self.classifier.labels[index] for index in best],
                "score": probabilities.max(axis=1).astype(float),
            }
        )


mlflow.models.set_model(SentimentModel())
