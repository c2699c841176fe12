"""Pure feature computation and the point-in-time join (DataFrames in, DataFrames out)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from feature_store.definitions import (
    ENCODER_ITEM,
    ENCODER_USER,
    ITEM,
    ITEM_LONG,
    LINE_NEXT,
    LONG_WINDOW_DAYS,
    ON_DEMAND,
    R1,
    R2,
    SEQ,
    SEQUENCE_VIEW,
    USER,
    USER_CATEGORY,
    USER_CATEGORY_LONG,
    USER_CATEGORY_RECENT,
    USER_ITEM,
    USER_ITEM_RECENT,
    USER_LINE,
    USER_LONG,
    VIEWS,
    FeatureView,
    L,
    W,
    model_features,
)


def _count(df: pd.DataFrame, keys: list[str], name: str) -> pd.DataFrame:
    return df.groupby(keys, sort=False).size().rename(name).astype("float32").reset_index()


def _entity_counts(entities: pd.DataFrame, key: str, events: Mapping[str, pd.DataFrame],
                   prefix: str, window: str) -> pd.DataFrame:
    """``entities`` (one row per ``key``) with a ``<prefix>_<event>_<window>`` count column per
    event table (NaN where the entity had none)."""
    for name, ev in events.items():
        entities = entities.merge(_count(ev, [key], f"{prefix}_{name}_{window}"), on=key,
                                  how="left")
    return entities


def _pair_counts(events: Mapping[str, pd.DataFrame], keys: list[str], prefix: str,
                 window: str) -> pd.DataFrame:
    """One row per key pair with any event, a ``<prefix>_<event>_<window>`` count per table."""
    out = None
    for name, ev in events.items():
        counts = _count(ev, keys, f"{prefix}_{name}_{window}")
        out = counts if out is None else out.merge(counts, on=keys, how="outer")
    return out


def _item_rates(it: pd.DataFrame, window: str) -> pd.DataFrame:
    """Smoothed CTR and purchases per click of the item counts of ``window``."""
    it[f"i_ctr_{window}"] = (it[f"i_clicks_{window}"] + 1) / (it[f"i_impressions_{window}"] + 20)
    it[f"i_cvr_{window}"] = (it[f"i_purchases_{window}"] + 0.2) / (it[f"i_clicks_{window}"] + 2)
    return it


def _user_ctr(u: pd.DataFrame, window: str) -> pd.DataFrame:
    u[f"u_ctr_{window}"] = ((u[f"u_clicks_{window}"].fillna(0) + 1)
                            / (u[f"u_impressions_{window}"].fillna(0) + 10))
    return u


def compute_views(
    users: pd.DataFrame,
    items: pd.DataFrame,
    impressions: pd.DataFrame,
    clicks: pd.DataFrame,
    carts: pd.DataFrame,
    purchases: pd.DataFrame,
    older: Mapping[str, pd.DataFrame] | None = None,
    long_days: int | None = None,
    as_of: dt.date | None = None,
) -> dict[str, pd.DataFrame]:
    """Every feature view from the events and the latest dimension snapshots.

    ``impressions`` ... ``purchases`` are the events of the short window (``WINDOW_DAYS``);
    ``older`` the ``impressions``, ``clicks`` and ``purchases`` of the long window's earlier days
    (``LONG_WINDOW_DAYS``), None when there are none; ``long_days`` how many days of that window
    had events to read (None: all of them): the 28-day counts of a shorter history are scaled
    up to 28 days, so that they mean the same in a deployment's first weeks as later (rows
    trained then and scored later would otherwise see counts of different spans). Returns
    ``{view name: DataFrame(keys + features)}``; the user and item views hold every user and
    item of the snapshots (zero counts where there were no events), the pair views only pairs
    with events. ``as_of``: the window's last day, which the views of recent activity (the last
    day, the last 2 days) count back from, reading the events' ``date`` column; without either,
    every event counts as the last day's.
    """
    cat = items.set_index("item_id")["category"]
    price = items.set_index("item_id")["price"]

    def with_cat(df: pd.DataFrame) -> pd.DataFrame:
        return df.assign(category=cat.reindex(df["item_id"]).to_numpy())

    events = {"impressions": impressions, "clicks": clicks, "carts": carts,
              "purchases": purchases}
    engaged = {"clicks": clicks, "purchases": purchases}

    # user
    u = _entity_counts(users[["user_id"]].copy(), "user_id", events, "u", W)
    u = u.merge(_log_price_clicked(clicks, price, f"u_log_price_clicked_{W}"), on="user_id",
                how="left")
    u = _user_ctr(u, W)
    u["u_age_band"] = users["age_band"].to_numpy()

    # item
    it = _entity_counts(items[["item_id"]].copy(), "item_id", events, "i", W)
    pos = impressions.groupby("item_id")["position"].mean().rename(f"i_mean_position_{W}")
    it = it.merge(pos.reset_index(), on="item_id", how="left")
    it = _item_rates(_fill(it, ITEM), W)
    it["i_log_price"] = np.log(items["price"].to_numpy())
    it["i_category"] = items["category"].to_numpy()
    line = item_lines(items)
    it["i_line"] = line.to_numpy()

    # user x category
    uc = _pair_counts({"impressions": with_cat(impressions)}
                      | {k: with_cat(v) for k, v in engaged.items()},
                      ["user_id", "category"], "uc", W)
    uc = _click_share(_fill(uc, USER_CATEGORY), W)

    # user x item
    ui = _pair_counts({"impressions": impressions} | engaged, ["user_id", "item_id"], "ui", W)

    out = {USER.name: _fill(u, USER), ITEM.name: it, USER_CATEGORY.name: uc,
           USER_ITEM.name: _fill(ui, USER_ITEM)}
    out |= _recent_views(impressions, clicks, cat, line, as_of)
    long_clicks = (pd.concat([clicks, older["clicks"]], ignore_index=True)
                   if older and "clicks" in older and len(older["clicks"]) else clicks)
    out[LINE_NEXT.name] = line_next(long_clicks, line)
    out |= _long_views(users, items, {"impressions": impressions, "clicks": clicks,
                                      "purchases": purchases}, older or {}, with_cat, price,
                      LONG_WINDOW_DAYS / long_days if long_days else 1.0)
    return {name: _typed(out[name], view) for view in VIEWS for name in [view.name]}


def item_lines(items: pd.DataFrame) -> pd.Series:
    """Each item's product line by ``item_id``: the items table's ``line`` where it has one,
    else the item itself (a line of one)."""
    ids = items["item_id"].to_numpy(np.int64)
    if "line" in items:
        return pd.Series(items["line"].fillna(-1).to_numpy(np.int64), index=ids)
    return pd.Series(ids, index=ids)


def _recent_views(impressions: pd.DataFrame, clicks: pd.DataFrame, cat: pd.Series,
                  line: pd.Series, as_of: dt.date | None) -> dict[str, pd.DataFrame]:
    """The views of the last day and the last 2 days (user x line, user x category, user x
    item): what a user is after now, which the 7- and 28-day counts blur."""

    def aged(ev: pd.DataFrame) -> pd.DataFrame:
        items = ev["item_id"].to_numpy()
        age = (np.zeros(len(ev), dtype=np.int64) if as_of is None or "date" not in ev
               else (pd.Timestamp(as_of) - pd.to_datetime(ev["date"])).dt.days.to_numpy())
        return pd.DataFrame({"user_id": ev["user_id"].to_numpy(np.int64), "item_id": items,
                             "category": cat.reindex(items).to_numpy(),
                             "line": line.reindex(items).fillna(-1).to_numpy(np.int64),
                             "age": age})

    imp, clk = aged(impressions), aged(clicks)
    ul = _pair_counts({"impressions": imp[imp["age"] == 0], "clicks": clk[clk["age"] == 0]},
                      ["user_id", "line"], "ul", R1)
    ul2 = _pair_counts({"impressions": imp[imp["age"] <= 1], "clicks": clk[clk["age"] <= 1]},
                       ["user_id", "line"], "ul", R2)
    days = imp.groupby(["user_id", "line"], sort=False)["age"].agg(["nunique", "min"])
    days.columns = [f"ul_days_shown_{W}", f"ul_last_shown_{W}"]
    ul = (days.reset_index().merge(ul2, on=["user_id", "line"], how="left")
          .merge(ul, on=["user_id", "line"], how="left"))
    recent = {"impressions": imp[imp["age"] <= 1], "clicks": clk[clk["age"] <= 1]}
    uc = _pair_counts(recent, ["user_id", "category"], "uc", R2)
    ui = _pair_counts(recent, ["user_id", "item_id"], "ui", R2)
    return {USER_LINE.name: ul, USER_CATEGORY_RECENT.name: uc, USER_ITEM_RECENT.name: ui}


NEXT_LINES = 5
"""Next lines kept per line in the ``line_next`` view."""


def line_next(clicks: pd.DataFrame, line: pd.Series) -> pd.DataFrame:
    """The ``line_next`` view: for each line A, the lines B != A that the users who clicked A on
    a day clicked on one of the next 2 days, as shares of those users (each user and pair of
    days counted once; the ``NEXT_LINES`` most common B per A). Needs the clicks' ``date``."""
    name = LINE_NEXT.features[0].name
    if clicks.empty or "date" not in clicks:
        return pd.DataFrame({"line": [], "next_line": [], name: []})
    c = pd.DataFrame({"user_id": clicks["user_id"].to_numpy(np.int64),
                      "line": line.reindex(clicks["item_id"].to_numpy()).fillna(-1).to_numpy(
                          np.int64),
                      "day": pd.to_datetime(clicks["date"]).map(dt.datetime.toordinal).to_numpy()})
    c = c[c["line"] >= 0].drop_duplicates()
    pairs = [c.merge(c.assign(day=c["day"] - k), on=["user_id", "day"], suffixes=("", "_n"))
             for k in (1, 2)]
    p = pd.concat(pairs, ignore_index=True)
    p = p[p["line"] != p["line_n"]].drop_duplicates(["user_id", "line", "line_n"])
    counts = p.groupby(["line", "line_n"], sort=False).size().rename("n").reset_index()
    counts["share"] = counts["n"] / counts.groupby("line")["n"].transform("sum")
    top = (counts.sort_values(["line", "n", "line_n"], ascending=[True, False, True])
           .groupby("line", sort=False).head(NEXT_LINES))
    return pd.DataFrame({"line": top["line"].to_numpy(), "next_line": top["line_n"].to_numpy(),
                         name: top["share"].to_numpy()})


