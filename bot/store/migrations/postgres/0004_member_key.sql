-- 4: member hashes are keyed with the deployment key, kept outside the database (bot/store/member_key.py). A salt
-- that no hash was made with is dropped here; one that hashes were made with stays until the first open with the
-- key replaces each of them by HMAC(key, old hash) and deletes it (the key is not in the database, so SQL can't).
DELETE FROM store_secrets
WHERE name = 'corrections_salt' AND NOT EXISTS (SELECT 1 FROM corrections WHERE dedup_hash IS NOT NULL);
