-- 6: a placeholder on the `trust` branch only. Schema version 6 is the member opt-out's (issue 21, the `optout`
-- branch, which ships this very file name): its file replaces this one when the branches are merged. It changes
-- nothing, so that 0007 (the member hash of corrections) can carry the number it will have.
SELECT 1;
