-- The recommendations database: ours, written only by the workers, read by the API.
-- Idempotent: applying it twice is safe. Tables marked "swapped" are rebuilt by the
-- workers in a staging copy and renamed into place in one short transaction.
--
-- Sentinels: the string 'any' for gender/age_group/category and geo_id 0 mean
-- "every value" in a popular_items segment.

-- Catalogue snapshot: public presents only (private items never reach this DB). Swapped.
CREATE TABLE IF NOT EXISTS items (
    item_id        bigint PRIMARY KEY,
    price          double precision,
    category       text NOT NULL DEFAULT 'other',
    platform       text,
    geo_id         integer,            -- NULL: available everywhere
    in_stock       boolean NOT NULL,
    target_gender  text,               -- 'm' | 'f' | NULL
    target_age     text,               -- age group | NULL
    created_at     timestamptz
);
-- Shown by the dashboard's user preview only; the serving queries never read it.
ALTER TABLE items ADD COLUMN IF NOT EXISTS title text;

-- Popularity per segment, top POPULAR_TOP_N per segment. Swapped, together with items.
-- The item's own attributes are copied in (from the same snapshot) so a request reads
-- a segment's list with one index range scan and no join. Only in-stock items are listed.
CREATE TABLE IF NOT EXISTS popular_items (
    geo_id            integer NOT NULL,
    gender            text NOT NULL,
    age_group         text NOT NULL,
    category          text NOT NULL,
    item_id           bigint NOT NULL,
    popularity_score  double precision NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    item_category     text NOT NULL DEFAULT 'other',
    price             double precision,
    platform          text,
    item_geo_id       integer,
    PRIMARY KEY (geo_id, gender, age_group, category, item_id)
);
ALTER TABLE popular_items ADD COLUMN IF NOT EXISTS item_category text NOT NULL DEFAULT 'other';
ALTER TABLE popular_items ADD COLUMN IF NOT EXISTS price double precision;
ALTER TABLE popular_items ADD COLUMN IF NOT EXISTS platform text;
ALTER TABLE popular_items ADD COLUMN IF NOT EXISTS item_geo_id integer;
-- The serving order (score, then id) straight from the index: a LIMIT stops early.
DROP INDEX IF EXISTS popular_items_segment_rank;
CREATE INDEX IF NOT EXISTS popular_items_segment_order
    ON popular_items (geo_id, gender, age_group, category, popularity_score DESC, item_id);

-- One row per user with interactions. Swapped.
CREATE TABLE IF NOT EXISTS user_profiles (
    user_id               bigint PRIMARY KEY,
    preferred_categories  jsonb NOT NULL DEFAULT '{}'::jsonb,  -- {category: weight}, weights sum to 1
    preferred_platforms   jsonb NOT NULL DEFAULT '{}'::jsonb,  -- {platform: weight}, weights sum to 1
    avg_price             double precision,
    price_min             double precision,
    price_max             double precision,
    interaction_count     integer NOT NULL,  -- distinct public items liked or clicked
    liked_item_ids        bigint[] NOT NULL DEFAULT '{}',
    gender                text,
    age_group             text,
    geo_id                integer,
    updated_at            timestamptz NOT NULL DEFAULT now()
);

-- Top MAX_SIMILAR_USERS neighbours of each user with 3+ interactions. Swapped.
CREATE TABLE IF NOT EXISTS user_similarities (
    user_id           bigint NOT NULL,
    similar_user_id   bigint NOT NULL,
    similarity_score  double precision NOT NULL,
    PRIMARY KEY (user_id, similar_user_id),
    CHECK (user_id <> similar_user_id)
);

-- Precomputed collaborative list per user (neighbours' likes weighted by similarity,
-- liked items already removed), so a request reads one row. Swapped.
CREATE TABLE IF NOT EXISTS user_recommendations (
    user_id     bigint PRIMARY KEY,
    item_ids    bigint[] NOT NULL,
    scores      real[] NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Each popular_items segment's whole list as one row (same rows, same order: score
-- descending, then item id), so serving reads the lists of a fallback chain in one
-- indexed query. Swapped, together with items and popular_items.
CREATE TABLE IF NOT EXISTS popular_lists (
    geo_id     integer NOT NULL,
    gender     text NOT NULL,
    age_group  text NOT NULL,
    category   text NOT NULL,
    item_ids   bigint[] NOT NULL,
    scores     double precision[] NOT NULL,
    PRIMARY KEY (geo_id, gender, age_group, category)
);

