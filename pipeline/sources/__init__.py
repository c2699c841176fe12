"""Data sources: where a logical date's raw partitions come from."""

from __future__ import annotations

from pipeline.settings import Settings
from pipeline.sources.base import EVENT_TABLES, RAW_SCHEMAS, TABLES, DataSource


def get_source(settings: Settings) -> DataSource:
    """The source the settings select."""
    if settings.source == "synthetic":
        from pipeline.sources.synthetic import SyntheticSource

        return SyntheticSource(
            seed=settings.seed,
            n_users=settings.n_users,
            n_items=settings.n_items,
            n_categories=settings.n_categories,
            impressions_per_day=settings.impressions_per_day,
            slots_per_request=settings.slots_per_request,
            new_items_per_day=settings.new_items_per_day,
            start=settings.start_date,
        )
    if settings.source == "movielens":
        from pipeline.sources.movielens import MovieLensSource

        return MovieLensSource(settings.start_date)
    if settings.source == "interactions":
        from pipeline.sources.interactions import InteractionsSource

        return InteractionsSource(settings.source_uri, settings.event_labels)
    from pipeline.sources.parquet import ParquetSource

    return ParquetSource(settings.source_uri)


__all__ = ["EVENT_TABLES", "RAW_SCHEMAS", "TABLES", "DataSource", "get_source"]
