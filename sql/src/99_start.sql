-------------------------------------------------------------------------------
-- Last: fresh counters, and the poller
-------------------------------------------------------------------------------
-- Counters of an earlier installation in this database do not carry over.
SELECT bridgecore._stats_reset();

-- A poller waiting for the extension starts on this commit.
SELECT bridgecore._wake_poller();
