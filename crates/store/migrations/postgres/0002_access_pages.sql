-- The access log in pages, as on SQLite (`crates/store/src/access_pages.rs`): one row per
-- token per batch holding that token's records as JSON, instead of one row and four
-- index entries per request. The row-per-request table cost PostgreSQL about 14 µs of CPU
-- a request under load, two thirds of it in B-tree inserts (perf, `bench/cluster.sh`).
-- `access_log` stays, as a view with one row per record, for anyone querying with SQL.

CREATE TABLE access_pages (
    last_id    BIGINT PRIMARY KEY,     -- the id of the page's newest record
    first_id   BIGINT NOT NULL,
    token_id   TEXT,                   -- NULL: credentials that matched no token
    account_id TEXT,
    min_time   BIGINT NOT NULL,        -- ms since 1970, its records' span
    max_time   BIGINT NOT NULL,
    records    TEXT NOT NULL           -- JSON, see access_pages.rs
);
CREATE INDEX access_pages_by_token ON access_pages(token_id, last_id);
CREATE INDEX access_pages_by_account ON access_pages(account_id, last_id);
CREATE INDEX access_pages_by_time ON access_pages(max_time);

-- Record ids are handed out a batch at a time, from here (one row; its lock orders the
-- batches of several nodes).
CREATE TABLE access_ids (next_id BIGINT NOT NULL);
INSERT INTO access_ids SELECT COALESCE(MAX(id), 0) + 1 FROM access_log;

-- Records of the row-per-request table, one page each (the converted format).
INSERT INTO access_pages (last_id, first_id, token_id, account_id, min_time, max_time, records)
SELECT id, id, token_id, account_id, time, time,
       json_build_array(json_build_array(id, time, listener, method, path, status, code, ip, latency_ms))::text
FROM access_log;
DROP TABLE access_log;

-- One row per record, decoded from the pages.
CREATE VIEW access_log AS
SELECT (p.j->>'i')::bigint + (r.v->>0)::bigint AS id,
       (p.j->>'t')::bigint + (r.v->>1)::bigint AS time,
       p.token_id, p.account_id,
       s.d->>0 AS listener, s.d->>1 AS method, s.d->>2 AS path, (s.d->>3)::integer AS status,
       s.d->>4 AS code, s.d->>5 AS ip, (r.v->>2)::double precision / 1000 AS latency_ms
FROM (SELECT token_id, account_id, records::jsonb AS j FROM access_pages) AS p
CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(p.j) = 'object' THEN p.j->'r' ELSE '[]'::jsonb END) AS r(v)
CROSS JOIN LATERAL (SELECT p.j->'d'->((r.v->>3)::integer)) AS s(d)
UNION ALL
SELECT (e.v->>0)::bigint, (e.v->>1)::bigint, p.token_id, p.account_id,
       e.v->>2, e.v->>3, e.v->>4, (e.v->>5)::integer, e.v->>6, e.v->>7, (e.v->>8)::double precision
FROM (SELECT token_id, account_id, records::jsonb AS j FROM access_pages) AS p
CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(p.j) = 'array' THEN p.j ELSE '[]'::jsonb END) AS e(v);