def line_next_score(rows: pd.DataFrame, user_line: pd.DataFrame,
                    nxt: pd.DataFrame) -> np.ndarray:
    """``od_line_next`` of ``rows`` (``user_id``, ``line``): the user's lines of the last day,
    as shares of ``ul_impressions_1d``, times the ``line_next`` shares into the row's line."""
    day = user_line[user_line[f"ul_impressions_{R1}"] > 0]
    if day.empty or nxt.empty:
        return np.zeros(len(rows), dtype=np.float32)
    share = day[f"ul_impressions_{R1}"] / day.groupby("user_id")[f"ul_impressions_{R1}"].transform(
        "sum")
    mine = pd.DataFrame({"user_id": day["user_id"].to_numpy(), "line": day["line"].to_numpy(),
                         "p": share.to_numpy()})
    moves = mine.merge(nxt, on="line")
    score = ((moves["p"] * moves[LINE_NEXT.features[0].name])
             .groupby([moves["user_id"], moves["next_line"]]).sum().rename("s").reset_index()
             .rename(columns={"next_line": "line"}))
    got = rows[["user_id", "line"]].merge(score, on=["user_id", "line"], how="left")["s"]
    return got.fillna(0.0).to_numpy(np.float32)


def _long_views(users: pd.DataFrame, items: pd.DataFrame, recent: Mapping[str, pd.DataFrame],
                older: Mapping[str, pd.DataFrame],
                with_cat: Callable[[pd.DataFrame], pd.DataFrame],
                price: pd.Series, scale: float) -> dict[str, pd.DataFrame]:
    """The ``LONG_WINDOW_DAYS`` views: counts of the recent and older events together, times
    ``scale`` (rates are computed from the raw counts)."""
    imp, clicks, purchases = (
        pd.concat([recent[t], older[t]], ignore_index=True) if t in older and len(older[t])
        else recent[t] for t in ("impressions", "clicks", "purchases"))
    events = {"impressions": imp, "clicks": clicks, "purchases": purchases}
    u = _user_ctr(_entity_counts(users[["user_id"]].copy(), "user_id", events, "u", L), L)
    u = _fill(u, USER_LONG)
    u = u.merge(_log_price_clicked(clicks, price, f"u_log_price_clicked_{L}"), on="user_id",
                how="left")

    it = _item_rates(_fill(_entity_counts(items[["item_id"]].copy(), "item_id", events, "i", L),
                           ITEM_LONG), L)
    expected = expected_clicks(imp, clicks)
    it[f"i_coec_{L}"] = (it[f"i_clicks_{L}"] + 1) / (
        expected.reindex(it["item_id"]).fillna(0).to_numpy() + 1)

    uc = _pair_counts({"clicks": with_cat(clicks), "purchases": with_cat(purchases)},
                      ["user_id", "category"], "uc", L)
    uc = _click_share(_fill(uc, USER_CATEGORY_LONG), L)
    for df, kind, names in ((u, "u", ("clicks", "purchases")),
                            (it, "i", ("impressions", "clicks", "purchases")),
                            (uc, "uc", ("clicks", "purchases"))):
        for name in names:
            df[f"{kind}_{name}_{L}"] *= scale
    return {USER_LONG.name: u, ITEM_LONG.name: it, USER_CATEGORY_LONG.name: uc}


