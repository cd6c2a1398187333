-- dubfarm schema, version 2: which lease's result a finished segment kept, and what its worker measured.
--
-- The result file in the media store is named by its lease token, so a late result from a
-- superseded lease can never overwrite the one the database accepted; result_token says which
-- file is the segment's. stats holds the worker's SegmentStats (frames, faces, stage timings).
ALTER TABLE segments ADD COLUMN result_token text;
ALTER TABLE segments ADD COLUMN stats jsonb;
