-- dubfarm schema, version 5: data-parallel personalisation (`submit --personalise-workers N`).
--
-- workers is what the job asked for; world_size how many workers the current (or last) lease
-- trains on: the lease holder (rank 0, the one the lease names) and the idle workers that
-- joined it when it started (torchrun ranks 1…). Only the lease holder reports; the others
-- follow it and leave when it ends.
ALTER TABLE personalisations ADD COLUMN workers integer NOT NULL DEFAULT 1 CHECK (workers BETWEEN 1 AND 64);
ALTER TABLE personalisations ADD COLUMN world_size integer NOT NULL DEFAULT 1 CHECK (world_size >= 1);
