-- What a release's card was drawn from (split, source, text-length, tag and size counts), so
-- `09_upload card` renders the card of a recorded release without selecting its items again.
ALTER TABLE releases ADD COLUMN card_stats TEXT;
