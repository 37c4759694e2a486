-- The outbox sender (auth/outbox.c) takes again a row left in 'sending' past its lease: without
-- this index that half of its claim is a scan of the whole table on every poll.
CREATE INDEX email_outbox_leased ON email_outbox (updated_at) WHERE state = 'sending';