def expected_clicks(impressions: pd.DataFrame, clicks: pd.DataFrame) -> pd.Series:
    """Per item, the clicks its impressions would have had at the window's average CTR of each
    position they were shown at (the denominator of clicks over expected clicks). Impressions
    need ``event_id``, ``item_id`` and ``position``, clicks ``impression_id``. Event ids need
    only be unique within a date: when they repeat across the window's dates, a click is matched
    to the impression of its own date (both need the ``date`` column that
    :func:`feature_store.io.read_dates` adds), else by id alone (the fast path)."""
    position = impressions["position"].fillna(0)
    shown = position.value_counts()
    ids = impressions["event_id"]
    if ids.is_unique or "date" not in impressions or "date" not in clicks:
        by_id = pd.Series(position.to_numpy(), index=ids.to_numpy())
        at = by_id.reindex(clicks["impression_id"].to_numpy()).dropna()
    else:
        at = clicks[["date", "impression_id"]].merge(
            impressions[["date", "event_id", "position"]].rename(
                columns={"event_id": "impression_id"}),
            on=["date", "impression_id"], how="inner", validate="many_to_one")["position"]
    ctr_at = at.fillna(0).value_counts().reindex(shown.index).fillna(0) / shown
    per_row = ctr_at.reindex(position.to_numpy()).to_numpy()
    return pd.Series(per_row).groupby(impressions["item_id"].to_numpy()).sum()


