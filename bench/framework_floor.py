"""The framework floor for bench_serving.py: FastAPI taking /predict's request and answering in /predict's shape,
with no model, batching, metrics or access log. What it answers a second on one core bounds any FastAPI server.

    uvicorn framework_floor:app --app-dir bench   (from a folder with params.yaml)
"""

import uuid
from pathlib import Path

from fastapi import FastAPI

from mlops.config import load_params
from mlops.serving.app import Prediction, PredictResponse, predict_request_model

PredictRequest = predict_request_model(load_params(Path("params.yaml")).serving)
app = FastAPI()


@app.post("/predict", response_model=PredictResponse)
async def predict(body: PredictRequest) -> PredictResponse:  # type: ignore[valid-type]
    predictions = [Prediction(label="fresh", score=1.0) for _ in body.inputs]
    return PredictResponse(request_id=uuid.uuid4().hex, variant="champion", version="1", predictions=predictions)


@app.get("/readyz")
async def readyz() -> dict[str, str]:
    return {"status": "ready"}
