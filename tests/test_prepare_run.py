"""The prepare stage end to end on a small lake: tables, references, idempotence, README SQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from prepare_helpers import silver_frame, silver_pandas
from pyspark.sql import SparkSession
from typer.testing import CliRunner

from genre_spark import stages
from genre_spark.cli import app
from genre_spark.config import Settings, load_settings
from genre_spark.features.spark import FeatureNotFittedError, read_transform
from genre_spark.lake import Lake
from genre_spark.lake.catalog import (
    GOLD_FEATURES,
    GOLD_GENRE_BASELINES,
    GOLD_GENRE_MATCHES,
    GOLD_GENRE_PLAYLISTS,
    GOLD_NORMALIZER,
    GOLD_OUTLIER_PARAMS,
    GOLD_PREPARE_MANIFEST,
    GOLD_TRENDS_BY_YEAR,
    SILVER_TRACKS,
)
from genre_spark.prepare import run as prepare_run
from genre_spark.prepare.manifest import IncompletePrepareError, require_complete
from genre_spark.prepare.run import PrepareSummary, run
from genre_spark.prepare.split import assign_split
from genre_spark.schema import FEATURES, MODEL_FEATURE_NAMES

#: README examples (pasted there verbatim).
TOP_ROCK_AUDIENCE = """
SELECT rank, title, artist, label, round(match, 3) AS match
FROM gold.genre_playlists
WHERE genre = 'rock'
ORDER BY rank
LIMIT 20
"""
POP_ENERGY_BY_DECADE = """
SELECT floor(year / 10) * 10 AS decade, round(avg(energy), 3) AS mean_energy, count(*) AS tracks
FROM silver.tracks
WHERE genre = 'pop' AND year IS NOT NULL
GROUP BY 1
ORDER BY decade
"""

SETTINGS = {"prepare.playlist_size": 10, "prepare.scaler": "standard"}
PLANTED_POP_SOUNDING_JAZZ = "planted-jazz-like-pop"
PLANTED_EXTREMES = ("planted-extreme-1", "planted-extreme-2")


@dataclass
class Prepared:
    settings: Settings
    lake: Lake
    silver: pd.DataFrame
    summary: PrepareSummary


def _silver() -> pd.DataFrame:
    pdf = silver_pandas(n_per_genre=100, seed=11)
    pdf.loc[pdf.index % 10 == 0, "instrumentalness"] = np.nan
    pdf["year"] = pd.array(pdf["year"], dtype="Int32")
    pdf.loc[pdf.index % 25 == 0, "year"] = pd.NA
    pop = pdf.loc[pdf.genre == "pop"]
    pop_center = pop[list(FEATURES)].mean()
    planted = pdf.iloc[[0, 1, 2]].copy()
    planted["track_id"] = [PLANTED_POP_SOUNDING_JAZZ, *PLANTED_EXTREMES]
    planted["genre"] = ["jazz", "rock", "metal"]
    # Typical of pop in every continuous feature the genre match reads, year and popularity too.
    planted.loc[planted.index[0], ["year", "popularity"]] = [
        round(pop["year"].mean()),
        round(pop["popularity"].mean()),
    ]
    planted.loc[:, list(FEATURES)] = [
        pop_center.to_numpy(),
        [290.0, 0.99, 0.01, -75.0, 0.99, 0.01, 7_000_000.0, 0.99, 0.99, 0.99],
        [5.0, 0.01, 0.99, 5.0, 0.01, 0.99, 2_000.0, 0.01, 0.01, 0.01],
    ]
    return pd.concat([pdf, planted], ignore_index=True)


@pytest.fixture(scope="module")
def prepared(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prepared]:
    root = tmp_path_factory.mktemp("prepare")
    # Standard scaling: the planted tracks are typical (pop's mean) or extreme in raw units,
    # which a linear scaling keeps; the quantile map's warp is covered by tests/test_transform.py.
    settings = load_settings(overrides={**SETTINGS, "lake": str(root / "lake")}, environ={})
    lake = Lake(spark, settings.lake, settings.engine)
    silver = _silver()
    lake.write(silver_frame(spark, silver), SILVER_TRACKS)
    yield Prepared(settings, lake, silver, run(lake, settings))


def test_gold_features_are_the_train_scaled_vectors_with_split_and_flags(
    spark: SparkSession, prepared: Prepared
) -> None:
    lake, silver, summary = prepared.lake, prepared.silver, prepared.summary
    gold = lake.read(GOLD_FEATURES).toPandas().set_index("track_id").sort_index()
    splits = (
        assign_split(silver_frame(spark, silver), prepared.settings.prepare.split)
        .select("track_id", "split")
        .toPandas()
    )
    expected = silver.merge(splits, on="track_id").set_index("track_id").sort_index()
    transform = read_transform(lake.read(GOLD_NORMALIZER))
    vectors = transform.apply(expected)  # the numpy application (tests/test_transform.py)

    assert list(lake.read(GOLD_FEATURES).columns) == [
        *("track_id", "genre", "split", "features", "is_outlier", "is_core", "year", "popularity")
    ]
    assert gold.index.equals(expected.index)  # every track, the ones missing a value included
    assert (gold[["genre", "split"]] == expected[["genre", "split"]]).all().all()
    np.testing.assert_allclose(np.stack(gold["features"]), vectors, rtol=1e-9, atol=1e-9)
    assert gold["year"].astype("Int32").equals(expected["year"])
    assert (gold["popularity"] == expected["popularity"]).all()
    assert gold.loc[list(PLANTED_EXTREMES), "is_outlier"].all()
    assert int(gold["is_outlier"].sum()) == summary.n_outliers
    assert not (gold["is_outlier"] & gold["is_core"]).any()
    assert len(lake.files(GOLD_FEATURES)) == max(4, prepared.settings.spark.shuffle_partitions)

    assert summary.tracks == len(silver)
    assert summary.splits == expected["split"].value_counts().to_dict()
    assert summary.imputed["instrumentalness"] == silver["instrumentalness"].isna().sum() > 0
    assert summary.tracks_without_year == silver["year"].isna().sum() > 0
    params = lake.read(GOLD_OUTLIER_PARAMS).toPandas()
    assert params.loc[0, "eps"] == pytest.approx(summary.eps)
    assert params.loc[
        0, ["min_samples", "n_points", "n_outliers", "metric", "version"]
    ].tolist() == [
        summary.min_samples,
        len(silver),
        summary.n_outliers,
        "euclidean",
        summary.silver_version,
    ]
    assert list(params.loc[0, "features"]) == [*FEATURES, "popularity", "year"]  # continuous
    normalizer = lake.read(GOLD_NORMALIZER).toPandas().sort_values("position")
    assert normalizer["feature"].tolist() == list(MODEL_FEATURE_NAMES) == summary.features
    assert set(normalizer["version"]) == {summary.silver_version}
    assert summary.indicators == ["instrumentalness", "year"]  # the features with gaps in train
    assert summary.inputs == len(transform.outputs) == len(MODEL_FEATURE_NAMES) + 1 + 2


def test_matches_playlists_baselines_and_trends_cover_the_catalog(prepared: Prepared) -> None:
    lake, silver, summary = prepared.lake, prepared.silver, prepared.summary
    genres = sorted(silver["genre"].unique())
    matches = lake.read(GOLD_GENRE_MATCHES).toPandas()
    per_track = matches.groupby("track_id")["match"].agg(["size", "sum"])
    assert len(per_track) == len(silver) and (per_track["size"] == len(genres)).all()
    np.testing.assert_allclose(per_track["sum"], 1.0, rtol=1e-12)

    playlists = lake.read(GOLD_GENRE_PLAYLISTS).toPandas()
    assert sorted(playlists["genre"].unique()) == genres
    ranks = playlists.groupby("genre")["rank"].apply(sorted)
    assert all(list(r) == list(range(1, 11)) for r in ranks)
    pop = playlists[playlists.genre == "pop"].set_index("rank")
    assert pop.loc[1, "track_id"] == PLANTED_POP_SOUNDING_JAZZ and pop.loc[1, "label"] == "jazz"
    assert (
        pop.loc[1, ["title", "artist"]].tolist()
        == silver.set_index("track_id").loc[PLANTED_POP_SOUNDING_JAZZ, ["title", "artist"]].tolist()
    )

    assert summary.rows == {
        GOLD_NORMALIZER: len(MODEL_FEATURE_NAMES),
        GOLD_FEATURES: len(silver),
        GOLD_OUTLIER_PARAMS: 1,
        GOLD_GENRE_BASELINES: len(genres) * len(FEATURES),
        GOLD_GENRE_MATCHES: len(silver) * len(genres),
        GOLD_GENRE_PLAYLISTS: 10 * len(genres),
        GOLD_TRENDS_BY_YEAR: len(silver.dropna(subset=["year"]).groupby(["year", "genre"])),
    }


def test_a_rerun_through_the_cli_writes_identical_tables(prepared: Prepared) -> None:
    lake = prepared.lake
    before = {name: lake.content_hash(name) for name in stages.PREPARE.outputs}
    versions = {name: lake.version(name) for name in stages.PREPARE.outputs}
    result = CliRunner().invoke(
        app,
        ["prepare", "--lake", prepared.settings.lake]
        + [x for key, value in SETTINGS.items() for x in ("--set", f"{key}={value}")],
    )
    assert result.exit_code == 0, result.output
    assert "outlier(s)" in result.output and "gold.genre_playlists: 40 rows" in result.output
    assert {name: lake.version(name) for name in stages.PREPARE.outputs} == {
        n: v + 1 for n, v in versions.items()
    }
    assert {name: lake.content_hash(name) for name in stages.PREPARE.outputs} == before


def test_manifest_names_the_version_of_every_table_written(prepared: Prepared) -> None:
    lake = prepared.lake
    rows = {r.table: (r.version, r.state) for r in lake.read(GOLD_PREPARE_MANIFEST).collect()}
    assert rows == {name: (lake.version(name), "complete") for name in stages.PREPARE.outputs}
    require_complete(lake)  # nothing to object to


def test_a_prepare_that_stops_part_way_is_refused_downstream_until_rerun(
    spark: SparkSession, settings: Settings, lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake.write(silver_frame(spark, silver_pandas(n_per_genre=40, seed=5)), SILVER_TRACKS)
    run(lake, settings)
    complete = {name: lake.version(name) for name in stages.PREPARE.outputs}

    def stop(*args: object) -> None:
        raise MemoryError("simulated: the run dies after gold.outlier_params")

    with monkeypatch.context() as patch:
        patch.setattr(prepare_run, "genre_baselines", stop)
        with pytest.raises(MemoryError):
            run(lake, settings)
    moved = {name for name in stages.PREPARE.outputs if lake.version(name) != complete[name]}
    assert moved == {GOLD_NORMALIZER, GOLD_FEATURES, GOLD_OUTLIER_PARAMS}

    with pytest.raises(IncompletePrepareError, match="did not finish"):
        require_complete(lake)
    for stage in ("train", "references", "evaluate", "report", "tune"):
        refused = CliRunner().invoke(app, [stage, "--lake", settings.lake])
        said = " ".join(refused.output.split())  # as printed, line wrapping undone
        assert refused.exit_code == 1, (stage, refused.output)
        assert "IncompletePrepareError" in said and "did not finish" in said, (stage, said)

    run(lake, settings)  # the repair
    require_complete(lake)

    # A prepare table rewritten by anything but prepare no longer belongs to the set.
    normalizer = lake.write(lake.read(GOLD_NORMALIZER), GOLD_NORMALIZER)
    with pytest.raises(IncompletePrepareError, match=rf"gold.normalizer \(version {normalizer}"):
        require_complete(lake)


def test_readme_sql_examples(spark: SparkSession, prepared: Prepared) -> None:
    prepared.lake.register_sql()
    rock = spark.sql(TOP_ROCK_AUDIENCE).toPandas()
    matches = prepared.lake.read(GOLD_GENRE_MATCHES).where("genre = 'rock'").toPandas()
    best = matches.sort_values(
        ["match", "log_likelihood", "track_id"], ascending=[False, False, True]
    )
    assert len(rock) == 10  # the playlist size set for this lake
    assert rock["rank"].tolist() == list(range(1, 11))
    titles = prepared.silver.set_index("track_id")["title"]
    assert rock["title"].tolist() == titles.loc[best["track_id"].head(10)].tolist()

    decades = spark.sql(POP_ENERGY_BY_DECADE).toPandas()
    pop = prepared.silver[(prepared.silver.genre == "pop") & prepared.silver.year.notna()]
    expected = pop.groupby(pop["year"].astype(int) // 10 * 10)["energy"].agg(["mean", "size"])
    assert decades["decade"].tolist() == expected.index.tolist()
    np.testing.assert_allclose(decades["mean_energy"], expected["mean"], atol=5e-4 + 1e-12)
    assert decades["tracks"].tolist() == expected["size"].tolist()


def test_missing_or_empty_silver_and_unfittable_features_fail_before_writing(
    spark: SparkSession, settings: Settings, lake: Lake
) -> None:
    missing = CliRunner().invoke(app, ["prepare", "--lake", settings.lake])
    assert missing.exit_code == 1 and "silver.tracks does not exist" in missing.output

    silver = _silver()
    lake.write(silver_frame(spark, silver.iloc[:0]), SILVER_TRACKS)
    empty = CliRunner().invoke(app, ["prepare", "--lake", settings.lake])
    assert empty.exit_code == 1 and "EmptyCatalogError: silver.tracks is empty" in empty.output

    silver["instrumentalness"] = np.nan
    lake.write(silver_frame(spark, silver), SILVER_TRACKS)
    listed = settings.model_copy(update={"features": ["tempo", "instrumentalness"]})
    with pytest.raises(FeatureNotFittedError, match="instrumentalness"):
        run(lake, listed)
    assert [t.name for t in lake.tables()] == [SILVER_TRACKS]
