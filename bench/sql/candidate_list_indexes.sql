-- Candidate indexes for the CVM list (not part of the schema): run with
--   uv run python -m bench.http_latency --after-fill-sql bench/sql/candidate_list_indexes.sql
-- and compare with a run without them.
--
-- Live CVMs of a domain, newest first, carrying the filtered columns: every list count
-- (status, cc_platform, days) becomes an index-only scan of the domain's live rows
-- instead of a sequential scan of the whole table.
CREATE INDEX ix_cvms_domain_live_created ON cvms (domain_id, created_at DESC, id DESC)
    INCLUDE (status, cc_platform, name) WHERE deleted_at IS NULL;
-- Deleted CVMs of a domain (status=inactive): a small index of its own.
CREATE INDEX ix_cvms_domain_deleted_created ON cvms (domain_id, created_at DESC, id DESC)
    WHERE deleted_at IS NOT NULL;
-- Name substrings (lower(name) LIKE '%...%'): trigrams find rare fragments without
-- reading every row, and the expression index gives the planner statistics on
-- lower(name) (without them it estimates ~8 matches for any fragment and picks a
-- parallel sequential scan of the whole table plus a sort, even for common ones).
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX ix_cvms_live_name_trgm ON cvms USING gin (lower(name) gin_trgm_ops)
    WHERE deleted_at IS NULL;
