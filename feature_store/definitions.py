"""Every feature rankline computes: its name, dtype, version, default and meaning.

This module is the one source of feature names for training, batch scoring and the online store.
A feature view groups the features of one entity; a view's partition for date D holds the values
as of the end of D, computed from events of the view's window of days ending with D: the
``WINDOW_DAYS`` (7) days for recent behaviour, ``LONG_WINDOW_DAYS`` (28) for the slow-moving
preferences and item quality that a week of sparse clicks estimates poorly (the views named
``*_28d``; ``feature_store.offline`` reads both windows). Until a deployment has 28 days of history, the
28-day counts are scaled up from the days it has (``compute_views``), so they mean the same
then as later.
"""

from __future__ import annotations

from dataclasses import dataclass

WINDOW_DAYS = 7
LONG_WINDOW_DAYS = 28


@dataclass(frozen=True)
class Feature:
    """One feature column."""

    name: str
    dtype: str  # numpy dtype name
    description: str
    default: float = 0.0  # value for an entity with no events in the window (NaN = unknown)
    version: int = 1
    model_input: bool = True  # False: a join key stored with the view, never fed to a model


@dataclass(frozen=True)
class FeatureView:
    """The features of one entity, stored together."""

    name: str
    keys: tuple[str, ...]
    features: tuple[Feature, ...]

    @property
    def version(self) -> str:
        """The view's version: changes when any feature's version changes."""
        return "v" + ".".join(str(f.version) for f in self.features)

    @property
    def names(self) -> list[str]:
        """Feature column names, in order."""
        return [f.name for f in self.features]

    @property
    def inputs(self) -> list[Feature]:
        """The features a model reads (the join keys stored with the view left out)."""
        return [f for f in self.features if f.model_input]


NAN = float("nan")
W = f"{WINDOW_DAYS}d"
L = f"{LONG_WINDOW_DAYS}d"

USER = FeatureView("user", ("user_id",), (
    Feature(f"u_impressions_{W}", "float32", "impressions shown to the user"),
    Feature(f"u_clicks_{W}", "float32", "clicks by the user"),
    Feature(f"u_carts_{W}", "float32", "add-to-carts by the user"),
    Feature(f"u_purchases_{W}", "float32", "purchases by the user"),
    Feature(f"u_ctr_{W}", "float32", "smoothed click-through rate (clicks+1)/(impressions+10)",
            default=0.1),
    Feature(f"u_log_price_clicked_{W}", "float32", "mean log price of clicked items",
            default=NAN),
    Feature("u_age_band", "float32", "age band from the users table", default=NAN),
))
ITEM = FeatureView("item", ("item_id",), (
    Feature(f"i_impressions_{W}", "float32", "times the item was shown"),
    Feature(f"i_clicks_{W}", "float32", "clicks on the item"),
    Feature(f"i_carts_{W}", "float32", "add-to-carts of the item"),
    Feature(f"i_purchases_{W}", "float32", "purchases of the item"),
    Feature(f"i_ctr_{W}", "float32", "smoothed CTR (clicks+1)/(impressions+20)", default=0.05),
    Feature(f"i_cvr_{W}", "float32", "smoothed purchases per click (purchases+0.2)/(clicks+2)",
            default=0.1),
    Feature(f"i_mean_position_{W}", "float32", "mean position when shown", default=NAN),
    Feature("i_log_price", "float32", "log of the item's price", default=NAN),
    Feature("i_category", "float32", "the item's category id", default=NAN),
    Feature("i_line", "float32", "the item's product line (items.line; the item id where the "
            "items table has no line): the key of the user_line view, not a model input",
            default=NAN, model_input=False),
))
USER_CATEGORY = FeatureView("user_category", ("user_id", "category"), (
    Feature(f"uc_impressions_{W}", "float32", "user's impressions of items in the category"),
    Feature(f"uc_clicks_{W}", "float32", "user's clicks in the category"),
    Feature(f"uc_purchases_{W}", "float32", "user's purchases in the category"),
    Feature(f"uc_click_share_{W}", "float32", "share of the user's clicks in the category"),
))
USER_ITEM = FeatureView("user_item", ("user_id", "item_id"), (
    Feature(f"ui_impressions_{W}", "float32", "times the item was shown to the user"),
    Feature(f"ui_clicks_{W}", "float32", "user's clicks on the item"),
    Feature(f"ui_purchases_{W}", "float32", "user's purchases of the item"),
))
USER_LONG = FeatureView(f"user_{L}", ("user_id",), (
    Feature(f"u_clicks_{L}", "float32", "clicks by the user"),
    Feature(f"u_purchases_{L}", "float32", "purchases by the user"),
    Feature(f"u_ctr_{L}", "float32", "smoothed click-through rate (clicks+1)/(impressions+10)",
            default=0.1),
    Feature(f"u_log_price_clicked_{L}", "float32", "mean log price of clicked items",
            default=NAN),
))
ITEM_LONG = FeatureView(f"item_{L}", ("item_id",), (
    Feature(f"i_impressions_{L}", "float32", "times the item was shown"),
    Feature(f"i_clicks_{L}", "float32", "clicks on the item"),
    Feature(f"i_purchases_{L}", "float32", "purchases of the item"),
    Feature(f"i_ctr_{L}", "float32", "smoothed CTR (clicks+1)/(impressions+20)", default=0.05),
    Feature(f"i_cvr_{L}", "float32", "smoothed purchases per click (purchases+0.2)/(clicks+2)",
            default=0.1),
    Feature(f"i_coec_{L}", "float32",
            "clicks over expected clicks, (clicks+1)/(expected+1), expected: the window's CTR at "
            "each position the item was shown at, summed (a CTR freed of position bias; for "
            "sources whose position is only the order of a day's events it means less)",
            default=1.0),
))
USER_CATEGORY_LONG = FeatureView(f"user_category_{L}", ("user_id", "category"), (
    Feature(f"uc_clicks_{L}", "float32", "user's clicks in the category"),
    Feature(f"uc_purchases_{L}", "float32", "user's purchases in the category"),
    Feature(f"uc_click_share_{L}", "float32", "share of the user's clicks in the category"),
))
R1, R2 = "1d", "2d"
USER_LINE = FeatureView("user_line", ("user_id", "line"), (
    Feature(f"ul_impressions_{R1}", "float32",
            "impressions of the line's items shown to the user on the last day"),
    Feature(f"ul_clicks_{R1}", "float32", "user's clicks on the line's items on the last day"),
    Feature(f"ul_impressions_{R2}", "float32",
            "impressions of the line's items shown to the user in the last 2 days"),
    Feature(f"ul_clicks_{R2}", "float32", "user's clicks on the line's items in the last 2 days"),
    Feature(f"ul_days_shown_{W}", "float32",
            "days of the last 7 on which the user was shown the line (how long an interest "
            "has lasted: interests pass)"),
    Feature(f"ul_last_shown_{W}", "float32",
            "days since the user was last shown the line (0: the last day), within 7 days",
            default=NAN),
))
USER_CATEGORY_RECENT = FeatureView(f"user_category_{R2}", ("user_id", "category"), (
    Feature(f"uc_impressions_{R2}", "float32",
            "user's impressions of the category in the last 2 days"),
    Feature(f"uc_clicks_{R2}", "float32", "user's clicks in the category in the last 2 days"),
))
USER_ITEM_RECENT = FeatureView(f"user_item_{R2}", ("user_id", "item_id"), (
    Feature(f"ui_impressions_{R2}", "float32", "times the item was shown to the user in the "
            "last 2 days"),
    Feature(f"ui_clicks_{R2}", "float32", "user's clicks on the item in the last 2 days"),
))
LINE_NEXT = FeatureView("line_next", ("line", "next_line"), (
    Feature(f"ln_share_{L}", "float32",
            "of the users who clicked the line on a day and another line within the next 2 days "
            f"({LONG_WINDOW_DAYS} days of clicks), the share who clicked next_line (the 5 most "
            "common next lines of each line): where interests move on; read by od_line_next",
            model_input=False),
))
VIEWS: tuple[FeatureView, ...] = (USER, ITEM, USER_CATEGORY, USER_ITEM, USER_LONG, ITEM_LONG,
                                  USER_CATEGORY_LONG, USER_LINE, USER_CATEGORY_RECENT,
                                  USER_ITEM_RECENT, LINE_NEXT)