def _log_price_clicked(clicks: pd.DataFrame, price: pd.Series, name: str) -> pd.DataFrame:
    lp = clicks.assign(lp=np.log(price.reindex(clicks["item_id"]).to_numpy()))
    return lp.groupby("user_id")["lp"].mean().rename(name).reset_index()


def _click_share(uc: pd.DataFrame, window: str) -> pd.DataFrame:
    total = uc.groupby("user_id")[f"uc_clicks_{window}"].transform("sum")
    uc[f"uc_click_share_{window}"] = np.where(
        total > 0, uc[f"uc_clicks_{window}"] / total.clip(lower=1), 0)
    return uc


def _fill(df: pd.DataFrame, view: FeatureView) -> pd.DataFrame:
    for f in view.features:
        if f.name in df:
            df[f.name] = df[f.name].fillna(f.default)
    return df


def _typed(df: pd.DataFrame, view: FeatureView) -> pd.DataFrame:
    df = _fill(df, view)
    cols = {k: "int64" for k in view.keys} | {f.name: f.dtype for f in view.features}
    return df[list(cols)].astype(cols).sort_values(list(view.keys), ignore_index=True)


def join_features(rows: pd.DataFrame, views: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Attach every model feature to ``rows`` (which hold ``user_id`` and ``item_id``).

    ``views`` must be the feature views as of the moment the rows are scored (for training rows
    of date D: as of the end of D-1). Entities absent from a view get the features' defaults.
    Row order and the other columns of ``rows`` are kept.
    """
    out = rows.reset_index(drop=True)
    for view in VIEWS:
        if view is LINE_NEXT:  # keyed on two lines: read by od_line_next below
            continue
        out = out.merge(views[view.name], on=list(view.keys), how="left", sort=False)
        out = _fill(out, view)
        if view is ITEM:  # the keys of the views keyed on the item's category and line
            out["category"] = out["i_category"].fillna(-1).astype("int64")
            out["line"] = out["i_line"].fillna(-1).astype("int64")
    out[ON_DEMAND[2].name] = line_next_score(out, views[USER_LINE.name], views[LINE_NEXT.name])
    out = out.drop(columns=["category", "line", "i_line"])
    out[ON_DEMAND[0].name] = (out["i_log_price"] - out[f"u_log_price_clicked_{W}"]).astype(
        "float32")
    if ENCODER_USER in views and ENCODER_ITEM in views:
        from feature_store.embeddings import encoder_score

        out[ON_DEMAND[1].name] = encoder_score(out["user_id"].to_numpy(), out["item_id"].to_numpy(),
                                               views[ENCODER_USER], views[ENCODER_ITEM])
    else:  # no encoder as of that date
        out[ON_DEMAND[1].name] = np.float32(ON_DEMAND[1].default)
    if (seqs := views.get(SEQUENCE_VIEW)) is not None:  # the neural families' input
        seq = pd.Series(seqs["seq"].to_numpy(), index=seqs["user_id"].to_numpy())
        found = seq.reindex(out["user_id"].to_numpy()).to_numpy()
        empty = np.zeros(0, dtype=np.int64)  # shared by every user without a history
        out[SEQ] = [s if isinstance(s, np.ndarray) else empty for s in found]
    return out


def feature_matrix(df: pd.DataFrame) -> np.ndarray:
    """The model's input matrix (float32, columns in :func:`model_features` order)."""
    return np.ascontiguousarray(df[model_features()].to_numpy(dtype=np.float32))
