-- 7: the hash that counts a correction's voter: HMAC(key, "member:<id>") with the deployment key
-- (bot/store/member_key.py), the same for all of a member's corrections in every server; never the id. An export
-- counts a text's label only when two distinct members chose it, and caps what one member gives
-- (bot/learning/community_data.py). The retention prune erases it with the correction's other hash. Corrections kept
-- before this version have none, so no export counts them.
ALTER TABLE corrections ADD COLUMN voter_hash TEXT NULL;
