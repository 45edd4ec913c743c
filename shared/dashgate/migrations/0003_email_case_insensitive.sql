-- dashgate 0003: addresses are one account whatever their letter case. Sign-in looks users up by
-- lower(email), so it needs this index; it is unique, so a registration that differs only in case
-- from an address an older app stored in mixed case is refused as "already registered".
-- Built only when missing: even CREATE INDEX IF NOT EXISTS waits for a lock on the live table first.
DO $$
BEGIN
    IF to_regclass('public.users_lower_email_key') IS NULL AND to_regclass('public.users_lower_email_idx') IS NULL THEN
        BEGIN
            CREATE UNIQUE INDEX users_lower_email_key ON public.users (lower(email));
        EXCEPTION WHEN unique_violation THEN
            -- Two existing rows differ only in case: keep both (never rewrite user data), index for
            -- speed; 0004 adds the uniqueness that keeps a third variant out.
            RAISE NOTICE 'users has addresses that differ only in letter case; lower(email) is indexed, not unique';
            CREATE INDEX users_lower_email_idx ON public.users (lower(email));
        END;
    END IF;
END $$;

-- Quiet counters are pruned in batches by age (housekeeping): find them by index.
CREATE INDEX IF NOT EXISTS dashgate_throttle_last_hit_at_idx ON public.dashgate_throttle (last_hit_at);
