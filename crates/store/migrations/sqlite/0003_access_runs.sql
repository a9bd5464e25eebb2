-- The access log's per-token index cost three times what the rows cost: every record
-- added an entry at its token's place in a B-tree, all over its leaves. Now each batch
-- adds one "run" per token (and per account) in it: the range of ids (and times) where
-- that token's records of the batch are. Queries by token or account walk the runs
-- newest first and read those ids, keeping the token's or account's rows.
DROP INDEX access_by_token;
DROP INDEX access_by_account;

CREATE TABLE access_runs_by_token (
    token_id TEXT    NOT NULL,
    last_id  INTEGER NOT NULL,
    first_id INTEGER NOT NULL,
    min_time INTEGER NOT NULL,
    max_time INTEGER NOT NULL,
    PRIMARY KEY (token_id, last_id)
) WITHOUT ROWID;

CREATE TABLE access_runs_by_account (
    account_id TEXT    NOT NULL,
    last_id    INTEGER NOT NULL,
    first_id   INTEGER NOT NULL,
    min_time   INTEGER NOT NULL,
    max_time   INTEGER NOT NULL,
    PRIMARY KEY (account_id, last_id)
) WITHOUT ROWID;

-- Records written before: one run each.
INSERT INTO access_runs_by_token SELECT token_id, id, id, time, time FROM access_log WHERE token_id IS NOT NULL;
INSERT INTO access_runs_by_account SELECT account_id, id, id, time, time FROM access_log WHERE account_id IS NOT NULL;
