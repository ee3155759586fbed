"""A registered version as an MLflow pyfunc: raw track columns in, genres and probabilities out.

Why a pyfunc. An MLflow user expects ``mlflow.pyfunc.load_model`` /
``mlflow.pyfunc.spark_udf`` / ``mlflow models predict`` on
``models:/genre-cnn@champion`` to take a track's raw fields and return its
genre. A bare network cannot: it reads the *transformed* input vector, so the
fitted feature transform and the genre names have to travel with it. Here
they travel as the model's artifacts, which every loader reads, this
project's :func:`~genre_spark.model.registry.load_model` (``genre score``)
included, so there is one source of truth for how a version scores.

Artifacts (what :func:`log_pyfunc` writes, :func:`read_classifier` reads):

- ``weights.pt``: the network's ``state_dict`` (read back with
  ``weights_only=True``: tensors, no pickled code);
- ``classifier.json``: the network's constructor arguments, the genre names
  (label index = position) and the fitted transform (``FeatureTransform.to_dict``);
- the model's code (``MODEL_CODE``), three lines naming :class:`GenrePyfunc`.

Loading needs the installed ``genre_spark`` package (the network class and
the transform's numpy application) and MLflow; not the lake, not Spark.

Signature. Inputs: the raw feature columns the transform reads, by their
canonical names. Integer-valued canonical fields (key, mode, year,
popularity) are declared ``Any``: they arrive as int64 from a CSV, int32 from
Spark, or float64 with NaN once one is missing (pandas' only null integer),
and MLflow casts none of these three to a single declared type (it refuses
int64 -> double and NaN -> long); the transform reads every column as a
number either way. Outputs: ``predicted_genre`` and one
``probability_<genre>`` column per genre, i.e. gold.scored's
``predicted_genre`` and its ``probabilities`` map spread into columns (the
same label tie rule: ``torch.argmax``'s, the lower label index).

Example::

    import mlflow
    model = mlflow.pyfunc.load_model("models:/genre-cnn@champion")
    model.predict(tracks[["tempo", "energy", ...]])  # predicted_genre, probability_<genre>...
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.pyfunc.model import PythonModel, PythonModelContext
from pyspark.sql import types as T

from genre_spark.features.transform import FeatureTransform
from genre_spark.model.cnn import GenreCNN, architecture
from genre_spark.schema import FIELD_BY_NAME

PREDICTED = "predicted_genre"
PROBABILITY_PREFIX = "probability_"
WEIGHTS = "weights"
SPEC = "classifier"
#: The loader module an MLmodel file names for a pyfunc logged from code (as here).
PYTHON_MODEL_LOADER = "mlflow.pyfunc.loaders.code_model"
#: The model's code, logged "from code" (MLflow's models-from-code): it names the class
#: to build, so loading unpickles nothing (the weights are plain tensors too).
MODEL_CODE = """from mlflow.models import set_model

from genre_spark.model.pyfunc import GenrePyfunc

set_model(GenrePyfunc())
"""


def probability_column(genre: str) -> str:
    """The output column holding ``genre``'s probability."""
    return PROBABILITY_PREFIX + genre


def class_probabilities(network: torch.nn.Module, inputs: np.ndarray) -> np.ndarray:
    """Softmax of the network on transformed inputs ``[n, outputs]`` -> float64 ``[n, genres]``.

    The one forward pass every scorer runs (``genre score``'s workers and the
    pyfunc), so both give the same numbers for the same inputs.
    """
    x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
    with torch.inference_mode():
        return torch.softmax(network(x), dim=1).double().numpy()


def ranking(probabilities: np.ndarray) -> np.ndarray:
    """Label indices by falling probability; equal ones in label order (``torch.argmax``'s rule)."""
    return np.argsort(-probabilities, axis=1, kind="stable").astype(np.int32)


