-- dashgate 0004: one account per address, whatever the letter case, even where an older app left
-- addresses that differ only in case (0003 then kept them and indexed lower(email) without
-- uniqueness, so a third variant could register). Those rows stay as they are (never rewrite user
-- data); a unique index covers every other row and the oldest of each group, so any new variant
-- conflicts with it ("already registered"), and sign-in picks that oldest account (store.FIND_LOGIN_USER).
DO $$
DECLARE
    later_duplicates bigint[];
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid = 'public.users'::regclass AND i.indisunique
          AND c.relname IN ('users_lower_email_key', 'users_lower_email_oldest_key')
    ) THEN
        RETURN;  -- 0003 made the full unique index: nothing to do, no lock taken
    END IF;
    -- Writes wait (as they would for the index build anyway) so no new variant slips in between.
    LOCK TABLE public.users IN SHARE MODE;
    SELECT array_agg(id ORDER BY id) INTO later_duplicates FROM (
        SELECT id, row_number() OVER (PARTITION BY lower(email) ORDER BY id) AS rank FROM public.users
    ) ranked WHERE rank > 1;
    EXECUTE format(
        'CREATE UNIQUE INDEX users_lower_email_oldest_key ON public.users (lower(email)) WHERE NOT (id = ANY (%L::bigint[]))',
        coalesce(later_duplicates, '{}'));
END $$;
