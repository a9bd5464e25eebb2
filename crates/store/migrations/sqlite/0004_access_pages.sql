-- The access log, one row per token per batch ("page") instead of one row per request:
-- a row per request cost ~10 µs of SQLite work on the gateway's own core, more than the
-- request itself. A page holds its records as JSON (the format is described in
-- crates/store/src/access_pages.rs); ids stay global and increasing, so cursors and
-- newest-first order are as before. Pages of one batch overlap in id range; readers
-- merge them (see `list_access`).
CREATE TABLE access_pages (
    last_id    INTEGER PRIMARY KEY,
    first_id   INTEGER NOT NULL,
    token_id   TEXT,
    account_id TEXT,
    min_time   INTEGER NOT NULL,
    max_time   INTEGER NOT NULL,
    records    TEXT    NOT NULL
);
CREATE INDEX access_pages_by_token ON access_pages(token_id, last_id);
CREATE INDEX access_pages_by_account ON access_pages(account_id, last_id);

-- Records written before: a page per token per 1,000 ids, each record a JSON array
-- [id, time, listener, method, path, status, code, ip, latency_ms].
INSERT INTO access_pages (last_id, first_id, token_id, account_id, min_time, max_time, records)
SELECT MAX(id), MIN(id), token_id, account_id, MIN(time), MAX(time),
       json_group_array(json_array(id, time, listener, method, path, status, code, ip, latency_ms))
FROM (SELECT * FROM access_log ORDER BY id)
GROUP BY token_id, account_id, (id - 1) / 1000;

DROP TABLE access_runs_by_token;
DROP TABLE access_runs_by_account;
DROP TABLE access_log;