"""Every offline view; the views keyed on ``category`` or ``line`` follow ``ITEM`` (they join on
the item's category and line); ``LINE_NEXT`` joins no row directly (``od_line_next`` reads it)."""
ONLINE_VIEWS: tuple[FeatureView, ...] = (USER, ITEM, USER_CATEGORY, USER_LONG, ITEM_LONG,
                                         USER_CATEGORY_LONG)
"""Views materialized to the online store (user x item is too sparse to be worth it)."""

ON_DEMAND: tuple[Feature, ...] = (
    Feature("od_price_vs_user", "float32",
            "item log price minus the user's mean clicked log price", default=NAN),
    Feature("od_encoder_score", "float32",
            "the pre-trained sequence encoder's next-item score of the item for the user (their "
            "embeddings' dot product, views encoder_user and encoder_item); NaN before any "
            "encoder", default=NAN),
    Feature("od_line_next", "float32",
            "how likely the item's line is where the user's interest moves next: the user's "
            "lines of the last day (shares of ul_impressions_1d) times each line's next-line "
            "shares (view line_next), summed"),
)
"""Computed at join time from the views above (same code for training and scoring)."""


SEQUENCE_VIEW, SEQUENCE_VERSION = "user_sequence", "v1"
"""The view of each user's clicked items in time order (``feature_store.sequences``); not a model
input column itself: the neural families read it as the rows' ``seq`` column."""
ENCODER_USER, ENCODER_ITEM, ENCODER_VERSION = "encoder_user", "encoder_item", "v1"
"""Views of a pre-trained sequence encoder's user states and item embeddings
(``feature_store.embeddings``); models read them as ``od_encoder_score``."""
SEQ_KEEP = 100
"""Items kept per user in the sequence view (a model reads its last ``RANKLINE_SEQ_LEN``)."""
SEQ = "seq"
"""Row column holding the user's sequence as of the day before the row."""


def model_features() -> list[str]:
    """The model's input columns, in order: every view's features, then the on-demand ones."""
    return [f.name for view in VIEWS for f in view.inputs] + [f.name for f in ON_DEMAND]


def feature_versions() -> dict[str, str]:
    """``{view: version}``, logged with every model so scoring can check it matches."""
    return {v.name: v.version for v in VIEWS}


def feature_spec() -> dict[str, int]:
    """``{feature name: version}`` of every model input: what a model records when trained and
    checks when loaded (a changed definition must not silently mis-score)."""
    return {f.name: f.version for view in VIEWS for f in view.inputs} | {
        f.name: f.version for f in ON_DEMAND}
