-- Until when (unix seconds) an instance is refreshing a launch's tokens.
-- Refresh tokens are rotated (each is good once): two instances using the
-- same one at once would see the second refused and the launch ended. The
-- one that claims it refreshes; the others wait for its tokens.
ALTER TABLE launches ADD COLUMN refreshing_until BIGINT;