-- Each user's whole /personalized list for a request with no price or category filter
-- and the user's own geo (shared.serving.precompute_list), for every user with
-- interactions. The API answers a miss from it with one read when the request gets
-- the same list (precomputed_answers), else computes from popular_lists. Swapped by
-- recs.update_user_lists; the live sync rewrites the users it touches.
CREATE TABLE IF NOT EXISTS user_lists (
    user_id    bigint PRIMARY KEY,
    item_ids   bigint[] NOT NULL,
    sections   text NOT NULL,      -- 'collaborative:0 popular:87': algorithm:index of its first item
    algorithm  text NOT NULL,      -- the user's primary algorithm when computed
    geo_id     integer,            -- the profile's geo: the list's segment and geo filter
    geo_safe   boolean NOT NULL,   -- the geo filter removed nothing read: a request without it gets the same list
    price_lo   double precision,   -- price range of every item read: a price filter holding it changes nothing
    price_hi   double precision    -- (NULL: an unpriced item was read)
);

-- Main-DB figures for /stats, refreshed by the popular job (the API never reads the main DB).
CREATE TABLE IF NOT EXISTS main_db_stats (
    name        text PRIMARY KEY,
    value       bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Output of similarity shards computed by separate Celery workers (SIMILARITY_SHARDS > 1):
-- each shard stores the CSV chunks it would COPY; recs.merge_user_similarities swaps
-- them all in at once. Rows live only between a shard's finish and the merge.
CREATE UNLOGGED TABLE IF NOT EXISTS similarity_shard_results (
    run_tag     text NOT NULL,
    shard       integer NOT NULL,
    target      text NOT NULL,
    chunk_no    integer NOT NULL,
    csv         text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_tag, shard, target, chunk_no)
);

-- One row per job run.
CREATE TABLE IF NOT EXISTS job_runs (
    id           bigserial PRIMARY KEY,
    job          text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    duration_ms  double precision,
    rows_written bigint,
    status       text NOT NULL DEFAULT 'running',  -- running | success | failed | abandoned
    error        text
);
CREATE INDEX IF NOT EXISTS job_runs_job_started ON job_runs (job, started_at DESC);
-- The running job renews heartbeat_at with its lease (shared/jobs.py): a `running` row
-- whose heartbeat is stale belongs to a dead worker and is marked `abandoned`.
-- task_id: the run's token (its Celery task id); parent_id: the run a step row belongs to
-- (the steps of refresh_all are recorded by refresh_all's own run).
ALTER TABLE job_runs ADD COLUMN IF NOT EXISTS heartbeat_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE job_runs ADD COLUMN IF NOT EXISTS task_id text;
ALTER TABLE job_runs ADD COLUMN IF NOT EXISTS parent_id bigint;
CREATE INDEX IF NOT EXISTS job_runs_running ON job_runs (started_at) WHERE status = 'running';

-- Live sync (recs.sync_recent_activity): one row per main-DB source ('likes', 'clicks',
-- 'presents'). max_id is the highest id read; gaps holds the ids below it not seen yet
-- ({id: epoch first missed}), re-read every sync until they appear or age out, so a
-- transaction that commits after a higher id was read is never skipped. For presents,
-- changed_at is the newest updated_at read (re-read with an overlap window).
CREATE TABLE IF NOT EXISTS live_sync_state (
    source           text PRIMARY KEY,
    max_id           bigint NOT NULL DEFAULT 0,
    gaps             jsonb NOT NULL DEFAULT '{}'::jsonb,
    changed_at       timestamptz,
    newest_event_at  timestamptz,  -- created_at of the newest applied like/click
    ref_ts           double precision,  -- decay reference: newest public interaction seen (epoch s)
    caught_up        boolean NOT NULL DEFAULT true,
    synced_at        timestamptz   -- end of the last successful sync
);

-- Users the live sync (or POST /events) changed, and when: after a full job swaps its
-- table in from an older snapshot, the sync re-applies the users touched since.
CREATE TABLE IF NOT EXISTS live_touched_users (
    user_id     bigint PRIMARY KEY,
    touched_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS live_touched_users_at ON live_touched_users (touched_at);
