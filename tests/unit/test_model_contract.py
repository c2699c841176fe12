"""The model-family contract, run against every family in the registry: fit on a tiny training
set, score, log to MLflow and load back by URI alone, and refuse a model trained on other
feature definitions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feature_store.definitions import feature_spec, model_features
from models.base import FeatureMismatch, ModelFamily, TrainingSet, TrainReport, check_features
from models.registry import FAMILIES, UnknownFamily, build, family_class, load_ranker


def tiny_rows(n_requests: int, seed: int) -> pd.DataFrame:
    """Requests of 8 rows whose label follows two features (so a ranker can learn it), each
    request's user with a history (``seq``) of items."""
    rng = np.random.default_rng(seed)
    n = n_requests * 8
    feats = {name: rng.random(n).astype("float32") for name in model_features()}
    signal = feats["i_ctr_7d"] + 0.5 * feats["uc_click_share_7d"]
    label = np.digitize(signal + rng.normal(0, 0.1, n), [0.6, 0.9, 1.2]).astype("int8")
    users = np.repeat(rng.integers(0, 50, n_requests), 8)
    history = {u: list(rng.integers(0, 80, rng.integers(0, 12))) for u in np.unique(users)}
    return pd.DataFrame({
        "request_id": np.repeat(np.arange(n_requests), 8), "user_id": users,
        "item_id": rng.integers(0, 80, n), "label": label, "is_negative": False,
        "seq": [history[u] for u in users], **feats})


@pytest.fixture(scope="module")
def encoder_checkpoint(tmp_path_factory) -> Path:
    """A (barely) pre-trained sequence encoder over the tiny rows' items."""
    from models.sequence import EncoderConfig, pretrain

    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 80, rng.integers(2, 15)) for _ in range(200)]
    ck = pretrain(seqs, EncoderConfig(dim=16, layers=1, max_len=12), epochs=2, seed=0)
    return ck.save(tmp_path_factory.mktemp("encoder") / "encoder.pt")


@pytest.fixture
def data(tmp_path: Path, encoder_checkpoint: Path) -> TrainingSet:
    paths = []
    for part, (n, seed) in {"train": (300, 1), "valid": (60, 2)}.items():
        path = tmp_path / part / "part-0.parquet"
        path.parent.mkdir()
        tiny_rows(n, seed).to_parquet(path)
        paths.append((path.parent,))
    return TrainingSet(*paths, pretrained=encoder_checkpoint, checkpoint_dir=tmp_path / "ckpt")


@pytest.fixture
def tracking(tmp_path: Path):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = mlflow.create_experiment("contract", artifact_location=str(tmp_path / "artifacts"))
    yield exp
    mlflow.set_tracking_uri("")


@pytest.fixture(params=sorted(FAMILIES))
def family(request) -> str:
    return request.param


def test_fit_scores_and_reports(family, settings, data):
    model = build(family, settings)
    assert isinstance(model, ModelFamily) and model.name == family
    report = model.fit(data)
    assert isinstance(report, TrainReport) and report.step and report.params
    assert report.curves and all(len(c) > 0 for c in report.curves.values())
    assert model.features == feature_spec()
    test = tiny_rows(30, 3)
    scores = model.score(test)
    assert scores.shape == (len(test),) and np.isfinite(scores).all()
    # it learned the planted signal: better than chance at ordering labels
    assert np.corrcoef(scores, test["label"])[0, 1] > 0.3


def test_log_and_load_by_uri(family, settings, data, tracking):
    import mlflow

    model = build(family, settings)
    model.fit(data)
    test = tiny_rows(10, 4)
    with mlflow.start_run(experiment_id=tracking):
        info = model.log_model(test.head(20), registered_model_name="contract-ranker")
    assert info.metadata == {"family": family, "features": feature_spec()}
    assert info.signature is not None
    loaded = load_ranker(f"models:/contract-ranker/{info.registered_model_version}", threads=1)
    assert type(loaded) is family_class(family)
    np.testing.assert_allclose(loaded.score(test), model.score(test), rtol=1e-5)


def test_load_refuses_other_feature_definitions(family, settings, data, tracking):
    import mlflow

    model = build(family, settings)
    model.fit(data)
    model.features = {**feature_spec(), "i_ctr_7d": 0}  # trained on an older i_ctr_7d
    model.features.pop("u_age_band")
    model.features["retired_feature"] = 1
    with mlflow.start_run(experiment_id=tracking):
        info = model.log_model(tiny_rows(3, 5))
    with pytest.raises(FeatureMismatch) as exc:
        load_ranker(info.model_uri)
    msg = str(exc.value)
    for needle in ("i_ctr_7d is v1 now, the model has v0", "u_age_band (v1) is new",
                   "retired_feature (v1) no longer exists", "rankline run-dag train"):
        assert needle in msg


def test_check_features_passes_equal_specs():
    check_features(feature_spec(), feature_spec(), "m")


def test_unknown_family_names_the_known_ones(settings):
    with pytest.raises(UnknownFamily, match="known: .*xgboost"):
        build("lightgbm", settings)


def test_dropped_features_are_unseen_in_training_and_after_loading(family, settings, data,
                                                                   tracking):
    """RANKLINE_DROP_FEATURES: the planted signal's main feature, dropped, changes no score
    whatever its values, in the fitted model and in the one loaded back."""
    import mlflow

    model = build(family, settings, drop_features=("i_ctr_7d",))
    model.fit(data)
    test = tiny_rows(30, 3)
    noisy = test.assign(i_ctr_7d=np.random.default_rng(9).random(len(test)) * 100)
    np.testing.assert_allclose(model.score(noisy), model.score(test), rtol=1e-6)
    assert np.std(model.score(test)) > 0  # it still ranks, on the other features
    with mlflow.start_run(experiment_id=tracking):
        info = model.log_model(test.head(20), registered_model_name="contract-dropped")
    loaded = load_ranker(f"models:/contract-dropped/{info.registered_model_version}", threads=1)
    np.testing.assert_allclose(loaded.score(noisy), model.score(test), rtol=1e-5)
    with pytest.raises(ValueError, match="RANKLINE_DROP_FEATURES"):
        build(family, settings, drop_features=("no_such_feature",))
