-- dubfarm schema, version 3: segment results kept in one append-only log per job.
--
-- result_offset is the byte offset of the segment's record in its job's result log
-- (segments/results.dfrl); result_bytes is the record's length and result_token the lease whose
-- record it is, which the stitch checks against the record's own header. NULL for results
-- stored as one file each (`segments/NNNNNN-<token>.dfpb`, schema version 2), which the stitch
-- still reads.
ALTER TABLE segments ADD COLUMN result_offset bigint;
