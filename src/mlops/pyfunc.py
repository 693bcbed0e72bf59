"""The MLflow pyfunc flavour of any `mlops.contract.Classifier`: a DataFrame of texts in, label and score out.

MLflow logs this file as "model from code" (no pickling); the package travels with it.
"""

from __future__ import annotations

import mlflow.models
import mlflow.pyfunc
import pandas as pd

from mlops.contract import Classifier

TEXT_COLUMN = "text"


class ClassifierModel(mlflow.pyfunc.PythonModel):
    classifier: Classifier

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from mlops.ml.model import load_classifier

        self.classifier = load_classifier(context.artifacts["model"])

    def predict(self, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        texts = model_input[TEXT_COLUMN].astype(str).tolist()
        probabilities = self.classifier.predict_proba(texts)
        best = probabilities.argmax(axis=1)
        return pd.DataFrame(
            {
                "label": [self.classifier.labels[index] for index in best],
                "score": probabilities.max(axis=1).astype(float),
            }
        )


mlflow.models.set_model(ClassifierModel())
