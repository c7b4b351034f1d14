-- Which instance is sending a kept write, and until when (unix seconds):
-- another instance takes a write only once that lease is over, so a write
-- is not sent by two at once, and a crashed instance's writes are taken
-- again. With SQLite there is one instance; the columns keep one store API.
ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
ALTER TABLE outbox ADD COLUMN claimed_until INTEGER;