@dataclass(frozen=True)
class GenreClassifier:
    """The network with what it needs to read raw tracks: its transform and its genre names."""

    network: GenreCNN
    genres: tuple[str, ...]
    transform: FeatureTransform

    def predict(self, tracks: pd.DataFrame | Mapping[str, Any]) -> pd.DataFrame:
        """Raw feature columns -> ``predicted_genre`` and one probability column per genre.

        The result keeps a pandas input's index, so it joins back onto the tracks.
        """
        probabilities = class_probabilities(self.network, self.transform.apply(tracks))
        predicted = np.asarray(self.genres, dtype=object)[ranking(probabilities)[:, 0]]
        columns = {probability_column(g): probabilities[:, i] for i, g in enumerate(self.genres)}
        return pd.DataFrame({PREDICTED: predicted, **columns}, index=getattr(tracks, "index", None))


class GenrePyfunc(PythonModel):
    """The MLflow face of :class:`GenreClassifier`: built from the model's artifacts on load."""

    def load_context(self, context: PythonModelContext) -> None:
        self.classifier = read_classifier(context.artifacts)

    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        return self.classifier.predict(model_input)


def read_classifier(artifacts: Mapping[str, str]) -> GenreClassifier:
    """The classifier from its artifact files (``{WEIGHTS: path, SPEC: path}``)."""
    spec = json.loads(Path(artifacts[SPEC]).read_text())
    network = GenreCNN(**spec["architecture"])
    network.load_state_dict(torch.load(artifacts[WEIGHTS], map_location="cpu", weights_only=True))
    return GenreClassifier(
        network.eval(), tuple(spec["genres"]), FeatureTransform.from_dict(spec["transform"])
    )


def _integer(feature: str) -> bool:
    """An integer-valued canonical field (key, mode, year, popularity)."""
    field = FIELD_BY_NAME.get(feature)
    return field is not None and isinstance(field.dtype, T.IntegralType)


def _input_type(feature: str) -> Any:
    from mlflow.types import DataType
    from mlflow.types.schema import AnyType

    return AnyType() if _integer(feature) else DataType.double


def signature(transform: FeatureTransform, genres: Sequence[str]) -> Any:
    """Raw feature columns in; ``predicted_genre`` and per-genre probabilities out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema, TensorSpec

    columns: list[ColSpec | TensorSpec] = [ColSpec(_input_type(n), n) for n in transform.names]
    inputs = Schema(columns)
    returned: list[ColSpec | TensorSpec] = [ColSpec(DataType.string, PREDICTED)]
    returned += [ColSpec(DataType.double, probability_column(g)) for g in genres]
    outputs = Schema(returned)
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example(transform: FeatureTransform) -> pd.DataFrame:
    """One typical track: every feature at its train fill value (integer fields as integers)."""
    row: dict[str, Any] = {}
    for fitted in transform.features:
        row[fitted.name] = round(fitted.fill) if _integer(fitted.name) else fitted.fill
    return pd.DataFrame([row])


def requirements() -> list[str]:
    """What loading needs: this package (the network class, the transform) and its torch.

    The package is pinned to the installed version; run from a source tree
    that was never installed, it has no version to pin.
    """
    try:
        package = f"genre-spark=={package_metadata.version('genre-spark')}"
    except package_metadata.PackageNotFoundError:
        package = "genre-spark"
    return [package, f"torch=={torch.__version__.split('+')[0]}"]


def log_pyfunc(
    network: GenreCNN,
    *,
    name: str,
    genres: Sequence[str],
    transform: FeatureTransform,
    metadata: dict[str, Any],
) -> Any:
    """Log ``network`` with its transform and genres as a pyfunc into the active run; its ModelInfo."""
    with tempfile.TemporaryDirectory(prefix="genre-pyfunc-") as tmp:
        weights, spec = Path(tmp, "weights.pt"), Path(tmp, "classifier.json")
        torch.save(network.to("cpu").state_dict(), weights)
        spec.write_text(
            json.dumps(
                {
                    "architecture": architecture(network),
                    "genres": list(genres),
                    "transform": transform.to_dict(),
                },
                indent=1,
            )
        )
        code = Path(tmp, "genre_pyfunc.py")
        code.write_text(MODEL_CODE)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(code),
            artifacts={WEIGHTS: str(weights), SPEC: str(spec)},
            signature=signature(transform, genres),
            input_example=input_example(transform),
            metadata=metadata,
            pip_requirements=requirements(),
        )
