-- One row that /readyz rewrites while storage writes are failing, to learn when they
-- succeed again.
CREATE TABLE write_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at INTEGER NOT NULL
);
