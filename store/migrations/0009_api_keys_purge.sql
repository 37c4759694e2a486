-- Ended API keys are purged a day after they ended (store/purge.c), found by this index
-- rather than a scan of every key. A key ends at its revocation or its expiry, whichever
-- comes first; a live key that never expires sorts last ('infinity') and is never picked.
-- The cap of 0008 counts keys made in the last day: a key ended a day ago was made before
-- that, so purging it never frees a place the cap still counts.
CREATE INDEX api_keys_ended ON api_keys
    (least(coalesce(revoked_at, 'infinity'), coalesce(expires_at, 'infinity')));
