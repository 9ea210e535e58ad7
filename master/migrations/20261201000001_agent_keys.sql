-- An agent's key: issued at its first registration, required to re-register with its id.
-- Only its SHA-256 is kept.
ALTER TABLE agents ADD COLUMN key_hash TEXT;
