-- dashgate 0002: complete a users table that the dashboard's Flask app created, so dashgate can
-- serve its users as they are. Only adds what is missing; never drops, renames or rewrites data.

-- Only the missing columns (as in 0001: no exclusive lock on the live table when nothing changes).
DO $$
DECLARE
    col record;
BEGIN
    FOR col IN
        SELECT needed.name, needed.definition
        FROM (VALUES ('password_hash', 'text'), ('first_name', 'text'), ('last_name', 'text'),
                     ('created_at', 'timestamptz NOT NULL DEFAULT now()')) AS needed(name, definition)
        WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = 'public.users'::regclass
                          AND a.attname = needed.name AND NOT a.attisdropped)
    LOOP
        EXECUTE format('ALTER TABLE public.users ADD COLUMN %I %s', col.name, col.definition);
    END LOOP;
END $$;

-- Columns narrower than what dashgate accepts are widened to text (binary-compatible with
-- varchar: no table rewrite, indexes kept): Werkzeug's scrypt hashes are 162 characters and
-- Flask models often say String(128) or String(60); dashgate accepts 254-character addresses.
DO $$
DECLARE
    col record;
BEGIN
    FOR col IN
        SELECT c.column_name FROM information_schema.columns c
        JOIN (VALUES ('password_hash', 256), ('email', 254), ('first_name', 100), ('last_name', 100))
             AS needed(name, length) ON needed.name = c.column_name
        WHERE c.table_schema = 'public' AND c.table_name = 'users'
          AND c.character_maximum_length < needed.length
    LOOP
        EXECUTE format('ALTER TABLE public.users ALTER COLUMN %I TYPE text', col.column_name);
    END LOOP;
END $$;

-- Registration relies on a unique index on exactly (email) (INSERT ... ON CONFLICT (email)).
-- Flask's unique=True made one; a model with only index=True did not.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_index i
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = 'public.users'::regclass AND i.indisunique AND i.indnkeyatts = 1
          AND a.attname = 'email' AND i.indexprs IS NULL AND i.indpred IS NULL
    ) THEN
        CREATE UNIQUE INDEX users_email_unique ON public.users (email);
    END IF;
END $$;
