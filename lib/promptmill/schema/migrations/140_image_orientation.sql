-- Images as cameras and editors save them: width and height are the displayed size
-- (EXIF orientation applied); `orientation` keeps the EXIF tag (2-8) when the stored
-- pixels need turning, so an export can bake it in or leave the original bytes.
ALTER TABLE images ADD COLUMN orientation INTEGER;
