-- Audit events written in batches (auth/audit_batch.c: a token issued, a client's failed
-- authentication) carry the id their shard gave them. A batch whose answer never came back is
-- sent again: one past its budget was cancelled by the server (statement_timeout), but one
-- whose connection was lost after its COMMIT did commit, and its rows are skipped by this
-- index (ON CONFLICT DO NOTHING), so an event is written once. Rows written with the change
-- they record have no id.
ALTER TABLE audit_log ADD COLUMN event_id uuid;
CREATE UNIQUE INDEX audit_log_event_id ON audit_log (event_id) WHERE event_id IS NOT NULL;
