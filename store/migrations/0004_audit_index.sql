-- GET /t/{tenant}/api/v1/audit (auth/audit.c) pages a tenant's audit rows newest first by seq
-- (keyset: seq < cursor), optionally for one actor or one target. audit_log_tenant_time orders
-- by created_at, which the keyset does not use: without these, a page is a scan of the tenant's
-- whole log, re-sorted. The action filter walks audit_log_tenant_seq (the common actions are
-- dense; an index per action would tax every login's audit insert for a rare question).
CREATE INDEX audit_log_tenant_seq ON audit_log (tenant_id, seq DESC);
CREATE INDEX audit_log_tenant_actor ON audit_log (tenant_id, actor_id, seq DESC);
CREATE INDEX audit_log_tenant_target ON audit_log (tenant_id, target_id, seq DESC);
