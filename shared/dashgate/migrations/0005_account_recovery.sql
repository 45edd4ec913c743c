-- dashgate 0005: account recovery and email (SPEC: "Account recovery and email", "Data"): when an
-- address was confirmed and the password last changed, and the one-time tokens that reset links and
-- confirmation links carry. Only adds what is missing; never rewrites data (existing users stay
-- unconfirmed until they confirm or reset).

-- Only the missing columns (as in 0001: no exclusive lock on the live table when nothing changes).
DO $$
DECLARE
    col record;
BEGIN
    FOR col IN
        SELECT needed.name, needed.definition
        FROM (VALUES ('email_confirmed_at', 'timestamptz'), ('password_changed_at', 'timestamptz'))
             AS needed(name, definition)
        WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = 'public.users'::regclass
                          AND a.attname = needed.name AND NOT a.attisdropped)
    LOOP
        EXECUTE format('ALTER TABLE public.users ADD COLUMN %I %s', col.name, col.definition);
    END LOOP;
END $$;

-- One row per emailed link. The link carries a random token; only its SHA-256 is kept here, so a
-- leaked table cannot be replayed. A token is bound to the address it was sent to (`email`): once
-- the user's address changes, it no longer works. `used_at` is set when it is used, or voided by a
-- newer request, a reset or a password change.
CREATE TABLE IF NOT EXISTS public.dashgate_tokens (
    token_hash bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    purpose text NOT NULL CHECK (purpose IN ('password_reset', 'email_confirm')),
    user_id bigint NOT NULL REFERENCES public.users (id) ON DELETE CASCADE,
    email text NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at timestamptz
);
-- A user's outstanding tokens of one purpose, voided together (a newer request, a reset, a change).
CREATE INDEX IF NOT EXISTS dashgate_tokens_user_purpose_idx ON public.dashgate_tokens (user_id, purpose)
    WHERE used_at IS NULL;
-- Housekeeping deletes expired tokens in batches.
CREATE INDEX IF NOT EXISTS dashgate_tokens_expires_at_idx ON public.dashgate_tokens (expires_at);
