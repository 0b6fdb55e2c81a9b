-- The shape of MySanta's main database, as its Rails app has it. Used for the demo
-- data and tests only: the service never writes to a real main DB.
CREATE TABLE IF NOT EXISTS users (
    id          bigint PRIMARY KEY,
    gender      text CHECK (gender IN ('m', 'f')),
    birth_date  date,
    geo_id      integer,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS handpicked_presents (
    id          bigint PRIMARY KEY,
    user_id     bigint REFERENCES users (id),   -- NULL: public curated gift; set: a user's private item
    title       text NOT NULL,
    price       numeric(12, 2),
    platform    text,
    geo_id      integer,                        -- NULL: available everywhere
    status      text NOT NULL DEFAULT 'in_stock',
    categories  jsonb NOT NULL DEFAULT '{}'::jsonb, -- {"category": ..., "gender": ..., "age": ...}
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS handpicked_likes (
    id                     bigint PRIMARY KEY,
    user_id                bigint NOT NULL REFERENCES users (id),
    handpicked_present_id  bigint NOT NULL REFERENCES handpicked_presents (id),
    created_at             timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS handpicked_present_clicks (
    id                     bigint PRIMARY KEY,
    user_id                bigint NOT NULL REFERENCES users (id),
    handpicked_present_id  bigint NOT NULL REFERENCES handpicked_presents (id),
    created_at             timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS index_handpicked_likes_on_user_id ON handpicked_likes (user_id);
CREATE INDEX IF NOT EXISTS index_handpicked_present_clicks_on_user_id ON handpicked_present_clicks (user_id);
-- Rails' t.references indexes the present side too; the live sync reads by item
-- (who else interacted with it) and presents by updated_at.
CREATE INDEX IF NOT EXISTS index_handpicked_likes_on_handpicked_present_id ON handpicked_likes (handpicked_present_id);
CREATE INDEX IF NOT EXISTS index_handpicked_present_clicks_on_handpicked_present_id
    ON handpicked_present_clicks (handpicked_present_id);
CREATE INDEX IF NOT EXISTS index_handpicked_presents_on_updated_at ON handpicked_presents (updated_at);
