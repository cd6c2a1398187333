-- dubfarm schema, version 4: per-job personalisation (`submit --personalise`).
--
-- A job that asks for it is `personalising` between planning and running: the coordinator builds
-- a dataset from the job's own video, one worker fine-tunes the model on it under a lease (like a
-- segment's: fenced by a token, renewed while the worker lives, taken back when it is lost), and
-- its checkpoints come back to the coordinator, so another worker resumes where it stopped.
-- jobs.weights is the SHA-256 of the fine-tuned weights file (media store weights/<sha256>) that
-- the job's segments run on; NULL runs the workers' own weights.
ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check
    CHECK (state IN ('queued', 'planning', 'personalising', 'running', 'stitching', 'done', 'failed', 'cancelled'));
ALTER TABLE jobs ADD COLUMN weights text;

CREATE TABLE personalisations (
    job_id            bigint PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    state             text NOT NULL DEFAULT 'preparing'
                      CHECK (state IN ('preparing', 'pending', 'leased', 'done', 'failed')),
    budget_seconds    integer NOT NULL CHECK (budget_seconds > 0),
    fallback          boolean NOT NULL DEFAULT false,
    lease_token       text,
    leased_by         text,
    lease_expires_at  timestamptz,
    leases            integer NOT NULL DEFAULT 0,
    failures          integer NOT NULL DEFAULT 0,
    -- Frames of the job's video in the dataset (training and held-back).
    dataset_frames    integer,
    -- Progress of the current (or last) attempt, as the worker reports it.
    step              integer NOT NULL DEFAULT 0,
    loss              double precision,
    elapsed_seconds   double precision NOT NULL DEFAULT 0,
    -- The last checkpoint the coordinator holds (media store: the job's personalise/checkpoint.pt).
    checkpoint_step   integer,
    -- The step the current lease started from (0, or the checkpoint it resumed).
    resumed_from      integer,
    weights           text,
    -- The trainer's report of the held-back part of the clip (JSON), once done.
    report            jsonb,
    error             text,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'leased') = (lease_token IS NOT NULL))
);
CREATE INDEX personalisations_claim ON personalisations (job_id) WHERE state = 'pending';
CREATE INDEX personalisations_leased_by ON personalisations (leased_by) WHERE state = 'leased';
