-- dashgate 0003: addresses are one account whatever their letter case. Sign-in looks users up by
-- lower(email), so it needs this index; it is unique, so a registration that differs only in case
-- from an address an older app stored in mixed case is refused as "already registered".
DO $$
BEGIN
    CREATE UNIQUE INDEX IF NOT EXISTS users_lower_email_key ON public.users (lower(email));
EXCEPTION WHEN unique_violation THEN
    -- Two existing rows differ only in case: keep both (never rewrite user data), index for speed.
    RAISE NOTICE 'users has addresses that differ only in letter case; lower(email) is indexed, not unique';
    CREATE INDEX IF NOT EXISTS users_lower_email_idx ON public.users (lower(email));
END $$;

-- Quiet counters are pruned in batches by age (housekeeping): find them by index.
CREATE INDEX IF NOT EXISTS dashgate_throttle_last_hit_at_idx ON public.dashgate_throttle (last_hit_at);
