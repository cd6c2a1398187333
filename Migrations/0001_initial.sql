-- dubfarm schema, version 1: jobs, segments, workers, events, per-job worker failures.
-- Applied by FarmStore.migrate() inside one transaction; never edit after release (add 0002_…).

CREATE TABLE jobs (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    state           text NOT NULL DEFAULT 'queued'
                    CHECK (state IN ('queued', 'planning', 'running', 'stitching', 'done', 'failed', 'cancelled')),
    priority        integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    submitted_by    text,
    video_name      text NOT NULL,
    audio_name      text NOT NULL,
    face_name       text,
    -- What the coordinator is doing with the job right now, for people ("probing", "stitching").
    stage           text,
    -- Filled by the plan.
    frame_count     integer CHECK (frame_count >= 0),
    fps_num         integer CHECK (fps_num > 0),
    fps_den         integer CHECK (fps_den > 0),
    width           integer CHECK (width > 0),
    height          integer CHECK (height > 0),
    rotation        integer,
    segment_frames  integer CHECK (segment_frames > 0),
    segment_count   integer CHECK (segment_count >= 0),
    -- Filled when done.
    audio_fit       text,
    output_bytes    bigint,
    -- Filled when failed (error_code is a DubfarmError.Code).
    error_code      text,
    error           text,
    -- Encoder settings, segment length and options of the submission.
    params          jsonb NOT NULL DEFAULT '{}',
    -- Coordinator-private: whatever planning wants to keep (JSON), and which coordinator took the
    -- job for planning.
    plan_data       jsonb,
    coordinator     text
);

-- The queue: queued jobs by priority, then age.
CREATE INDEX jobs_queue ON jobs (priority DESC, created_at, id) WHERE state = 'queued';
CREATE INDEX jobs_active ON jobs (state) WHERE state IN ('planning', 'running', 'stitching');

CREATE TABLE segments (
    job_id            bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx               integer NOT NULL CHECK (idx >= 0),
    start_frame       integer NOT NULL CHECK (start_frame >= 0),
    end_frame         integer NOT NULL,
    state             text NOT NULL DEFAULT 'pending'
                      CHECK (state IN ('pending', 'leased', 'done', 'dead', 'cancelled')),
    -- The current lease (fencing token: 32 hex digits), its holder and its deadline.
    lease_token       text,
    leased_by         text,
    lease_expires_at  timestamptz,
    leases            integer NOT NULL DEFAULT 0,
    failures          integer NOT NULL DEFAULT 0,
    -- Backoff: not handed out before this instant.
    not_before        timestamptz NOT NULL DEFAULT '-infinity',
    error             text,
    frames_done       integer NOT NULL DEFAULT 0,
    frames_total      integer NOT NULL,
    result_bytes      bigint,
    process_seconds   double precision,
    started_at        timestamptz,
    finished_at       timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    -- Copies of the job's priority and created_at, so the claim walks one index in queue order.
    job_priority      integer NOT NULL DEFAULT 0,
    job_created_at    timestamptz NOT NULL DEFAULT '-infinity',
    PRIMARY KEY (job_id, idx),
    CHECK (end_frame > start_frame),
    CHECK ((state = 'leased') = (lease_token IS NOT NULL))
);

-- A queue table: vacuum and analyze it eagerly so dead index entries and stale estimates do not
-- slow the claim down.
ALTER TABLE segments SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02,
                          autovacuum_vacuum_threshold = 200, autovacuum_analyze_threshold = 200);

-- The claim: pending segments in queue order (job priority, job age, job, index).
CREATE INDEX segments_claim ON segments (job_priority DESC, job_created_at, job_id, idx) WHERE state = 'pending';
-- Lease expiry and release of a lost worker's leases.
CREATE INDEX segments_lease_expiry ON segments (lease_expires_at) WHERE state = 'leased';
CREATE INDEX segments_leased_by ON segments (leased_by) WHERE state = 'leased';
-- "Is any segment of this job unfinished?" in O(1), on every completion.
CREATE INDEX segments_unfinished ON segments (job_id) WHERE state <> 'done';

CREATE TABLE workers (
    name             text PRIMARY KEY,
    host             text,
    state            text NOT NULL DEFAULT 'idle',
    threads          integer,
    stage            text,
    model            text,
    capabilities     jsonb NOT NULL DEFAULT '{}',
    connected_at     timestamptz NOT NULL DEFAULT now(),
    last_seen        timestamptz NOT NULL DEFAULT now(),
    current_job      bigint,
    current_segment  integer,
    segments_done    bigint NOT NULL DEFAULT 0,
    frames_done      bigint NOT NULL DEFAULT 0
);

-- Every state change of a job, segment or worker: who, when, why.
CREATE TABLE events (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    job_id       bigint,
    segment_idx  integer,
    worker       text,
    -- 'job', 'segment' or 'worker'
    kind         text NOT NULL,
    from_state   text,
    to_state     text,
    reason       text,
    actor        text
);

CREATE INDEX events_job ON events (job_id, id);

-- Failures of one worker within one job: a worker that fails a job's segments too often is no
-- longer handed that job's segments.
CREATE TABLE job_worker_failures (
    job_id    bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    worker    text NOT NULL,
    failures  integer NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, worker)
);
